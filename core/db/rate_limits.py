"""The per-user flood limit: one token bucket per user in `rate_buckets`, shared by every process.

A bucket holds up to `burst` tokens and refills at `rate` tokens per second; every counted hit
takes one. A flood is warned once: the first refused hit says so (`warn`), the next ones are
silent until the bucket has refilled to half (the user calmed down).

`hit` is one statement, `INSERT ... ON CONFLICT (user_id) DO UPDATE`: a new user's row is
inserted full minus this hit; otherwise the update locks the row and computes from its latest
committed version, even under READ COMMITTED (concurrent hits of one user wait for each other
and each sees the one before). Two first hits racing on a new user are the same: the loser of
the insert waits for the winner and takes the update path. Elapsed time is measured on the
database clock (`clock_timestamp()`), one clock for all processes. The verdict is stored in the
row (`last_allowed`, `last_warn`) so that RETURNING can report it (PostgreSQL 16 has no
`RETURNING old.*`).
"""

from __future__ import annotations

from dataclasses import dataclass

from core.db.types import Executor


@dataclass(frozen=True)
class RateVerdict:
    allowed: bool
    warn: bool  # the first refusal of a flood: tell the user once


# $1 user id, $2 rate (tokens per second), $3 burst. `r` is the bucket refilled up to now;
# `calm` (refilled to half) ends a flood, so the next one is warned again.
_HIT = """
INSERT INTO rate_buckets AS b (user_id, tokens, at, warned, last_allowed, last_warn)
VALUES ($1, $3::float8 - 1, clock_timestamp(), false, true, false)
ON CONFLICT (user_id) DO UPDATE SET
    (tokens, at, warned, last_allowed, last_warn) = (
        SELECT
            CASE WHEN v.allowed THEN v.tokens - 1 ELSE v.tokens END,
            v.now,
            NOT v.allowed OR v.still_warned,
            v.allowed,
            NOT v.allowed AND NOT v.still_warned
        FROM (
            SELECT r.tokens, r.now, r.tokens >= 1 AS allowed,
                   b.warned AND r.tokens < $3::float8 / 2 AS still_warned
            FROM (
                SELECT least(
                    $3::float8,
                    b.tokens
                    + greatest(0, extract(epoch FROM EXCLUDED.at - b.at)::float8) * $2::float8
                ) AS tokens,
                EXCLUDED.at AS now
            ) r
        ) v
    )
RETURNING last_allowed, last_warn
"""


async def hit(db: Executor, user_id: int, *, rate: float, burst: int) -> RateVerdict:
    """Count one hit of `user_id` against a bucket of `burst` tokens refilled at `rate` per
    second; one round trip, atomic across connections."""
    if burst < 1 or rate <= 0:
        raise ValueError(f"invalid rate limit: burst {burst}, rate {rate}")
    row = await db.fetchrow(_HIT, user_id, float(rate), burst)
    assert row is not None  # an upsert always returns its row
    return RateVerdict(allowed=row["last_allowed"], warn=row["last_warn"])


_FORGET_FULL = """
DELETE FROM rate_buckets WHERE at < clock_timestamp() - make_interval(secs => $1)
"""


async def forget_full(db: Executor, *, rate: float, burst: int) -> int:
    """Delete the buckets idle long enough to be full again (`burst / rate` seconds): a new
    row starts full and calm, so they carry no information. Returns how many went."""
    status = await db.execute(_FORGET_FULL, burst / rate)
    return int(status.split()[-1])
