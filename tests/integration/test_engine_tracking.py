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
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast
from uuid import UUID

import asyncpg
import asyncpg.connection
import pytest

from core.comfy import protocol as p
from core.comfy.routing import EventRouter
from core.db import generations as gen_db
from core.db import outputs as out_db
from core.db.pool import connect
from core.jobs import orchestrator as orchestrator_mod
from core.jobs import runner as runner_mod
from core.jobs.delivery import DeliveryLedger, DeliveryReceipt
from core.jobs.runner import JobRunner
from core.media.metadata import read_generation_metadata
from core.models import Generation, Output
from core.states import JobState
from tests.engine import RecordingDeliverer, running_engine
from tests.integration.engine_kit import (
    PostprocessGate,
    fast_engine,
    job,
    submit,
    until,
    wait_all,
)
from tests.notices import listening


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
    async with running_engine(pg_dsn, tmp_path, [fake_comfy], RecordingDeliverer()) as runtime:
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


async def test_lost_events_are_caught_when_the_socket_reconnects(
    pg_dsn: str, fake_comfy: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fast_engine(monkeypatch)
    monkeypatch.setattr(runner_mod, "SAFETY_POLL_S", 600.0)  # only the reconnection can help
    deliverer = RecordingDeliverer()
    async with running_engine(pg_dsn, tmp_path, [fake_comfy], deliverer) as runtime:
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


async def test_the_safety_poll_finds_a_prompt_whose_events_were_lost(
    pg_dsn: str, fake_comfy: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fast_engine(monkeypatch)
    monkeypatch.setattr(runner_mod, "SAFETY_POLL_S", 0.5)
    async with running_engine(pg_dsn, tmp_path, [fake_comfy], RecordingDeliverer()) as runtime:
        fake_comfy.hold()
        job_id = await submit(runtime, 1, "a silent job --steps 2")
        await until(lambda: str(job_id) in fake_comfy.pending_ids, what="prompt pending")
        _swallow_events_of(monkeypatch, {str(job_id)})
        fake_comfy.release()
        (done,) = await wait_all(runtime, [job_id])  # no socket trouble at all
        assert done.status is JobState.DONE


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
    deliverer = RecordingDeliverer()
    async with running_engine(pg_dsn, tmp_path, [fake_comfy], deliverer) as runtime:
        async with listening(runtime.database.pool) as notices:
            job_id = await submit(runtime, 1, "a lighthouse --steps 2")
            (done,) = await wait_all(runtime, [job_id])
            heard = await notices.wait_for(f"done {job_id}")
        assert done.status is JobState.DONE and done.lease_owner is None
        assert [j.id for j, _ in deliverer.delivered] == [job_id]
        assert adopted == []  # not through the delivery loop's adoption
        assert f"delivering {job_id}" not in heard  # nobody else needed to hear of it
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


async def test_a_freed_slot_reads_no_queue_once_it_is_empty(
    pg_dsn: str, fake_comfy: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fast_engine(monkeypatch)
    monkeypatch.setattr(orchestrator_mod, "IDLE_WAKE_S", 60.0)  # no timer rounds here
    monkeypatch.setattr(orchestrator_mod, "QUEUE_EVENTS_INTERVAL_S", 60.0)
    reads: list[str] = []
    real_load, real_head = gen_db.in_flight_by_backend, gen_db.queue_head

    async def load(db: Any) -> dict[str, int]:
        reads.append("load")
        return await real_load(db)

    async def head(*args: Any, **kwargs: Any) -> Any:
        reads.append("queue")
        return await real_head(*args, **kwargs)

    monkeypatch.setattr(gen_db, "in_flight_by_backend", load)
    monkeypatch.setattr(gen_db, "queue_head", head)
    async with running_engine(pg_dsn, tmp_path, [fake_comfy], RecordingDeliverer()) as runtime:
        fake_comfy.hold()
        first = await submit(runtime, 1, "first --steps 2")
        await until(lambda: str(first) in fake_comfy.pending_ids, what="first pending")
        await asyncio.sleep(0.3)
        reads.clear()
        fake_comfy.release()  # postprocessing, delivering, done: slots free, queue empty
        await wait_all(runtime, [first])
        await asyncio.sleep(0.3)
        assert reads == []
        # A job queued into the empty queue: started at once by this process, which queued
        # it (`start_new`), still without reading the queue or the load, and without a
        # queue-position round (nobody was behind it).
        second = await submit(runtime, 2, "second --steps 2")
        (done,) = await wait_all(runtime, [second])
        assert done.status is JobState.DONE and reads == []


@dataclass
class PreparingDeliverer(RecordingDeliverer):
    """Records `prepare` calls (with the job's state then), the files preloaded and the
    statements sent before each delivery began."""

    prepared: list[tuple[UUID, JobState]] = field(default_factory=list)
    preloaded: list[tuple[UUID, dict[str, bytes]]] = field(default_factory=list)
    statements_at_delivery: list[int] = field(default_factory=list)
    statements: list[str] = field(default_factory=list)

    def prepare(self, job: Generation) -> None:
        self.prepared.append((job.id, job.status))

    def preload(self, job_id: UUID, files: Mapping[str, bytes]) -> None:
        self.preloaded.append((job_id, dict(files)))

    async def deliver(
        self, job: Generation, outputs: list[Output], ledger: DeliveryLedger | None = None
    ) -> DeliveryReceipt:
        self.statements_at_delivery.append(len(self.statements))
        return await super().deliver(job, outputs, ledger)


def _record_statements(monkeypatch: pytest.MonkeyPatch, into: list[str]) -> None:
    """Every SQL statement this process sends, in order."""
    conn_cls = asyncpg.connection.Connection
    execute, do_execute = conn_cls.execute, conn_cls._do_execute

    async def recorded_execute(self: Any, query: str, *args: Any, **kwargs: Any) -> Any:
        if not args:
            into.append(" ".join(query.split()))
        return await execute(self, query, *args, **kwargs)

    async def recorded_do_execute(self: Any, query: str, *args: Any, **kwargs: Any) -> Any:
        into.append(" ".join(query.split()))
        return await do_execute(self, query, *args, **kwargs)

    monkeypatch.setattr(conn_cls, "execute", recorded_execute)
    monkeypatch.setattr(conn_cls, "_do_execute", recorded_do_execute)


async def test_the_hand_off_path_reads_nothing_back(
    pg_dsn: str, fake_comfy: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """From ComfyUI's end to the deliverer: the outputs and the `delivering` transition are
    one statement, the outputs are handed over in memory (not read back), and the deliverer
    was told to prepare while ComfyUI worked."""
    fast_engine(monkeypatch)
    deliverer = PreparingDeliverer()
    finished_at: list[int] = []
    real_finish = JobRunner._finish

    async def finish(self: JobRunner, entry: dict[str, Any]) -> None:
        finished_at.append(len(deliverer.statements))
        await real_finish(self, entry)

    monkeypatch.setattr(JobRunner, "_finish", finish)
    listed_before_delivery: list[UUID] = []
    real_list = out_db.list_outputs

    async def list_outputs(db: Any, job_id: UUID) -> list[Output]:
        if not deliverer.delivered:  # (after it, the library filing reads them)
            listed_before_delivery.append(job_id)
        return await real_list(db, job_id)

    monkeypatch.setattr(out_db, "list_outputs", list_outputs)
    async with running_engine(pg_dsn, tmp_path, [fake_comfy], deliverer) as runtime:
        _record_statements(monkeypatch, deliverer.statements)
        fake_comfy.hold()
        job_id = await submit(runtime, 1, "a lighthouse --steps 2")
        await until(lambda: str(job_id) in fake_comfy.pending_ids, what="prompt pending")
        await until(lambda: deliverer.prepared, what="prepared")
        assert deliverer.prepared == [(job_id, JobState.SUBMITTED)]  # while ComfyUI works
        fake_comfy.release()
        (done,) = await wait_all(runtime, [job_id])
        assert done.status is JobState.DONE

    [(handed, outputs)] = deliverer.delivered
    assert handed.id == job_id and handed.status is JobState.DELIVERING
    assert outputs == [
        o.model_copy(update={"telegram_message_id": None, "telegram_file_id": None})
        for o in await _outputs(pg_dsn, job_id)
    ]
    assert listed_before_delivery == []  # handed over: never read back
    [(preloaded_id, files)] = deliverer.preloaded  # and the JPEG to send, from memory
    photo = Path(outputs[0].delivery_path or "")
    assert preloaded_id == job_id and files == {str(photo): photo.read_bytes()}
    window = deliverer.statements[finished_at[0] : deliverer.statements_at_delivery[0]]
    touching_outputs = [s for s in window if "outputs" in s]
    assert len(touching_outputs) == 1 and "'delivering'" in touching_outputs[0]
    for table in ("users", "characters", "chats"):
        assert not [s for s in window if f"FROM {table}" in s], window
    transitions = [s for s in window if s.startswith("WITH old AS")]
    assert len(transitions) == 1  # `postprocessing`; `delivering` rode on the outputs' statement


async def _outputs(dsn: str, job_id: UUID) -> list[Output]:
    conn = await connect(dsn)
    try:
        return await out_db.list_outputs(conn, job_id)
    finally:
        await conn.close()


# -- outputs fetched as their `executed` events come ---------------------------------------------


def _swallow_finish_of(monkeypatch: pytest.MonkeyPatch, job_ids: set[str]) -> None:
    """`executing{node: null}` of these prompts never reaches their subscriber: the runner
    learns that they finished from its own poll of the history."""
    real = EventRouter.route

    def route(self: EventRouter, event: p.Event, now: float) -> str | None:
        if isinstance(event, p.Executing) and event.finished and event.prompt_id in job_ids:
            return None
        return real(self, event, now)

    monkeypatch.setattr(EventRouter, "route", route)


async def _early_job(
    fake_comfy: Any,
    tmp_path: Path,
    pg_dsn: str,
    monkeypatch: pytest.MonkeyPatch,
    gate: PostprocessGate,
    *,
    swallow_finish: bool = False,
) -> tuple[Generation, list[Output]]:
    """One job through the engine; returns the job done and its outputs."""
    fast_engine(monkeypatch)
    gate.install(monkeypatch)
    swallowed: set[str] = set()
    if swallow_finish:
        monkeypatch.setattr(runner_mod, "SAFETY_POLL_S", 2.0)
        _swallow_finish_of(monkeypatch, swallowed)
    async with running_engine(pg_dsn, tmp_path, [fake_comfy], RecordingDeliverer()) as runtime:
        try:
            fake_comfy.hold()
            job_id = await submit(runtime, 1, "a lighthouse --steps 2")
            swallowed.add(str(job_id))
            gate.held.add(job_id)
            fake_comfy.release()
            await until(lambda: job_id in gate.entered, what="post-processing started")
            if swallow_finish:
                # Started on the `executed` event: ComfyUI's end is not even known yet.
                assert _history_reads(fake_comfy, job_id) == 0
                assert (await job(runtime, job_id)).status in (JobState.SUBMITTED, JobState.RUNNING)
            gate.open()
            (done,) = await wait_all(runtime, [job_id])
            return done, await runtime.service.outputs(job_id)
        finally:
            gate.open()


def _assert_files_recorded(output: Output) -> None:
    data = Path(output.file_path).read_bytes()
    assert output.sha256 == hashlib.sha256(data).hexdigest() and output.size_bytes == len(data)
    assert Path(output.delivery_path or "").read_bytes().startswith(b"\xff\xd8")


async def test_an_output_is_fetched_and_processed_once_its_node_has_run(
    pg_dsn: str, fake_comfy: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = PostprocessGate()
    done, [output] = await _early_job(
        fake_comfy, tmp_path, pg_dsn, monkeypatch, gate, swallow_finish=True
    )
    assert done.status is JobState.DONE
    assert gate.calls == [done.id]  # that work was used, not done again
    _assert_files_recorded(output)


async def test_early_work_on_another_file_than_the_history_lists_is_done_again(
    pg_dsn: str, fake_comfy: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = JobRunner._start_early

    def elsewhere(self: JobRunner, event: p.Executed) -> None:
        real(self, p.Executed(event.prompt_id, "999", event.output))  # another node's

    monkeypatch.setattr(JobRunner, "_start_early", elsewhere)
    gate = PostprocessGate()
    done, [output] = await _early_job(fake_comfy, tmp_path, pg_dsn, monkeypatch, gate)
    assert done.status is JobState.DONE
    assert gate.calls == [done.id, done.id]  # the early work, then the history's
    assert output.comfy_node != "999"
    _assert_files_recorded(output)


async def test_failed_early_work_is_done_again(
    pg_dsn: str, fake_comfy: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = JobRunner._start_early
    tried: list[str] = []

    def missing(self: JobRunner, event: p.Executed) -> None:
        gone = {"images": [{"filename": "gone.png", "subfolder": "", "type": "output"}]}
        tried.append(event.node)
        real(self, p.Executed(event.prompt_id, event.node, gone))

    monkeypatch.setattr(JobRunner, "_start_early", missing)
    gate = PostprocessGate()
    done, [output] = await _early_job(fake_comfy, tmp_path, pg_dsn, monkeypatch, gate)
    assert tried and done.status is JobState.DONE
    assert gate.calls == [done.id]  # only the history's file was post-processed
    assert output.comfy_filename != "gone.png"
    _assert_files_recorded(output)


async def test_unused_early_work_leaves_no_files(
    pg_dsn: str, fake_comfy: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = JobRunner._start_early

    def twice(self: JobRunner, event: p.Executed) -> None:
        real(self, event)
        real(self, p.Executed(event.prompt_id, "999", event.output))  # not in the history

    monkeypatch.setattr(JobRunner, "_start_early", twice)
    gate = PostprocessGate()
    done, [output] = await _early_job(fake_comfy, tmp_path, pg_dsn, monkeypatch, gate)
    assert done.status is JobState.DONE and output.position == 0
    assert gate.calls == [done.id, done.id]  # both early, the first used
    folder = Path(output.file_path).parent
    assert sorted(f.name for f in folder.iterdir()) == ["00_original.png", "00_telegram.jpg"]
    _assert_files_recorded(output)
