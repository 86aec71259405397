"""Maintenance ticks are cluster-wide singletons: while one process runs a task, others skip."""

from __future__ import annotations

import asyncio

from core.db.pool import create_pool
from core.scheduler import run_exclusive


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
