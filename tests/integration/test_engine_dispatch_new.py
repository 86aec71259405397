"""A job queued into an empty queue is claimed at once by the process that queued it
(`Orchestrator.dispatch_new`, called by the service), not after a NOTIFY round trip and a
dispatch round; otherwise the dispatch loop takes it as any queued job."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any, cast

import pytest

from core.db import generations as gen_db
from core.errors import StoreError
from core.models import Generation, JobKind
from core.states import JobState
from tests.engine import (
    RecordingDeliverer,
    actor,
    running_engine,
    wait_status,
    wait_until,
)

DONE_OR_FAILED = {JobState.DONE, JobState.FAILED}


async def test_a_job_queued_into_an_empty_queue_is_started_before_the_request_returns(
    pg_dsn: str, fake_comfy, tmp_path: Path
) -> None:
    fake_comfy.step_delay_s = 0.05  # the first job holds the only slot for a while
    async with running_engine(
        pg_dsn, tmp_path, [fake_comfy], RecordingDeliverer(), comfyui_max_in_flight=1
    ) as runtime:
        me, other = actor(1), actor(2)
        await runtime.service.seen(me)
        await runtime.service.seen(other)
        first = await runtime.service.request_scene(me, JobKind.IMAGE, "a girl on a beach")
        assert first.position is None  # started, not waiting
        claimed = await runtime.service.job(first.job.id)
        # Claimed and submitted by now; ComfyUI may already have started it (`running`).
        assert claimed.status.in_backend
        assert claimed.backend == fake_comfy.base_url

        # The only slot is taken: the next job (alone in the queue) waits, first in line,
        # and the dispatch loop starts it once the slot frees.
        second = await runtime.service.request_scene(other, JobKind.IMAGE, "a cat on a roof")
        assert second.position == 1
        assert (await runtime.service.job(second.job.id)).status is JobState.QUEUED
        # Behind a waiting job, a new one is ranked in the queue.
        third = await runtime.service.request_scene(me, JobKind.IMAGE, "a fox in the snow")
        assert third.position == 2
        for ticket in (first, second, third):
            job = await wait_status(runtime, ticket.job.id, DONE_OR_FAILED, timeout=30)
            assert job.status is JobState.DONE, job.error
        assert [post["prompt_id"] for post in fake_comfy.prompt_posts] == [
            str(t.job.id) for t in (first, second, third)
        ]


async def test_without_an_engine_in_this_process_the_job_waits_first_in_line(
    pg_dsn: str, fake_comfy, tmp_path: Path
) -> None:
    async with running_engine(pg_dsn, tmp_path, [fake_comfy]) as runtime:
        await runtime.stop_engine()  # a bot process whose jobs run in `animebot worker`s
        me = actor(1)
        await runtime.service.seen(me)
        ticket = await runtime.service.request_scene(me, JobKind.IMAGE, "a girl on a beach")
        assert ticket.position == 1
        assert (await runtime.service.job(ticket.job.id)).status is JobState.QUEUED


async def test_a_failed_immediate_claim_leaves_the_job_to_the_dispatch_loop(
    pg_dsn: str, fake_comfy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_claim = gen_db.claim
    failures = []

    async def claim_failing_once(*args: Any, **kwargs: Any) -> Any:
        if not failures:
            failures.append(1)
            raise StoreError("the database went away for a moment")
        return await real_claim(*args, **kwargs)

    async with running_engine(pg_dsn, tmp_path, [fake_comfy], RecordingDeliverer()) as runtime:
        monkeypatch.setattr(gen_db, "claim", claim_failing_once)
        me = actor(1)
        await runtime.service.seen(me)
        ticket = await runtime.service.request_scene(me, JobKind.IMAGE, "a girl on a beach")
        assert failures and ticket.position == 1  # queued, and said so
        job = await wait_status(runtime, ticket.job.id, DONE_OR_FAILED, timeout=30)
        assert job.status is JobState.DONE, job.error  # the dispatch loop started it


async def test_the_queued_notice_of_a_job_this_process_started_needs_no_round(
    pg_dsn: str, fake_comfy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The NOTIFY "queued <job>" of a job this process queued and started itself wakes no
    dispatch round, also when it arrives after the job was started (a loaded machine); a
    later "queued" of the same job (a requeue) is heard."""
    async with running_engine(pg_dsn, tmp_path, [fake_comfy]) as runtime:
        orchestrator = runtime.orchestrator
        job_id = uuid.uuid4()

        async def claimed(_job: Any) -> bool:
            return True

        monkeypatch.setattr(orchestrator, "_claim_new", claimed)
        orchestrator.expect(job_id)
        assert await orchestrator.start_new(cast(Generation, object()), job_id, alone=True)

        def hear(notice: str) -> bool:
            """Whether the notice wakes a dispatch round."""
            orchestrator.dispatch_wakeup.clear()
            orchestrator._dispatch_due = False
            orchestrator._on_queue_notify(None, 0, "animebot_queue", notice)
            return orchestrator.dispatch_wakeup.is_set() or orchestrator._dispatch_due

        assert not hear(f"queued {job_id}")  # late: the job runs already
        assert hear(f"queued {job_id}")  # requeued later
        assert hear(f"queued {uuid.uuid4()}")  # queued by another process

        # not started (no free backend as far as this process knows): dispatch is woken by
        # `start_new` itself, and the notice is not needed either
        other = uuid.uuid4()
        orchestrator.expect(other)
        orchestrator.dispatch_wakeup.clear()
        assert not await orchestrator.start_new(cast(Generation, object()), other, alone=False)
        assert orchestrator.dispatch_wakeup.is_set()
        assert not hear(f"queued {other}")


@pytest.mark.parametrize("max_in_flight", [1, 2])
async def test_jobs_queued_one_after_another_are_each_started_at_once(
    pg_dsn: str, fake_comfy, tmp_path: Path, max_in_flight: int
) -> None:
    """The load this process last saw counts a finished job's slot as free again: the next
    job queued into the empty queue is started by its request, not left to a dispatch round
    (the load was only ever counted up, so every `max_in_flight`-th job waited for one)."""
    async with running_engine(
        pg_dsn, tmp_path, [fake_comfy], RecordingDeliverer(), comfyui_max_in_flight=max_in_flight
    ) as runtime:
        me = actor(1)
        await runtime.service.seen(me)

        async def runners_over() -> bool:
            return not runtime.orchestrator.runners

        for take in range(max_in_flight + 2):
            ticket = await runtime.service.request_scene(me, JobKind.IMAGE, f"a fox, take {take}")
            assert ticket.position is None, f"job {take + 1} was left waiting"
            job = await wait_status(runtime, ticket.job.id, DONE_OR_FAILED, timeout=30)
            assert job.status is JobState.DONE, job.error
            await wait_until(runners_over, timeout=10)
