"""How the engine follows a prompt and hands a finished job over, with the fewest requests:

- while the backend's WebSocket is up and carries our prompt's events, `/history` is not
  polled (only a slow safety poll); a dropped socket, a reconnection, or a prompt whose events
  go to another (dead) process's socket bring the fast polling back, so no event is ever missed;
- a job finished by a process that delivers is delivered by it directly (lease kept, no
  NOTIFY, no adoption), and its files are ready: metadata, Telegram JPEG, sha256;
- a freed backend slot costs no queue reads once the queue is empty.
"""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast
from uuid import UUID

import pytest

from core.comfy import protocol as p
from core.comfy.routing import EventRouter
from core.db import generations as gen_db
from core.jobs import orchestrator as orchestrator_mod
from core.jobs import runner as runner_mod
from core.jobs.runner import JobRunner
from core.media.metadata import read_generation_metadata
from core.states import JobState
from tests.engine import RecordingDeliverer, engine_settings, install_models, start_runtime
from tests.integration.engine_kit import fast_engine, job, submit, until, wait_all


def _history_reads(fake: Any, job_id: UUID) -> int:
    return sum(1 for r in fake.requests if r.method == "GET" and r.route == f"/history/{job_id}")


def _swallow_events_of(monkeypatch: pytest.MonkeyPatch, job_ids: set[str]) -> None:
    """ComfyUI's events for these prompts never reach their subscriber (lost on the way)."""
    real = EventRouter.route

    def route(self: EventRouter, event: p.Event, now: float) -> str | None:
        if getattr(event, "prompt_id", None) in job_ids:
            return None
        return real(self, event, now)

    monkeypatch.setattr(EventRouter, "route", route)


async def test_a_waiting_prompt_is_not_polled_while_the_socket_is_up(
    pg_dsn: str, fake_comfy: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fast_engine(monkeypatch)  # fast polling every 0.3 s when it applies
    monkeypatch.setattr(runner_mod, "SAFETY_POLL_S", 600.0)
    settings = engine_settings(pg_dsn, tmp_path / "data", [fake_comfy.base_url])
    install_models(fake_comfy, settings)
    runtime = await start_runtime(settings, RecordingDeliverer())
    try:
        fake_comfy.hold()
        job_id = await submit(runtime, 1, "a long wait --steps 2")
        await until(lambda: str(job_id) in fake_comfy.pending_ids, what="prompt pending")
        before = _history_reads(fake_comfy, job_id)
        await asyncio.sleep(1.5)  # five fast poll intervals
        assert _history_reads(fake_comfy, job_id) == before

        # The socket drops: events may be lost, so the runner reads /history itself.
        await fake_comfy.drop_sockets()
        await until(lambda: _history_reads(fake_comfy, job_id) > before, what="poll after the drop")
        fake_comfy.release()
        (done,) = await wait_all(runtime, [job_id])
        assert done.status is JobState.DONE
    finally:
        await runtime.stop()


async def test_lost_events_are_caught_when_the_socket_reconnects(
    pg_dsn: str, fake_comfy: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fast_engine(monkeypatch)
    monkeypatch.setattr(runner_mod, "SAFETY_POLL_S", 600.0)  # only the reconnection can help
    settings = engine_settings(pg_dsn, tmp_path / "data", [fake_comfy.base_url])
    install_models(fake_comfy, settings)
    deliverer = RecordingDeliverer()
    runtime = await start_runtime(settings, deliverer)
    try:
        fake_comfy.hold()
        job_id = await submit(runtime, 1, "a quiet finish --steps 2")
        await until(lambda: str(job_id) in fake_comfy.pending_ids, what="prompt pending")
        _swallow_events_of(monkeypatch, {str(job_id)})
        fake_comfy.release()
        await fake_comfy.wait_idle()
        await asyncio.sleep(1.0)  # finished in ComfyUI, and we heard nothing
        assert (await job(runtime, job_id)).status is JobState.SUBMITTED
        await fake_comfy.drop_sockets()  # reconnects: the runner reads /history
        (done,) = await wait_all(runtime, [job_id])
        assert done.status is JobState.DONE
        assert [j.id for j, _ in deliverer.delivered] == [job_id]
    finally:
        await runtime.stop()


async def test_the_safety_poll_finds_a_prompt_whose_events_were_lost(
    pg_dsn: str, fake_comfy: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fast_engine(monkeypatch)
    monkeypatch.setattr(runner_mod, "SAFETY_POLL_S", 0.5)
    settings = engine_settings(pg_dsn, tmp_path / "data", [fake_comfy.base_url])
    install_models(fake_comfy, settings)
    runtime = await start_runtime(settings, RecordingDeliverer())
    try:
        fake_comfy.hold()
        job_id = await submit(runtime, 1, "a silent job --steps 2")
        await until(lambda: str(job_id) in fake_comfy.pending_ids, what="prompt pending")
        _swallow_events_of(monkeypatch, {str(job_id)})
        fake_comfy.release()
        (done,) = await wait_all(runtime, [job_id])  # no socket trouble at all
        assert done.status is JobState.DONE
    finally:
        await runtime.stop()


def test_poll_interval_follows_where_the_events_go() -> None:
    socket = SimpleNamespace(is_connected=True)
    backend = SimpleNamespace(url="http://gpu", socket=socket)
    job_row = SimpleNamespace(id=UUID(int=1), status=JobState.SUBMITTED)
    runner = JobRunner(cast(Any, None), cast(Any, job_row), cast(Any, backend), resume=True)
    # Resumed: the prompt was submitted by a process that died; its events go to that
    # process's socket, so this one polls.
    assert runner.poll_interval() == runner_mod.POLL_INTERVAL_S
    runner.events_here = True  # submitted by us, with our socket's client id
    assert runner.poll_interval() >= 0.8 * runner_mod.SAFETY_POLL_S > runner_mod.POLL_INTERVAL_S
    socket.is_connected = False
    assert runner.poll_interval() == runner_mod.POLL_INTERVAL_S


async def test_a_finished_job_is_handed_to_delivery_in_process(
    pg_dsn: str, fake_comfy: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fast_engine(monkeypatch)
    adopted: list[UUID] = []
    real_adopt = gen_db.adopt

    async def adopt(db: Any, job_id: UUID, **kwargs: Any) -> bool:
        adopted.append(job_id)
        return await real_adopt(db, job_id, **kwargs)

    monkeypatch.setattr(gen_db, "adopt", adopt)
    settings = engine_settings(pg_dsn, tmp_path / "data", [fake_comfy.base_url])
    install_models(fake_comfy, settings)
    deliverer = RecordingDeliverer()
    runtime = await start_runtime(settings, deliverer)
    listen = await runtime.database.pool.acquire()
    notices: list[str] = []
    try:
        await listen.add_listener("animebot_queue", lambda *args: notices.append(args[3]))
        job_id = await submit(runtime, 1, "a lighthouse --steps 2")
        (done,) = await wait_all(runtime, [job_id])
        assert done.status is JobState.DONE and done.lease_owner is None
        assert [j.id for j, _ in deliverer.delivered] == [job_id]
        assert adopted == []  # not through the delivery loop's adoption
        await until(lambda: f"done {job_id}" in notices, what="notice of done")
        assert f"delivering {job_id}" not in notices  # nobody else needed to hear of it
        events = await gen_db.list_events(runtime.database.pool, job_id)
        assert [e.to_status for e in events] == [
            "queued",
            "submitted",
            "running",
            "postprocessing",
            "delivering",
            "done",
        ]

        # The files are complete before delivery: metadata in the original, a JPEG to send,
        # and the recorded size and sha256 are the kept file's.
        (out,) = await runtime.service.outputs(job_id)
        original = Path(out.file_path)
        data = original.read_bytes()
        assert out.sha256 == hashlib.sha256(data).hexdigest()
        assert out.size_bytes == len(data)
        meta = await read_generation_metadata(original)
        assert meta is not None and meta.job_id == str(job_id)
        assert Path(out.delivery_path or "").read_bytes().startswith(b"\xff\xd8")
        assert not list(original.parent.glob("*_comfy*"))  # the download was renamed
    finally:
        await runtime.database.pool.release(listen)
        await runtime.stop()


async def test_a_freed_slot_reads_no_queue_once_it_is_empty(
    pg_dsn: str, fake_comfy: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fast_engine(monkeypatch)
    monkeypatch.setattr(orchestrator_mod, "IDLE_WAKE_S", 60.0)  # no timer rounds here
    reads: list[int] = []
    real_load = gen_db.in_flight_by_backend

    async def load(db: Any) -> dict[str, int]:
        reads.append(1)
        return await real_load(db)

    monkeypatch.setattr(gen_db, "in_flight_by_backend", load)
    settings = engine_settings(pg_dsn, tmp_path / "data", [fake_comfy.base_url])
    install_models(fake_comfy, settings)
    runtime = await start_runtime(settings, RecordingDeliverer())
    try:
        fake_comfy.hold()
        first = await submit(runtime, 1, "first --steps 2")
        await until(lambda: str(first) in fake_comfy.pending_ids, what="first pending")
        await asyncio.sleep(0.3)
        reads.clear()
        fake_comfy.release()  # postprocessing, delivering, done: slots free, queue empty
        await wait_all(runtime, [first])
        await asyncio.sleep(0.3)
        assert reads == []
        second = await submit(runtime, 2, "second --steps 2")  # a queued job: dispatched
        (done,) = await wait_all(runtime, [second])
        assert done.status is JobState.DONE and reads
    finally:
        await runtime.stop()
