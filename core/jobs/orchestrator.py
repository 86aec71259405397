"""The engine of one process: dispatch queued jobs to backends, resume orphans, deliver.

Loops (each wakes on a PostgreSQL NOTIFY or an in-process event, with a slow timer as a
fallback, so a job never waits for a poll):
- dispatch: for the least-loaded healthy backend with a free slot and the workflow's nodes,
  claim the next job in fair order and start a JobRunner; a job this process queues into an
  empty queue is claimed at once by the service's call to `start_new`, with no queue read;
- queue: tell every waiting job its place in the queue and its ETA when that changes;
- health: check each backend, publish changes;
- reconcile: adopt jobs whose process died (liveness lock gone) and resume them;
- delivery (only with a Deliverer): deliver `delivering` jobs nobody holds, exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any
from uuid import UUID

import asyncpg

from core.db import generations as gen_db
from core.db import outputs as out_db
from core.db import workers as workers_db
from core.errors import AnimeBotError, IllegalTransition, describe
from core.eta import DEFAULT_JOB_SECONDS, queue_eta
from core.events import JobEvent
from core.jobs.backends import BackendHandle, BackendPool
from core.jobs.context import EngineContext
from core.jobs.delivery import Deliverer, DeliveryPreparer, unsent_outputs
from core.jobs.ledger import StoreLedger
from core.jobs.runner import JobRunner
from core.logs import bind_context, clear_context, get_logger
from core.models import Generation, Output
from core.states import JobState

if TYPE_CHECKING:
    from core.runtime import Runtime

log = get_logger(__name__)

IDLE_WAKE_S = 1.0
OWN_QUEUED_KEPT = 1024  # a NOTIFY arrives within moments; this many jobs take far longer
HEALTH_INTERVAL_S = 5.0
RECONCILE_INTERVAL_S = 10.0
DELIVERY_TIMEOUT_S = 180.0
DELIVERY_RETRY_S = 5.0
QUEUE_EVENTS_MIN_S = 0.3  # at most ~3 rounds of queue-position events per second
WAITING_FOR_GPU = "waiting for a GPU server"
QUEUE_EVENTS_INTERVAL_S = 5.0
QUEUE_EVENTS_LIMIT = 1000
QUEUE_EVENTS_BATCH = 200  # queue events published between two yields to the event loop
DISPATCH_LOOKAHEAD = 8  # queued jobs read beyond the free slots (some may not be routable)
RUNNER_HEAD_START = 3  # event-loop turns a runner started by `start_new` gets first


class Orchestrator:
    def __init__(self, runtime: Runtime, *, deliverer: Deliverer | None = None) -> None:
        settings = runtime.settings
        self.runtime = runtime
        self.deliverer = deliverer
        self.backends = BackendPool(
            settings.comfyui_urls, runtime.registry, timeout_s=settings.comfyui_timeout_s
        )
        self.ctx = EngineContext(
            settings=settings,
            db=runtime.database.pool,
            events=runtime.events,
            registry=runtime.registry,
            backends=self.backends,
            owner=runtime.worker_key,
            hand_off=self._hand_off if deliverer is not None else None,
            prepare_delivery=self._prepare_delivery if deliverer is not None else None,
        )
        self.dispatch_wakeup = asyncio.Event()
        # False once a dispatch round has seen the whole queue taken: a freed slot then needs
        # no round, only a newly queued job (or the idle timer) does.
        self._dispatch_due = True
        self._load: dict[str, int] = {}  # jobs in flight per backend, as last seen
        # Jobs queued by this process (`expect`, `start_new`) whose "queued" NOTIFY has not
        # arrived yet (the latest OWN_QUEUED_KEPT): that NOTIFY, however late, needs no round.
        self._own_queued: OrderedDict[UUID, None] = OrderedDict()
        self.queue_changed = asyncio.Event()
        self._positions: dict[UUID, tuple[int, bool]] = {}
        self.runners: dict[UUID, asyncio.Task[None]] = {}
        self.deliveries: dict[UUID, asyncio.Task[None]] = {}
        self._loops: list[asyncio.Task[None]] = []
        self._delivery_backoff: dict[UUID, float] = {}
        self._stopping = False
        self.on_done: list[Callable[[Generation], Awaitable[None]]] = []

    # -- life cycle ---------------------------------------------------------------------

    async def start(self) -> None:
        await self.backends.start()
        await self.backends.check_all(self.ctx.db)
        await self.listen(self.runtime._liveness)
        self.backends.changed.set()
        await self.reconcile()
        loops: list[Callable[[], Coroutine[Any, Any, None]]] = [
            self._dispatch_loop,
            self._health_loop,
            self._reconcile_loop,
            self._queue_loop,
        ]
        if self.deliverer is not None:
            loops.append(self._delivery_loop)
        self._loops = [asyncio.create_task(loop(), name=loop.__name__) for loop in loops]
        log.info(
            "orchestrator started",
            backends=list(self.backends.handles),
            delivers=self.deliverer is not None,
        )

    async def stop(self) -> None:
        self._stopping = True
        tasks = [*self._loops, *self.runners.values(), *self.deliveries.values()]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        listen = self.runtime._liveness
        with contextlib.suppress(Exception):
            await listen.remove_listener("animebot_queue", self._on_queue_notify)
            await listen.remove_listener("animebot_cancel", self._on_cancel_notify)
        await self.backends.close()
        log.info("orchestrator stopped")

    async def listen(self, conn: asyncpg.Connection) -> None:
        """Wake up on NOTIFY (queue changes, cancels) received on the process's liveness
        connection; called again by the Runtime when that connection is replaced."""
        await conn.add_listener("animebot_queue", self._on_queue_notify)
        await conn.add_listener("animebot_cancel", self._on_cancel_notify)
        self._own_queued.clear()  # their notices may be lost: a requeue must not be ignored
        self._on_queue_notify()  # what was notified while nobody listened
        await self._recheck_cancels()

    def _on_queue_notify(self, *args: Any) -> None:
        """NOTIFY animebot_queue ("<state> <job id>"; no arguments: anything may have
        changed). A queued job wakes dispatch; a freed slot only while the queue may still
        hold jobs; a job to deliver wakes delivery."""
        state = gen_db.notice_state(args[3]) if len(args) > 3 else None
        if state is JobState.QUEUED:
            job_id = gen_db.notice_job(args[3])
            if job_id is not None and job_id in self._own_queued:
                # queued by this process, which started it itself or woke dispatch; forgotten
                # now, so that a later requeue of the job is heard
                del self._own_queued[job_id]
                return
        if state is None or state is JobState.QUEUED:
            self._dispatch_due = True
        if self._dispatch_due:
            self.dispatch_wakeup.set()
            self.queue_changed.set()
        if state is None or state is JobState.DELIVERING:
            self.ctx.delivery_wakeup.set()

    async def _recheck_cancels(self) -> None:
        """Cancels requested while this process was not listening (its connection was lost)."""
        waiting = list(self.ctx.cancels)
        if not waiting:
            return
        try:
            requested = await gen_db.cancel_requested_among(self.ctx.db, waiting)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as error:
            log.warning("cancel requests not re-read", error=str(error))
            return
        for job_id in requested:
            if job_id in self.ctx.cancels:
                self.ctx.cancels[job_id].set()

    def _on_cancel_notify(self, _conn: Any, _pid: int, _channel: str, payload: object) -> None:
        with contextlib.suppress(ValueError):
            job_id = UUID(str(payload))
            if job_id in self.ctx.cancels:
                self.ctx.cancels[job_id].set()

    async def _sleep_until(self, event: asyncio.Event, seconds: float) -> bool:
        """Until `event` is set (True) or `seconds` passed (False)."""
        woken = True
        try:
            await asyncio.wait_for(event.wait(), seconds)
        except TimeoutError:
            woken = False
        event.clear()
        return woken

    async def _guard(self, name: str, step: Callable[[], Awaitable[object]]) -> None:
        try:
            await step()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("engine step failed; retrying", step=name)
            await asyncio.sleep(1.0)

    # -- dispatch -------------------------------------------------------------------------

    async def _dispatch_loop(self) -> None:
        while not self._stopping:
            await self._guard("dispatch", self.dispatch_once)
            if not await self._sleep_until(self.dispatch_wakeup, IDLE_WAKE_S):
                self._dispatch_due = True  # the fallback for a missed NOTIFY

    async def dispatch_once(self) -> int:
        """Start as many queued jobs as there are free backend slots; returns how many.

        One round reads the head of the queue (as many jobs as there are free slots, plus a
        few) and gives each job, in fair order, to the least-loaded free backend that has its
        workflow's nodes."""
        if not self._dispatch_due:
            return 0
        self._dispatch_due = False  # a NOTIFY arriving from now on sets it again
        started = 0
        limit = self.ctx.settings.comfyui_max_in_flight
        while True:
            # Both reads at once (one round trip of latency, not two): the head is sized by
            # the load seen last; a guess too small only costs another round.
            wanted = self._free_slots(self._load, limit) + DISPATCH_LOOKAHEAD
            load, head = await asyncio.gather(
                gen_db.in_flight_by_backend(self.ctx.db),
                gen_db.queue_head(self.ctx.db, wanted),
            )
            self._load = load  # kept up to date by the claims below
            free = [b for b in self.backends.usable() if load.get(b.url, 0) < limit]
            if not free:
                self._dispatch_due = True  # jobs may be waiting: a freed slot takes the next
                return started
            claimed, skipped = await self._claim_head(head, free, load, limit)
            if skipped:
                claimed += await self._claim_excluding(free, load, limit)
            started += claimed
            more = len(head) >= wanted
            if skipped or more:
                self._dispatch_due = True
            if claimed == 0 or not more:
                return started

    @property
    def dispatch_due(self) -> bool:
        """Whether the next dispatch round must read the queue (False once a round saw the
        queue empty or every job taken)."""
        return self._dispatch_due

    def expect(self, job_id: UUID) -> None:
        """`job_id` is being queued by this process (see `start_new`)."""
        self._own_queued[job_id] = None
        if len(self._own_queued) > OWN_QUEUED_KEPT:
            self._own_queued.popitem(last=False)

    async def start_new(self, job: Generation | None, job_id: UUID, *, alone: bool) -> bool:
        """Claim a job this process has just queued into an empty queue (it is the head, so
        no queue read is needed) on the least-loaded free backend, as last seen, and start
        it. False when it was not queued after all (`job` None), not alone, or no backend
        takes it now (full as far as we know, or filled by another process): the dispatch
        loop then handles it as any queued job."""
        started = False
        try:
            started = job is not None and alone and await self._claim_new(job)
            return started
        finally:  # (also when the claim failed: the job is waiting, its NOTIFY is ignored)
            if not started:  # (not queued after all: a round finds nothing, at no harm)
                self._dispatch_due = True
                self.dispatch_wakeup.set()
                self.queue_changed.set()

    async def _claim_new(self, job: Generation) -> bool:
        limit = self.ctx.settings.comfyui_max_in_flight
        if self._stopping or job.workflow not in self.ctx.registry:
            return False
        backend = _least_loaded(self.backends.usable(), job.workflow, self._load, limit)
        if backend is None:
            return False
        # Nobody moves up behind a job that was alone in the queue (a job queued meanwhile
        # announces itself): no queue-position round.
        if await self._claim(job.id, backend.url, limit, others_move_up=False) is None:
            return False
        self._load[backend.url] = self._load.get(backend.url, 0) + 1
        # Let the runner build and send its prompt before the caller goes on (the caller's next
        # step, posting the progress message, would otherwise delay the prompt by its own CPU).
        for _ in range(RUNNER_HEAD_START):
            await asyncio.sleep(0)
        return True

    def _left_backend(self, url: str) -> None:
        """A runner of this process is over: its job no longer holds a slot of `url`. The
        load as last seen counts one job fewer there, so that the next job queued into an
        empty queue is started at once (`start_new`) rather than by a dispatch round. A count
        too low only costs a claim that the database refuses (the slot check there is
        cluster-wide); the next round reads the real load."""
        if self._load.get(url, 0) > 0:
            self._load[url] -= 1

    def _free_slots(self, load: dict[str, int], limit: int) -> int:
        return sum(max(0, limit - load.get(b.url, 0)) for b in self.backends.usable())

    async def _claim_head(
        self,
        head: list[gen_db.QueuedJob],
        free: list[BackendHandle],
        load: dict[str, int],
        limit: int,
    ) -> tuple[int, int]:
        """Claim the jobs of `head` in order; returns (claimed, left queued)."""
        claimed = skipped = 0
        for job in head:
            if job.workflow not in self.ctx.registry:
                await self._fail_unknown_workflow(job.id, job.workflow)
                continue
            backend = _least_loaded(free, job.workflow, load, limit)
            if backend is None:
                skipped += 1
                continue
            if await self._claim(job.id, backend.url, limit) is None:
                # Taken or cancelled meanwhile, or the backend filled up (another process).
                load[backend.url] = (await gen_db.in_flight_by_backend(self.ctx.db)).get(
                    backend.url, 0
                )
                skipped += 1
                continue
            load[backend.url] = load.get(backend.url, 0) + 1
            claimed += 1
        return claimed, skipped

    async def _claim_excluding(
        self, free: list[BackendHandle], load: dict[str, int], limit: int
    ) -> int:
        """Jobs left queued because no free backend runs them can hide the ones that could
        run: each backend with slots left reads the queue without the workflows it lacks."""
        claimed = 0
        for backend in sorted(free, key=lambda b: load.get(b.url, 0)):
            if not backend.missing:
                continue
            while load.get(backend.url, 0) < limit:
                job = await self._claim_for(backend.url, sorted(backend.missing), limit)
                if job is None:
                    break
                load[backend.url] = load.get(backend.url, 0) + 1
                claimed += 1
        return claimed

    async def _claim(
        self, job_id: UUID, url: str, limit: int, *, others_move_up: bool = True
    ) -> Generation | None:
        job = await gen_db.claim(
            self.ctx.db, job_id, backend=url, owner=self.ctx.owner, max_in_flight=limit
        )
        if job is not None:
            self.ctx.publish_state(job)
            self._start_runner(job, resume=False)
            if others_move_up:
                self.queue_changed.set()  # everyone behind it moved up
        return job

    # -- queue positions --------------------------------------------------------------------

    async def _queue_loop(self) -> None:
        while not self._stopping:
            await self._guard("queue", self.publish_queue)
            await asyncio.sleep(QUEUE_EVENTS_MIN_S)
            await self._sleep_until(self.queue_changed, QUEUE_EVENTS_INTERVAL_S)

    async def publish_queue(self) -> int:
        """Publish a `queue` event (position, ETA) for every queued job whose position
        changed since the last round; returns how many were published."""
        queued = await gen_db.queue_head(self.ctx.db, QUEUE_EVENTS_LIMIT)
        slots = len(self.backends.usable()) * self.ctx.settings.comfyui_max_in_flight
        waiting = slots == 0  # no GPU server up: say so, and no ETA we cannot keep
        positions: dict[UUID, tuple[int, bool]] = {}
        published = 0
        for position, job in enumerate(queued, start=1):
            positions[job.id] = (position, waiting)
            if self._positions.get(job.id) == (position, waiting):
                continue
            average = DEFAULT_JOB_SECONDS.get(job.kind.value, DEFAULT_JOB_SECONDS["image"])
            self.ctx.events.publish(
                JobEvent(
                    job_id=job.id,
                    type="queue",
                    status=JobState.QUEUED.value,
                    chat_id=job.chat_id,
                    position=position,
                    eta_s=None if waiting else queue_eta(position, average, slots),
                    message=WAITING_FOR_GPU if waiting else None,
                )
            )
            published += 1
            if published % QUEUE_EVENTS_BATCH == 0:
                await asyncio.sleep(0)  # a thousand events: let the loop breathe in between
        self._positions = positions
        return published

    async def _claim_for(self, url: str, excluded: list[str], limit: int) -> Generation | None:
        head = await gen_db.queue_head(self.ctx.db, DISPATCH_LOOKAHEAD, exclude_workflows=excluded)
        for candidate in head:
            if candidate.workflow not in self.ctx.registry:
                await self._fail_unknown_workflow(candidate.id, candidate.workflow)
                continue
            job = await self._claim(candidate.id, url, limit)
            if job is not None:
                return job
            in_flight = (await gen_db.in_flight_by_backend(self.ctx.db)).get(url, 0)
            if in_flight >= limit:
                return None
        return None

    async def _fail_unknown_workflow(self, job_id: UUID, workflow: str) -> None:
        with contextlib.suppress(IllegalTransition):
            failed = await gen_db.transition(
                self.ctx.db,
                job_id,
                JobState.FAILED,
                error=f"The workflow {workflow} is not installed.",
            )
            self.ctx.publish_state(failed)

    def _start_runner(self, job: Generation, *, resume: bool) -> None:
        backend = self.backends.get(job.backend or "")
        if backend is None:
            raise AnimeBotError(f"job {job.id} on unknown backend {job.backend}")
        self.ctx.cancel_event(job.id)
        task = asyncio.create_task(
            JobRunner(self.ctx, job, backend, resume=resume).run(), name=f"job-{job.id}"
        )
        self.runners[job.id] = task

        def finished(_task: asyncio.Task[None]) -> None:
            self.runners.pop(job.id, None)
            self._left_backend(backend.url)
            self.dispatch_wakeup.set()

        task.add_done_callback(finished)

    # -- health and reconcile -------------------------------------------------------------

    async def _health_loop(self) -> None:
        while not self._stopping:
            await self._sleep_until(self.backends.changed, HEALTH_INTERVAL_S)
            await self._guard("health", lambda: self.backends.check_all(self.ctx.db))
            self.dispatch_wakeup.set()

    async def _reconcile_loop(self) -> None:
        while not self._stopping:
            await asyncio.sleep(RECONCILE_INTERVAL_S)
            await self._guard("reconcile", self.reconcile)

    async def reconcile(self) -> int:
        """Adopt and resume every non-final job whose process is gone; returns how many."""
        live = await workers_db.live_workers(self.ctx.db)
        adopted = 0
        for job in await gen_db.list_orphans(self.ctx.db, live):
            if job.status is JobState.DELIVERING or job.id in self.runners:
                continue
            if not await gen_db.adopt(
                self.ctx.db, job.id, owner=self.ctx.owner, previous=job.lease_owner
            ):
                continue
            adopted += 1
            bind_context(job_id=str(job.id))
            log.info("resuming job of a stopped process", status=job.status.value)
            clear_context(["job_id"])
            if job.backend is None or self.backends.get(job.backend) is None:
                await self._requeue_orphan(job)
                continue
            self._start_runner(job, resume=True)
        await workers_db.forget_dead_workers(self.ctx.db, live)
        self.ctx.delivery_wakeup.set()
        return adopted

    async def _requeue_orphan(self, job: Generation) -> None:
        try:
            # (a cancel requested while no process ran must win: a queued job with a cancel
            # request is never dispatched, it would wait in `queued` for ever)
            moved = await gen_db.transition(
                self.ctx.db,
                job.id,
                JobState.QUEUED,
                detail={"requeued": "backend no longer configured"},
                unless_cancelled=True,
            )
        except gen_db.CancelRequested:
            moved = await gen_db.transition(self.ctx.db, job.id, JobState.CANCELLED)
        except IllegalTransition:
            moved = await gen_db.transition(
                self.ctx.db,
                job.id,
                JobState.FAILED,
                error="Its GPU server is no longer configured.",
            )
        self.ctx.publish_state(moved)  # the chat's progress message follows the job's events
        self.dispatch_wakeup.set()

    # -- delivery -------------------------------------------------------------------------

    async def _delivery_loop(self) -> None:
        while not self._stopping:
            await self._guard("delivery", self.deliver_pending)
            await self._sleep_until(self.ctx.delivery_wakeup, IDLE_WAKE_S)

    async def deliver_pending(self) -> None:
        live = await workers_db.live_workers(self.ctx.db)
        now = time.monotonic()
        for job in await gen_db.list_deliverable(self.ctx.db, live):
            if job.id in self.deliveries or self._delivery_backoff.get(job.id, 0) > now:
                continue
            if not await gen_db.adopt(
                self.ctx.db, job.id, owner=self.ctx.owner, previous=job.lease_owner
            ):
                continue
            self._start_delivery(job)

    def _hand_off(self, job: Generation, outputs: list[Output], files: dict[str, bytes]) -> None:
        """A runner of this process finished `job` and kept its lease: deliver it now, with
        no NOTIFY, no list of deliverable jobs and no adoption (if this process dies first,
        its lease is dead and any process delivers the job). `outputs` are the ones the
        runner has just saved and `files` the contents of their delivery files (path ->
        bytes): nothing is read back."""
        if self._stopping:
            return  # delivered by the next process (or this one after a restart)
        self._start_delivery(job, outputs, files)

    def _prepare_delivery(self, job: Generation) -> None:
        """`job`'s prompt is in ComfyUI: the deliverer may read what it will need now."""
        if isinstance(self.deliverer, DeliveryPreparer):
            try:
                self.deliverer.prepare(job)
            except Exception:
                log.exception("delivery not prepared", job_id=str(job.id))

    def _start_delivery(
        self,
        job: Generation,
        outputs: list[Output] | None = None,
        files: dict[str, bytes] | None = None,
    ) -> None:
        task = asyncio.create_task(self._deliver(job, outputs, files), name=f"deliver-{job.id}")
        self.deliveries[job.id] = task
        task.add_done_callback(self._delivery_finished(job.id))

    def _delivery_finished(self, job_id: UUID) -> Callable[[asyncio.Task[None]], None]:
        def finished(_task: asyncio.Task[None]) -> None:
            self.deliveries.pop(job_id, None)

        return finished

    async def _deliver(
        self,
        job: Generation,
        outputs: list[Output] | None = None,
        files: dict[str, bytes] | None = None,
    ) -> None:
        """Deliver `job` and mark it done; on failure release it for a later retry (which
        reads the job and its outputs again). `outputs` and `files`: handed over by this
        process's runner, else read from the database and the disk."""
        assert self.deliverer is not None
        bind_context(job_id=str(job.id))
        try:
            if job.delivery_error is None:
                await self._send_missing(job, outputs, files)
            done = await gen_db.transition(self.ctx.db, job.id, JobState.DONE)
            self._delivery_backoff.pop(job.id, None)
            self.ctx.publish_state(done)
            self.ctx.events.publish(
                JobEvent(job_id=done.id, type="delivered", status="done", chat_id=done.chat_id)
            )
            log.info(
                "job delivered",
                message_id=done.result_message_id,
                delivery_error=done.delivery_error,
            )
            for hook in self.on_done:
                await hook(done)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            log.warning("delivery failed; will retry", error=describe(error))
            self._delivery_backoff[job.id] = time.monotonic() + DELIVERY_RETRY_S
            await gen_db.release(self.ctx.db, job.id, owner=self.ctx.owner)
        finally:
            clear_context(["job_id"])

    async def _send_missing(
        self,
        job: Generation,
        outputs: list[Output] | None = None,
        files: dict[str, bytes] | None = None,
    ) -> None:
        """Send what this job has not delivered yet (all of it, unless a previous process was
        stopped mid-delivery); each message is recorded by the ledger as soon as it is sent.
        `outputs` None: read from the database (an adopted, retried or resumed delivery);
        `files`: contents of the delivery files, handed to the deliverer if it takes them."""
        assert self.deliverer is not None
        if outputs is None:
            outputs = await out_db.list_outputs(self.ctx.db, job.id)
        if job.result_message_id is not None and not unsent_outputs(job, outputs):
            return
        if job.result_message_id is not None:
            log.info("resuming an interrupted delivery", message_id=job.result_message_id)
        if files and isinstance(self.deliverer, DeliveryPreparer):
            self.deliverer.preload(job.id, files)
        # (a timeout scope, not wait_for: no task in between, the delivery starts at once)
        async with asyncio.timeout(DELIVERY_TIMEOUT_S):
            receipt = await self.deliverer.deliver(job, outputs, StoreLedger(self.ctx.db, job.id))
        if receipt.error is not None:  # not delivered (blocked, refused): the job ends anyway
            await gen_db.record_delivery(
                self.ctx.db,
                job.id,
                result_message_id=receipt.message_id,
                delivery_error=receipt.error,
            )


def _least_loaded(
    backends: list[BackendHandle], workflow: str, load: dict[str, int], limit: int
) -> BackendHandle | None:
    """The backend with a free slot (as `load` says) and `workflow`'s nodes that runs the
    fewest jobs; None when there is none."""
    options = [b for b in backends if load.get(b.url, 0) < limit and b.supports(workflow)]
    return min(options, key=lambda b: load.get(b.url, 0)) if options else None
