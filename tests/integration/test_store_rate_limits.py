"""core.db.rate_limits against a real PostgreSQL: the token bucket of the flood limit (burst,
refill on the database clock, one warning per flood), concurrent hits of one user from several
connections (as from several bot processes), and forgetting the buckets that are full again.

Time passes without sleeping: `age` moves a bucket's last hit into the past, as if the user had
waited that long (the refill is computed from `at` and the database clock)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest

from core.db import rate_limits as store
from core.db.pool import Database, connect
from core.db.rate_limits import RateVerdict
from core.events import EventBus
from core.service import StudioService
from core.settings import Settings

USER = 42
OTHER = 43
SLOW = 0.001  # tokens per second: no refill worth a token during a test


async def age(db: Database, user_id: int, seconds: float) -> None:
    """The user waited `seconds` since the last hit."""
    await db.pool.execute(
        "UPDATE rate_buckets SET at = at - make_interval(secs => $2) WHERE user_id = $1",
        user_id,
        seconds,
    )


async def hits(db: Database, count: int, *, rate: float, burst: int) -> list[RateVerdict]:
    return [await store.hit(db.pool, USER, rate=rate, burst=burst) for _ in range(count)]


async def tokens_of(db: Database, user_id: int) -> float | None:
    value = await db.pool.fetchval("SELECT tokens FROM rate_buckets WHERE user_id = $1", user_id)
    return None if value is None else float(value)


def allowed(verdicts: list[RateVerdict]) -> list[bool]:
    return [v.allowed for v in verdicts]


def warned(verdicts: list[RateVerdict]) -> list[bool]:
    return [v.warn for v in verdicts]


async def test_a_burst_then_refusals_warned_once(db: Database) -> None:
    verdicts = await hits(db, 6, rate=SLOW, burst=3)
    assert allowed(verdicts) == [True, True, True, False, False, False]
    assert warned(verdicts) == [False, False, False, True, False, False]
    assert 0 <= (await tokens_of(db, USER) or 0) < 0.01
    # per user: somebody else has a full bucket
    assert await store.hit(db.pool, OTHER, rate=SLOW, burst=3) == RateVerdict(True, False)
    assert await tokens_of(db, OTHER) == pytest.approx(2, abs=0.01)


async def test_one_token_back_per_period_and_never_above_the_burst(db: Database) -> None:
    rate = 0.01  # a token every 100 s
    assert allowed(await hits(db, 4, rate=rate, burst=3)) == [True, True, True, False]
    await age(db, USER, 100)
    assert allowed(await hits(db, 2, rate=rate, burst=3)) == [True, False]
    await age(db, USER, 250)  # two and a half tokens
    assert allowed(await hits(db, 3, rate=rate, burst=3)) == [True, True, False]
    await age(db, USER, 100_000)  # a long pause fills the bucket, no more
    assert allowed(await hits(db, 4, rate=rate, burst=3)) == [True, True, True, False]


async def test_refill_follows_the_database_clock(db: Database) -> None:
    """No simulated time: four tokens per second, the bucket refills while we wait."""
    first = await hits(db, 2, rate=4.0, burst=2)
    refused = await store.hit(db.pool, USER, rate=4.0, burst=2)
    assert allowed(first) == [True, True] and refused == RateVerdict(False, True)
    await asyncio.sleep(0.3)
    assert (await store.hit(db.pool, USER, rate=4.0, burst=2)).allowed
    lag = await db.pool.fetchval(
        "SELECT extract(epoch FROM clock_timestamp() - at) FROM rate_buckets WHERE user_id = $1",
        USER,
    )
    assert 0 <= float(lag) < 5  # `at` is the database clock's reading of the last hit


async def test_warned_again_only_after_calming_to_half(db: Database) -> None:
    rate, burst = 1.0, 4
    flood = await hits(db, 6, rate=rate, burst=burst)
    assert allowed(flood) == [True] * 4 + [False, False]
    assert warned(flood) == [False] * 4 + [True, False]
    await age(db, USER, 1)  # one token back: still the same flood, no second warning
    again = await hits(db, 3, rate=rate, burst=burst)
    assert allowed(again) == [True, False, False] and not any(warned(again))
    await age(db, USER, 2)  # refilled to half: calm; the next flood is told once more
    calm = await hits(db, 4, rate=rate, burst=burst)
    assert allowed(calm) == [True, True, False, False]
    assert warned(calm) == [False, False, True, False]


async def test_a_sustained_flood_is_warned_once_not_every_other_command(db: Database) -> None:
    """Two commands a second for a minute with one token a second: the allowed ones alternate
    with refusals, and the user is told once; after a real pause, a new flood once more."""
    verdicts: list[RateVerdict] = []
    for _ in range(120):
        verdicts.append(await store.hit(db.pool, USER, rate=1.0, burst=20))
        await age(db, USER, 0.5)
    assert sum(warned(verdicts)) == 1
    assert 20 + 49 <= sum(allowed(verdicts)) <= 20 + 61  # the burst plus about one a second
    await age(db, USER, 30)
    again = await hits(db, 30, rate=1.0, burst=20)
    assert sum(warned(again)) == 1 and sum(allowed(again)) == 20


async def _race(dsn: str, connections: int, each: int, burst: int) -> list[RateVerdict]:
    """`connections` sessions hit the same user `each` times, all starting at once."""
    conns: list[asyncpg.Connection] = [await connect(dsn) for _ in range(connections)]
    start = asyncio.Event()

    async def flood(conn: asyncpg.Connection) -> list[RateVerdict]:
        await start.wait()
        return [await store.hit(conn, USER, rate=SLOW, burst=burst) for _ in range(each)]

    try:
        tasks = [asyncio.create_task(flood(conn)) for conn in conns]
        await asyncio.sleep(0.05)
        start.set()
        return [verdict for result in await asyncio.gather(*tasks) for verdict in result]
    finally:
        for conn in conns:
            await conn.close()


@pytest.mark.parametrize("connections", [2, 8])
async def test_concurrent_hits_of_one_user_are_counted_exactly(
    db: Database, pg_dsn: str, connections: int
) -> None:
    """Hits racing on several connections: exactly `burst` are allowed and one is warned, both
    when the user is new (the first insert races) and for an existing row (its lock)."""
    each = 40 // connections
    first = await _race(pg_dsn, connections, each, burst=5)
    assert len(first) == 40
    assert sum(allowed(first)) == 5 and sum(warned(first)) == 1
    await age(db, USER, 1_000_000)  # full and calm again; the row stays
    second = await _race(pg_dsn, connections, each, burst=5)
    assert sum(allowed(second)) == 5 and sum(warned(second)) == 1


async def test_full_buckets_are_forgotten_without_changing_any_verdict(db: Database) -> None:
    rate, burst = 1.0, 4
    for user in (1, 2, 3):
        for _ in range(burst + 2):  # a flood, warned
            await store.hit(db.pool, user, rate=rate, burst=burst)
    await age(db, 1, burst / rate + 1)  # full again
    await age(db, 2, burst / rate - 1)  # one token short of full
    assert await store.forget_full(db.pool, rate=rate, burst=burst) == 1
    users = await db.pool.fetch("SELECT user_id FROM rate_buckets ORDER BY user_id")
    assert [row["user_id"] for row in users] == [2, 3]
    assert await store.forget_full(db.pool, rate=rate, burst=burst) == 0

    # the forgotten user behaves as if the row were still there: a full, calm bucket
    await store.hit(db.pool, 4, rate=rate, burst=burst)
    await age(db, 4, 1_000)
    for user in (1, 4):
        verdicts = [await store.hit(db.pool, user, rate=SLOW, burst=burst) for _ in range(6)]
        assert allowed(verdicts) == [True] * 4 + [False, False]
        assert warned(verdicts) == [False] * 4 + [True, False]


async def test_the_buckets_are_unlogged(db: Database) -> None:
    """No WAL and no flush wait per hit; a crash of PostgreSQL only refills every bucket."""
    persistence = await db.pool.fetchval(
        "SELECT relpersistence::text FROM pg_class WHERE oid = 'rate_buckets'::regclass"
    )
    assert persistence == "u"


async def test_invalid_limits_are_refused(db: Database) -> None:
    with pytest.raises(ValueError, match="invalid rate limit"):
        await store.hit(db.pool, USER, rate=1.0, burst=0)
    with pytest.raises(ValueError, match="invalid rate limit"):
        await store.hit(db.pool, USER, rate=0.0, burst=5)


async def test_the_service_counts_with_the_settings(db: Database, tmp_path: Path) -> None:
    settings = Settings(
        _env_file=None,
        comfyui_urls=["http://127.0.0.1:9"],
        data_dir=tmp_path,
        rate_limit_burst=2,
        rate_limit_per_second=SLOW,
    )
    service = StudioService(settings, db, EventBus())
    verdicts = [await service.rate_limit(USER) for _ in range(4)]
    assert allowed(verdicts) == [True, True, False, False]
    assert warned(verdicts) == [False, False, True, False]
