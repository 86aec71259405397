"""core.db.outputs against a real PostgreSQL: idempotent saves, Telegram ids, library filing."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from core.db import generations as gens
from core.db import outputs as outs
from core.db import people
from core.db.pool import Database
from core.errors import IllegalTransition
from core.models import ChatType, Generation, JobKind, LibraryStatus, Output
from core.states import JobState
from tests.notices import listening
from tests.sql_statements import DbStatements

USER = 1
CHAT = -10
OTHER_CHAT = -20
SHA1 = "a" * 64
SHA2 = "b" * 64
TO_DELIVERING = [JobState.SUBMITTED, JobState.RUNNING, JobState.POSTPROCESSING, JobState.DELIVERING]


@pytest.fixture
async def world(db: Database) -> None:
    await people.upsert_user(db.pool, USER, first_name="U")
    await people.upsert_chat(db.pool, CHAT, ChatType.GROUP)
    await people.upsert_chat(db.pool, OTHER_CHAT, ChatType.PRIVATE)


async def _job(db: Database, *, chat: int = CHAT, **extra: Any) -> Generation:
    job, _alone = await gens.create_queued(
        db.pool,
        id=uuid.uuid4(),
        requester_id=USER,
        chat_id=chat,
        kind=JobKind.IMAGE,
        prompt_typed="p",
        workflow="txt2img",
        **extra,
    )
    return job


async def _deliver(db: Database, job_id: uuid.UUID, *, finish: bool = True) -> None:
    for state in TO_DELIVERING:
        await gens.transition(db.pool, job_id, state)
    if finish:
        await gens.record_delivery(db.pool, job_id, result_message_id=1)
        await gens.transition(db.pool, job_id, JobState.DONE)


async def _save(db: Database, job_id: uuid.UUID, position: int = 0, **extra: Any) -> Output:
    fields: dict[str, Any] = {
        "generation_id": job_id,
        "position": position,
        "kind": JobKind.IMAGE,
        "file_path": f"outputs/{job_id}/{position}.png",
        "mime": "image/png",
        "size_bytes": 1000,
        "sha256": SHA1,
    }
    fields.update(extra)
    return await outs.save_output(db.pool, **fields)


@pytest.mark.usefixtures("world")
async def test_save_list_get_redo_and_checks(db: Database) -> None:
    job = await _job(db)
    first = await _save(db, job.id, 0)
    assert (first.generation_id, first.position, first.kind) == (job.id, 0, JobKind.IMAGE)
    assert (first.mime, first.size_bytes, first.sha256) == ("image/png", 1000, SHA1)
    assert first.delivery_path is None and first.thumbnail_path is None
    assert first.width is None and first.duration_s is None
    assert first.library_status is LibraryStatus.PENDING
    assert first.library_attempts == 0 and first.library_next_at is None
    assert first.telegram_file_id is None and first.telegram_message_id is None
    assert first.without_music is None
    assert await outs.get_output(db.pool, first.id) == first
    assert await outs.get_output(db.pool, uuid.uuid4()) is None

    video = await _save(
        db,
        job.id,
        1,
        kind=JobKind.VIDEO,
        file_path="v.mp4",
        mime="video/mp4",
        size_bytes=5_000_000,
        sha256=SHA2,
        delivery_path="v.tg.mp4",
        thumbnail_path="v.jpg",
        width=832,
        height=480,
        duration_s=3.5,
        comfy_node="42",
        comfy_filename="wan_00001.mp4",
    )
    assert (video.delivery_path, video.thumbnail_path) == ("v.tg.mp4", "v.jpg")
    assert (video.width, video.height, video.duration_s) == (832, 480, 3.5)
    assert (video.comfy_node, video.comfy_filename) == ("42", "wan_00001.mp4")
    assert [o.position for o in await outs.list_outputs(db.pool, job.id)] == [0, 1]

    # Redo after a restart: the same position is replaced, not duplicated.
    await outs.record_telegram(db.pool, first.id, file_id="AgAD", message_id=5)
    redo = await _save(
        db,
        job.id,
        0,
        file_path="redo.png",
        size_bytes=2000,
        sha256=SHA2,
        width=512,
        height=512,
        delivery_path="redo.jpg",
    )
    assert redo.id == first.id
    assert (redo.file_path, redo.size_bytes, redo.sha256) == ("redo.png", 2000, SHA2)
    assert (redo.width, redo.height, redo.delivery_path) == (512, 512, "redo.jpg")
    assert redo.created_at == first.created_at
    again = await _save(
        db,
        job.id,
        0,
        file_path="redo.png",
        size_bytes=2000,
        sha256=SHA2,
        width=512,
        height=512,
        delivery_path="redo.jpg",
    )
    assert again == redo
    listed = await outs.list_outputs(db.pool, job.id)
    assert len(listed) == 2 and listed[0] == redo
    assert await outs.list_outputs(db.pool, uuid.uuid4()) == []

    job = await _job(db)
    off = await _save(db, job.id, 0, library_enabled=False)
    assert off.library_status is LibraryStatus.OFF
    with pytest.raises(asyncpg.CheckViolationError):
        await _save(db, job.id, 1, sha256="XYZ")
    with pytest.raises(asyncpg.CheckViolationError):
        await _save(db, job.id, 1, size_bytes=-1)
    with pytest.raises(asyncpg.CheckViolationError):
        await _save(db, job.id, -1)
    with pytest.raises(asyncpg.ForeignKeyViolationError):
        await _save(db, uuid.uuid4(), 0)
    assert len(await outs.list_outputs(db.pool, job.id)) == 1


@pytest.mark.usefixtures("world")
async def test_record_telegram_and_find_by_message(db: Database) -> None:
    job = await _job(db)
    elsewhere = await _job(db, chat=OTHER_CHAT)
    a = await _save(db, job.id, 0)
    b = await _save(db, job.id, 1)
    c = await _save(db, elsewhere.id, 0)
    # An album: both photos carry their own message id; the file id comes from Telegram.
    await outs.record_telegram(db.pool, a.id, file_id="file-a", message_id=100)
    await outs.record_telegram(db.pool, b.id, file_id="file-b", message_id=101)
    await outs.record_telegram(db.pool, c.id, file_id="file-c", message_id=100)
    stored_a = await outs.get_output(db.pool, a.id)
    assert stored_a is not None
    assert (stored_a.telegram_file_id, stored_a.telegram_message_id) == ("file-a", 100)
    # Re-sent without a new file id: the message id changes, the file id is kept.
    await outs.record_telegram(db.pool, a.id, file_id=None, message_id=200)
    stored_a = await outs.get_output(db.pool, a.id)
    assert stored_a is not None
    assert (stored_a.telegram_file_id, stored_a.telegram_message_id) == ("file-a", 200)

    found = await outs.find_by_telegram_message(db.pool, CHAT, 101)
    assert found is not None and found.id == b.id
    found = await outs.find_by_telegram_message(db.pool, OTHER_CHAT, 100)
    assert found is not None and found.id == c.id  # scoped to the chat
    assert await outs.find_by_telegram_message(db.pool, CHAT, 100) is None  # moved to 200
    found = await outs.find_by_telegram_message(db.pool, CHAT, 200)
    assert found is not None and found.id == a.id
    # Two outputs on one message (a media group caption): the first position wins.
    await outs.record_telegram(db.pool, b.id, file_id=None, message_id=200)
    found = await outs.find_by_telegram_message(db.pool, CHAT, 200)
    assert found is not None and found.id == a.id


@pytest.mark.usefixtures("world")
async def test_record_library_and_due_for_library(db: Database) -> None:
    now = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
    done = await _job(db)
    a = await _save(db, done.id, 0)
    b = await _save(db, done.id, 1)
    off = await _save(db, done.id, 2, library_enabled=False)
    delivering = await _job(db)
    pending_job_output = await _save(db, delivering.id, 0)
    queued = await _job(db)
    await _save(db, queued.id, 0)

    # Nothing is due before its job is done.
    assert await outs.due_for_library(db.pool, now) == []
    await _deliver(db, delivering.id, finish=False)
    assert await outs.due_for_library(db.pool, now) == []
    await _deliver(db, done.id)
    assert [o.id for o in await outs.due_for_library(db.pool, now)] == [a.id, b.id]
    assert [o.id for o in await outs.due_for_library(db.pool, now, limit=1)] == [a.id]

    # Filed (copied into the library folder) but not yet linked: still due, at the next time.
    filed = await outs.record_library(
        db.pool,
        a.id,
        status=LibraryStatus.FILED,
        library_path="/lib/Hana/0001.png",
        next_attempt_at=now + timedelta(minutes=5),
    )
    assert filed is not None
    assert filed.library_status is LibraryStatus.FILED
    assert filed.library_path == "/lib/Hana/0001.png"
    assert filed.library_attempts == 1
    assert filed.library_next_at == now + timedelta(minutes=5)
    assert [o.id for o in await outs.due_for_library(db.pool, now)] == [b.id]
    later = now + timedelta(minutes=5)
    assert [o.id for o in await outs.due_for_library(db.pool, later)] == [a.id, b.id]

    linked = await outs.record_library(
        db.pool,
        a.id,
        status=LibraryStatus.LINKED,
        item_id="jf-1",
        link="https://jf/web/#/details?id=jf-1",
    )
    assert linked is not None
    assert linked.library_status is LibraryStatus.LINKED
    assert linked.library_path == "/lib/Hana/0001.png"  # kept
    assert (linked.jellyfin_item_id, linked.jellyfin_link) == (
        "jf-1",
        "https://jf/web/#/details?id=jf-1",
    )
    assert linked.library_attempts == 2
    assert linked.library_next_at is None
    failed = await outs.record_library(db.pool, b.id, status=LibraryStatus.FAILED)
    assert failed is not None and failed.library_status is LibraryStatus.FAILED
    assert await outs.due_for_library(db.pool, later) == []
    assert await outs.record_library(db.pool, uuid.uuid4(), status=LibraryStatus.LINKED) is None

    await gens.record_delivery(db.pool, delivering.id, result_message_id=2)
    await gens.transition(db.pool, delivering.id, JobState.DONE)
    assert [o.id for o in await outs.due_for_library(db.pool, later)] == [pending_job_output.id]

    # Filed with no next attempt (no Jellyfin API to link it): complete, never due again.
    await outs.record_library(
        db.pool, pending_job_output.id, status=LibraryStatus.FILED, library_path="/lib/x.png"
    )
    assert await outs.due_for_library(db.pool, later + timedelta(days=365)) == []
    stored_off = await outs.get_output(db.pool, off.id)
    assert stored_off is not None and stored_off.library_status is LibraryStatus.OFF


@pytest.mark.usefixtures("world")
async def test_library_counts_of_delivered_results(db: Database) -> None:
    now = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
    assert await outs.library_counts(db.pool, now) == outs.LibraryCounts()
    done, other_done, delivering = await _job(db), await _job(db), await _job(db)
    for job in (done, other_done):
        await _deliver(db, job.id)
    await _deliver(db, delivering.id, finish=False)
    await _save(db, delivering.id)  # not delivered yet: counted once it is
    await _save(db, (await _job(db)).id)  # queued: not counted
    retry, positions = now + timedelta(minutes=30), iter(range(100))

    async def output(job: Generation = done, **library: Any) -> None:
        saved = await _save(db, job.id, next(positions), library_enabled=bool(library))
        if library:
            await outs.record_library(db.pool, saved.id, **library)

    for n in range(4):  # linked, in two jobs
        job = other_done if n % 2 else done
        await output(job, status=LibraryStatus.LINKED, library_path=f"/lib/{n}.png", link="l")
    await output(status=LibraryStatus.FILED, library_path="/lib/f.png")  # no Jellyfin API
    await _save(db, done.id, next(positions))  # never tried yet: waiting, as each of these
    waiting: list[dict[str, Any]] = [
        {"status": LibraryStatus.PENDING, "next_attempt_at": retry},  # refused, retried
        {"status": LibraryStatus.FILED, "library_path": "/lib/w.png", "next_attempt_at": retry},
        {"status": LibraryStatus.PENDING, "next_attempt_at": retry, "unreachable": True},
        {
            "status": LibraryStatus.FILED,
            "library_path": "/lib/u.png",
            "next_attempt_at": retry,
            "unreachable": True,
        },
        # Jellyfin was unreachable, and its next attempt has come: due, no longer waiting on it
        {"status": LibraryStatus.PENDING, "next_attempt_at": now, "unreachable": True},
    ]
    for library in waiting:
        await output(**library)
    await output(status=LibraryStatus.FAILED)
    await output(status=LibraryStatus.FAILED, library_path="/lib/kept.png")
    await output(status=LibraryStatus.FAILED)
    for _ in range(5):
        await output()  # library off

    expected = outs.LibraryCounts(linked=4, filed=1, waiting=6, unreachable=2, failed=3, off=5)
    with DbStatements() as sql:
        assert await outs.library_counts(db.pool, now) == expected
    assert sql.total == 1
    # Their next attempt has come: waiting to be tried, no longer because of Jellyfin.
    assert await outs.library_counts(db.pool, retry) == replace(expected, unreachable=0)
    await gens.record_delivery(db.pool, delivering.id, result_message_id=2)
    await gens.transition(db.pool, delivering.id, JobState.DONE)
    assert await outs.library_counts(db.pool, now) == replace(expected, waiting=7)


@pytest.mark.usefixtures("world")
async def test_recent_images_of_character(db: Database) -> None:
    hana, mio = uuid.uuid4(), uuid.uuid4()
    old = await _job(db, character_ids=[hana])
    new = await _job(db, character_ids=[hana, mio])
    vid = await _job(db, character_ids=[hana])
    unfinished = await _job(db, character_ids=[hana])
    old_out = await _save(db, old.id, 0)
    new_out0 = await _save(db, new.id, 0)
    new_out1 = await _save(db, new.id, 1)
    await _save(db, vid.id, 0, kind=JobKind.VIDEO, mime="video/mp4")
    await _save(db, unfinished.id, 0)
    for job in (old, new, vid):
        await _deliver(db, job.id)

    recent = await outs.recent_images_of_character(db.pool, hana)
    assert [o.id for o in recent] == [new_out1.id, new_out0.id, old_out.id]
    assert [o.id for o in await outs.recent_images_of_character(db.pool, hana, limit=1)] == [
        new_out1.id
    ]
    assert {o.id for o in await outs.recent_images_of_character(db.pool, mio)} == {
        new_out0.id,
        new_out1.id,
    }
    assert await outs.recent_images_of_character(db.pool, uuid.uuid4()) == []


async def test_record_main_delivery_sets_the_job_and_the_output_at_once(
    db: Database, world: None
) -> None:
    job = await _job(db)
    output = await _save(db, job.id)
    assert not await outs.record_main_delivery(
        db.pool, job.id, output.id, message_id=5, file_id="f"
    )  # still queued: nothing recorded
    assert await _main_message(db, job.id) is None
    await _deliver(db, job.id, finish=False)

    assert await outs.record_main_delivery(db.pool, job.id, output.id, message_id=5, file_id="f")

    assert await _main_message(db, job.id) == 5
    [saved] = await outs.list_outputs(db.pool, job.id)
    assert (saved.telegram_message_id, saved.telegram_file_id) == (5, "f")


async def _main_message(db: Database, job_id: uuid.UUID) -> int | None:
    job = await gens.get_generation(db.pool, job_id)
    assert job is not None
    return job.result_message_id


# -- the last output and `delivering` in one statement ---------------------------------------------

TO_POSTPROCESSING = [JobState.SUBMITTED, JobState.RUNNING, JobState.POSTPROCESSING]
# Columns that differ between two jobs handled the same way.
_OWN = {"id", "created_at", "updated_at", "submitted_at", "running_at", "postprocessing_at"}


async def _postprocessing(db: Database, owner: int = 7) -> Generation:
    job = await _job(db)
    await gens.claim(db.pool, job.id, backend="http://gpu", owner=owner, max_in_flight=5)
    for state in TO_POSTPROCESSING[1:]:
        job = await gens.transition(db.pool, job.id, state)
    return job


def _output_fields(job_id: uuid.UUID, position: int = 0) -> dict[str, Any]:
    return {
        "generation_id": job_id,
        "position": position,
        "kind": JobKind.IMAGE,
        "file_path": f"outputs/{job_id}/{position:02d}_original.png",
        "delivery_path": f"outputs/{job_id}/{position:02d}_telegram.jpg",
        "mime": "image/png",
        "size_bytes": 1234,
        "sha256": SHA2,
        "width": 512,
        "height": 768,
        "comfy_node": "9",
        "comfy_filename": "ComfyUI_00001_.png",
    }


def _comparable(row: Any, *, skip: set[str]) -> dict[str, Any]:
    return {k: v for k, v in dict(row).items() if k not in skip}


@pytest.mark.usefixtures("world")
@pytest.mark.parametrize("keep_owner", [True, False])
async def test_save_output_delivering_is_save_output_then_the_transition(
    db: Database, keep_owner: bool
) -> None:
    two_steps, one_step = await _postprocessing(db), await _postprocessing(db)
    async with listening(db.pool) as notices:
        saved = await outs.save_output(db.pool, **_output_fields(two_steps.id))
        moved = await gens.transition(
            db.pool, two_steps.id, JobState.DELIVERING, unless_cancelled=True, keep_owner=keep_owner
        )
        job, output = await outs.save_output_delivering(
            db.pool, **_output_fields(one_step.id), keep_owner=keep_owner
        )
        heard = await notices.settle(db.pool)

    # The job as `transition` returns it, and as stored.
    assert job.status is JobState.DELIVERING and job.delivering_at is not None
    assert job.lease_owner == (7 if keep_owner else None)
    assert _comparable(job, skip=_OWN | {"delivering_at"}) == _comparable(
        moved, skip=_OWN | {"delivering_at"}
    )
    assert await gens.get_generation(db.pool, one_step.id) == job
    # The output as `save_output` returns it, and as stored.
    own = {"id", "generation_id", "created_at", "file_path", "delivery_path"}
    assert _comparable(output, skip=own) == _comparable(saved, skip=own)
    assert await outs.list_outputs(db.pool, one_step.id) == [output]
    # The same history and the same NOTIFY (none while the process keeps the job).
    histories = [
        [(e.from_status, e.to_status, e.detail) for e in await gens.list_events(db.pool, j.id)]
        for j in (two_steps, one_step)
    ]
    assert histories[0] == histories[1]
    assert histories[1][-1] == ("postprocessing", "delivering", {})
    expected = [] if keep_owner else [f"delivering {two_steps.id}", f"delivering {one_step.id}"]
    assert [n for n in heard if n.startswith("delivering")] == expected


@pytest.mark.usefixtures("world")
async def test_save_output_delivering_replaces_a_redone_output(db: Database) -> None:
    job = await _postprocessing(db)
    first = {**_output_fields(job.id), "sha256": SHA1, "without_music": "gone"}
    before = await outs.save_output(db.pool, **first)
    assert before.without_music == "gone"

    _job_row, output = await outs.save_output_delivering(db.pool, **_output_fields(job.id))

    assert output.id == before.id and output.sha256 == SHA2
    assert output.without_music is None  # the redo got its music: no stale note
    assert await outs.list_outputs(db.pool, job.id) == [output]


@pytest.mark.usefixtures("world")
async def test_a_cancel_requested_first_wins_and_the_output_is_kept(db: Database) -> None:
    job = await _postprocessing(db)
    assert await gens.request_cancel(db.pool, job.id) is not None

    with pytest.raises(gens.CancelRequested):
        await outs.save_output_delivering(db.pool, **_output_fields(job.id), keep_owner=True)

    stored = await gens.get_generation(db.pool, job.id)
    assert stored is not None and stored.status is JobState.POSTPROCESSING
    assert [e.to_status for e in await gens.list_events(db.pool, job.id)][-1] == "postprocessing"
    assert len(await outs.list_outputs(db.pool, job.id)) == 1  # saved, as with two statements
    # ... and the job can still be cancelled.
    cancelled = await gens.transition(db.pool, job.id, JobState.CANCELLED)
    assert cancelled.status is JobState.CANCELLED


@pytest.mark.usefixtures("world")
async def test_a_cancel_holding_the_row_lock_is_waited_for(db: Database) -> None:
    job = await _postprocessing(db)
    canceller: asyncpg.Connection = await db.pool.acquire()
    try:
        tx = canceller.transaction()
        await tx.start()
        await canceller.execute(
            "UPDATE generations SET cancel_requested = true WHERE id = $1", job.id
        )
        saving = asyncio.ensure_future(
            outs.save_output_delivering(db.pool, **_output_fields(job.id), keep_owner=True)
        )
        await asyncio.sleep(0.3)
        assert not saving.done()  # waits for the row lock
        await tx.commit()
        with pytest.raises(gens.CancelRequested):
            await saving
    finally:
        await db.pool.release(canceller)
    stored = await gens.get_generation(db.pool, job.id)
    assert stored is not None and stored.status is JobState.POSTPROCESSING


@pytest.mark.usefixtures("world")
async def test_save_output_delivering_only_from_postprocessing(db: Database) -> None:
    running = await _job(db)
    for state in TO_POSTPROCESSING[:2]:
        await gens.transition(db.pool, running.id, state)
    with pytest.raises(IllegalTransition) as refused:
        await outs.save_output_delivering(db.pool, **_output_fields(running.id))
    assert not isinstance(refused.value, gens.CancelRequested)
    stored = await gens.get_generation(db.pool, running.id)
    assert stored is not None and stored.status is JobState.RUNNING

    delivering = await _postprocessing(db)
    await outs.save_output_delivering(db.pool, **_output_fields(delivering.id))
    with pytest.raises(IllegalTransition):  # not twice
        await outs.save_output_delivering(db.pool, **_output_fields(delivering.id))
