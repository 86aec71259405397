"""An unexpected error inside a job (a bug, not ComfyUI's or the database's fault) resumes the
job from ComfyUI's history a few times (`CRASH_RETRIES`), never submitting it twice; a job that
keeps crashing fails with a reason instead of staying stuck."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import core.jobs.runner as runner_mod
from core.models import Generation, JobKind
from core.runtime import Runtime
from core.service import JobTicket
from core.states import JobState
from tests.engine import RecordingDeliverer, actor, running_engine, wait_status, wait_until

DONE_OR_FAILED = {JobState.DONE, JobState.FAILED}


async def scene(runtime: Runtime, text: str) -> tuple[JobTicket, Generation]:
    """User 1 asks for an image of `text`; its ticket and the job once it has ended."""
    me = actor(1)
    await runtime.service.seen(me)
    ticket = await runtime.service.request_scene(me, JobKind.IMAGE, text)
    return ticket, await wait_status(runtime, ticket.job.id, DONE_OR_FAILED, timeout=30)


def crash_post_processing(monkeypatch: pytest.MonkeyPatch, times: int) -> list[Any]:
    """The first `times` post-processings of any output raise a RuntimeError; returns the list
    of jobs post-processed (one entry per call)."""
    real = runner_mod.process_output
    calls: list[Any] = []

    async def crashing(job: Generation, *args: Any, **kwargs: Any) -> Any:
        calls.append(job.id)
        if len(calls) <= times:
            raise RuntimeError("a bug in post-processing")
        return await real(job, *args, **kwargs)

    monkeypatch.setattr(runner_mod, "process_output", crashing)
    return calls


async def test_an_unexpected_error_resumes_the_job_without_running_it_twice(
    pg_dsn: str, fake_comfy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The first attempt post-processes twice (the work the `executed` event started, then
    # once more); both crash, so the attempt crashes and the job is resumed.
    calls = crash_post_processing(monkeypatch, times=2)
    deliverer = RecordingDeliverer()
    async with running_engine(pg_dsn, tmp_path, [fake_comfy], deliverer) as runtime:
        _ticket, job = await scene(runtime, "a girl on a beach")
        assert job.status is JobState.DONE, job.error
        assert calls == [job.id] * 3  # the crashed attempt's two, then the resumed one
        assert [post["prompt_id"] for post in fake_comfy.prompt_posts] == [str(job.id)]
        assert job.attempts == 1  # resumed in place, not requeued
        assert len(await runtime.service.outputs(job.id)) == 1
        assert job.result_message_id == deliverer.next_message_id


async def test_a_job_that_keeps_crashing_fails_with_a_reason(
    pg_dsn: str, fake_comfy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = runner_mod.process_output
    calls = crash_post_processing(monkeypatch, times=1000)
    async with running_engine(pg_dsn, tmp_path, [fake_comfy], RecordingDeliverer()) as runtime:
        _ticket, job = await scene(runtime, "a girl on a beach")
        assert job.status is JobState.FAILED
        assert job.error == "Internal error (RuntimeError)."  # no traceback, no detail
        # the first attempt's two (see above), then one per resumption
        assert len(calls) == 2 + runner_mod.CRASH_RETRIES
        assert [post["prompt_id"] for post in fake_comfy.prompt_posts] == [str(job.id)]
        assert await runtime.service.outputs(job.id) == []

        async def runner_over() -> bool:
            return job.id not in runtime.orchestrator.runners

        await wait_until(runner_over, timeout=10)

        # The slot is free again: the user's next job is started by its request and runs.
        monkeypatch.setattr(runner_mod, "process_output", real)
        again, done = await scene(runtime, "a cat on a roof")
        assert again.position is None
        assert done.status is JobState.DONE, done.error
