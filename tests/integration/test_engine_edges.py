"""The engine's edge paths: each has one defined outcome, checked in the database, on the fake
ComfyUI and in the published events.

- a job whose workflow is not installed fails with the reason, never reaches ComfyUI;
- a backend without a workflow's nodes still runs the jobs it can, queued behind many it can't,
  also when the first of them is cancelled just before its claim;
- a process whose view of a backend's load is stale never overfills it;
- a cancel requested while the process was not listening (its connection lost) is honoured
  once it listens again;
- a dead process's jobs whose backend was removed from the settings: requeued elsewhere,
  cancelled when a cancel was requested meanwhile, failed when their outputs were on it;
- two processes recovering the same dead process's job at once: resumed once, delivered once;
- a dead process's prompts are followed on one shared socket under its client id;
- a deliverer whose preparation raises does not touch the job;
- a ComfyUI WebSocket whose reconnect callbacks fail keeps running.

Real PostgreSQL, the fake ComfyUI over HTTP/WS, the real Runtime and Orchestrator. Races are
forced (a gate, a barrier), never waited for.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from core import runtime as runtime_mod
from core.comfy.client import ComfyClient
from core.comfy.socket import ComfySocket
from core.db import generations as gen_db
from core.db import workers as workers_db
from core.events import JobEvent
from core.jobs import orchestrator as orchestrator_mod
from core.jobs import runner as runner_mod
from core.models import Generation, JobKind, Operation
from core.runtime import Runtime, load_registry
from core.settings import Settings
from core.states import JobState
from core.workflows.patch import patch
from tests.engine import (
    RecordingDeliverer,
    actor,
    engine_settings,
    install_models,
    running_engine,
    start_runtime,
)
from tests.integration.engine_kit import (
    STATE_ORDER,
    HangingDeliverer,
    PostprocessGate,
    crash,
    fast_engine,
    job,
    posts_for,
    queue_deletes_for,
    stop_after_restart,
    submit,
    until,
    wait_all,
)

Factory = Callable[[], Awaitable[Any]]


@pytest.fixture(autouse=True)
def _fast_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    fast_engine(monkeypatch)  # every engine here runs with short timers


async def _steps(runtime: Runtime, job_id: UUID) -> list[str]:
    return [e.to_status for e in await gen_db.list_events(runtime.database.pool, job_id)]


async def _received(queue: asyncio.Queue[JobEvent], *finals: UUID) -> list[JobEvent]:
    """Every event received until each of `finals` has published its final state."""
    seen: list[JobEvent] = []
    waiting = set(finals)
    async with asyncio.timeout(10):
        while waiting:
            event = await queue.get()
            seen.append(event)
            if event.type == "state" and event.final:
                waiting.discard(event.job_id)
    return seen


def _states(events: list[JobEvent], job_id: UUID) -> list[tuple[str, str | None]]:
    """(status, message) of `job_id`'s state events, in order."""
    return [(e.status, e.message) for e in events if e.job_id == job_id and e.type == "state"]


async def _dead(runtime: Runtime, key: int) -> None:
    """Until `key`'s liveness lock is gone (its connection was cut)."""

    async def gone() -> bool:
        return key not in await workers_db.live_workers(runtime.database.pool)

    await until(gone, timeout=10, what=f"worker {key} seen dead")


# -- a workflow that is not installed ------------------------------------------------------


async def test_a_job_whose_workflow_is_not_installed_fails_with_the_reason(
    pg_dsn: str, fake_comfy: Any, tmp_path: Path
) -> None:
    async with running_engine(
        pg_dsn, tmp_path, [fake_comfy], RecordingDeliverer(), image_workflow="gone_sd15"
    ) as runtime:
        async with runtime.events.subscribe() as events:
            me = actor(1)
            await runtime.service.seen(me)
            ticket = await runtime.service.request_scene(me, JobKind.IMAGE, "a fox in the snow")
            assert ticket.position == 1  # not started at once: no backend can run it
            (failed,) = await wait_all(runtime, [ticket.job.id], timeout=10)
            states = _states(await _received(events, failed.id), failed.id)
        assert failed.status is JobState.FAILED
        assert failed.error == "The workflow gone_sd15 is not installed."
        assert await _steps(runtime, failed.id) == ["queued", "failed"]
        assert states == [("failed", failed.error)]
        assert fake_comfy.prompt_posts == []
        # It holds no place: the user may queue as many jobs as before.
        assert await gen_db.count_active_for_user(runtime.database.pool, 1) == 0


def _engine_without_video_nodes(
    pg_dsn: str, tmp_path: Path, fake_comfy: Any
) -> AbstractAsyncContextManager[Runtime]:
    """An engine whose only backend lacks a node of the video workflow and runs one job at a
    time; a user may queue many jobs."""
    fake_comfy.available_nodes = set(fake_comfy.object_info()) - {"EmptyHunyuanLatentVideo"}
    return running_engine(
        pg_dsn,
        tmp_path,
        [fake_comfy],
        RecordingDeliverer(),
        comfyui_max_in_flight=1,
        max_queued_per_user=50,
    )


async def test_jobs_a_backend_can_run_are_not_hidden_behind_jobs_it_cannot(
    pg_dsn: str, fake_comfy: Any, tmp_path: Path
) -> None:
    """The only backend lacks a node of the video workflow. More video jobs than one dispatch
    round reads wait ahead of an image job (and of a job whose workflow is not installed): the
    image job still runs, the other one fails, the video jobs wait for a backend."""
    async with _engine_without_video_nodes(pg_dsn, tmp_path, fake_comfy) as runtime:
        handle = runtime.orchestrator.backends.get(fake_comfy.base_url)
        assert handle.healthy and not handle.supports("txt2video_wan")
        assert handle.supports("txt2img_sd15")
        # A round reads the free slots (1) plus DISPATCH_LOOKAHEAD jobs: all of them videos.
        videos = [
            await submit(runtime, 1, f"a dancing girl {n}", JobKind.VIDEO)
            for n in range(1 + orchestrator_mod.DISPATCH_LOOKAHEAD)
        ]
        unknown_id = UUID(int=77)
        unknown, _alone = await gen_db.create_queued(
            runtime.database.pool,
            id=unknown_id,
            requester_id=1,
            chat_id=1,
            kind=JobKind.IMAGE,
            operation=Operation.GENERATE,
            prompt_typed="a removed workflow",
            workflow="gone_sd15",
        )
        image = await submit(runtime, 1, "a cat on a roof --steps 1")
        done, failed = await wait_all(runtime, [image, unknown.id], timeout=15)
        assert done.status is JobState.DONE, done.error
        assert failed.status is JobState.FAILED
        assert failed.error == "The workflow gone_sd15 is not installed."
        waiting = await wait_all(runtime, videos, {JobState.QUEUED}, timeout=1)
        assert all(j.attempts == 0 for j in waiting)
        assert [post["prompt_id"] for post in fake_comfy.prompt_posts] == [str(image)]


async def _no_dispatch_loop(self: orchestrator_mod.Orchestrator) -> None:
    await asyncio.Event().wait()  # dispatch rounds are run by hand (`dispatch_once`)


async def test_a_job_cancelled_between_the_queue_read_and_its_claim_gives_way_to_the_next(
    pg_dsn: str, fake_comfy: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Behind jobs no backend runs, the backend reads the queue without them; the first job
    it finds is cancelled before the claim lands: the next one is started in the same round."""
    monkeypatch.setattr(orchestrator_mod.Orchestrator, "_dispatch_loop", _no_dispatch_loop)
    async with _engine_without_video_nodes(pg_dsn, tmp_path, fake_comfy) as runtime:
        runtime.service.starter = None  # (the engine's rounds take every job)
        for n in range(1 + orchestrator_mod.DISPATCH_LOOKAHEAD):
            await submit(runtime, 1, f"a dancing girl {n}", JobKind.VIDEO)
        dropped = await submit(runtime, 1, "cancelled at the last moment --steps 1")
        taken = await submit(runtime, 1, "the next one --steps 1")
        real_claim = gen_db.claim
        claims: list[UUID] = []

        async def cancelled_first(db: Any, job_id: UUID, **kwargs: Any) -> Any:
            claims.append(job_id)
            if job_id == dropped:
                await runtime.service.cancel(actor(1), dropped)
            return await real_claim(db, job_id, **kwargs)

        monkeypatch.setattr(gen_db, "claim", cancelled_first)
        assert await runtime.orchestrator.dispatch_once() == 1
        assert claims == [dropped, taken]
        assert (await job(runtime, dropped)).status is JobState.CANCELLED
        (done,) = await wait_all(runtime, [taken], timeout=10)
        assert done.status is JobState.DONE, done.error
        assert [post["prompt_id"] for post in fake_comfy.prompt_posts] == [str(taken)]


async def test_a_process_with_a_stale_view_of_a_full_backend_leaves_the_job_queued(
    pg_dsn: str, fake_comfy: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The only slot is taken by another process's job; this process has not seen it (no
    dispatch round since). A job it queues into the empty queue is not started beside it:
    the database refuses the claim, the user is told the job waits, and it runs once the
    slot is free."""
    settings = engine_settings(
        pg_dsn, tmp_path / "data", [fake_comfy.base_url], comfyui_max_in_flight=1
    )
    install_models(fake_comfy, settings)
    real_loop = orchestrator_mod.Orchestrator._dispatch_loop
    monkeypatch.setattr(orchestrator_mod.Orchestrator, "_dispatch_loop", _no_dispatch_loop)
    stale = await start_runtime(settings, RecordingDeliverer())
    monkeypatch.setattr(orchestrator_mod.Orchestrator, "_dispatch_loop", real_loop)
    worker = await start_runtime(settings, RecordingDeliverer())
    try:
        fake_comfy.hold()
        first = await submit(worker, 1, "the slot taker --steps 1")
        assert (await job(worker, first)).status is JobState.SUBMITTED
        who = actor(2)
        await stale.service.seen(who)
        ticket = await stale.service.request_scene(who, JobKind.IMAGE, "a second --steps 1")
        assert ticket.position == 1  # told it waits, first in line
        second = ticket.job.id
        assert (await job(stale, second)).status is JobState.QUEUED
        assert fake_comfy.pending_ids == [str(first)]
        fake_comfy.release()
        jobs = await wait_all(worker, [first, second], timeout=15)
        assert [j.status for j in jobs] == [JobState.DONE, JobState.DONE]
        assert [post["prompt_id"] for post in fake_comfy.prompt_posts] == [str(first), str(second)]
    finally:
        fake_comfy.release()
        await worker.stop()
        await stale.stop()


# -- a cancel whose NOTIFY was missed --------------------------------------------------------


async def test_a_cancel_requested_while_the_process_was_not_listening_is_honoured(
    pg_dsn: str, fake_comfy: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The process's listening connection is lost (PostgreSQL restarted, a network cut); a
    cancel requested before it is registered again is found when it listens again, not half
    a minute later by the runner's slow safety check."""
    monkeypatch.setattr(runner_mod, "SAFETY_POLL_S", 600.0)  # the runner's own check: far
    monkeypatch.setattr(runtime_mod, "LIVENESS_CHECK_S", 0.05)
    monkeypatch.setattr(runtime_mod, "LIVENESS_RETRY_S", 0.05)
    gate = asyncio.Event()
    entered = asyncio.Event()
    real_register = workers_db.register_again

    async def register_again(conn: Any, key: int, role: str) -> bool:
        entered.set()
        await gate.wait()
        return await real_register(conn, key, role)

    monkeypatch.setattr(workers_db, "register_again", register_again)
    async with running_engine(pg_dsn, tmp_path, [fake_comfy], RecordingDeliverer()) as runtime:
        try:
            fake_comfy.hold()
            first = await submit(runtime, 1, "a long wait --steps 2")
            await until(lambda: str(first) in fake_comfy.pending_ids, what="prompt pending")
            cancels = runtime.orchestrator.ctx.cancels

            runtime._liveness.terminate()  # the connection is gone, unnoticed by the server yet
            await asyncio.wait_for(entered.wait(), 5)  # the process registers again...
            assert (await runtime.service.cancel(actor(1), first)).cancel_requested
            await asyncio.sleep(0.3)  # (a NOTIFY, had anyone heard it, would be handled by now)
            assert not cancels[first].is_set()  # ... and nobody heard the cancel
            assert (await job(runtime, first)).status is JobState.SUBMITTED

            gate.set()
            (cancelled,) = await wait_all(runtime, [first], timeout=5)
            assert cancelled.status is JobState.CANCELLED
            assert queue_deletes_for(fake_comfy, first) >= 1
            assert str(first) not in fake_comfy.pending_ids
            live = await workers_db.live_workers(runtime.database.pool)
            assert runtime.worker_key in live  # alive again, under the same key

            # Listening again: the next cancel arrives by its NOTIFY.
            second = await submit(runtime, 2, "another wait --steps 2")
            await until(lambda: str(second) in fake_comfy.pending_ids, what="second pending")
            await runtime.service.cancel(actor(2), second)
            (again,) = await wait_all(runtime, [second], timeout=5)
            assert again.status is JobState.CANCELLED
            assert posts_for(fake_comfy, first) and str(first) not in fake_comfy.history
        finally:
            gate.set()
            fake_comfy.release()


# -- a dead process's jobs whose backend was removed from the settings -----------------------


async def test_a_dead_process_s_jobs_on_a_backend_removed_from_the_settings(
    pg_dsn: str, fake_comfy_factory: Factory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The process dies with three jobs on backend X; it is restarted with X replaced by Y.
    A submitted job goes back to the queue and runs on Y; one whose user cancelled it while
    no process ran ends cancelled (it must not wait in the queue, never taken); one that was
    post-processing fails (its outputs were on X). Each change is published to the chat."""
    gate = PostprocessGate()
    gate.install(monkeypatch)
    old, new = await fake_comfy_factory(), await fake_comfy_factory()
    before = engine_settings(pg_dsn, tmp_path / "a", [old.base_url], comfyui_max_in_flight=3)
    after = engine_settings(pg_dsn, tmp_path / "b", [new.base_url], comfyui_max_in_flight=3)
    install_models(old, before)
    install_models(new, after)
    first = await start_runtime(before, RecordingDeliverer())
    second: Runtime | None = None
    crashed = False
    try:
        old.hold()
        post = await submit(first, 1, "post-processing --steps 1")
        gate.held.add(post)
        old.release()
        await until(lambda: post in gate.entered, what="post-processing")
        old.hold()
        moved = await submit(first, 2, "requeued --steps 1")
        dropped = await submit(first, 3, "cancelled meanwhile --steps 1")
        await until(lambda: {str(moved), str(dropped)} <= set(old.pending_ids), what="both pending")
        assert [(await job(first, i)).status for i in (post, moved, dropped)] == [
            JobState.POSTPROCESSING,
            JobState.SUBMITTED,
            JobState.SUBMITTED,
        ]
        await crash(first)
        crashed = True

        second = await Runtime.start(after)
        await _dead(second, first.worker_key)
        # The user cancels while no engine runs: the request is recorded, nobody hears it.
        assert (await second.service.cancel(actor(3), dropped)).cancel_requested
        chat = RecordingDeliverer()
        async with second.events.subscribe() as events:
            await second.start_engine(deliverer=chat)
            done, cancelled, failed = await wait_all(second, [moved, dropped, post], timeout=15)
            published = await _received(events, moved, dropped, post)

        assert done.status is JobState.DONE, done.error
        assert done.backend == new.base_url and done.attempts == 2
        history = await gen_db.list_events(second.database.pool, moved)
        requeue = [h for h in history if h.to_status == "queued" and h.from_status is not None]
        assert len(requeue) == 1 and requeue[0].detail == {
            "requeued": "backend no longer configured"
        }
        assert len(posts_for(new, moved)) == 1
        # the chat sees it wait again, then go on
        assert [s for s, _ in _states(published, moved)][:2] == ["queued", "submitted"]

        assert cancelled.status is JobState.CANCELLED
        assert await _steps(second, dropped) == ["queued", "submitted", "cancelled"]
        assert posts_for(new, dropped) == []
        assert _states(published, dropped) == [("cancelled", None)]

        assert failed.status is JobState.FAILED
        assert failed.error == "Its GPU server is no longer configured."
        assert (await _steps(second, post))[-2:] == ["postprocessing", "failed"]
        assert _states(published, post) == [("failed", failed.error)]
        assert posts_for(new, post) == []

        assert [j.id for j, _ in chat.delivered] == [moved]
        assert await gen_db.count_active_for_user(second.database.pool, 3) == 0
    finally:
        gate.open()
        old.release()
        await stop_after_restart(first, second, first_crashed=crashed)


# -- two processes recovering the same dead process's job ------------------------------------


def _barrier(monkeypatch: pytest.MonkeyPatch, name: str, parties: int) -> None:
    """`gen_db.<name>` returns only once `parties` callers have read: they all saw the same
    rows before any acted on them."""
    real = getattr(gen_db, name)
    barrier = asyncio.Barrier(parties)

    async def read_together(*args: Any, **kwargs: Any) -> Any:
        rows = await real(*args, **kwargs)
        async with asyncio.timeout(5):
            await barrier.wait()
        return rows

    monkeypatch.setattr(gen_db, name, read_together)


async def test_two_processes_reconciling_at_once_resume_a_dead_process_s_job_once(
    pg_dsn: str, fake_comfy: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(orchestrator_mod, "RECONCILE_INTERVAL_S", 600.0)  # only when asked
    settings = engine_settings(pg_dsn, tmp_path / "data", [fake_comfy.base_url])
    install_models(fake_comfy, settings)
    chats = [RecordingDeliverer() for _ in range(3)]
    runtimes = [await start_runtime(settings, chat) for chat in chats]
    crashed: Runtime | None = None
    try:
        fake_comfy.hold()
        job_id = await submit(runtimes[0], 1, "a lighthouse --steps 2")
        await until(lambda: str(job_id) in fake_comfy.pending_ids, what="prompt pending")
        owner = (await job(runtimes[0], job_id)).lease_owner
        crashed = next(r for r in runtimes if r.worker_key == owner)
        others = [r for r in runtimes if r is not crashed]
        await crash(crashed)
        await _dead(others[0], crashed.worker_key)

        _barrier(monkeypatch, "list_orphans", 2)
        adopted = await asyncio.gather(*(r.orchestrator.reconcile() for r in others))
        assert sorted(adopted) == [0, 1]  # both saw the orphan, one took it
        winner = others[adopted.index(1)]
        loser = others[adopted.index(0)]
        assert job_id in winner.orchestrator.runners
        assert job_id not in loser.orchestrator.runners
        assert (await job(winner, job_id)).lease_owner == winner.worker_key

        fake_comfy.release()
        (done,) = await wait_all(winner, [job_id], timeout=15)
        assert done.status is JobState.DONE, done.error
        assert len(posts_for(fake_comfy, job_id)) == 1  # found in ComfyUI, never resubmitted
        delivered = [j.id for chat in chats for j, _ in chat.delivered]
        assert delivered == [job_id]
        assert (await _steps(winner, job_id)).count("submitted") == 1
    finally:
        fake_comfy.release()
        for runtime in runtimes:
            if runtime is not crashed:
                await runtime.stop()


async def _no_delivery_loop(self: orchestrator_mod.Orchestrator) -> None:
    await asyncio.Event().wait()  # deliveries are started by hand (`deliver_pending`)


async def test_two_processes_delivering_a_dead_process_s_job_at_once_deliver_it_once(
    pg_dsn: str, fake_comfy: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(orchestrator_mod.Orchestrator, "_delivery_loop", _no_delivery_loop)
    settings = engine_settings(pg_dsn, tmp_path / "data", [fake_comfy.base_url])
    install_models(fake_comfy, settings)
    dying_chat = HangingDeliverer()
    first = await start_runtime(settings, dying_chat)
    others: list[Runtime] = []
    chats = [RecordingDeliverer(), RecordingDeliverer()]
    try:
        job_id = await submit(first, 1, "a rooftop at dusk --steps 1")
        await until(lambda: job_id in dying_chat.attempts, what="inside the delivery")
        others = [await start_runtime(settings, chat) for chat in chats]
        await crash(first)
        await _dead(others[0], first.worker_key)
        assert (await job(others[0], job_id)).status is JobState.DELIVERING

        _barrier(monkeypatch, "list_deliverable", 2)
        await asyncio.gather(*(r.orchestrator.deliver_pending() for r in others))
        (done,) = await wait_all(others[0], [job_id], timeout=10)
        assert done.status is JobState.DONE
        delivered = [(n, j.id) for n, chat in enumerate(chats) for j, _ in chat.delivered]
        assert len(delivered) == 1 and delivered[0][1] == job_id
        assert done.result_message_id == chats[delivered[0][0]].next_message_id
        assert (await _steps(others[0], job_id)).count("done") == 1
    finally:
        for runtime in others:
            await runtime.stop()


async def test_a_dead_process_s_prompts_share_one_followed_socket_until_the_last_ends(
    pg_dsn: str, fake_comfy: Any, tmp_path: Path
) -> None:
    """Two prompts of a dead process wait in ComfyUI under its client id. The next process
    follows both on one socket under that id: the first job ending does not close it (the
    second's step-by-step progress goes on); the last one does."""
    settings = engine_settings(
        pg_dsn, tmp_path / "data", [fake_comfy.base_url], comfyui_max_in_flight=2
    )
    install_models(fake_comfy, settings)
    first = await start_runtime(settings, RecordingDeliverer())
    second: Runtime | None = None
    try:
        fake_comfy.hold()
        short = await submit(first, 1, "a short one --steps 2")
        long = await submit(first, 2, "a long one --steps 6")
        await until(
            lambda: {str(short), str(long)} <= set(fake_comfy.pending_ids), what="both pending"
        )
        old_client = first.orchestrator.backends.client_id
        await crash(first)
        await until(lambda: old_client not in fake_comfy.connected_client_ids, what="ws gone")

        chat = RecordingDeliverer()
        second = await start_runtime(settings, chat)
        await until(lambda: old_client in fake_comfy.connected_client_ids, what="followed")
        fake_comfy.step_delay_s = 0.1
        async with second.events.subscribe() as events:
            fake_comfy.release()
            seen = await _received(events, short, long)
        short_ended = next(
            i for i, e in enumerate(seen) if e.job_id == short and e.status == "postprocessing"
        )
        later_steps = [
            e.step
            for e in seen[short_ended:]
            if e.job_id == long and e.type == "progress" and e.steps == 6 and e.step
        ]
        assert later_steps and later_steps[-1] == 6 and len(later_steps) >= 3, later_steps
        await until(  # given back by the last one
            lambda: old_client not in fake_comfy.connected_client_ids, timeout=5, what="closed"
        )
        assert not second.orchestrator.backends._guests
        jobs = await wait_all(second, [short, long])
        assert [j.status for j in jobs] == [JobState.DONE, JobState.DONE]
        assert sorted(j.id for j, _ in chat.delivered) == sorted([short, long])
        assert len(posts_for(fake_comfy, short)) == len(posts_for(fake_comfy, long)) == 1
    finally:
        fake_comfy.release()
        if second is not None:
            await second.stop()


# -- a deliverer whose preparation raises ------------------------------------------------------


@dataclass
class BrokenPreparer(RecordingDeliverer):
    """`prepare` raises (a bug: its contract says it never does); `preload` records."""

    prepared: list[UUID] = field(default_factory=list)
    preloaded: list[UUID] = field(default_factory=list)

    def prepare(self, job: Generation) -> None:
        self.prepared.append(job.id)
        raise RuntimeError("a bug in prepare")

    def preload(self, job_id: UUID, files: Any) -> None:
        self.preloaded.append(job_id)


async def test_a_delivery_preparation_that_raises_does_not_touch_the_job(
    pg_dsn: str, fake_comfy: Any, tmp_path: Path
) -> None:
    chat = BrokenPreparer()
    async with running_engine(pg_dsn, tmp_path, [fake_comfy], chat) as runtime:
        job_id = await submit(runtime, 1, "a lighthouse --steps 2")
        (done,) = await wait_all(runtime, [job_id])
        assert done.status is JobState.DONE, done.error
        assert done.attempts == 1
        assert chat.prepared == [job_id]  # once: the job was not resumed after it
        assert chat.preloaded == [job_id]  # handed off as usual
        assert [j.id for j, _ in chat.delivered] == [job_id]
        assert len(posts_for(fake_comfy, job_id)) == 1
        assert await _steps(runtime, job_id) == STATE_ORDER


# -- the ComfyUI WebSocket's reconnect callbacks ----------------------------------------------


async def test_failing_reconnect_callbacks_do_not_stop_the_socket(fake_comfy: Any) -> None:
    """A callback that raises (sync or async) is logged; the others still run, the socket
    keeps receiving; a callback still running at close is cancelled."""
    calls: list[str] = []
    hanging_cancelled = asyncio.Event()

    def broken() -> None:
        calls.append("broken")
        raise ValueError("a bug in a callback")

    async def broken_async() -> None:
        calls.append("broken_async")
        raise ValueError("a bug in an async callback")

    async def hanging() -> None:
        calls.append("hanging")
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            hanging_cancelled.set()
            raise

    def fine() -> None:
        calls.append("fine")

    sock = ComfySocket(fake_comfy.base_url, "edge-client", backoff_initial_s=0.05)
    for callback in (broken, broken_async, hanging, fine):
        sock.add_reconnect_callback(callback)
    try:
        await sock.start()
        assert await sock.wait_connected(5)
        await fake_comfy.drop_sockets()
        await until(lambda: sock.connections == 2 and "fine" in calls, timeout=5, what="back")
        await until(lambda: len(calls) == 4, timeout=2, what="every callback")
        assert sorted(calls) == ["broken", "broken_async", "fine", "hanging"]
        assert sock.is_connected

        # Still receiving: a prompt submitted under this client id sends its events here.
        events = sock.subscribe("edge-prompt")
        install_models(fake_comfy)
        workflow = load_registry(Settings.model_construct()).get("txt2img_sd15")
        prompt = patch(workflow, {"positive": "a fox", "seed": 1, "steps": 1}, job_id="edge-prompt")
        async with ComfyClient(fake_comfy.base_url) as client:
            await client.submit(prompt, prompt_id="edge-prompt", client_id="edge-client")
        async with asyncio.timeout(5):
            first = await events.get()
        assert getattr(first, "prompt_id", None) == "edge-prompt"
        assert not hanging_cancelled.is_set()
    finally:
        await sock.close()
    await asyncio.wait_for(hanging_cancelled.wait(), 2)


async def test_a_job_whose_backend_is_lost_after_a_missed_cancel_ends_cancelled(
    pg_dsn: str, fake_comfy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cancel request is in the database but the runner has not seen it yet (its NOTIFY
    missed, the fallback re-read not due); then the GPU server is declared lost: the job is
    not put back in the queue (where a job with a cancel request is never dispatched: it would
    wait there for ever), it ends cancelled."""

    async def not_seen_yet(_runner: Any) -> bool:
        return False

    monkeypatch.setattr(runner_mod.JobRunner, "_cancel_requested", not_seen_yet)
    fake_comfy.step_delay_s = 0.1
    async with running_engine(
        pg_dsn, tmp_path, [fake_comfy], RecordingDeliverer(), backend_lost_after_s=1.0
    ) as runtime:
        job_id = await submit(runtime, 1, "a long walk --steps 30")
        await wait_all(runtime, [job_id], {JobState.RUNNING}, timeout=5)
        await runtime.database.pool.execute(  # the request, without its NOTIFY
            "UPDATE generations SET cancel_requested = true WHERE id = $1", job_id
        )
        await fake_comfy.kill(keep_history=False)
        (ended,) = await wait_all(
            runtime, [job_id], {JobState.CANCELLED, JobState.QUEUED}, timeout=15
        )
        assert ended.status is JobState.CANCELLED
        history = await gen_db.list_events(runtime.database.pool, job_id)
        assert "queued" not in [h.to_status for h in history][1:]  # never requeued
