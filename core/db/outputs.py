"""Outputs of a generation: files kept, their Telegram ids and their place in the library."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from core.db.generations import refused
from core.db.types import Executor
from core.models import Generation, JobKind, LibraryStatus, Output
from core.states import JobState, sources_of

# One output inserted, or replaced when its job redoes that position ($1-$16, `_output_args`);
# `_UPSERT` and `_SAVE_DELIVERING` each add their RETURNING. Constants only: no value is ever
# spliced into the SQL.
_UPSERT_OUTPUT = """
INSERT INTO outputs (generation_id, position, kind, file_path, delivery_path, thumbnail_path,
    mime, size_bytes, sha256, width, height, duration_s, comfy_node, comfy_filename,
    library_status, without_music)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)
ON CONFLICT (generation_id, position) DO UPDATE SET
    kind = EXCLUDED.kind, file_path = EXCLUDED.file_path,
    delivery_path = EXCLUDED.delivery_path, thumbnail_path = EXCLUDED.thumbnail_path,
    mime = EXCLUDED.mime, size_bytes = EXCLUDED.size_bytes, sha256 = EXCLUDED.sha256,
    width = EXCLUDED.width, height = EXCLUDED.height, duration_s = EXCLUDED.duration_s,
    comfy_node = EXCLUDED.comfy_node, comfy_filename = EXCLUDED.comfy_filename,
    without_music = EXCLUDED.without_music
"""
_UPSERT = _UPSERT_OUTPUT + "RETURNING *\n"

# The job's last output saved and the job moved to `delivering`, in one statement (one round
# trip, one commit): the same as `_UPSERT` followed by `generations.transition(job,
# DELIVERING, unless_cancelled=True, keep_owner=$18)`, whose SQL `moved` and `history`
# mirror for that one target (keep them in step; a test compares the two ways). `old` locks
# the job's row first, so a cancel request that got in first is seen and wins (the output is
# saved either way, as with two statements). The output comes back as one value of the
# table's row type (its columns would clash with the job's).
_SAVE_DELIVERING = (
    "WITH saved AS ("  # noqa: S608 - SQL constants joined; every value is a $n parameter
    + _UPSERT_OUTPUT
    + """    RETURNING outputs AS output
), old AS (
    SELECT id, status, cancel_requested FROM generations WHERE id = $1 FOR UPDATE
), moved AS (
    UPDATE generations g SET
        status = 'delivering',
        delivering_at = now(),
        lease_owner = CASE WHEN $18 THEN lease_owner ELSE NULL END,
        updated_at = now()
    FROM old
    WHERE g.id = old.id AND old.status = ANY($17::text[]) AND NOT old.cancel_requested
    RETURNING g.*, old.status AS from_status
), history AS (
    INSERT INTO generation_events (generation_id, from_status, to_status, detail)
    SELECT id, from_status, 'delivering', '{}'::jsonb FROM moved
)
SELECT moved.*, (SELECT output FROM saved) AS saved_output,
    CASE WHEN NOT $18 THEN pg_notify('animebot_queue', 'delivering ' || moved.id::text) END
    AS notified
FROM moved
"""
)
_TO_DELIVERING_FROM = [state.value for state in sources_of(JobState.DELIVERING)]


def _output_args(
    *,
    generation_id: UUID,
    position: int,
    kind: JobKind,
    file_path: str,
    mime: str,
    size_bytes: int,
    sha256: str,
    delivery_path: str | None = None,
    thumbnail_path: str | None = None,
    width: int | None = None,
    height: int | None = None,
    duration_s: float | None = None,
    comfy_node: str | None = None,
    comfy_filename: str | None = None,
    library_enabled: bool = True,
    without_music: str | None = None,
) -> tuple[Any, ...]:
    """$1-$16 of `_UPSERT` and `_SAVE_DELIVERING`, from an output's fields."""
    return (
        generation_id,
        position,
        kind.value,
        file_path,
        delivery_path,
        thumbnail_path,
        mime,
        size_bytes,
        sha256,
        width,
        height,
        duration_s,
        comfy_node,
        comfy_filename,
        _library_status(library_enabled).value,
        without_music,
    )


async def save_output(db: Executor, **fields: Any) -> Output:
    """Insert or (on a redo after restart) replace output `position` of a generation; the
    fields are `_output_args`'."""
    row = await db.fetchrow(_UPSERT, *_output_args(**fields))
    return Output.from_record(row)  # type: ignore[no-any-return]


def _library_status(library_enabled: bool) -> LibraryStatus:
    return LibraryStatus.PENDING if library_enabled else LibraryStatus.OFF


async def save_output_delivering(
    db: Executor, *, keep_owner: bool = False, **fields: Any
) -> tuple[Generation, Output]:
    """`save_output` of a job's last output, and the job POSTPROCESSING -> DELIVERING unless a
    cancel was requested, in one statement: the job (as `generations.transition` returns it)
    and the saved output.

    The transition is `generations.transition(..., JobState.DELIVERING, unless_cancelled=True,
    keep_owner=keep_owner)`: checked under the job's row lock (a cancel that got in first
    always wins: `CancelRequested`), refused with `IllegalTransition` from any state but
    `postprocessing`, recorded in the job's history, and announced with NOTIFY unless
    `keep_owner` (this process keeps the lease and delivers the job itself). The output is
    saved even when the transition is refused."""
    row = await db.fetchrow(
        _SAVE_DELIVERING, *_output_args(**fields), _TO_DELIVERING_FROM, keep_owner
    )
    if row is None:
        await refused(
            db, fields["generation_id"], JobState.DELIVERING, sources_of(JobState.DELIVERING)
        )
    output = Output.from_record(row["saved_output"])
    skipped = ("from_status", "saved_output", "notified")
    job = Generation.from_record({k: v for k, v in row.items() if k not in skipped})
    return job, output


async def list_outputs(db: Executor, generation_id: UUID) -> list[Output]:
    rows = await db.fetch(
        "SELECT * FROM outputs WHERE generation_id = $1 ORDER BY position", generation_id
    )
    return [Output.from_record(row) for row in rows]


async def get_output(db: Executor, output_id: UUID) -> Output | None:
    row = await db.fetchrow("SELECT * FROM outputs WHERE id = $1", output_id)
    return None if row is None else Output.from_record(row)


async def record_telegram(
    db: Executor, output_id: UUID, *, file_id: str | None, message_id: int
) -> None:
    await db.execute(
        "UPDATE outputs SET telegram_file_id = coalesce($2, telegram_file_id),"
        " telegram_message_id = $3 WHERE id = $1",
        output_id,
        file_id,
        message_id,
    )


_RECORD_MAIN = """
WITH job AS (
    UPDATE generations SET result_message_id = $3, updated_at = now()
    WHERE id = $1 AND status = 'delivering'
    RETURNING id
)
UPDATE outputs SET telegram_file_id = coalesce($4, telegram_file_id), telegram_message_id = $3
WHERE id = $2 AND generation_id = (SELECT id FROM job)
RETURNING id
"""


async def record_main_delivery(
    db: Executor, job_id: UUID, output_id: UUID, *, message_id: int, file_id: str | None
) -> bool:
    """The job's main result was accepted by the chat: its message id on the job and on the
    output, in one statement. False when the job is not delivering (nothing recorded)."""
    row = await db.fetchrow(_RECORD_MAIN, job_id, output_id, message_id, file_id)
    return row is not None


async def record_library(
    db: Executor,
    output_id: UUID,
    *,
    status: LibraryStatus,
    library_path: str | None = None,
    item_id: str | None = None,
    link: str | None = None,
    next_attempt_at: datetime | None = None,
    unreachable: bool = False,
) -> Output | None:
    """One filing attempt's outcome. `unreachable`: Jellyfin could not be reached at all (see
    `wake_unreachable`)."""
    row = await db.fetchrow(
        "UPDATE outputs SET library_status = $2, library_path = coalesce($3, library_path),"
        " jellyfin_item_id = coalesce($4, jellyfin_item_id),"
        " jellyfin_link = coalesce($5, jellyfin_link),"
        " library_attempts = library_attempts + 1, library_next_at = $6,"
        " library_unreachable = $7"
        " WHERE id = $1 RETURNING *",
        output_id,
        status.value,
        library_path,
        item_id,
        link,
        next_attempt_at,
        unreachable,
    )
    return None if row is None else Output.from_record(row)


# Filing predicates over `outputs o`, with `now` as $1, each written once. Due for a filing
# attempt: never tried, or its next attempt has come (a `filed` output without a next attempt
# is complete: written into a library that no Jellyfin API links).
_DUE_FOR_LIBRARY = (
    "((o.library_status = 'pending' AND (o.library_next_at IS NULL OR o.library_next_at <= $1))"
    " OR (o.library_status = 'filed' AND o.library_next_at <= $1))"
)
# Waiting for a later attempt because its last one could not reach Jellyfin at all.
_WAITING_FOR_JELLYFIN = (
    "o.library_unreachable AND o.library_status IN ('pending', 'filed') AND o.library_next_at > $1"
)
# The statements built from them: SQL constants joined, every value is a $n parameter.
_CLAIM_FOR_LIBRARY = (
    "UPDATE outputs o SET library_next_at = $3, library_unreachable = false"  # noqa: S608
    " WHERE o.id = $2 AND " + _DUE_FOR_LIBRARY + " RETURNING true"
)
_ANY_WAITING_FOR_JELLYFIN = (
    "SELECT EXISTS (SELECT 1 FROM outputs o WHERE " + _WAITING_FOR_JELLYFIN + ")"  # noqa: S608
)
_WAKE_UNREACHABLE = (
    "UPDATE outputs o SET library_next_at = $1 WHERE " + _WAITING_FOR_JELLYFIN  # noqa: S608
)
_DUE_OUTPUTS = (
    "SELECT o.* FROM outputs o JOIN generations g ON g.id = o.generation_id"  # noqa: S608
    " WHERE g.status = 'done' AND " + _DUE_FOR_LIBRARY + " ORDER BY o.created_at LIMIT $2"
)
# Delivered results (outputs of done jobs) by where their filing stands, for /stats and
# /metrics: `filed` counts the complete ones only (no next attempt); `waiting` is every output
# still to be filed or linked (`pending`, or `filed` with a next attempt); `unreachable` the
# part of those that waits because Jellyfin could not be reached.
_LIBRARY_COUNTS = (
    "SELECT count(*) FILTER (WHERE o.library_status = 'linked') AS linked,"  # noqa: S608
    " count(*) FILTER (WHERE o.library_status = 'filed' AND o.library_next_at IS NULL)"
    " AS filed,"
    " count(*) FILTER (WHERE o.library_status = 'pending'"
    " OR (o.library_status = 'filed' AND o.library_next_at IS NOT NULL)) AS waiting,"
    " count(*) FILTER (WHERE " + _WAITING_FOR_JELLYFIN + ") AS unreachable,"
    " count(*) FILTER (WHERE o.library_status = 'failed') AS failed,"
    " count(*) FILTER (WHERE o.library_status = 'off') AS off"
    " FROM outputs o JOIN generations g ON g.id = o.generation_id WHERE g.status = 'done'"
)


@dataclass(frozen=True)
class LibraryCounts:
    """Delivered results by where their filing in the library stands (`library_counts`)."""

    linked: int = 0  # in Jellyfin, with a link
    filed: int = 0  # written into the library folder; no Jellyfin API links it
    waiting: int = 0  # for a filing attempt: never tried yet, or retried later
    unreachable: int = 0  # of `waiting`: because Jellyfin could not be reached
    failed: int = 0  # given up on (the file may still be in the folder)
    off: int = 0  # made while the library was off


async def claim_for_library(
    db: Executor, output_id: UUID, now: datetime, lease_until: datetime
) -> bool:
    """Take a due output for one filing attempt: its next attempt moves to `lease_until`
    (when a process that died mid-attempt is retried), so no other attempt starts meanwhile.
    False when it is not due (another process or task took it, or it is complete). The
    attempt's outcome (`record_library`) sets the real next attempt."""
    return bool(await db.fetchval(_CLAIM_FOR_LIBRARY, now, output_id, lease_until))


async def waiting_for_jellyfin(db: Executor, now: datetime) -> bool:
    """Whether some output waits for a later attempt because Jellyfin could not be reached."""
    return bool(await db.fetchval(_ANY_WAITING_FOR_JELLYFIN, now))


async def wake_unreachable(db: Executor, now: datetime) -> int:
    """Jellyfin answers again: every output that waited because it could not be reached is due
    now, not after its backoff. Returns how many."""
    status = await db.execute(_WAKE_UNREACHABLE, now)
    return int(status.split()[-1])


async def library_counts(db: Executor, now: datetime) -> LibraryCounts:
    """How the filing of delivered results stands, in one statement (`_LIBRARY_COUNTS`)."""
    row = await db.fetchrow(_LIBRARY_COUNTS, now)
    assert row is not None  # an aggregate without GROUP BY: always one row
    return LibraryCounts(**dict(row.items()))


async def due_for_library(db: Executor, now: datetime, *, limit: int = 50) -> list[Output]:
    """Outputs of delivered jobs due for a filing attempt (`_DUE_FOR_LIBRARY`)."""
    rows = await db.fetch(_DUE_OUTPUTS, now, limit)
    return [Output.from_record(row) for row in rows]


async def find_by_telegram_message(db: Executor, chat_id: int, message_id: int) -> Output | None:
    row = await db.fetchrow(
        "SELECT o.* FROM outputs o JOIN generations g ON g.id = o.generation_id"
        " WHERE g.chat_id = $1 AND o.telegram_message_id = $2 ORDER BY o.position LIMIT 1",
        chat_id,
        message_id,
    )
    return None if row is None else Output.from_record(row)


async def recent_images_of_character(
    db: Executor, character_id: UUID, *, limit: int = 8
) -> list[Output]:
    rows = await db.fetch(
        "SELECT o.* FROM outputs o JOIN generations g ON g.id = o.generation_id"
        " WHERE $1 = ANY(g.character_ids) AND o.kind = 'image' AND g.status = 'done'"
        " ORDER BY o.created_at DESC LIMIT $2",
        character_id,
        limit,
    )
    return [Output.from_record(row) for row in rows]
