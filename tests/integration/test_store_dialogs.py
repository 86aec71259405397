"""core.db.dialogs and core.dialogs against a real PostgreSQL: every store function, expiry,
compare-and-set, and concurrent changes from several connections (as from several processes)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable

from core.db import dialogs as store
from core.db.pool import Database
from core.dialogs import (
    AudioWait,
    CharacterDialog,
    CharacterStep,
    Dialogs,
    MusicDraft,
    PickerDraft,
    SceneOrder,
    SceneWait,
)
from core.models import JobKind
from core.music.service import SoundtrackChoice

CHAT = -1001
USER = 42
OTHER = 43
HOUR = 3600.0


async def expire(db: Database, kind: str, key: int, chat_id: int = CHAT) -> None:
    await db.pool.execute(
        "UPDATE dialogs SET expires_at = now() - interval '1 second'"
        " WHERE chat_id = $1 AND kind = $2 AND key = $3",
        chat_id,
        kind,
        key,
    )


# -- core.db.dialogs ---------------------------------------------------------------------------


async def test_put_get_and_replace(db: Database) -> None:
    first = await store.put(
        db.pool, CHAT, "picker", 7, user_id=USER, state={"a": 1}, ttl_s=HOUR, attachment=b"x"
    )
    assert (first.chat_id, first.kind, first.key, first.user_id) == (CHAT, "picker", 7, USER)
    assert first.state == {"a": 1} and first.version == 1 and first.attachment is None
    got = await store.get(db.pool, CHAT, "picker", 7)
    assert got is not None and got.state == {"a": 1} and got.version == 1
    assert await store.get(db.pool, CHAT, "picker", 8) is None
    assert await store.get(db.pool, CHAT, "music", 7) is None
    assert await store.get(db.pool, CHAT + 1, "picker", 7) is None

    # starting again replaces state, owner and attachment, and bumps the version
    second = await store.put(db.pool, CHAT, "picker", 7, user_id=OTHER, state={"b": 2}, ttl_s=HOUR)
    assert second.version == 2 and second.user_id == OTHER and second.state == {"b": 2}
    taken = await store.take(db.pool, CHAT, "picker", 7)
    assert taken is not None and taken.attachment is None


async def test_expired_rows_are_invisible_to_reads_and_changes(db: Database) -> None:
    await store.put(db.pool, CHAT, "scene_wait", USER, user_id=USER, state={}, ttl_s=HOUR)
    await expire(db, "scene_wait", USER)
    assert await store.get(db.pool, CHAT, "scene_wait", USER) is None
    assert await store.of_key(db.pool, CHAT, ["scene_wait"], USER) == []
    assert await store.touch(db.pool, CHAT, "scene_wait", USER, ttl_s=HOUR) is None
    assert await store.save(db.pool, CHAT, "scene_wait", USER, version=1, state={"x": 1}) is None
    assert await store.take(db.pool, CHAT, "scene_wait", USER) is None
    # ... but a new start replaces the expired row
    again = await store.put(db.pool, CHAT, "scene_wait", USER, user_id=USER, state={}, ttl_s=HOUR)
    assert again.version == 2
    assert await store.get(db.pool, CHAT, "scene_wait", USER) is not None


async def test_of_key_reads_the_kinds_of_one_key(db: Database) -> None:
    for kind in ("character", "scene_wait", "audio_wait"):
        await store.put(db.pool, CHAT, kind, USER, user_id=USER, state={"k": kind}, ttl_s=HOUR)
    await store.put(db.pool, CHAT, "character", OTHER, user_id=OTHER, state={}, ttl_s=HOUR)
    await store.put(db.pool, CHAT, "picker", USER, user_id=USER, state={}, ttl_s=HOUR)
    await store.put(db.pool, CHAT + 1, "character", USER, user_id=USER, state={}, ttl_s=HOUR)
    await expire(db, "audio_wait", USER)
    rows = await store.of_key(db.pool, CHAT, ["character", "scene_wait", "audio_wait"], USER)
    assert sorted(row.kind for row in rows) == ["character", "scene_wait"]
    assert {row.kind: row.state["k"] for row in rows}["scene_wait"] == "scene_wait"


async def test_touch_pushes_expiry_and_keeps_state(db: Database) -> None:
    row = await store.put(
        db.pool, CHAT, "character", USER, user_id=USER, state={"s": 1}, ttl_s=60, notice={"n": 1}
    )
    touched = await store.touch(db.pool, CHAT, "character", USER, ttl_s=HOUR)
    assert touched is not None
    assert touched.version == row.version and touched.state == {"s": 1}
    assert (touched.expires_at - row.expires_at).total_seconds() > HOUR - 120
    kept = await db.pool.fetchval("SELECT notice FROM dialogs WHERE key = $1", USER)
    assert kept == {"n": 1}
    await store.touch(db.pool, CHAT, "character", USER, ttl_s=HOUR, notice={"n": 2})
    replaced = await db.pool.fetchval("SELECT notice FROM dialogs WHERE key = $1", USER)
    assert replaced == {"n": 2}
    assert await store.touch(db.pool, CHAT, "character", OTHER, ttl_s=HOUR) is None


async def test_save_is_a_compare_and_set(db: Database) -> None:
    await store.put(
        db.pool, CHAT, "character", USER, user_id=USER, state={"s": 0}, ttl_s=HOUR, attachment=b"a"
    )
    saved = await store.save(db.pool, CHAT, "character", USER, version=1, state={"s": 1})
    assert saved is not None and saved.version == 2 and saved.state == {"s": 1}
    stale = await store.save(db.pool, CHAT, "character", USER, version=1, state={"s": 9})
    assert stale is None
    current = await store.get(db.pool, CHAT, "character", USER)
    assert current is not None and current.state == {"s": 1}
    # the attachment is kept unless replaced
    await store.save(
        db.pool, CHAT, "character", USER, version=2, state={}, set_attachment=True, attachment=b"b"
    )
    await store.save(db.pool, CHAT, "character", USER, version=3, state={"s": 4})
    taken = await store.take(db.pool, CHAT, "character", USER)
    assert taken is not None and taken.attachment == b"b" and taken.state == {"s": 4}


async def test_take_and_delete(db: Database) -> None:
    await store.put(
        db.pool, CHAT, "picker", 5, user_id=USER, state={"p": 1}, ttl_s=HOUR, attachment=b"png"
    )
    assert await store.take(db.pool, CHAT, "picker", 5, version=2) is None  # other version
    taken = await store.take(db.pool, CHAT, "picker", 5, version=1)
    assert taken is not None and taken.state == {"p": 1} and taken.attachment == b"png"
    assert await store.take(db.pool, CHAT, "picker", 5) is None
    assert await store.get(db.pool, CHAT, "picker", 5) is None

    await store.put(db.pool, CHAT, "picker", 6, user_id=USER, state={}, ttl_s=HOUR)
    await expire(db, "picker", 6)
    assert await store.delete(db.pool, CHAT, "picker", 6)  # expired ones too
    assert not await store.delete(db.pool, CHAT, "picker", 6)


async def test_sweep_returns_each_expired_row_once(db: Database) -> None:
    await store.put(
        db.pool, CHAT, "character", USER, user_id=USER, state={}, ttl_s=HOUR, notice={"t": "x"}
    )
    await store.put(db.pool, CHAT, "picker", 9, user_id=USER, state={}, ttl_s=HOUR)
    await store.put(db.pool, CHAT, "scene_wait", USER, user_id=USER, state={}, ttl_s=HOUR)
    await expire(db, "character", USER)
    await expire(db, "picker", 9)
    swept = await store.sweep_expired(db.pool)
    assert sorted((row.kind, row.key) for row in swept) == [("character", USER), ("picker", 9)]
    notices = {row.kind: row.notice for row in swept}
    assert notices == {"character": {"t": "x"}, "picker": None}
    assert all(row.chat_id == CHAT and row.user_id == USER for row in swept)
    assert await store.sweep_expired(db.pool) == []
    assert await store.get(db.pool, CHAT, "scene_wait", USER) is not None  # live: kept

    # a batch limit, and several sweepers at once (as several processes): each row once
    for key in range(30):
        await store.put(db.pool, CHAT, "picker", 100 + key, user_id=USER, state={}, ttl_s=-1)
    assert len(await store.sweep_expired(db.pool, limit=5)) == 5

    async def sweep_all() -> list[int]:
        keys: list[int] = []
        while batch := await store.sweep_expired(db.pool, limit=3):
            keys += [row.key for row in batch]
        return keys

    results = await asyncio.gather(*(sweep_all() for _ in range(4)))
    everything = [key for keys in results for key in keys]
    assert sorted(everything) == list(range(105, 130))


async def test_text_is_kept_as_typed(db: Database) -> None:
    """User text is data: a NUL, quotes and SQL-looking text survive as they are."""
    text = 'a gi\x00rl\'); DROP TABLE dialogs; -- "\\u0000" \u202e💥'
    await store.put(db.pool, CHAT, "picker", 1, user_id=USER, state={"text": text}, ttl_s=HOUR)
    got = await store.get(db.pool, CHAT, "picker", 1)
    assert got is not None and got.state["text"] == text


# -- core.dialogs ------------------------------------------------------------------------------


def picker_draft(count: int = 3) -> PickerDraft:
    return PickerDraft(
        job_kind=JobKind.VIDEO,
        text="two friends at the beach",
        request_message_id=11,
        characters=[(uuid.uuid4(), f"Hero {n}") for n in range(count)],
        soundtrack=SoundtrackChoice("upload", "a.mp3", "My song"),
    )


async def test_typed_states_round_trip(db: Database) -> None:
    dialogs = Dialogs(db.pool)
    draft = picker_draft()
    started = await dialogs.start(CHAT, 500, USER, draft, ttl_s=HOUR)
    got = await dialogs.get(PickerDraft, CHAT, 500)
    assert got is not None and got.state == draft and got.version == started.version
    assert got.user_id == USER and got.key == 500 and got.chat_id == CHAT
    assert isinstance(got.state.soundtrack, SoundtrackChoice)
    assert await dialogs.get(MusicDraft, CHAT, 500) is None  # kinds are separate

    order = SceneOrder(user_id=USER, text="x", request_message_id=None, character_ids=[])
    music = MusicDraft(order=order, choices=[SoundtrackChoice("itunes", "1", "T", "A")])
    await dialogs.start(CHAT, 501, USER, music, ttl_s=HOUR)
    assert (await dialogs.get(MusicDraft, CHAT, 501)).state == music  # type: ignore[union-attr]


async def test_of_user_and_unreadable_state(db: Database) -> None:
    dialogs = Dialogs(db.pool)
    assert await dialogs.of_user(CHAT, USER) == type(await dialogs.of_user(CHAT, USER))()
    wait = SceneWait(character_id=uuid.uuid4(), prompt_message_id=3)
    character = CharacterDialog(step=CharacterStep.STYLE, name="Aiko", appearance="pink hair")
    await dialogs.start(CHAT, USER, USER, wait, ttl_s=HOUR)
    await dialogs.start(CHAT, USER, USER, character, ttl_s=HOUR)
    await dialogs.start(CHAT, OTHER, OTHER, AudioWait(chooser_message_id=4), ttl_s=HOUR)
    mine = await dialogs.of_user(CHAT, USER)
    assert mine.scene_wait is not None and mine.scene_wait.state == wait
    assert mine.character is not None and mine.character.state == character
    assert mine.audio_wait is None
    theirs = await dialogs.of_user(CHAT, OTHER)
    assert theirs.audio_wait is not None and theirs.character is None

    # a state an older or newer version wrote that this one cannot read counts as none
    await db.pool.execute(
        "UPDATE dialogs SET state = '{\"step\": \"dance\"}' WHERE kind = 'character'"
    )
    assert (await dialogs.of_user(CHAT, USER)).character is None
    assert await dialogs.get(CharacterDialog, CHAT, USER) is None


async def test_touch_save_take_discard(db: Database) -> None:
    dialogs = Dialogs(db.pool)
    first = await dialogs.start(
        CHAT, USER, USER, CharacterDialog(step=CharacterStep.NAME), ttl_s=60, notice={"a": 1}
    )
    touched = await dialogs.touch(CharacterDialog, CHAT, USER, ttl_s=HOUR, notice={"b": 2})
    assert touched is not None and touched.version == first.version
    assert touched.expires_at > first.expires_at

    named = CharacterDialog(step=CharacterStep.REFERENCE, name="Mio")
    saved = await dialogs.save(touched, named, attachment=b"png")
    assert saved is not None and saved.state == named and saved.version == first.version + 1
    assert await dialogs.save(touched, named) is None  # stale version
    confirm = named.model_copy(update={"step": CharacterStep.CONFIRM})
    saved2 = await dialogs.save(saved, confirm)  # the attachment is kept
    assert saved2 is not None

    assert await dialogs.take(CharacterDialog, CHAT, USER, version=saved.version) is None
    taken = await dialogs.take(CharacterDialog, CHAT, USER, version=saved2.version)
    assert taken is not None and taken.state == confirm and taken.attachment == b"png"
    assert await dialogs.take(CharacterDialog, CHAT, USER) is None

    await dialogs.start(CHAT, USER, USER, CharacterDialog(step=CharacterStep.NAME), ttl_s=HOUR)
    cleared = await dialogs.save(
        (await dialogs.get(CharacterDialog, CHAT, USER)),  # type: ignore[arg-type]
        CharacterDialog(step=CharacterStep.NAME),
        attachment=None,
    )
    assert cleared is not None
    assert await dialogs.discard(CharacterDialog, CHAT, USER)
    assert not await dialogs.discard(CharacterDialog, CHAT, USER)


async def test_sweep_through_the_facade(db: Database) -> None:
    dialogs = Dialogs(db.pool)
    await dialogs.start(
        CHAT, USER, USER, CharacterDialog(step=CharacterStep.NAME), ttl_s=-1, notice={"t": 1}
    )
    expired = await dialogs.sweep()
    assert [(e.kind, e.key, e.user_id, e.notice) for e in expired] == [
        ("character", USER, USER, {"t": 1})
    ]
    assert await dialogs.sweep() == []


async def test_concurrent_updates_lose_nothing(db: Database) -> None:
    """Toggles of one picker from several connections at once (the pool has 10, as several
    processes would): every toggle is applied, none is lost."""
    dialogs = Dialogs(db.pool)
    draft = picker_draft(count=12)
    await dialogs.start(CHAT, 700, USER, draft, ttl_s=HOUR)
    ids = [cid for cid, _ in draft.characters]

    def toggle(character_id: uuid.UUID) -> Callable[[PickerDraft], PickerDraft]:
        return lambda state: state.model_copy(update={"selected": state.selected ^ {character_id}})

    await asyncio.gather(*(dialogs.update(PickerDraft, CHAT, 700, toggle(cid)) for cid in ids))
    final = await dialogs.get(PickerDraft, CHAT, 700)
    assert final is not None and final.state.selected == frozenset(ids)
    assert final.version == 1 + len(ids)


async def test_update_of_a_missing_dialog(db: Database) -> None:
    dialogs = Dialogs(db.pool)
    assert await dialogs.update(PickerDraft, CHAT, 1, lambda state: state) is None
    await dialogs.start(CHAT, 2, USER, picker_draft(), ttl_s=-1)  # expired
    assert await dialogs.update(PickerDraft, CHAT, 2, lambda state: state) is None


async def test_concurrent_takes_give_the_dialog_to_one(db: Database) -> None:
    """A double tap on Done (maybe on two processes): one caller gets the picker."""
    dialogs = Dialogs(db.pool)
    await dialogs.start(CHAT, 800, USER, picker_draft(), ttl_s=HOUR)
    results = await asyncio.gather(*(dialogs.take(PickerDraft, CHAT, 800) for _ in range(8)))
    assert len([r for r in results if r is not None]) == 1


async def test_get_can_wait_for_a_dialog_being_stored(db: Database) -> None:
    """A button pressed before its message's dialog is stored: `get(wait_s=...)` finds it
    once another connection (as another process) stores it; without a wait it is missing."""
    dialogs = Dialogs(db.pool)
    draft = PickerDraft(job_kind=JobKind.IMAGE, text="a scene", request_message_id=1, characters=[])

    async def store_later() -> None:
        await asyncio.sleep(0.2)
        await dialogs.start(CHAT, 77, USER, draft, ttl_s=HOUR)

    storing = asyncio.create_task(store_later())
    assert await dialogs.get(PickerDraft, CHAT, 77) is None
    found = await dialogs.get(PickerDraft, CHAT, 77, wait_s=5.0)
    await storing
    assert found is not None and found.state == draft and found.user_id == USER
    # a dialog that never comes: None once the wait is over
    assert await dialogs.get(PickerDraft, CHAT, 78, wait_s=0.1) is None
