"""core.db.people.migrate_chat against a real PostgreSQL: a group upgraded to a supergroup takes
its settings, its undelivered jobs, its characters and its per-user dialogs to the new chat id,
in one transaction, once however often (and however concurrently) it is told."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from core.db import characters as char_db
from core.db import dialogs as dialog_db
from core.db import generations as gens
from core.db import people
from core.db.pool import Database
from core.models import ChatType, Generation, JobKind
from core.states import JobState

ALICE, BOB = 1, 2
GROUP, SUPERGROUP, ELSEWHERE = -4000000001, -1001000000001, -4000000002
TO_DELIVERING = [JobState.SUBMITTED, JobState.RUNNING, JobState.POSTPROCESSING, JobState.DELIVERING]


async def _setup(db: Database) -> None:
    for uid, name in ((ALICE, "Alice"), (BOB, "Bob")):
        await people.upsert_user(db.pool, uid, first_name=name)
    await people.upsert_chat(db.pool, GROUP, ChatType.GROUP, title="Studio")
    await people.upsert_chat(db.pool, ELSEWHERE, ChatType.GROUP, title="Other")
    await people.update_chat_settings(
        db.pool, GROUP, style_preset="chibi", aspect_ratio="16:9", send_original=True
    )


async def _job(db: Database, chat_id: int = GROUP, **extra: Any) -> Generation:
    fields: dict[str, Any] = {
        "id": uuid.uuid4(),
        "requester_id": ALICE,
        "chat_id": chat_id,
        "kind": JobKind.IMAGE,
        "prompt_typed": "rain",
        "workflow": "txt2img",
        "request_message_id": 11,
    }
    fields.update(extra)
    job, _alone = await gens.create_queued(db.pool, **fields)
    await gens.set_progress_message(db.pool, job.id, 12)
    return job


async def _put(db: Database, kind: str, key: int, user_id: int, chat_id: int = GROUP) -> None:
    await dialog_db.put(db.pool, chat_id, kind, key, user_id=user_id, state={"k": kind}, ttl_s=60)


async def test_migrate_chat_moves_what_follows_the_chat(db: Database) -> None:
    await _setup(db)
    queued = await _job(db)
    delivering = await _job(db)
    for state in TO_DELIVERING:
        await gens.transition(db.pool, delivering.id, state)
    delivered = await _job(db)  # delivered in the group: its messages (and buttons) stay there
    for state in TO_DELIVERING:
        await gens.transition(db.pool, delivered.id, state)
    await gens.record_delivery(db.pool, delivered.id, result_message_id=13)
    await gens.transition(db.pool, delivered.id, JobState.DONE)
    interrupted = await _job(db)  # its result is in the group already
    for state in TO_DELIVERING:
        await gens.transition(db.pool, interrupted.id, state)
    await gens.record_delivery(db.pool, interrupted.id, result_message_id=14)
    other = await _job(db, chat_id=ELSEWHERE)
    character = await char_db.create_character(
        db.pool, owner_id=ALICE, chat_id=GROUP, name="Aiko", appearance="pink hair", base_seed=1
    )
    await _put(db, "character", ALICE, ALICE)  # per user: moves
    await _put(db, "scene_wait", BOB, BOB)  # per user, but Bob has one in the supergroup
    await _put(db, "scene_wait", BOB, BOB, chat_id=SUPERGROUP)
    await _put(db, "picker", 15, ALICE)  # tied to message 15 of the group: stays

    moved = await people.migrate_chat(db.pool, GROUP, SUPERGROUP, title="Studio HQ")

    assert moved == people.ChatMigration(
        first=True, settings_copied=True, jobs=2, characters=1, dialogs=1
    )
    chat = await people.get_chat(db.pool, SUPERGROUP)
    assert chat is not None
    assert (chat.type, chat.title, chat.is_forum) == (ChatType.SUPERGROUP, "Studio HQ", False)
    assert (chat.style_preset, chat.aspect_ratio, chat.send_original) == ("chibi", "16:9", True)
    for job, status in ((queued, JobState.QUEUED), (delivering, JobState.DELIVERING)):
        now = await gens.require_generation(db.pool, job.id)
        assert (now.chat_id, now.status) == (SUPERGROUP, status)
        # ids of messages in the group: in the supergroup they would be other messages
        assert (now.request_message_id, now.progress_message_id) == (None, None)
    for job in (delivered, interrupted):
        now = await gens.require_generation(db.pool, job.id)
        assert (now.chat_id, now.request_message_id) == (GROUP, 11)
    assert (await gens.require_generation(db.pool, other.id)).chat_id == ELSEWHERE
    stored = await char_db.get_character(db.pool, character.id)
    assert stored is not None and stored.chat_id == SUPERGROUP
    assert await dialog_db.get(db.pool, SUPERGROUP, "character", ALICE) is not None
    assert await dialog_db.get(db.pool, GROUP, "character", ALICE) is None
    assert await dialog_db.get(db.pool, GROUP, "scene_wait", BOB) is not None  # not replaced
    assert await dialog_db.get(db.pool, GROUP, "picker", 15) is not None
    assert await people.migrated_from(db.pool, SUPERGROUP) == [GROUP]
    assert await people.migrated_from(db.pool, GROUP) == []
    assert await people.upgraded_from_one_another(db.pool, GROUP, SUPERGROUP)
    assert await people.upgraded_from_one_another(db.pool, SUPERGROUP, GROUP)
    assert not await people.upgraded_from_one_another(db.pool, GROUP, ELSEWHERE)


async def test_migrate_chat_again_changes_nothing_but_stragglers(db: Database) -> None:
    await _setup(db)
    await people.migrate_chat(db.pool, GROUP, SUPERGROUP)
    await people.update_chat_settings(db.pool, SUPERGROUP, style_preset="cyberpunk")
    late = await _job(db)  # queued in the group after the first signal (a race)

    again = await people.migrate_chat(db.pool, GROUP, SUPERGROUP)

    assert again == people.ChatMigration(
        first=False, settings_copied=False, jobs=1, characters=0, dialogs=0
    )
    chat = await people.get_chat(db.pool, SUPERGROUP)
    assert chat is not None and chat.style_preset == "cyberpunk"  # changed there: kept
    assert (await gens.require_generation(db.pool, late.id)).chat_id == SUPERGROUP
    assert await people.migrate_chat(db.pool, GROUP, SUPERGROUP) == people.ChatMigration(
        first=False, settings_copied=False, jobs=0, characters=0, dialogs=0
    )


async def test_the_first_signal_copies_over_a_supergroup_seen_already(db: Database) -> None:
    """The bot recorded the supergroup (with the defaults) before hearing of the upgrade."""
    await _setup(db)
    seen = await people.upsert_chat(db.pool, SUPERGROUP, ChatType.SUPERGROUP, title="Studio")
    assert seen.style_preset == "anime"

    moved = await people.migrate_chat(db.pool, GROUP, SUPERGROUP)

    assert moved.first and moved.settings_copied
    chat = await people.get_chat(db.pool, SUPERGROUP)
    assert chat is not None
    assert (chat.style_preset, chat.aspect_ratio, chat.send_original) == ("chibi", "16:9", True)
    assert (chat.type, chat.title) == (ChatType.SUPERGROUP, "Studio")


async def test_concurrent_signals_move_once(db: Database) -> None:
    await _setup(db)
    jobs = [await _job(db) for _ in range(3)]

    results = await asyncio.gather(
        *(people.migrate_chat(db.pool, GROUP, SUPERGROUP) for _ in range(4))
    )

    assert sorted(r.first for r in results) == [False, False, False, True]
    assert sum(r.settings_copied for r in results) == 1
    assert sum(r.jobs for r in results) == 3
    for job in jobs:
        assert (await gens.require_generation(db.pool, job.id)).chat_id == SUPERGROUP


async def test_an_unknown_group_is_recorded_only(db: Database) -> None:
    moved = await people.migrate_chat(db.pool, GROUP, SUPERGROUP)

    assert moved == people.ChatMigration(
        first=True, settings_copied=False, jobs=0, characters=0, dialogs=0
    )
    assert await people.get_chat(db.pool, SUPERGROUP) is None
    assert await people.migrated_from(db.pool, SUPERGROUP) == [GROUP]
