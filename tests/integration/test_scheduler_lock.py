"""Maintenance ticks are cluster-wide singletons: while one process runs a task, others skip."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import cast

import pytest

from core.db.pool import create_pool
from core.library.service import LibraryFiler
from core.scheduler import Maintenance, run_exclusive
from tests import log_capture
from tests.log_capture import Logs

logs = log_capture.logs  # the fixture (JSON lines at INFO while the test runs)


async def test_only_one_process_runs_a_tick(pg_dsn: str) -> None:
    pools = [await create_pool(pg_dsn, max_size=2) for _ in range(3)]  # three "processes"
    started = asyncio.Event()
    release = asyncio.Event()
    runs: list[int] = []

    async def task(index: int) -> None:
        runs.append(index)
        started.set()
        await release.wait()

    try:
        first = asyncio.create_task(run_exclusive(pools[0], 7, lambda: task(0)))
        await started.wait()
        others = await asyncio.gather(
            run_exclusive(pools[1], 7, lambda: task(1)),
            run_exclusive(pools[2], 7, lambda: task(2)),
        )
        assert others == [False, False]
        assert await run_exclusive(pools[1], 8, lambda: asyncio.sleep(0))  # another task key
        release.set()
        assert await first is True
        assert runs == [0]
        # The lock is released afterwards: the next tick runs anywhere.
        assert await run_exclusive(pools[2], 7, lambda: task(2))
        assert runs == [0, 2]
    finally:
        for pool in pools:
            await pool.close()


async def _endless_tick(maintenance: Maintenance) -> asyncio.Task[None]:
    """A library tick, run as the scheduler runs it, whose task never ends by itself (like
    filing that waits for Jellyfin to index a file); returned once it is running."""
    started = asyncio.Event()

    async def library() -> None:
        started.set()
        await asyncio.Event().wait()

    tick = asyncio.create_task(maintenance._tick(1, library))
    await started.wait()
    return tick


async def test_stopping_interrupts_a_tick_in_progress_quietly_and_waits_for_it(
    pg_dsn: str, tmp_path: Path, logs: Logs
) -> None:
    """A shutdown during a long tick (filing that waits for Jellyfin to index a file): the tick
    is interrupted and awaited before the database closes, said at info level, and nothing
    reaches APScheduler as a job that "raised an exception"."""
    pool = await create_pool(pg_dsn, max_size=2)
    maintenance = Maintenance(pool, tmp_path, cast(LibraryFiler, None), rate_limit=(1.0, 5))
    try:
        tick = await _endless_tick(maintenance)
        await maintenance.stop()
        assert tick.done() and tick.exception() is None  # ended, no CancelledError escaping
        assert await run_exclusive(pool, 1, lambda: asyncio.sleep(0))  # its lock was released
    finally:
        await pool.close()
    (line,) = logs.lines("maintenance task interrupted by shutdown")
    assert line["level"] == "info" and line["task"] == "library"
    assert not logs.lines("maintenance task failed")


async def test_a_tick_cancelled_while_running_on_is_not_swallowed(
    pg_dsn: str, tmp_path: Path
) -> None:
    pool = await create_pool(pg_dsn, max_size=2)
    maintenance = Maintenance(pool, tmp_path, cast(LibraryFiler, None), rate_limit=(1.0, 5))
    try:
        tick = await _endless_tick(maintenance)
        tick.cancel()  # not a shutdown: the cancellation goes on
        with pytest.raises(asyncio.CancelledError):
            await tick
    finally:
        await pool.close()
