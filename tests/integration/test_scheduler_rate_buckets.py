"""The maintenance task that forgets flood-limit buckets which are full again (they carry no
information: a new row starts full and calm)."""

from __future__ import annotations

from pathlib import Path
from typing import cast

from core.db import rate_limits
from core.db.pool import Database
from core.library.service import LibraryFiler
from core.scheduler import RATE_BUCKETS_INTERVAL_S, Maintenance, library_tick_s


async def test_maintenance_forgets_the_buckets_that_are_full_again(
    db: Database, tmp_path: Path
) -> None:
    rate, burst = 0.5, 4  # full again after 8 s idle
    maintenance = Maintenance(db.pool, tmp_path, cast(LibraryFiler, None), rate_limit=(rate, burst))
    for user, idle_s in ((1, 60.0), (2, 9.0), (3, 7.0), (4, 0.0)):
        for _ in range(burst + 1):
            await rate_limits.hit(db.pool, user, rate=rate, burst=burst)
        await db.pool.execute(
            "UPDATE rate_buckets SET at = at - make_interval(secs => $2) WHERE user_id = $1",
            user,
            idle_s,
        )

    await maintenance._tick(5, maintenance.rate_buckets)  # as the scheduler runs it

    left = await db.pool.fetch("SELECT user_id FROM rate_buckets ORDER BY user_id")
    assert [row["user_id"] for row in left] == [3, 4]  # still refilling: kept


async def test_the_task_is_scheduled_every_few_minutes(db: Database, tmp_path: Path) -> None:
    maintenance = Maintenance(db.pool, tmp_path, cast(LibraryFiler, None), rate_limit=(1.0, 20))
    maintenance.start()
    try:
        job = maintenance.scheduler.get_job("rate_buckets")
        assert job is not None and job.trigger.interval.total_seconds() == RATE_BUCKETS_INTERVAL_S
    finally:
        await maintenance.stop()
    assert 60 <= RATE_BUCKETS_INTERVAL_S <= 600


def test_the_library_is_checked_every_minute_or_every_retry_delay_when_shorter() -> None:
    assert library_tick_s(300) == 60
    assert library_tick_s(1.5) == 1.5
