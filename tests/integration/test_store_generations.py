"""core.db.generations against a real PostgreSQL: the job queue, its state machine and history."""

from __future__ import annotations

import asyncio
import random
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest

from core.db import generations as gens
from core.db import people
from core.db.pool import Database, connect
from core.errors import IllegalTransition, NotFound
from core.models import ChatType, Generation, JobKind, Operation
from core.states import FINAL_STATES, JobState
from tests.notices import hear

ALICE, BOB, CAROL = 1, 2, 3
CHAT = -1000
OTHER_CHAT = -2000
GPU1 = "http://gpu1:8188"
GPU2 = "http://gpu2:8188"
OWNER = 7  # a worker key


@pytest.fixture
async def world(db: Database) -> None:
    for uid, name in ((ALICE, "Alice"), (BOB, "Bob"), (CAROL, "Carol")):
        await people.upsert_user(db.pool, uid, first_name=name)
    await people.upsert_chat(db.pool, CHAT, ChatType.GROUP, title="Studio")
    await people.upsert_chat(db.pool, OTHER_CHAT, ChatType.PRIVATE)


async def _job(db: Database, requester: int = ALICE, **extra: Any) -> Generation:
    fields: dict[str, Any] = {
        "id": uuid.uuid4(),
        "requester_id": requester,
        "chat_id": CHAT,
        "kind": JobKind.IMAGE,
        "prompt_typed": "a girl under cherry blossoms",
        "workflow": "txt2img",
    }
    fields.update(extra)
    job, _alone = await gens.create_queued(db.pool, **fields)
    return job


async def _snapshot(db: Database, job_id: uuid.UUID) -> tuple[Generation, int]:
    job = await gens.require_generation(db.pool, job_id)
    return job, len(await gens.list_events(db.pool, job_id))


async def _drive(db: Database, job_id: uuid.UUID, path: list[JobState]) -> Generation:
    job = await gens.require_generation(db.pool, job_id)
    for state in path:
        if state is JobState.DONE:
            await gens.record_delivery(db.pool, job_id, result_message_id=999)
        job = await gens.transition(db.pool, job_id, state)
    return job


TO_DELIVERING = [JobState.SUBMITTED, JobState.RUNNING, JobState.POSTPROCESSING, JobState.DELIVERING]


# --- create / get ----------------------------------------------------------------------------


@pytest.mark.usefixtures("world")
async def test_create_writes_queued_row_and_event(db: Database, conn: asyncpg.Connection) -> None:
    notices = await hear(conn)
    parent = await _job(db)
    char_id = uuid.uuid4()
    job = await _job(
        db,
        requester=BOB,
        kind=JobKind.VIDEO,
        operation=Operation.ANIMATE,
        parent_id=parent.id,
        thread_id=12,
        request_message_id=34,
        prompt_positive="pos",
        prompt_negative="neg",
        character_ids=[char_id],
        params={"steps": 20, "cfg": 7.5},
        seed=42,
    )
    assert job.status is JobState.QUEUED
    assert (job.requester_id, job.chat_id, job.thread_id, job.request_message_id) == (
        BOB,
        CHAT,
        12,
        34,
    )
    assert job.kind is JobKind.VIDEO and job.operation is Operation.ANIMATE
    assert job.parent_id == parent.id
    assert (job.prompt_positive, job.prompt_negative) == ("pos", "neg")
    assert job.character_ids == [char_id]
    assert job.params == {"steps": 20, "cfg": 7.5}
    assert job.seed == 42
    assert (job.attempts, job.progress, job.backend, job.lease_owner) == (0, 0.0, None, None)
    assert job.error is None and job.cancel_requested is False
    assert job.submitted_at is None and job.finished_at is None
    assert await gens.get_generation(db.pool, job.id) == job

    defaults = parent
    assert defaults.operation is Operation.GENERATE
    assert defaults.character_ids == [] and defaults.params == {} and defaults.seed is None

    events = await gens.list_events(db.pool, job.id)
    assert len(events) == 1
    assert (events[0].from_status, events[0].to_status, events[0].detail) == (None, "queued", {})
    assert events[0].generation_id == job.id

    got = set(await notices.first(2))
    assert got == {f"queued {parent.id}", f"queued {job.id}"}
    assert {gens.notice_state(payload) for payload in got} == {JobState.QUEUED}

    # A failed insert leaves neither a row nor an event behind.
    with pytest.raises(asyncpg.UniqueViolationError):
        await _job(db, id=job.id)
    with pytest.raises(asyncpg.ForeignKeyViolationError):
        await _job(db, requester=4242)
    assert len(await gens.list_events(db.pool, job.id)) == 1
    assert await db.pool.fetchval("SELECT count(*) FROM generations") == 2
    assert await db.pool.fetchval("SELECT count(*) FROM generation_events") == 2

    missing = uuid.uuid4()
    assert await gens.get_generation(db.pool, missing) is None
    with pytest.raises(NotFound):
        await gens.require_generation(db.pool, missing)
    with pytest.raises(NotFound):
        await gens.transition(db.pool, missing, JobState.SUBMITTED)


# --- transitions -----------------------------------------------------------------------------


@pytest.mark.usefixtures("world")
async def test_happy_path_records_one_event_per_transition(db: Database) -> None:
    job = await _job(db)
    claimed = await gens.claim(db.pool, job.id, backend=GPU1, owner=OWNER, max_in_flight=2)
    assert claimed is not None
    assert claimed.status is JobState.SUBMITTED
    assert (claimed.backend, claimed.lease_owner, claimed.attempts) == (GPU1, OWNER, 1)
    assert claimed.submitted_at is not None

    running = await gens.transition(db.pool, job.id, JobState.RUNNING, detail={"node": "3"})
    assert running.status is JobState.RUNNING and running.running_at is not None
    await gens.set_progress(db.pool, job.id, 0.5)
    post = await gens.transition(db.pool, job.id, JobState.POSTPROCESSING)
    assert post.progress == pytest.approx(0.5)
    assert post.postprocessing_at is not None
    assert post.lease_owner == OWNER  # still held while post-processing
    delivering = await gens.transition(db.pool, job.id, JobState.DELIVERING)
    assert delivering.delivering_at is not None
    assert delivering.finished_at is None
    assert delivering.lease_owner is None  # any process may deliver it
    recorded = await gens.record_delivery(db.pool, job.id, result_message_id=555)
    assert recorded.result_message_id == 555 and recorded.delivery_error is None
    done = await gens.transition(db.pool, job.id, JobState.DONE)

    assert done.status is JobState.DONE
    assert done.progress == 1.0
    assert done.backend == GPU1  # kept for history
    assert done.lease_owner is None  # released
    assert done.error is None
    assert done.result_message_id == 555
    stamps = [
        done.created_at,
        done.submitted_at,
        done.running_at,
        done.postprocessing_at,
        done.delivering_at,
        done.finished_at,
    ]
    assert all(s is not None for s in stamps)
    assert stamps == sorted(stamps)  # type: ignore[type-var]
    assert done.updated_at == done.finished_at
    assert await gens.get_generation(db.pool, job.id) == done

    events = await gens.list_events(db.pool, job.id)
    assert [(e.from_status, e.to_status) for e in events] == [
        (None, "queued"),
        ("queued", "submitted"),
        ("submitted", "running"),
        ("running", "postprocessing"),
        ("postprocessing", "delivering"),
        ("delivering", "done"),
    ]
    assert events[1].detail == {"backend": GPU1, "attempt": 1}
    assert events[2].detail == {"node": "3"}
    assert [e.at for e in events] == sorted(e.at for e in events)
    assert [e.id for e in events] == sorted(e.id for e in events)

    # A fast job may finish before it was seen running.
    fast = await _job(db)
    await gens.transition(db.pool, fast.id, JobState.SUBMITTED)
    post = await gens.transition(db.pool, fast.id, JobState.POSTPROCESSING)
    assert post.running_at is None and post.postprocessing_at is not None


ILLEGAL_FROM_LIVE = [
    ([], JobState.QUEUED),
    ([], JobState.RUNNING),
    ([], JobState.POSTPROCESSING),
    ([], JobState.DELIVERING),
    ([], JobState.DONE),
    ([JobState.SUBMITTED], JobState.SUBMITTED),
    ([JobState.SUBMITTED], JobState.DELIVERING),
    ([JobState.SUBMITTED], JobState.DONE),
    ([JobState.SUBMITTED, JobState.RUNNING], JobState.SUBMITTED),
    ([JobState.SUBMITTED, JobState.RUNNING], JobState.RUNNING),
    ([JobState.SUBMITTED, JobState.RUNNING], JobState.DELIVERING),
    ([JobState.SUBMITTED, JobState.RUNNING], JobState.DONE),
    ([JobState.SUBMITTED, JobState.POSTPROCESSING], JobState.QUEUED),
    ([JobState.SUBMITTED, JobState.POSTPROCESSING], JobState.SUBMITTED),
    ([JobState.SUBMITTED, JobState.POSTPROCESSING], JobState.RUNNING),
    ([JobState.SUBMITTED, JobState.POSTPROCESSING], JobState.DONE),
    (TO_DELIVERING, JobState.QUEUED),
    (TO_DELIVERING, JobState.SUBMITTED),
    (TO_DELIVERING, JobState.RUNNING),
    (TO_DELIVERING, JobState.POSTPROCESSING),
    (TO_DELIVERING, JobState.CANCELLED),
]


@pytest.mark.usefixtures("world")
async def test_illegal_transitions_raise_and_leave_row_unchanged(db: Database) -> None:
    for path, target in ILLEGAL_FROM_LIVE:
        job = await _job(db)
        await _drive(db, job.id, path)
        before = await _snapshot(db, job.id)
        with pytest.raises(IllegalTransition):
            await gens.transition(db.pool, job.id, target, error="x")
        assert await _snapshot(db, job.id) == before, (path, target)


FINAL_PATHS = {
    JobState.DONE: [*TO_DELIVERING, JobState.DONE],
    JobState.FAILED: [JobState.SUBMITTED, JobState.FAILED],
    JobState.CANCELLED: [JobState.CANCELLED],
}


@pytest.mark.usefixtures("world")
async def test_final_states_have_no_exit(db: Database) -> None:
    for final in sorted(FINAL_STATES):
        job = await _job(db)
        reached = await _drive(db, job.id, FINAL_PATHS[final])
        assert reached.status is final
        assert reached.finished_at is not None
        before = await _snapshot(db, job.id)
        for target in JobState:
            with pytest.raises(IllegalTransition):
                await gens.transition(db.pool, job.id, target, error="late")
            with pytest.raises(IllegalTransition):
                await gens.transition(db.pool, job.id, target, expected=final)
        assert await _snapshot(db, job.id) == before, final
        assert await gens.claim(db.pool, job.id, backend=GPU1, owner=1, max_in_flight=9) is None


@pytest.mark.usefixtures("world")
async def test_expected_compare_and_set(db: Database) -> None:
    job = await _job(db)
    await _drive(db, job.id, [JobState.SUBMITTED, JobState.RUNNING])
    before = await _snapshot(db, job.id)
    # The caller believed the job was still submitted: refused, even though running -> post is
    # a legal move.
    with pytest.raises(IllegalTransition):
        await gens.transition(db.pool, job.id, JobState.POSTPROCESSING, expected=JobState.SUBMITTED)
    # An illegal pair is refused before the database is asked.
    with pytest.raises(IllegalTransition):
        await gens.transition(db.pool, job.id, JobState.DONE, expected=JobState.RUNNING)
    assert await _snapshot(db, job.id) == before
    moved = await gens.transition(
        db.pool, job.id, JobState.POSTPROCESSING, expected=JobState.RUNNING
    )
    assert moved.status is JobState.POSTPROCESSING


@pytest.mark.usefixtures("world")
async def test_concurrent_compare_and_set_has_one_winner(db: Database) -> None:
    for _ in range(5):
        job = await _job(db)
        await _drive(db, job.id, [JobState.SUBMITTED, JobState.RUNNING])
        results = await asyncio.gather(
            gens.transition(db.pool, job.id, JobState.POSTPROCESSING, expected=JobState.RUNNING),
            gens.transition(db.pool, job.id, JobState.QUEUED, expected=JobState.RUNNING),
            gens.transition(db.pool, job.id, JobState.CANCELLED, expected=JobState.RUNNING),
            return_exceptions=True,
        )
        winners = [r for r in results if isinstance(r, Generation)]
        losers = [r for r in results if isinstance(r, IllegalTransition)]
        assert len(winners) == 1 and len(losers) == 2
        final = await gens.require_generation(db.pool, job.id)
        assert final.status is winners[0].status
        events = await gens.list_events(db.pool, job.id)
        assert [e.from_status for e in events[3:]] == ["running"]


@pytest.mark.usefixtures("world")
async def test_failed_requires_error_text(db: Database) -> None:
    job = await _job(db)
    await gens.claim(db.pool, job.id, backend=GPU1, owner=OWNER, max_in_flight=1)
    failed = await gens.transition(
        db.pool, job.id, JobState.FAILED, error="CUDA out of memory", detail={"node": "KSampler"}
    )
    assert failed.status is JobState.FAILED
    assert failed.error == "CUDA out of memory"
    assert failed.finished_at is not None
    assert failed.lease_owner is None
    last = (await gens.list_events(db.pool, job.id))[-1]
    assert (last.from_status, last.to_status) == ("submitted", "failed")
    assert last.detail == {"node": "KSampler", "error": "CUDA out of memory"}

    bare = await _job(db)
    failed = await gens.transition(db.pool, bare.id, JobState.FAILED)
    assert failed.error  # the DB CHECK requires some text; the store supplies one
    # The CHECK itself: a failed row without error text is refused.
    other = await _job(db)
    with pytest.raises(asyncpg.CheckViolationError):
        await db.pool.execute(
            "UPDATE generations SET status = 'failed', finished_at = now(), error = NULL"
            " WHERE id = $1",
            other.id,
        )
    # Final states need finished_at, and only they may have it.
    with pytest.raises(asyncpg.CheckViolationError):
        await db.pool.execute("UPDATE generations SET status = 'cancelled' WHERE id = $1", other.id)
    with pytest.raises(asyncpg.CheckViolationError):
        await db.pool.execute("UPDATE generations SET finished_at = now() WHERE id = $1", other.id)


@pytest.mark.usefixtures("world")
async def test_done_requires_result_message_or_delivery_error(db: Database) -> None:
    job = await _job(db)
    await _drive(db, job.id, TO_DELIVERING)
    before = await _snapshot(db, job.id)
    with pytest.raises(asyncpg.CheckViolationError):
        await gens.transition(db.pool, job.id, JobState.DONE)
    assert await _snapshot(db, job.id) == before  # the whole transition rolled back

    recorded = await gens.record_delivery(
        db.pool, job.id, result_message_id=None, delivery_error="Forbidden: bot was blocked"
    )
    assert recorded.result_message_id is None
    assert recorded.delivery_error == "Forbidden: bot was blocked"
    done = await gens.transition(db.pool, job.id, JobState.DONE)
    assert done.status is JobState.DONE and done.result_message_id is None

    job = await _job(db)
    with pytest.raises(IllegalTransition):
        await gens.record_delivery(db.pool, job.id, result_message_id=1)
    await _drive(db, job.id, TO_DELIVERING)
    first = await gens.record_delivery(db.pool, job.id, result_message_id=10)
    assert first.result_message_id == 10
    # A later call without a message id keeps the recorded one.
    second = await gens.record_delivery(
        db.pool, job.id, result_message_id=None, delivery_error="caption too long"
    )
    assert second.result_message_id == 10
    assert second.delivery_error == "caption too long"
    await gens.transition(db.pool, job.id, JobState.DONE)
    with pytest.raises(IllegalTransition):
        await gens.record_delivery(db.pool, job.id, result_message_id=11)


@pytest.mark.usefixtures("world")
async def test_requeue_clears_backend_and_lease(db: Database) -> None:
    for lost_in in (JobState.SUBMITTED, JobState.RUNNING):
        job = await _job(db)
        await gens.claim(db.pool, job.id, backend=GPU1, owner=OWNER, max_in_flight=1)
        if lost_in is JobState.RUNNING:
            await gens.transition(db.pool, job.id, JobState.RUNNING)
            await gens.set_progress(db.pool, job.id, 0.7)
        requeued = await gens.transition(
            db.pool, job.id, JobState.QUEUED, detail={"reason": "lost"}
        )
        assert requeued.status is JobState.QUEUED
        assert requeued.backend is None
        assert requeued.lease_owner is None
        assert requeued.progress == 0.0
        assert requeued.attempts == 1
        assert requeued.finished_at is None
        assert await gens.in_flight_by_backend(db.pool) == {}
        last = (await gens.list_events(db.pool, job.id))[-1]
        assert (last.from_status, last.to_status, last.detail) == (
            lost_in.value,
            "queued",
            {"reason": "lost"},
        )
        # It is in the queue again and can be claimed by another backend.
        assert [j.id for j in await gens.queue_head(db.pool, 10)] == [job.id]
        again = await gens.claim(db.pool, job.id, backend=GPU2, owner=OWNER + 1, max_in_flight=1)
        assert again is not None
        assert (again.backend, again.lease_owner, again.attempts) == (GPU2, OWNER + 1, 2)
        await gens.transition(db.pool, job.id, JobState.CANCELLED)


# --- history, progress, prompts ----------------------------------------------------------------


@pytest.mark.usefixtures("world")
async def test_events_progress_and_prompts(db: Database) -> None:
    job = await _job(db)
    other = await _job(db)
    await gens.record_event(db.pool, job.id, "note", {"text": "backend slow"})
    await gens.transition(db.pool, job.id, JobState.SUBMITTED)
    await gens.record_event(db.pool, job.id, "progress", {"value": 0.25})
    events = await gens.list_events(db.pool, job.id)
    assert [(e.from_status, e.to_status, e.detail) for e in events] == [
        (None, "queued", {}),
        ("queued", "note", {"text": "backend slow"}),
        ("queued", "submitted", {}),
        ("submitted", "progress", {"value": 0.25}),
    ]
    assert len(await gens.list_events(db.pool, other.id)) == 1
    assert await gens.list_events(db.pool, uuid.uuid4()) == []

    job = await _job(db)
    await gens.set_progress(db.pool, job.id, 0.4)
    assert (await gens.require_generation(db.pool, job.id)).progress == 0.0  # queued: ignored
    await gens.transition(db.pool, job.id, JobState.SUBMITTED)
    await gens.set_progress(db.pool, job.id, 0.4)
    assert (await gens.require_generation(db.pool, job.id)).progress == pytest.approx(0.4)
    await gens.transition(db.pool, job.id, JobState.RUNNING)
    await gens.set_progress(db.pool, job.id, 7.0)
    assert (await gens.require_generation(db.pool, job.id)).progress == 1.0
    await gens.set_progress(db.pool, job.id, -3.0)
    assert (await gens.require_generation(db.pool, job.id)).progress == 0.0
    await gens.set_progress(db.pool, job.id, 0.9)
    await gens.transition(db.pool, job.id, JobState.POSTPROCESSING)
    await gens.set_progress(db.pool, job.id, 0.1)
    assert (await gens.require_generation(db.pool, job.id)).progress == pytest.approx(0.9)

    job = await _job(db)
    await gens.set_progress_message(db.pool, job.id, 321)
    await gens.set_prompts(
        db.pool,
        job.id,
        positive="masterpiece, girl",
        negative="lowres",
        seed=2**40,
        params={"width": 832, "height": 1216, "tags": ["a"]},
    )
    stored = await gens.require_generation(db.pool, job.id)
    assert stored.progress_message_id == 321
    assert (stored.prompt_positive, stored.prompt_negative) == ("masterpiece, girl", "lowres")
    assert stored.seed == 2**40
    assert stored.params == {"width": 832, "height": 1216, "tags": ["a"]}
    assert stored.prompt_typed == job.prompt_typed
    await gens.set_prompts(db.pool, job.id, positive="p", negative="", seed=None, params={})
    cleared = await gens.require_generation(db.pool, job.id)
    assert cleared.seed is None and cleared.params == {}


# --- cancel ------------------------------------------------------------------------------------


@pytest.mark.usefixtures("world")
async def test_request_cancel(db: Database, conn: asyncpg.Connection) -> None:
    notices = await hear(conn, "animebot_cancel")
    queued = await _job(db)
    running = await _job(db)
    await _drive(db, running.id, [JobState.SUBMITTED, JobState.RUNNING])
    done = await _job(db)
    await _drive(db, done.id, [*TO_DELIVERING, JobState.DONE])

    asked = await gens.request_cancel(db.pool, queued.id)
    assert asked is not None
    assert asked.cancel_requested is True
    assert asked.status is JobState.QUEUED  # only a request; the worker cancels
    asked_running = await gens.request_cancel(db.pool, running.id)
    assert asked_running is not None and asked_running.status is JobState.RUNNING
    assert await gens.request_cancel(db.pool, done.id) is None
    assert await gens.request_cancel(db.pool, uuid.uuid4()) is None
    stored = await gens.require_generation(db.pool, done.id)
    assert stored.cancel_requested is False

    assert set(await notices.first(2)) == {str(queued.id), str(running.id)}
    # A cancel-requested job leaves the dispatch order and cannot be claimed.
    assert await gens.queue_head(db.pool, 10) == []
    assert await gens.queue_position(db.pool, queued.id) is None
    assert await gens.claim(db.pool, queued.id, backend=GPU1, owner=1, max_in_flight=5) is None
    cancelled = await gens.transition(db.pool, queued.id, JobState.CANCELLED)
    assert cancelled.finished_at is not None


# --- fair queue --------------------------------------------------------------------------------


@pytest.mark.usefixtures("world")
async def test_fair_queue_interleaves_bursts(db: Database) -> None:
    made: dict[str, uuid.UUID] = {}
    for user, label, count in ((ALICE, "A", 5), (BOB, "B", 3), (CAROL, "C", 2)):
        for n in range(1, count + 1):
            made[f"{label}{n}"] = (await _job(db, requester=user, prompt_typed=f"{label}{n}")).id
    expected = ["A1", "B1", "C1", "A2", "B2", "C2", "A3", "B3", "A4", "A5"]

    named = {job_id: name for name, job_id in made.items()}
    order = await gens.queue_head(db.pool, 100)
    assert [named[j.id] for j in order] == expected
    assert all(isinstance(j, gens.QueuedJob) for j in order)
    assert [named[j.id] for j in await gens.queue_head(db.pool, 4)] == expected[:4]

    positions = await gens.queue_positions(db.pool)
    assert positions == {made[label]: i for i, label in enumerate(expected, start=1)}
    for i, label in enumerate(expected, start=1):
        assert await gens.queue_position(db.pool, made[label]) == i

    # Dispatching the head moves everyone up, fairly.
    await gens.claim(db.pool, made["A1"], backend=GPU1, owner=1, max_in_flight=5)
    assert await gens.queue_position(db.pool, made["A1"]) is None
    after = [named[j.id] for j in await gens.queue_head(db.pool, 100)]
    # A was just served: B and C, never served, go first in this turn.
    assert after == ["B1", "C1", "A2", "B2", "C2", "A3", "B3", "A4", "A5"]
    assert await gens.queue_position(db.pool, made["A2"]) == 3
    assert await gens.queue_position(db.pool, uuid.uuid4()) is None


@pytest.mark.usefixtures("world")
async def test_queue_head_excludes_workflows(db: Database) -> None:
    assert await gens.queue_head(db.pool, 5) == []
    assert await gens.queue_positions(db.pool) == {}
    img = await _job(db, workflow="txt2img")
    vid = await _job(db, requester=BOB, workflow="wan_t2v", kind=JobKind.VIDEO)
    img2 = await _job(db, requester=CAROL, workflow="txt2img")
    got = await gens.queue_head(db.pool, 10, exclude_workflows=["wan_t2v"])
    assert [j.id for j in got] == [img.id, img2.id]
    got = await gens.queue_head(db.pool, 10, exclude_workflows=["txt2img", "wan_t2v"])
    assert got == []
    assert [j.id for j in await gens.queue_head(db.pool, 10)] == [img.id, vid.id, img2.id]


# --- claims ------------------------------------------------------------------------------------


@pytest.mark.usefixtures("world")
async def test_claim_respects_max_in_flight(db: Database) -> None:
    jobs = [await _job(db) for _ in range(4)]
    first = await gens.claim(db.pool, jobs[0].id, backend=GPU1, owner=1, max_in_flight=2)
    second = await gens.claim(db.pool, jobs[1].id, backend=GPU1, owner=1, max_in_flight=2)
    assert first is not None and second is not None
    assert await gens.claim(db.pool, jobs[2].id, backend=GPU1, owner=1, max_in_flight=2) is None
    still = await gens.require_generation(db.pool, jobs[2].id)
    assert still.status is JobState.QUEUED and still.attempts == 0
    # Another backend has its own slots.
    assert await gens.claim(db.pool, jobs[2].id, backend=GPU2, owner=1, max_in_flight=1)
    assert await gens.in_flight_by_backend(db.pool) == {GPU1: 2, GPU2: 1}
    # Running still counts; post-processing frees the GPU slot.
    await gens.transition(db.pool, jobs[0].id, JobState.RUNNING)
    assert await gens.claim(db.pool, jobs[3].id, backend=GPU1, owner=1, max_in_flight=2) is None
    await gens.transition(db.pool, jobs[0].id, JobState.POSTPROCESSING)
    assert await gens.claim(db.pool, jobs[3].id, backend=GPU1, owner=1, max_in_flight=2)
    assert await gens.in_flight_by_backend(db.pool) == {GPU1: 2, GPU2: 1}
    # A claimed job cannot be claimed again.
    assert await gens.claim(db.pool, jobs[3].id, backend=GPU2, owner=1, max_in_flight=9) is None
    assert await gens.claim(db.pool, uuid.uuid4(), backend=GPU2, owner=1, max_in_flight=9) is None


@pytest.mark.usefixtures("world")
async def test_concurrent_claims_through_pool_never_exceed_limit(db: Database) -> None:
    limit = 3
    jobs = [await _job(db, requester=(ALICE, BOB, CAROL)[i % 3]) for i in range(24)]
    results = await asyncio.gather(
        *(
            gens.claim(db.pool, job.id, backend=GPU1, owner=i, max_in_flight=limit)
            for i, job in enumerate(jobs)
        )
    )
    claimed = [r for r in results if r is not None]
    assert len(claimed) == limit
    assert await gens.in_flight_by_backend(db.pool) == {GPU1: limit}
    assert len(await gens.queue_head(db.pool, 100)) == len(jobs) - limit


@pytest.mark.usefixtures("world")
async def test_concurrent_claims_from_separate_connections(db: Database) -> None:
    limit = 2
    conns = [await connect(db.dsn) for _ in range(8)]
    try:
        for _round in range(3):
            jobs = [await _job(db) for _ in conns]
            results = await asyncio.gather(
                *(
                    gens.claim(c, job.id, backend=GPU1, owner=k, max_in_flight=limit)
                    for k, (c, job) in enumerate(zip(conns, jobs, strict=True))
                )
            )
            assert sum(r is not None for r in results) == limit
            assert await gens.in_flight_by_backend(db.pool) == {GPU1: limit}
            for r in results:
                if r is not None:
                    await gens.transition(db.pool, r.id, JobState.FAILED, error="test")
            assert await gens.in_flight_by_backend(db.pool) == {}
        # Many connections racing for the very same job: exactly one wins.
        job = await _job(db)
        results = await asyncio.gather(
            *(
                gens.claim(c, job.id, backend=GPU2, owner=k, max_in_flight=100)
                for k, c in enumerate(conns)
            )
        )
        assert sum(r is not None for r in results) == 1
        stored = await gens.require_generation(db.pool, job.id)
        assert stored.attempts == 1
        submitted = [
            e for e in await gens.list_events(db.pool, job.id) if e.to_status == "submitted"
        ]
        assert len(submitted) == 1
    finally:
        for c in conns:
            await c.close()


# --- leases and delivery -----------------------------------------------------------------------


@pytest.mark.usefixtures("world")
async def test_release(db: Database) -> None:
    job = await _job(db)
    assert not await gens.release(db.pool, job.id, owner=OWNER)  # nobody holds it
    await gens.claim(db.pool, job.id, backend=GPU1, owner=OWNER, max_in_flight=1)
    assert not await gens.release(db.pool, job.id, owner=OWNER + 1)  # not the holder
    held = await gens.require_generation(db.pool, job.id)
    assert held.lease_owner == OWNER
    assert await gens.release(db.pool, job.id, owner=OWNER)
    released = await gens.require_generation(db.pool, job.id)
    assert released.lease_owner is None
    assert (released.status, released.backend) == (JobState.SUBMITTED, GPU1)  # only the lease
    assert not await gens.release(db.pool, job.id, owner=OWNER)
    assert not await gens.release(db.pool, uuid.uuid4(), owner=OWNER)
    # Released, it is an orphan anyone may adopt.
    assert [o.id for o in await gens.list_orphans(db.pool, [OWNER])] == [job.id]
    assert await gens.adopt(db.pool, job.id, owner=OWNER + 1, previous=None)


@pytest.mark.usefixtures("world")
async def test_list_deliverable(db: Database) -> None:
    first = await _job(db)
    second = await _job(db)
    third = await _job(db)
    running = await _job(db)
    await _drive(db, running.id, [JobState.SUBMITTED, JobState.RUNNING])
    finished = await _job(db)
    await _drive(db, finished.id, [*TO_DELIVERING, JobState.DONE])
    assert await gens.list_deliverable(db.pool, []) == []
    for job in (second, first, third):  # delivering order differs from creation order
        await _drive(db, job.id, TO_DELIVERING)

    ready = await gens.list_deliverable(db.pool, [])
    assert [j.id for j in ready] == [second.id, first.id, third.id]
    assert all(j.status is JobState.DELIVERING and j.lease_owner is None for j in ready)
    assert [j.id for j in await gens.list_deliverable(db.pool, [], limit=2)] == [
        second.id,
        first.id,
    ]
    # A live process took one: the others still wait; if that process dies it is offered again.
    live, dead = 11, 12
    assert await gens.adopt(db.pool, first.id, owner=live, previous=None)
    assert await gens.adopt(db.pool, third.id, owner=dead, previous=None)
    assert [j.id for j in await gens.list_deliverable(db.pool, [live])] == [second.id, third.id]
    assert [j.id for j in await gens.list_deliverable(db.pool, [live, dead])] == [second.id]
    # Delivered jobs leave the list.
    await gens.record_delivery(db.pool, second.id, result_message_id=5)
    await gens.transition(db.pool, second.id, JobState.DONE)
    assert [j.id for j in await gens.list_deliverable(db.pool, [live])] == [third.id]


# --- lists and counts --------------------------------------------------------------------------


@pytest.mark.usefixtures("world")
async def test_list_by_status_and_count_by_state(db: Database) -> None:
    assert await gens.count_by_state(db.pool) == {}
    q1 = await _job(db)
    run = await _job(db)
    await _drive(db, run.id, [JobState.SUBMITTED, JobState.RUNNING])
    q2 = await _job(db, requester=BOB)
    done = await _job(db)
    await _drive(db, done.id, [*TO_DELIVERING, JobState.DONE])

    queued = await gens.list_by_status(db.pool, [JobState.QUEUED])
    assert [j.id for j in queued] == [q1.id, q2.id]
    active = await gens.list_by_status(db.pool, [JobState.QUEUED, JobState.RUNNING])
    assert [j.id for j in active] == [q1.id, run.id, q2.id]
    assert [j.id for j in await gens.list_by_status(db.pool, [JobState.DONE])] == [done.id]
    assert await gens.list_by_status(db.pool, [JobState.FAILED]) == []
    assert len(await gens.list_by_status(db.pool, list(JobState), limit=2)) == 2

    assert await gens.count_by_state(db.pool) == {
        ("queued", "image"): 2,
        ("running", "image"): 1,
        ("done", "image"): 1,
    }
    vid = await _job(db, kind=JobKind.VIDEO)
    await _job(db, kind=JobKind.VIDEO)
    await _drive(db, vid.id, [JobState.SUBMITTED, JobState.FAILED])
    assert await gens.count_by_state(db.pool) == {
        ("queued", "image"): 2,
        ("running", "image"): 1,
        ("done", "image"): 1,
        ("queued", "video"): 1,
        ("failed", "video"): 1,
    }


@pytest.mark.usefixtures("world")
async def test_list_for_user_and_count_active(db: Database) -> None:
    a1 = await _job(db)
    a2 = await _job(db)
    a3 = await _job(db)
    await _job(db, requester=BOB)
    await _drive(db, a1.id, [*TO_DELIVERING, JobState.DONE])
    await _drive(db, a2.id, [JobState.SUBMITTED])

    newest_first = await gens.list_for_user(db.pool, ALICE)
    assert [j.id for j in newest_first] == [a3.id, a2.id, a1.id]
    page = await gens.list_for_user(db.pool, ALICE, limit=1, offset=1)
    assert [j.id for j in page] == [a2.id]
    finished = await gens.list_for_user(db.pool, ALICE, statuses=[JobState.DONE])
    assert [j.id for j in finished] == [a1.id]
    live = await gens.list_for_user(db.pool, ALICE, statuses=[JobState.QUEUED, JobState.SUBMITTED])
    assert [j.id for j in live] == [a3.id, a2.id]
    assert await gens.list_for_user(db.pool, CAROL) == []

    assert await gens.count_active_for_user(db.pool, ALICE) == 2
    assert await gens.count_active_for_user(db.pool, BOB) == 1
    assert await gens.count_active_for_user(db.pool, CAROL) == 0
    await gens.transition(db.pool, a3.id, JobState.CANCELLED)
    await gens.transition(db.pool, a2.id, JobState.FAILED, error="x")
    assert await gens.count_active_for_user(db.pool, ALICE) == 0


@pytest.mark.usefixtures("world")
async def test_find_by_result_message(db: Database) -> None:
    job = await _job(db)
    other = await _job(db, chat_id=OTHER_CHAT)
    for j, message_id in ((job, 77), (other, 78)):
        await _drive(db, j.id, TO_DELIVERING)
        await gens.record_delivery(db.pool, j.id, result_message_id=message_id)
    found = await gens.find_by_result_message(db.pool, CHAT, 77)
    assert found is not None and found.id == job.id
    found = await gens.find_by_result_message(db.pool, OTHER_CHAT, 78)
    assert found is not None and found.id == other.id
    assert await gens.find_by_result_message(db.pool, OTHER_CHAT, 77) is None  # other chat
    assert await gens.find_by_result_message(db.pool, CHAT, 1) is None


# --- one-statement transitions: cancel guard, kept lease, notices -------------------------------


@pytest.mark.usefixtures("world")
async def test_transition_unless_cancelled_refuses_after_a_cancel_request(
    db: Database, conn: asyncpg.Connection
) -> None:
    notices = await hear(conn)
    job = await _job(db)
    await _drive(db, job.id, [JobState.SUBMITTED, JobState.RUNNING, JobState.POSTPROCESSING])
    before = await _snapshot(db, job.id)
    assert await gens.request_cancel(db.pool, job.id) is not None
    with pytest.raises(gens.CancelRequested):
        await gens.transition(db.pool, job.id, JobState.DELIVERING, unless_cancelled=True)
    after, events = await _snapshot(db, job.id)
    assert after.status is JobState.POSTPROCESSING and events == before[1]  # nothing written
    # Without the guard (the cancel path itself) the same job still moves.
    cancelled = await gens.transition(db.pool, job.id, JobState.CANCELLED)
    assert cancelled.status is JobState.CANCELLED
    # An illegal move stays an IllegalTransition, not a cancel.
    with pytest.raises(IllegalTransition) as caught:
        await gens.transition(db.pool, job.id, JobState.DELIVERING, unless_cancelled=True)
    assert not isinstance(caught.value, gens.CancelRequested)
    seen = await notices.settle(db.pool)
    assert f"cancelled {job.id}" in seen and f"delivering {job.id}" not in seen


@pytest.mark.usefixtures("world")
async def test_delivering_with_kept_lease_is_not_announced_nor_deliverable_while_owner_lives(
    db: Database, conn: asyncpg.Connection
) -> None:
    notices = await hear(conn)
    kept, released = await _job(db), await _job(db, requester=BOB)
    for job in (kept, released):
        claimed = await gens.claim(db.pool, job.id, backend=GPU1, owner=OWNER, max_in_flight=5)
        assert claimed is not None
        await gens.transition(db.pool, job.id, JobState.POSTPROCESSING, progress=1.0)
    mine = await gens.transition(db.pool, kept.id, JobState.DELIVERING, keep_owner=True)
    other = await gens.transition(db.pool, released.id, JobState.DELIVERING)
    assert (mine.lease_owner, other.lease_owner) == (OWNER, None)
    assert mine.progress == 1.0 and mine.delivering_at is not None
    events = await gens.list_events(db.pool, kept.id)
    assert [e.to_status for e in events][-2:] == ["postprocessing", "delivering"]
    # A live owner keeps it; once the owner is gone, anyone may take it.
    assert [j.id for j in await gens.list_deliverable(db.pool, [OWNER])] == [released.id]
    assert {j.id for j in await gens.list_deliverable(db.pool, [])} == {kept.id, released.id}
    payloads = await notices.settle(db.pool)
    assert f"delivering {released.id}" in payloads
    assert f"delivering {kept.id}" not in payloads
    assert {gens.notice_state(p) for p in payloads} <= {
        JobState.QUEUED,
        JobState.POSTPROCESSING,
        JobState.DELIVERING,
    }
    assert gens.notice_state("garbage") is None


@pytest.mark.usefixtures("world")
async def test_claim_in_one_statement_writes_history_and_served_time(db: Database) -> None:
    job = await _job(db)
    claimed = await gens.claim(db.pool, job.id, backend=GPU1, owner=OWNER, max_in_flight=1)
    assert claimed is not None and claimed.attempts == 1
    (_queued, submitted) = await gens.list_events(db.pool, job.id)
    assert (submitted.from_status, submitted.to_status) == ("queued", "submitted")
    assert submitted.detail == {"backend": GPU1, "attempt": 1}
    served = await db.pool.fetchval("SELECT last_served_at FROM users WHERE id = $1", ALICE)
    assert served is not None
    # The backend is full now: the next claim changes nothing at all.
    second = await _job(db, requester=BOB)
    assert await gens.claim(db.pool, second.id, backend=GPU1, owner=OWNER, max_in_flight=1) is None
    assert (await gens.require_generation(db.pool, second.id)).status is JobState.QUEUED
    assert len(await gens.list_events(db.pool, second.id)) == 1
    assert await db.pool.fetchval("SELECT last_served_at FROM users WHERE id = $1", BOB) is None
    head = await gens.queue_head(db.pool, 10)
    assert [(q.id, q.chat_id, q.kind, q.workflow) for q in head] == [
        (second.id, CHAT, JobKind.IMAGE, "txt2img")
    ]
    assert await gens.cancel_requested_among(db.pool, [job.id, second.id]) == []
    await gens.request_cancel(db.pool, second.id)
    assert await gens.cancel_requested_among(db.pool, [job.id, second.id]) == [second.id]


@pytest.mark.usefixtures("world")
async def test_queue_position_counts_the_same_order_as_the_full_ranking(db: Database) -> None:
    """`queue_position` (counted per requester) agrees with `queue_positions` (the window over
    the whole queue) for every job: mixed turns, served and never-served requesters, equal
    served times, a cancel request and a dispatched job in the middle."""
    rng = random.Random(6)
    people_ids = [ALICE, BOB, CAROL, *range(900, 906)]
    for uid in people_ids[3:]:
        await people.upsert_user(db.pool, uid, first_name=f"u{uid}")
    jobs = [await _job(db, requester=rng.choice(people_ids)) for _ in range(60)]
    same = datetime(2024, 1, 1, tzinfo=UTC)
    await db.pool.execute(
        "UPDATE users SET last_served_at = CASE WHEN id % 3 = 0 THEN NULL"
        " WHEN id % 3 = 1 THEN $1::timestamptz ELSE now() - make_interval(secs => id) END",
        same,
    )
    await gens.request_cancel(db.pool, jobs[7].id)
    await gens.claim(db.pool, jobs[20].id, backend=GPU1, owner=OWNER, max_in_flight=10)
    ranking = await gens.queue_positions(db.pool)
    assert len(ranking) == 58
    for job in jobs:
        assert await gens.queue_position(db.pool, job.id) == ranking.get(job.id), job.id


@pytest.mark.usefixtures("world")
async def test_create_queued_tells_whether_the_queue_was_empty(db: Database) -> None:
    fields: dict[str, Any] = {
        "requester_id": BOB,
        "chat_id": CHAT,
        "kind": JobKind.IMAGE,
        "prompt_typed": "rain",
        "workflow": "txt2img",
    }
    first, alone = await gens.create_queued(db.pool, id=uuid.uuid4(), **fields)
    assert alone and await gens.queue_position(db.pool, first.id) == 1
    second, alone = await gens.create_queued(db.pool, id=uuid.uuid4(), **fields)
    assert not alone and await gens.queue_position(db.pool, second.id) == 2
    # Jobs that are not waiting (claimed, or cancelled while queued) do not count.
    assert await gens.claim(db.pool, first.id, backend=GPU1, owner=OWNER, max_in_flight=2)
    await gens.request_cancel(db.pool, second.id)
    third, alone = await gens.create_queued(db.pool, id=uuid.uuid4(), **fields)
    assert alone and await gens.queue_position(db.pool, third.id) == 1
