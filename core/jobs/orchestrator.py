"""The engine of one process: dispatch queued jobs to backends, resume orphans, deliver.

Loops (each wakes on a PostgreSQL NOTIFY or an in-process event, with a slow timer as a
fallback, so a job never waits for a poll):
- dispatch: for the least-loaded healthy backend with a free slot and the workflow's nodes,
  claim the next job in fair order and start a JobRunner;
- queue: tell every waiting job its place in the queue and its ETA when that changes;
- health: check each backend, publish changes;
- reconcile: adopt jobs whose process died (liveness lock gone) and resume them;
- delivery (only with a Deliverer): deliver `delivering` jobs nobody holds, exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any
from uuid import UUID

import asyncpg

from core.db import generations as gen_db
from core.db import outputs as out_db
from core.db import workers as workers_db
from core.db.tx import transaction
from core.errors import AnimeBotError, IllegalTransition
from core.eta import DEFAULT_JOB_SECONDS, queue_eta
from core.events import JobEvent
from core.jobs.backends import BackendPool
from core.jobs.context import EngineContext
from core.jobs.delivery import Deliverer, unsent_outputs
from core.jobs.ledger import StoreLedger
from core.jobs.runner import JobRunner
from core.logs import bind_context, clear_context, get_logger
from core.models import Generation
from core.states import JobState

if TYPE_CHECKING:
    from core.runtime import Runtime

log = get_logger(__name__)

IDLE_WAKE_S = 1.0
HEALTH_INTERVAL_S = 5.0
RECONCILE_INTERVAL_S = 10.0
DELIVERY_TIMEOUT_S = 180.0
DELIVERY_RETRY_S = 5.0
QUEUE_EVENTS_MIN_S = 0.3  # at most ~3 rounds of queue-position events per second
WAITING_FOR_GPU = "waiting for a GPU server"
QUEUE_EVENTS_INTERVAL_S = 5.0
QUEUE_EVENTS_LIMIT = 1000


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
        )
        self.dispatch_wakeup = asyncio.Event()
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
        self._on_queue_notify()  # what was notified while nobody listened

    def _on_queue_notify(self, *_args: Any) -> None:
        self.dispatch_wakeup.set()
        self.queue_changed.set()
        self.ctx.delivery_wakeup.set()

    def _on_cancel_notify(self, _conn: Any, _pid: int, _channel: str, payload: object) -> None:
        with contextlib.suppress(ValueError):
            job_id = UUID(str(payload))
            if job_id in self.ctx.cancels:
                self.ctx.cancels[job_id].set()

    async def _sleep_until(self, event: asyncio.Event, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), seconds)
        event.clear()

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
            await self._sleep_until(self.dispatch_wakeup, IDLE_WAKE_S)

    async def dispatch_once(self) -> int:
        """Start as many queued jobs as there are free backend slots; returns how many."""
        started = 0
        limit = self.ctx.settings.comfyui_max_in_flight
        while True:
            load = await gen_db.in_flight_by_backend(self.ctx.db)
            free = [b for b in self.backends.usable() if load.get(b.url, 0) < limit]
            if not free:
                return started
            free.sort(key=lambda b: load.get(b.url, 0))
            claimed = None
            for backend in free:
                claimed = await self._claim_for(backend.url, sorted(backend.missing), limit)
                if claimed is not None:
                    self._start_runner(claimed, resume=False)
                    self.queue_changed.set()  # everyone behind it moved up
                    started += 1
                    break
            if claimed is None:
                return started

    # -- queue positions --------------------------------------------------------------------

    async def _queue_loop(self) -> None:
        while not self._stopping:
            await self._guard("queue", self.publish_queue)
            await asyncio.sleep(QUEUE_EVENTS_MIN_S)
            await self._sleep_until(self.queue_changed, QUEUE_EVENTS_INTERVAL_S)

    async def publish_queue(self) -> int:
        """Publish a `queue` event (position, ETA) for every queued job whose position
        changed since the last round; returns how many were published."""
        queued = await gen_db.next_queued(self.ctx.db, QUEUE_EVENTS_LIMIT)
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
        self._positions = positions
        return published

    async def _claim_for(self, url: str, excluded: list[str], limit: int) -> Generation | None:
        for candidate in await gen_db.next_queued(self.ctx.db, 8, exclude_workflows=excluded):
            if candidate.workflow not in self.ctx.registry:
                await self._fail_unknown_workflow(candidate)
                continue
            job = await gen_db.claim(
                self.ctx.db, candidate.id, backend=url, owner=self.ctx.owner, max_in_flight=limit
            )
            if job is not None:
                self.ctx.publish_state(job)
                return job
            in_flight = (await gen_db.in_flight_by_backend(self.ctx.db)).get(url, 0)
            if in_flight >= limit:
                return None
        return None

    async def _fail_unknown_workflow(self, job: Generation) -> None:
        with contextlib.suppress(IllegalTransition):
            failed = await gen_db.transition(
                self.ctx.db,
                job.id,
                JobState.FAILED,
                error=f"The workflow {job.workflow} is not installed.",
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
            await gen_db.transition(
                self.ctx.db,
                job.id,
                JobState.QUEUED,
                detail={"requeued": "backend no longer configured"},
            )
        except IllegalTransition:
            await gen_db.transition(
                self.ctx.db,
                job.id,
                JobState.FAILED,
                error="Its GPU server is no longer configured.",
            )
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
            task = asyncio.create_task(self._deliver(job), name=f"deliver-{job.id}")
            self.deliveries[job.id] = task
            task.add_done_callback(self._delivery_finished(job.id))

    def _delivery_finished(self, job_id: UUID) -> Callable[[asyncio.Task[None]], None]:
        def finished(_task: asyncio.Task[None]) -> None:
            self.deliveries.pop(job_id, None)

        return finished

    async def _deliver(self, job: Generation) -> None:
        assert self.deliverer is not None
        bind_context(job_id=str(job.id))
        try:
            if job.delivery_error is None:
                await self._send_missing(job)
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
            log.warning("delivery failed; will retry", error=f"{type(error).__name__}: {error}")
            self._delivery_backoff[job.id] = time.monotonic() + DELIVERY_RETRY_S
            await gen_db.release(self.ctx.db, job.id, owner=self.ctx.owner)
        finally:
            clear_context(["job_id"])

    async def _send_missing(self, job: Generation) -> None:
        """Send what this job has not delivered yet (all of it, unless a previous process was
        stopped mid-delivery); each message is recorded by the ledger as soon as it is sent."""
        assert self.deliverer is not None
        outputs = await out_db.list_outputs(self.ctx.db, job.id)
        if job.result_message_id is not None and not unsent_outputs(job, outputs):
            return
        if job.result_message_id is not None:
            log.info("resuming an interrupted delivery", message_id=job.result_message_id)
        ledger = StoreLedger(self.ctx.db, job.id)
        receipt = await asyncio.wait_for(
            self.deliverer.deliver(job, outputs, ledger), DELIVERY_TIMEOUT_S
        )
        unrecorded = [f for f in receipt.files if f.output_id not in ledger.recorded]
        recorded_main = (ledger.main_message_id, job.result_message_id)
        main_missing = receipt.message_id is not None and receipt.message_id not in recorded_main
        if receipt.error is None and not unrecorded and not main_missing:
            return
        # A deliverer that did not report as it went, or a failure to report: one
        # transaction, so a crash never leaves the job's message id without its outputs'.
        async with transaction(self.ctx.db) as conn:
            await gen_db.record_delivery(
                conn,
                job.id,
                result_message_id=receipt.message_id,
                delivery_error=receipt.error,
            )
            for delivered in unrecorded:
                await out_db.record_telegram(
                    conn,
                    delivered.output_id,
                    file_id=delivered.file_id,
                    message_id=delivered.message_id,
                )
