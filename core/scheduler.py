"""Periodic maintenance on APScheduler, safe with several processes.

Each tick takes a PostgreSQL advisory lock for its task (`pg_try_advisory_lock`): when another
process is already running the same task, this one skips the tick. Tasks: retry library filing,
reset daily quotas, forget dead processes, expire old temporary files, forget the flood-limit
buckets that are full again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from core.db import people
from core.db import rate_limits as rate_db
from core.db import workers as workers_db
from core.library.service import LibraryFiler
from core.logs import get_logger

log = get_logger(__name__)

TASK_LOCK_CLASS = 4244
TEMP_MAX_AGE_S = 24 * 3600
RATE_BUCKETS_INTERVAL_S = 300
LIBRARY_TICK_S = 60.0


async def run_exclusive(db: asyncpg.Pool, key: int, task: Callable[[], Awaitable[object]]) -> bool:
    """Run `task` unless another process holds its lock; True when it ran."""
    async with db.acquire() as conn:
        got = await conn.fetchval("SELECT pg_try_advisory_lock($1, $2)", TASK_LOCK_CLASS, key)
        if not got:
            return False
        try:
            await task()
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1, $2)", TASK_LOCK_CLASS, key)
    return True


UPLOAD_MAX_AGE_S = 7 * 24 * 3600
# Only our own folders: never DATA_DIR/pgdata (PostgreSQL keeps its own temporary files there).
SCANNED_FOLDERS = ("outputs", "references", "music")


def _is_partial(path: Path) -> bool:
    return path.name.endswith(".part") or ".tmp" in path.name


def expire_temp_files(root: Path, now: float, max_age_s: float = TEMP_MAX_AGE_S) -> int:
    """Delete partial downloads/encodes (`*.part`, `.tmp*`) older than `max_age_s` from our
    folders in DATA_DIR, and audio users sent for a soundtrack once it is a week old."""
    removed = 0
    uploads = root / "music" / "uploads"
    for folder in SCANNED_FOLDERS:
        for path in (root / folder).rglob("*") if (root / folder).is_dir() else ():
            limit = UPLOAD_MAX_AGE_S if path.parent == uploads else max_age_s
            if not path.is_file() or not (path.parent == uploads or _is_partial(path)):
                continue
            try:
                if now - path.stat().st_mtime > limit:
                    path.unlink()
                    removed += 1
            except OSError:
                continue
    return removed


def library_tick_s(retry_s: float) -> float:
    """How often outputs due for filing are looked for (and Jellyfin asked whether it is back):
    every minute, or more often when LIBRARY_RETRY_S is shorter than that."""
    return min(LIBRARY_TICK_S, retry_s)


class Maintenance:
    def __init__(
        self,
        db: asyncpg.Pool,
        data_dir: Path,
        filer: LibraryFiler | None,
        *,
        rate_limit: tuple[float, int],
        library_tick_s: float = LIBRARY_TICK_S,
    ) -> None:
        self.db = db
        self.data_dir = data_dir
        self.filer = filer
        self.rate_limit = rate_limit  # (tokens per second, burst) of the users' flood limit
        self.library_tick_s = library_tick_s
        self.scheduler = AsyncIOScheduler(timezone="UTC")
        self._running: set[asyncio.Task[object]] = set()  # ticks in progress
        self._stopping = False

    def start(self) -> None:
        add = self.scheduler.add_job
        if self.filer is not None:  # (None: a worker, which does not file)
            add(
                self._tick,
                "interval",
                seconds=self.library_tick_s,
                args=[1, self.library],
                id="library",
                max_instances=1,
                coalesce=True,
            )
        add(
            self._tick,
            "interval",
            seconds=300,
            args=[2, self.quotas],
            id="quotas",
            max_instances=1,
            coalesce=True,
            next_run_time=datetime.now(UTC),
        )
        add(
            self._tick,
            "interval",
            seconds=120,
            args=[3, self.workers],
            id="workers",
            max_instances=1,
            coalesce=True,
        )
        add(
            self._tick,
            "interval",
            seconds=3600,
            args=[4, self.temp_files],
            id="temp",
            max_instances=1,
            coalesce=True,
        )
        add(
            self._tick,
            "interval",
            seconds=RATE_BUCKETS_INTERVAL_S,
            args=[5, self.rate_buckets],
            id="rate_buckets",
            max_instances=1,
            coalesce=True,
        )
        self.scheduler.start()

    async def stop(self) -> None:
        """No new ticks; a tick in progress (e.g. filing that waits for Jellyfin to index a
        file) is interrupted and waited for, before the database closes. What it was doing is
        picked up again by the next start (a filing attempt: after its lease)."""
        self._stopping = True
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        running = list(self._running)
        for tick in running:
            tick.cancel()
        await asyncio.gather(*running, return_exceptions=True)

    async def _tick(self, key: int, task: Callable[[], Awaitable[object]]) -> None:
        name = getattr(task, "__name__", key)
        current = asyncio.current_task()
        if current is not None:
            self._running.add(current)
        try:
            await run_exclusive(self.db, key, task)
        except asyncio.CancelledError:
            if not self._stopping:
                raise
            log.info("maintenance task interrupted by shutdown", task=name)
        except Exception:
            log.exception("maintenance task failed", task=name)
        finally:
            self._running.discard(current)

    async def library(self) -> None:
        if self.filer is None:
            return
        tried = await self.filer.file_due()
        if tried:
            log.info("library filing retried", outputs=tried)

    async def quotas(self) -> None:
        reset = await people.reset_quotas(self.db, datetime.now(UTC).date())
        if reset:
            log.info("daily quotas reset", users=reset)

    async def workers(self) -> None:
        live = await workers_db.live_workers(self.db)
        await workers_db.forget_dead_workers(self.db, live)

    async def temp_files(self) -> None:
        removed = await asyncio.to_thread(expire_temp_files, self.data_dir, time.time())
        if removed:
            log.info("old temporary files removed", files=removed)

    async def rate_buckets(self) -> None:
        rate, burst = self.rate_limit
        removed = await rate_db.forget_full(self.db, rate=rate, burst=burst)
        if removed:
            log.info("full flood-limit buckets forgotten", users=removed)
