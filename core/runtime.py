"""Everything one process runs, started and stopped in order.

`Runtime.start(settings, role)` opens the database (embedded server when DATABASE_URL is
unset), migrates it, registers this process (liveness lock), loads the workflows, connects the
event bus across processes and builds the service facade; `run` mode then adds the bot's
deliverer. `stop()` undoes it all in reverse order. When the liveness connection is lost (the
database restarted), the process registers again under the same key once it is back.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import AsyncExitStack, suppress
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from core.db import workers as workers_db
from core.db.migrate import migrate
from core.db.pool import Database, connect, open_database
from core.errors import StoreError
from core.events import EventBus
from core.jobs.delivery import Deliverer
from core.logs import get_logger
from core.service import StudioService
from core.settings import Settings
from core.workflows.registry import Registry

log = get_logger(__name__)

LIVENESS_CHECK_S = 1.0
LIVENESS_RETRY_S = 1.0


def model_defaults(settings: Settings) -> dict[str, str]:
    return {
        "checkpoint": settings.checkpoint_name,
        "sdxl_checkpoint": settings.sdxl_checkpoint_name,
        "video_unet": settings.video_unet_name,
        "video_i2v_unet": settings.video_i2v_unet_name,
        "video_clip": settings.video_clip_name,
        "video_vae": settings.video_vae_name,
        "video_clip_vision": settings.video_clip_vision_name,
        "upscale_model": settings.upscale_model_name,
    }


def load_registry(settings: Settings) -> Registry:
    extra = [settings.workflows_dir] if settings.workflows_dir else []
    return Registry.load(extra_dirs=extra, model_defaults=model_defaults(settings))


@dataclass
class Runtime:
    settings: Settings
    role: str
    database: Database
    events: EventBus
    registry: Registry
    service: StudioService
    worker_key: int
    _liveness: asyncpg.Connection
    _stack: AsyncExitStack
    orchestrator: Any = None
    extras: dict[str, Any] = field(default_factory=dict)
    _watchdog: asyncio.Task[None] | None = None

    @classmethod
    async def start(cls, settings: Settings, role: str = "run") -> Runtime:
        stack = AsyncExitStack()
        try:
            settings.data_dir.mkdir(parents=True, exist_ok=True)
            database = await open_database(
                settings.database_url.get_secret_value() if settings.database_url else None,
                settings.data_dir,
            )
            stack.push_async_callback(database.close)
            async with database.pool.acquire() as conn:
                applied = await migrate(conn)  # type: ignore[arg-type]
            if applied:
                log.info("database migrated", applied=applied)
            liveness = await connect(database.dsn)
            stack.push_async_callback(liveness.close)
            worker_key = await workers_db.register_worker(liveness, role)
            events = EventBus()
            await events.bridge(database.pool, liveness, worker_key)
            stack.push_async_callback(events.close)
            registry = load_registry(settings)
            service = StudioService(settings, database, events)
            stack.push_async_callback(service.music.close)
        except BaseException:
            await stack.aclose()
            raise
        runtime = cls(
            settings, role, database, events, registry, service, worker_key, liveness, stack
        )
        runtime._watchdog = asyncio.create_task(runtime._keep_registered(), name="liveness")
        stack.push_async_callback(runtime._stop_watchdog)
        log.info("runtime started", role=role, worker=worker_key, workflows=registry.names())
        return runtime

    async def _keep_registered(self) -> None:
        """When the liveness connection is lost (PostgreSQL restarted, a network cut), register
        again under the same key as soon as the database is back: otherwise the other processes
        would take this living process for dead, and its listeners would stay deaf."""
        while True:
            await asyncio.sleep(LIVENESS_CHECK_S)
            if not self._liveness.is_closed():
                continue
            log.warning("database connection of this process lost", worker=self.worker_key)
            lost = time.monotonic()
            try:
                await self._register_again()
            except (StoreError, asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as error:
                log.warning("registering again failed, retrying", error=str(error))
                continue
            log.info(
                "process registered again",
                worker=self.worker_key,
                after_s=round(time.monotonic() - lost, 1),
            )

    async def _register_again(self) -> None:
        while True:
            try:
                conn = await connect(self.database.dsn)
            except StoreError:
                await asyncio.sleep(LIVENESS_RETRY_S)
                continue
            try:
                if await workers_db.register_again(conn, self.worker_key, self.role):
                    break
            except BaseException:
                conn.terminate()
                raise
            conn.terminate()  # the old session has not ended yet
            await asyncio.sleep(LIVENESS_RETRY_S)
        self._liveness = conn
        await self.events.bridge(self.database.pool, conn, self.worker_key)
        if self.orchestrator is not None:
            await self.orchestrator.listen(conn)

    async def _stop_watchdog(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            with suppress(asyncio.CancelledError):
                await self._watchdog
            self._watchdog = None
        if not self._liveness.is_closed():
            await self._liveness.close()

    async def start_engine(self, deliverer: Deliverer | None = None) -> None:
        """Start the orchestrator (dispatch, tracking, reconcile) and, with a deliverer,
        the delivery of finished jobs, plus the scheduler."""
        from core.jobs.orchestrator import Orchestrator
        from core.library.service import LibraryFiler
        from core.scheduler import Maintenance, library_tick_s

        # Only a process that delivers files into the library: a link it finds is added to the
        # result's caption (a worker has no Telegram to edit it with).
        filer = (
            None
            if deliverer is None
            else LibraryFiler(self.settings, self.database.pool, deliverer)
        )
        self.orchestrator = Orchestrator(self, deliverer=deliverer)
        if filer is not None:
            self.orchestrator.on_done.append(self._filing_hook(filer))
        await self.orchestrator.start()
        self.service.starter = self.orchestrator
        self._stack.push_async_callback(self.stop_engine)
        maintenance = Maintenance(
            self.database.pool,
            self.settings.data_dir,
            filer,
            rate_limit=(self.settings.rate_limit_per_second, self.settings.rate_limit_burst),
            library_tick_s=library_tick_s(self.settings.library_retry_s),
        )
        maintenance.start()
        self._stack.push_async_callback(maintenance.stop)
        self.extras["filer"] = filer
        self.extras["maintenance"] = maintenance

    def _filing_hook(self, filer: Any) -> Any:
        """File a delivered job in the background: never delays the next delivery."""
        tasks: set[asyncio.Task[None]] = set()

        async def hook(job: Any) -> None:
            task = asyncio.create_task(filer.file_job(job), name=f"file-{job.id}")
            tasks.add(task)
            task.add_done_callback(tasks.discard)

        return hook

    async def stop_engine(self) -> None:
        """Stop the orchestrator (and its deliveries) now, before the bot closes; idempotent."""
        orchestrator, self.orchestrator = self.orchestrator, None
        self.service.starter = None
        if orchestrator is not None:
            await orchestrator.stop()

    async def stop(self) -> None:
        await self._stack.aclose()
        log.info("runtime stopped", role=self.role)
