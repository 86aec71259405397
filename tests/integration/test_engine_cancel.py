"""Cancelling a job in each state through the real service and engine: it ends `cancelled`,
never stuck, and only its own prompt is touched on ComfyUI."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from core.db import generations as gen_db
from core.errors import InvalidInput
from core.states import JobState
from tests.engine import RecordingDeliverer, actor, running_engine
from tests.integration.engine_kit import (
    PostprocessGate,
    fast_engine,
    interrupts_for,
    job,
    posts_for,
    queue_deletes_for,
    submit,
    until,
    wait_all,
)


async def _transitions(runtime: Any, job_id: Any) -> list[str]:
    return [e.to_status for e in await gen_db.list_events(runtime.database.pool, job_id)]


async def test_cancel_queued_while_no_backend_is_healthy(
    pg_dsn: str, fake_comfy: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fast_engine(monkeypatch)
    await fake_comfy.stop()  # the only GPU server is down
    async with running_engine(pg_dsn, tmp_path, [fake_comfy], RecordingDeliverer()) as runtime:
        job_id = await submit(runtime, 1, "a fox --steps 2")
        await asyncio.sleep(0.5)
        assert (await job(runtime, job_id)).status is JobState.QUEUED
        cancelled = await runtime.service.cancel(actor(1), job_id)
        assert cancelled.status is JobState.CANCELLED
        # The server comes back: the cancelled job never reaches it.
        await fake_comfy.start()
        other = await submit(runtime, 1, "a wolf --steps 1")
        await wait_all(runtime, [other])
        assert (await job(runtime, job_id)).status is JobState.CANCELLED
        assert posts_for(fake_comfy, job_id) == []
        assert await _transitions(runtime, job_id) == ["queued", "cancelled"]


async def test_cancel_queued_pending_and_running_jobs(
    pg_dsn: str, fake_comfy: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fast_engine(monkeypatch)
    deliverer = RecordingDeliverer()
    async with running_engine(
        pg_dsn, tmp_path, [fake_comfy], deliverer, comfyui_max_in_flight=2
    ) as runtime:
        try:
            fake_comfy.hold()  # ComfyUI takes nothing from its queue for now
            pending = await submit(runtime, 1, "a pending job --steps 2")
            running = await submit(runtime, 2, "a long job --steps 40")
            await wait_all(runtime, [pending, running], {JobState.SUBMITTED})
            await until(lambda: len(fake_comfy.pending_ids) == 2, what="both prompts pending")
            queued = await submit(runtime, 3, "a queued job --steps 2")
            await asyncio.sleep(0.3)
            assert (await job(runtime, queued)).status is JobState.QUEUED  # no free slot

            # Queued: cancelled at once, never sent.
            assert (await runtime.service.cancel(actor(3), queued)).status is JobState.CANCELLED

            # Submitted, still pending inside ComfyUI: deleted from ComfyUI's queue.
            await runtime.service.cancel(actor(1), pending)
            (gone,) = await wait_all(runtime, [pending], timeout=5)
            assert gone.status is JobState.CANCELLED
            assert queue_deletes_for(fake_comfy, pending) >= 1
            assert str(pending) not in fake_comfy.pending_ids
            assert str(running) in fake_comfy.pending_ids

            # Running: interrupted, and only that prompt (the next one in ComfyUI goes on).
            fake_comfy.step_delay_s = 0.1
            fake_comfy.release()
            await wait_all(runtime, [running], {JobState.RUNNING}, timeout=5)
            follower = await submit(runtime, 4, "a follower --steps 2")
            await until(lambda: str(follower) in fake_comfy.pending_ids, what="follower pending")
            await runtime.service.cancel(actor(2), running)
            (stopped,) = await wait_all(runtime, [running], timeout=5)
            assert stopped.status is JobState.CANCELLED
            assert interrupts_for(fake_comfy, running) >= 1
            assert all(  # no interrupt without a prompt id (that would stop anyone's job)
                isinstance(r.json, dict) and r.json.get("prompt_id")
                for r in fake_comfy.requests
                if r.route == "/interrupt"
            )
            fake_comfy.step_delay_s = 0.0
            (after,) = await wait_all(runtime, [follower], timeout=10)
            assert after.status is JobState.DONE, after.error
            await fake_comfy.wait_idle(5)
            assert fake_comfy.history[str(running)]["status"]["status_str"] == "error"
            assert fake_comfy.history[str(follower)]["status"]["status_str"] == "success"
            assert str(pending) not in fake_comfy.history  # never executed

            assert posts_for(fake_comfy, queued) == []
            assert [j.id for j, _ in deliverer.delivered] == [follower]
            assert await _transitions(runtime, queued) == ["queued", "cancelled"]
            assert await _transitions(runtime, pending) == ["queued", "submitted", "cancelled"]
            assert (await _transitions(runtime, running))[-2:] == ["running", "cancelled"]

            # Done and failed jobs cannot be cancelled.
            with pytest.raises(InvalidInput):
                await runtime.service.cancel(actor(4), follower)
            fake_comfy.fail_next(None, "boom")
            failed_id = await submit(runtime, 5, "a failing job --steps 1")
            (failed,) = await wait_all(runtime, [failed_id])
            assert failed.status is JobState.FAILED
            with pytest.raises(InvalidInput):
                await runtime.service.cancel(actor(5), failed_id)
            for job_id, state in ((follower, JobState.DONE), (failed_id, JobState.FAILED)):
                row = await job(runtime, job_id)
                assert row.status is state and not row.cancel_requested
        finally:
            fake_comfy.release()


async def test_cancel_while_postprocessing(
    pg_dsn: str, fake_comfy: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fast_engine(monkeypatch)
    gate = PostprocessGate()
    gate.install(monkeypatch)
    deliverer = RecordingDeliverer()
    async with running_engine(pg_dsn, tmp_path, [fake_comfy], deliverer) as runtime:
        try:
            async with runtime.events.subscribe() as events:
                fake_comfy.hold()
                slow = await submit(runtime, 1, "a slow encode --steps 1")
                gate.held.add(slow)
                fake_comfy.release()
                await until(lambda: slow in gate.entered, what="post-processing started")
                # (`postprocessing` is recorded while the first output is being processed)
                await wait_all(runtime, [slow], {JobState.POSTPROCESSING}, timeout=5)
                await runtime.service.cancel(actor(1), slow)
                (ended,) = await wait_all(runtime, [slow], timeout=5)
                assert ended.status is JobState.CANCELLED
                assert gate.cancelled == [slow]  # the running post-process was stopped
                seen = []
                while not events.empty():
                    event = events.get_nowait()
                    if event.job_id == slow and event.type == "state":
                        seen.append(event.status)
                assert seen[-1] == "cancelled" and "delivering" not in seen
            gate.open()
            await asyncio.sleep(0.5)
            assert (await job(runtime, slow)).status is JobState.CANCELLED
            assert deliverer.delivered == []
            assert await runtime.service.outputs(slow) == []
            assert (await _transitions(runtime, slow))[-2:] == ["postprocessing", "cancelled"]
        finally:
            gate.open()
