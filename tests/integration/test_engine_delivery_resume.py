"""Delivery as the engine records it: the process dies after Telegram accepted the result but
before the job was marked done; a chat that refuses the result.

The main result's message id is recorded the moment the chat accepts it (`DeliveryLedger`), so
the next process finishes the job without sending the result again.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from core.jobs.delivery import DeliveredFile, DeliveryLedger, DeliveryReceipt
from core.models import Generation, Output
from core.states import JobState
from tests.engine import (
    RecordingDeliverer,
    engine_settings,
    install_models,
    running_engine,
    start_runtime,
)
from tests.integration.engine_kit import crash, fast_engine, job, submit, until, wait_all


@dataclass
class DiesAfterTheUpload:
    """Telegram accepts the result; the process dies before anything else happens."""

    reported: list[UUID] = field(default_factory=list)

    async def deliver(
        self, job: Generation, outputs: list[Output], ledger: DeliveryLedger | None = None
    ) -> DeliveryReceipt:
        assert ledger is not None
        await ledger.sent(DeliveredFile(outputs[0].id, 777, "file-777"), main=True)
        self.reported.append(job.id)
        await asyncio.Event().wait()  # killed here
        raise AssertionError("unreachable")

    async def library_linked(self, job: Generation, output: Output, link: str) -> None:
        return None


async def test_a_result_recorded_before_the_kill_is_not_sent_again(
    pg_dsn: str, fake_comfy: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fast_engine(monkeypatch)
    settings = engine_settings(pg_dsn, tmp_path / "data", [fake_comfy.base_url])
    install_models(fake_comfy, settings)
    dying = DiesAfterTheUpload()
    first = await start_runtime(settings, dying)
    second = None
    try:
        job_id = await submit(first, 1, "a rooftop at dusk --steps 1")
        await until(lambda: job_id in dying.reported, what="the upload reported")
        recorded = await job(first, job_id)
        assert recorded.status is JobState.DELIVERING and recorded.result_message_id == 777
        [output] = await first.service.outputs(job_id)
        assert (output.telegram_message_id, output.telegram_file_id) == (777, "file-777")
        await crash(first)

        chat = RecordingDeliverer()
        second = await start_runtime(settings, chat)
        [done] = await wait_all(second, [job_id])
        assert done.status is JobState.DONE and done.result_message_id == 777
        assert chat.delivered == []  # nothing was missing: the chat was not called at all
    finally:
        if second is not None:
            await second.stop()


async def test_a_chat_that_refuses_the_result_still_ends_the_job_with_the_reason(
    pg_dsn: str, fake_comfy: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fast_engine(monkeypatch)
    async with running_engine(
        pg_dsn, tmp_path, [fake_comfy], RecordingDeliverer(blocked=True)
    ) as runtime:
        job_id = await submit(runtime, 1, "a rooftop at dusk --steps 1")
        [done] = await wait_all(runtime, [job_id])
        assert done.status is JobState.DONE
        assert (done.result_message_id, done.delivery_error) == (
            None,
            "bot was blocked by the user",
        )
        assert len(await runtime.service.outputs(job_id)) == 1  # the result is kept
