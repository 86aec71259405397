"""Generations: the job rows, their state transitions (with history), fair queue order, claims.

The `generations` table is the queue: a job is enqueued by inserting its row with status
`queued`, taken by atomically claiming it for a backend with spare capacity, and every state
change is an UPDATE guarded by the state machine plus an event row, in one transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NoReturn
from uuid import UUID

from core.db.tx import transaction
from core.db.types import Executor
from core.errors import IllegalTransition, NotFound
from core.models import Generation, GenerationEvent, JobKind, Operation
from core.states import CANCELLABLE, FINAL_STATES, JobState, check_transition, sources_of

BACKEND_LOCK_CLASS = 4243
_FINAL = [state.value for state in FINAL_STATES]
# Transitions every engine hears about (NOTIFY animebot_queue), besides the final states:
# queued (something to dispatch), postprocessing (its backend slot is free: dispatch the next
# job now, while ComfyUI still runs the other one in flight, not after the post-processing),
# delivering (something to deliver).
_WAKING = (JobState.QUEUED, JobState.POSTPROCESSING, JobState.DELIVERING)


def notice_state(payload: object) -> JobState | None:
    """The state named by a NOTIFY animebot_queue payload, "<new state> <job id>" (None:
    not understood, assume anything changed)."""
    state, _, _job = str(payload).partition(" ")
    try:
        return JobState(state)
    except ValueError:
        return None


def notice_job(payload: object) -> UUID | None:
    """The job id of a NOTIFY animebot_queue payload (None: not understood)."""
    _state, _, job = str(payload).partition(" ")
    try:
        return UUID(job)
    except ValueError:
        return None


# One statement (one round trip, atomic): the row, its first history entry and the NOTIFY.
_INSERT = """
WITH job AS (
    INSERT INTO generations (id, requester_id, chat_id, thread_id, request_message_id, kind,
        operation, parent_id, prompt_typed, prompt_positive, prompt_negative, character_ids,
        workflow, params, seed, soundtrack)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)
    RETURNING *
), history AS (
    INSERT INTO generation_events (generation_id, from_status, to_status, detail)
    SELECT id, NULL, 'queued', '{}'::jsonb FROM job
)
SELECT job.*, pg_notify('animebot_queue', 'queued ' || job.id::text) AS notified,
    NOT EXISTS (
        SELECT 1 FROM generations q WHERE q.status = 'queued' AND NOT q.cancel_requested
    ) AS alone
FROM job
"""

_EVENT = """
INSERT INTO generation_events (generation_id, from_status, to_status, detail)
VALUES ($1, $2, $3, $4)
"""


async def create_queued(
    db: Executor,
    *,
    id: UUID,
    requester_id: int,
    chat_id: int,
    kind: JobKind,
    prompt_typed: str,
    workflow: str,
    thread_id: int | None = None,
    request_message_id: int | None = None,
    operation: Operation = Operation.GENERATE,
    parent_id: UUID | None = None,
    prompt_positive: str = "",
    prompt_negative: str = "",
    character_ids: list[UUID] | None = None,
    params: dict[str, Any] | None = None,
    seed: int | None = None,
    soundtrack: dict[str, Any] | None = None,
) -> tuple[Generation, bool]:
    """Insert a queued job and its first event (and wake the engines), in one statement.
    Also says whether the queue held no other job when it was inserted (then the job is
    first in line, without ranking the queue)."""
    row = await db.fetchrow(
        _INSERT,
        id,
        requester_id,
        chat_id,
        thread_id,
        request_message_id,
        kind.value,
        operation.value,
        parent_id,
        prompt_typed,
        prompt_positive,
        prompt_negative,
        character_ids or [],
        workflow,
        params or {},
        seed,
        soundtrack,
    )
    assert row is not None  # an INSERT ... RETURNING always returns its row
    return _without(row, "notified", "alone"), bool(row["alone"])


async def get_generation(db: Executor, job_id: UUID) -> Generation | None:
    row = await db.fetchrow("SELECT * FROM generations WHERE id = $1", job_id)
    return None if row is None else Generation.from_record(row)


async def status_of(db: Executor, job_id: UUID) -> JobState | None:
    """A job's state alone (one narrow read); None when there is no such job."""
    status = await db.fetchval("SELECT status FROM generations WHERE id = $1", job_id)
    return None if status is None else JobState(status)


async def require_generation(db: Executor, job_id: UUID) -> Generation:
    job = await get_generation(db, job_id)
    if job is None:
        raise NotFound(f"job {job_id} not found", user_message="That job does not exist.")
    return job


class CancelRequested(IllegalTransition):
    """The transition was refused because a cancel was requested first."""


# One statement (one round trip, its own transaction): the guarded UPDATE, its history row and
# the NOTIFY. `old` locks the row first, so a concurrent cancel request is seen.
_TRANSITION = """
WITH old AS (
    SELECT id, status, cancel_requested FROM generations WHERE id = $1 FOR UPDATE
), moved AS (
    UPDATE generations g SET
        status = $2,
        error = CASE WHEN $2 = 'failed' THEN coalesce($4, error, 'failed') ELSE error END,
        submitted_at = CASE WHEN $2 = 'submitted' THEN now() ELSE submitted_at END,
        running_at = CASE WHEN $2 = 'running' THEN now() ELSE running_at END,
        postprocessing_at = CASE WHEN $2 = 'postprocessing' THEN now()
                                 ELSE postprocessing_at END,
        delivering_at = CASE WHEN $2 = 'delivering' THEN now() ELSE delivering_at END,
        finished_at = CASE WHEN $2 = ANY($5::text[]) THEN now() ELSE finished_at END,
        progress = CASE WHEN $2 = 'done' THEN 1 WHEN $2 = 'queued' THEN 0
                        ELSE coalesce($10::real, progress) END,
        backend = CASE WHEN $2 = 'queued' THEN NULL ELSE backend END,
        lease_owner = CASE WHEN $2 = 'delivering' AND $8 THEN lease_owner
                           WHEN $2 IN ('queued', 'delivering') OR $2 = ANY($5::text[]) THEN NULL
                           ELSE lease_owner END,
        updated_at = now()
    FROM old
    WHERE g.id = old.id AND old.status = ANY($3::text[]) AND NOT (old.cancel_requested AND $7)
    RETURNING g.*, old.status AS from_status
), history AS (
    INSERT INTO generation_events (generation_id, from_status, to_status, detail)
    SELECT id, from_status, $2, $6::jsonb FROM moved
)
SELECT moved.*, CASE WHEN $9 THEN pg_notify('animebot_queue', $2 || ' ' || moved.id::text) END
    AS notified
FROM moved
"""


async def transition(
    db: Executor,
    job_id: UUID,
    target: JobState,
    *,
    error: str | None = None,
    detail: dict[str, Any] | None = None,
    expected: JobState | None = None,
    unless_cancelled: bool = False,
    keep_owner: bool = False,
    progress: float | None = None,
) -> Generation:
    """Move a job to `target`; raises IllegalTransition when its current state does not allow it.

    `expected` narrows the allowed source to one state (compare-and-set against races).
    `unless_cancelled`: refuse (CancelRequested) when a cancel was requested, checked under the
    row lock, so a cancel that got in first always wins. `keep_owner` (to `delivering` only):
    the process keeps its lease and delivers the job itself (no NOTIFY: nobody else may take it
    while this process lives; if it dies, any process adopts it). `progress` sets the
    progress (0..1) in the same statement.
    """
    sources = sources_of(target) if expected is None else frozenset({expected})
    if expected is not None:
        check_transition(expected, target)
    info = dict(detail or {})
    if error is not None:
        info["error"] = error
    keep = keep_owner and target is JobState.DELIVERING
    waking = (target in FINAL_STATES or target in _WAKING) and not keep
    row = await db.fetchrow(
        _TRANSITION,
        job_id,
        target.value,
        [s.value for s in sources],
        error,
        _FINAL,
        info,
        unless_cancelled,
        keep,
        waking,
        None if progress is None else max(0.0, min(1.0, progress)),
    )
    if row is None:
        await refused(db, job_id, target, sources if unless_cancelled else frozenset())
    return _without(row, "from_status", "notified")


async def refused(
    db: Executor, job_id: UUID, target: JobState, cancellable_from: frozenset[JobState]
) -> NoReturn:
    """Why a transition to `target` did not happen (always raises): the job is gone, a cancel
    was requested first (from a state in `cancellable_from`), or the move is illegal."""
    row = await db.fetchrow(
        "SELECT status, cancel_requested FROM generations WHERE id = $1", job_id
    )
    if row is None:
        raise NotFound(f"job {job_id} not found", user_message="That job does not exist.")
    if row["cancel_requested"] and JobState(row["status"]) in cancellable_from:
        raise CancelRequested(f"job {job_id}: cancel requested before {target.value}")
    raise IllegalTransition(f"job {job_id}: illegal transition {row['status']} -> {target.value}")


def _without(row: Any, *keys: str) -> Generation:
    return Generation.from_record({k: v for k, v in row.items() if k not in keys})  # type: ignore[no-any-return]


async def record_event(db: Executor, job_id: UUID, kind: str, detail: dict[str, Any]) -> None:
    """A non-transition entry in the job's history (progress, notes)."""
    status = await db.fetchval("SELECT status FROM generations WHERE id = $1", job_id)
    await db.execute(_EVENT, job_id, status, f"{kind}", detail)


async def list_events(db: Executor, job_id: UUID) -> list[GenerationEvent]:
    rows = await db.fetch(
        "SELECT * FROM generation_events WHERE generation_id = $1 ORDER BY id", job_id
    )
    return [GenerationEvent.from_record(row) for row in rows]


async def set_progress(db: Executor, job_id: UUID, progress: float) -> None:
    await db.execute(
        "UPDATE generations SET progress = $2, updated_at = now() WHERE id = $1"
        " AND status IN ('submitted', 'running')",
        job_id,
        max(0.0, min(1.0, progress)),
    )


async def set_progress_message(db: Executor, job_id: UUID, message_id: int) -> None:
    await db.execute(
        "UPDATE generations SET progress_message_id = $2 WHERE id = $1", job_id, message_id
    )


async def set_prompts(
    db: Executor,
    job_id: UUID,
    *,
    positive: str,
    negative: str,
    seed: int | None,
    params: dict[str, Any],
) -> None:
    await db.execute(
        "UPDATE generations SET prompt_positive = $2, prompt_negative = $3, seed = $4,"
        " params = $5 WHERE id = $1",
        job_id,
        positive,
        negative,
        seed,
        params,
    )


async def record_delivery(
    db: Executor, job_id: UUID, *, result_message_id: int | None, delivery_error: str | None = None
) -> Generation:
    """Record where the result went (before the job is marked done)."""
    row = await db.fetchrow(
        "UPDATE generations SET result_message_id = coalesce($2, result_message_id),"
        " delivery_error = $3, updated_at = now() WHERE id = $1 AND status = 'delivering'"
        " RETURNING *",
        job_id,
        result_message_id,
        delivery_error,
    )
    if row is None:
        raise IllegalTransition(f"job {job_id} is not delivering")
    return Generation.from_record(row)  # type: ignore[no-any-return]


async def request_cancel(db: Executor, job_id: UUID) -> Generation | None:
    row = await db.fetchrow(
        "UPDATE generations SET cancel_requested = true, updated_at = now()"
        " WHERE id = $1 AND status = ANY($2::text[]) RETURNING *",
        job_id,
        [state.value for state in CANCELLABLE],
    )
    if row is not None:
        await db.execute("SELECT pg_notify('animebot_cancel', $1)", str(job_id))
    return None if row is None else Generation.from_record(row)


@dataclass(frozen=True, slots=True)
class QueuedJob:
    """The few columns dispatch and queue events need of a queued job."""

    id: UUID
    chat_id: int
    kind: JobKind
    workflow: str


# The order is computed on the view's narrow rows and only the first `limit` rows are joined
# (joining every queued row first made it 3x slower at 10,000 queued).
_QUEUE_HEAD = """
SELECT g.id, g.chat_id, g.kind, g.workflow FROM (
    SELECT id, turn, served_at, created_at FROM queue_order
    WHERE workflow <> ALL($2::text[])
    ORDER BY turn, served_at NULLS FIRST, created_at, id
    LIMIT $1
) q JOIN generations g ON g.id = q.id
ORDER BY q.turn, q.served_at NULLS FIRST, q.created_at, q.id
"""


async def queue_head(
    db: Executor, limit: int, *, exclude_workflows: list[str] | None = None
) -> list[QueuedJob]:
    """The next queued jobs in fair order (see the `queue_order` view), with only the columns
    dispatch and queue events need (a tenth of the decoding work of full rows)."""
    rows = await db.fetch(_QUEUE_HEAD, limit, exclude_workflows or [])
    return [
        QueuedJob(row["id"], row["chat_id"], JobKind(row["kind"]), row["workflow"]) for row in rows
    ]


async def cancel_requested_among(db: Executor, job_ids: list[UUID]) -> list[UUID]:
    """Which of these jobs have a cancel request (to catch NOTIFYs missed meanwhile)."""
    rows = await db.fetch(
        "SELECT id FROM generations WHERE id = ANY($1::uuid[]) AND cancel_requested", job_ids
    )
    return [row["id"] for row in rows]


_POSITIONS = """
SELECT id, row_number() OVER (ORDER BY turn, served_at NULLS FIRST, created_at, id)
    AS position FROM queue_order
"""


async def queue_positions(db: Executor) -> dict[UUID, int]:
    """1-based position of every queued job in dispatch order."""
    rows = await db.fetch(_POSITIONS)
    return {row["id"]: row["position"] for row in rows}


# The same place as in `queue_positions`, counted instead of ranking the whole queue: the
# job's turn T is its rank among its requester's queued jobs; ahead of it are every
# requester's jobs of turns before T, plus the turn-T jobs of requesters served longer ago
# (never served first), then older. Per requester that is min(queued, T - 1), plus one
# comparison with their T-th job (found through generations_queued_requester_idx).
_POSITION = """
WITH me AS (
    SELECT g.id, g.requester_id, g.created_at, u.last_served_at AS served
    FROM generations g JOIN users u ON u.id = g.requester_id
    WHERE g.id = $1 AND g.status = 'queued' AND NOT g.cancel_requested
), mine AS (
    SELECT count(*) AS turn FROM generations q, me
    WHERE q.requester_id = me.requester_id AND q.status = 'queued' AND NOT q.cancel_requested
      AND (q.created_at, q.id) <= (me.created_at, me.id)
), per AS (
    SELECT requester_id, count(*) AS n FROM generations
    WHERE status = 'queued' AND NOT cancel_requested GROUP BY requester_id
), same_turn AS (
    SELECT count(*) AS n FROM per
    JOIN users u ON u.id = per.requester_id
    CROSS JOIN me CROSS JOIN mine
    CROSS JOIN LATERAL (
        SELECT q.created_at, q.id FROM generations q
        WHERE q.requester_id = per.requester_id AND q.status = 'queued' AND NOT q.cancel_requested
        ORDER BY q.created_at, q.id OFFSET mine.turn - 1 LIMIT 1
    ) x
    WHERE per.requester_id <> me.requester_id AND per.n >= mine.turn
      AND CASE
          WHEN u.last_served_at IS NULL AND me.served IS NULL
              THEN (x.created_at, x.id) < (me.created_at, me.id)
          WHEN u.last_served_at IS NULL THEN true
          WHEN me.served IS NULL THEN false
          ELSE (u.last_served_at, x.created_at, x.id) < (me.served, me.created_at, me.id)
      END
)
SELECT (1 + (SELECT sum(least(per.n, mine.turn - 1)) FROM per, mine) + same_turn.n)::int
FROM me, same_turn
"""


async def queue_position(db: Executor, job_id: UUID) -> int | None:
    """1-based position of a queued job in dispatch order (None when it is not queued)."""
    position: int | None = await db.fetchval(_POSITION, job_id)
    return position


# Runs under the backend's advisory lock, in its own statement: READ COMMITTED gives it a
# snapshot taken after the lock, so it counts every claim committed before ours.
_CLAIM = """
WITH busy AS (
    SELECT count(*) AS n FROM generations
    WHERE backend = $2 AND status IN ('submitted', 'running')
), claimed AS (
    UPDATE generations SET status = 'submitted', backend = $2, lease_owner = $3,
        attempts = attempts + 1, submitted_at = now(), updated_at = now()
    WHERE id = $1 AND status = 'queued' AND NOT cancel_requested AND (SELECT n FROM busy) < $4
    RETURNING *
), served AS (
    UPDATE users SET last_served_at = now() FROM claimed WHERE users.id = claimed.requester_id
), history AS (
    INSERT INTO generation_events (generation_id, from_status, to_status, detail)
    SELECT id, 'queued', 'submitted', jsonb_build_object('backend', $2::text, 'attempt', attempts)
    FROM claimed
)
SELECT * FROM claimed
"""


async def claim(
    db: Executor, job_id: UUID, *, backend: str, owner: int, max_in_flight: int
) -> Generation | None:
    """Take a queued job for `backend` if the backend has a free slot (cluster-wide)."""
    async with transaction(db) as conn:
        await conn.execute(
            "SELECT pg_advisory_xact_lock($1, hashtext($2))", BACKEND_LOCK_CLASS, backend
        )
        row = await conn.fetchrow(_CLAIM, job_id, backend, owner, max_in_flight)
    return None if row is None else Generation.from_record(row)


async def in_flight_by_backend(db: Executor) -> dict[str, int]:
    rows = await db.fetch(
        "SELECT backend, count(*) AS n FROM generations WHERE status IN ('submitted', 'running')"
        " AND backend IS NOT NULL GROUP BY backend"
    )
    return {row["backend"]: row["n"] for row in rows}


async def adopt(db: Executor, job_id: UUID, *, owner: int, previous: int | None) -> bool:
    """Take over a job whose owner died (compare-and-set on the previous owner)."""
    status: str = await db.execute(
        "UPDATE generations SET lease_owner = $2, updated_at = now()"
        " WHERE id = $1 AND lease_owner IS NOT DISTINCT FROM $3"
        " AND status <> ALL($4::text[]) AND status <> 'queued'",
        job_id,
        owner,
        previous,
        _FINAL,
    )
    return status.endswith(" 1")


async def release(db: Executor, job_id: UUID, *, owner: int) -> bool:
    """Give a job back (lease_owner NULL) so another process, or a later retry, takes it."""
    status: str = await db.execute(
        "UPDATE generations SET lease_owner = NULL, updated_at = now()"
        " WHERE id = $1 AND lease_owner = $2",
        job_id,
        owner,
    )
    return status.endswith(" 1")


async def list_deliverable(
    db: Executor, live_owners: list[int], *, limit: int = 50
) -> list[Generation]:
    """Jobs waiting for delivery that no live process holds."""
    rows = await db.fetch(
        "SELECT * FROM generations WHERE status = 'delivering'"
        " AND (lease_owner IS NULL OR lease_owner <> ALL($1::int[]))"
        " ORDER BY delivering_at, id LIMIT $2",
        live_owners,
        limit,
    )
    return [Generation.from_record(row) for row in rows]


async def list_orphans(db: Executor, live_owners: list[int]) -> list[Generation]:
    """Non-final, non-queued jobs whose owning process is gone."""
    rows = await db.fetch(
        "SELECT * FROM generations WHERE status NOT IN ('queued', 'done', 'failed', 'cancelled')"
        " AND (lease_owner IS NULL OR lease_owner <> ALL($1::int[])) ORDER BY created_at",
        live_owners,
    )
    return [Generation.from_record(row) for row in rows]


async def list_by_status(
    db: Executor, statuses: list[JobState], *, limit: int = 1000
) -> list[Generation]:
    rows = await db.fetch(
        "SELECT * FROM generations WHERE status = ANY($1::text[]) ORDER BY created_at, id LIMIT $2",
        [s.value for s in statuses],
        limit,
    )
    return [Generation.from_record(row) for row in rows]


async def list_for_user(
    db: Executor,
    requester_id: int,
    *,
    statuses: list[JobState] | None = None,
    limit: int = 10,
    offset: int = 0,
) -> list[Generation]:
    wanted = [s.value for s in statuses] if statuses else [s.value for s in JobState]
    rows = await db.fetch(
        "SELECT * FROM generations WHERE requester_id = $1 AND status = ANY($2::text[])"
        " ORDER BY created_at DESC, id LIMIT $3 OFFSET $4",
        requester_id,
        wanted,
        limit,
        offset,
    )
    return [Generation.from_record(row) for row in rows]


async def count_active_for_user(db: Executor, requester_id: int) -> int:
    count: int = await db.fetchval(
        "SELECT count(*) FROM generations WHERE requester_id = $1 AND status <> ALL($2::text[])",
        requester_id,
        _FINAL,
    )
    return count


async def count_by_state(db: Executor) -> dict[tuple[str, str], int]:
    rows = await db.fetch(
        "SELECT status, kind, count(*) AS n FROM generations GROUP BY status, kind"
    )
    return {(row["status"], row["kind"]): row["n"] for row in rows}


async def find_by_result_message(db: Executor, chat_id: int, message_id: int) -> Generation | None:
    row = await db.fetchrow(
        "SELECT * FROM generations WHERE chat_id = $1 AND result_message_id = $2",
        chat_id,
        message_id,
    )
    return None if row is None else Generation.from_record(row)
