"""core.db.characters against a real PostgreSQL: names unique per owner, updates, references."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest

from core.db import characters as chars
from core.db import people
from core.db.pool import Database
from core.errors import Conflict
from core.models import Character, ChatType

OWNER = 100
OTHER = 200
CHAT = -500
SHA = "ab" * 32


@pytest.fixture
async def owners(db: Database) -> None:
    await people.upsert_user(db.pool, OWNER, first_name="Owner")
    await people.upsert_user(db.pool, OTHER, first_name="Other")
    await people.upsert_chat(db.pool, CHAT, ChatType.GROUP, title="Studio")


async def _make(db: Database, name: str, owner: int = OWNER, **extra: object) -> Character:
    fields: dict[str, object] = {
        "owner_id": owner,
        "chat_id": CHAT,
        "name": name,
        "appearance": f"{name} has silver hair",
        "base_seed": 1234,
    }
    fields.update(extra)
    return await chars.create_character(db.pool, **fields)  # type: ignore[arg-type]


@pytest.mark.usefixtures("owners")
async def test_create_with_defaults_and_get(db: Database) -> None:
    hana = await _make(db, "Hana")
    assert isinstance(hana.id, uuid.UUID)
    assert (hana.owner_id, hana.chat_id, hana.name) == (OWNER, CHAT, "Hana")
    assert hana.appearance == "Hana has silver hair"
    assert (hana.personality, hana.style, hana.negative_prompt) == ("", "anime", "")
    assert hana.base_seed == 1234
    assert hana.lora_name is None
    assert hana.lora_strength == pytest.approx(0.8)
    assert hana.deleted_at is None
    assert await chars.get_character(db.pool, hana.id) == hana
    assert await chars.get_character(db.pool, uuid.uuid4()) is None

    kenji = await chars.create_character(
        db.pool,
        owner_id=OWNER,
        chat_id=None,
        name="Kenji",
        appearance="tall, red scarf",
        personality="grumpy",
        style="ghibli",
        negative_prompt="blurry",
        base_seed=0,
        lora_name="kenji_v2.safetensors",
        lora_strength=1.25,
    )
    assert kenji.chat_id is None
    assert (kenji.personality, kenji.style, kenji.negative_prompt) == ("grumpy", "ghibli", "blurry")
    assert kenji.base_seed == 0
    assert kenji.lora_name == "kenji_v2.safetensors"
    assert kenji.lora_strength == pytest.approx(1.25)


@pytest.mark.usefixtures("owners")
async def test_name_unique_per_owner_and_soft_delete(db: Database) -> None:
    await _make(db, "Hana")
    with pytest.raises(Conflict) as caught:
        await _make(db, "hANA")
    assert "hANA" in caught.value.user_message
    assert "already have a character" in caught.value.user_message
    assert str(OWNER) not in caught.value.user_message  # no internals for the user
    assert await chars.count_characters(db.pool, OWNER) == 1

    mine = await chars.find_by_name(db.pool, OWNER, "hana")
    assert mine is not None
    theirs = await _make(db, "HANA", owner=OTHER)
    assert theirs.id != mine.id
    assert await chars.soft_delete_character(db.pool, mine.id) is True
    again = await _make(db, "hana")
    assert again.id != mine.id
    found = await chars.find_by_name(db.pool, OWNER, "Hana")
    assert found is not None and found.id == again.id

    hana = again
    mio = await _make(db, "Mio")
    assert await chars.soft_delete_character(db.pool, hana.id) is True
    assert await chars.soft_delete_character(db.pool, hana.id) is False  # already gone
    assert await chars.soft_delete_character(db.pool, uuid.uuid4()) is False
    assert await chars.get_character(db.pool, hana.id) is None
    assert await chars.find_by_name(db.pool, OWNER, "Hana") is None
    assert await chars.get_characters(db.pool, [hana.id, mio.id]) == [mio]
    assert [c.id for c in await chars.list_characters(db.pool, OWNER)] == [mio.id]
    assert await chars.count_characters(db.pool, OWNER) == 1
    assert await chars.update_character(db.pool, hana.id, name="Zombie") is None
    deleted_at = await db.pool.fetchval("SELECT deleted_at FROM characters WHERE id = $1", hana.id)
    assert deleted_at is not None  # the row is kept


@pytest.mark.usefixtures("owners")
async def test_get_find_list_and_count(db: Database) -> None:
    a = await _make(db, "A")
    b = await _make(db, "B")
    c = await _make(db, "C")
    got = await chars.get_characters(db.pool, [c.id, uuid.uuid4(), a.id, b.id])
    assert [x.id for x in got] == [c.id, a.id, b.id]
    assert await chars.get_characters(db.pool, []) == []

    hana = await _make(db, "Hana")
    assert await chars.find_by_name(db.pool, OWNER, "HANA") == hana
    assert await chars.find_by_name(db.pool, OTHER, "Hana") is None
    assert await chars.find_by_name(db.pool, OWNER, "Han") is None

    for name in ("zed", "Alice", "bob", "Carol"):
        await _make(db, name)
    await _make(db, "Xeno", owner=OTHER)
    listed = await chars.list_characters(db.pool, OWNER)
    assert [c.name for c in listed] == ["A", "Alice", "B", "bob", "C", "Carol", "Hana", "zed"]
    page = await chars.list_characters(db.pool, OWNER, limit=2, offset=3)
    assert [c.name for c in page] == ["bob", "C"]
    assert await chars.count_characters(db.pool, OWNER) == 8
    assert await chars.count_characters(db.pool, OTHER) == 1
    assert await chars.list_characters(db.pool, 999) == []
    assert await chars.count_characters(db.pool, 999) == 0


@pytest.mark.usefixtures("owners")
async def test_update_fields_and_lora(db: Database) -> None:
    hana = await _make(db, "Hana", personality="shy", lora_name="hana.safetensors")
    await asyncio.sleep(0.01)
    updated = await chars.update_character(
        db.pool,
        hana.id,
        name="Hanako",
        appearance="short black hair",
        personality="bold",
        style="watercolor",
        negative_prompt="extra fingers",
        lora_strength=0.5,
    )
    assert updated is not None
    assert updated.name == "Hanako"
    assert updated.appearance == "short black hair"
    assert updated.personality == "bold"
    assert updated.style == "watercolor"
    assert updated.negative_prompt == "extra fingers"
    assert updated.lora_strength == pytest.approx(0.5)
    assert updated.lora_name == "hana.safetensors"  # untouched without set_lora
    assert updated.updated_at > hana.updated_at
    assert updated.created_at == hana.created_at
    assert updated.base_seed == hana.base_seed

    # Fields not given are kept.
    same = await chars.update_character(db.pool, hana.id, personality="calm")
    assert same is not None
    assert (same.name, same.appearance, same.personality) == (
        "Hanako",
        "short black hair",
        "calm",
    )
    assert await chars.get_character(db.pool, hana.id) == same
    assert await chars.update_character(db.pool, uuid.uuid4(), name="X") is None

    hana = await _make(db, "Hana")  # the old name is free again after the rename
    with_lora = await chars.update_character(
        db.pool, hana.id, set_lora=True, lora_name="hana.safetensors", lora_strength=1.1
    )
    assert with_lora is not None
    assert with_lora.lora_name == "hana.safetensors"
    assert with_lora.lora_strength == pytest.approx(1.1)
    # lora_name given without set_lora is ignored.
    ignored = await chars.update_character(db.pool, hana.id, lora_name="other.safetensors")
    assert ignored is not None and ignored.lora_name == "hana.safetensors"
    cleared = await chars.update_character(db.pool, hana.id, set_lora=True, lora_name=None)
    assert cleared is not None
    assert cleared.lora_name is None
    assert cleared.lora_strength == pytest.approx(1.1)


@pytest.mark.usefixtures("owners")
async def test_rename_conflict_and_checks(db: Database) -> None:
    await _make(db, "Hana")
    mio = await _make(db, "Mio")
    with pytest.raises(Conflict) as caught:
        await chars.update_character(db.pool, mio.id, name="HANA")
    assert "HANA" in caught.value.user_message
    still = await chars.get_character(db.pool, mio.id)
    assert still is not None and still.name == "Mio"
    # Changing only the case of one's own name is not a conflict.
    renamed = await chars.update_character(db.pool, mio.id, name="MIO")
    assert renamed is not None and renamed.name == "MIO"

    with pytest.raises(asyncpg.CheckViolationError):
        await _make(db, "")
    with pytest.raises(asyncpg.CheckViolationError):
        await _make(db, "x" * 65)
    with pytest.raises(asyncpg.CheckViolationError):
        await _make(db, "Neg", base_seed=-1)
    with pytest.raises(asyncpg.CheckViolationError):
        await _make(db, "Strong", lora_strength=5.0)
    with pytest.raises(asyncpg.ForeignKeyViolationError):
        await _make(db, "Orphan", owner=424242)
    assert await chars.count_characters(db.pool, OWNER) == 2


@pytest.mark.usefixtures("owners")
async def test_references(db: Database) -> None:
    hana = await _make(db, "Hana")
    mio = await _make(db, "Mio")
    assert await chars.list_references(db.pool, hana.id) == []
    first = await chars.add_reference(
        db.pool,
        hana.id,
        file_path="refs/hana/1.png",
        sha256=SHA,
        width=512,
        height=768,
        telegram_file_id="AgAD1",
    )
    second = await chars.add_reference(
        db.pool, hana.id, file_path="refs/hana/2.png", sha256="cd" * 32, width=1024, height=1024
    )
    await chars.add_reference(
        db.pool, mio.id, file_path="refs/mio/1.png", sha256=SHA, width=64, height=64
    )
    assert first.character_id == hana.id
    assert (first.file_path, first.sha256, first.width, first.height) == (
        "refs/hana/1.png",
        SHA,
        512,
        768,
    )
    assert first.telegram_file_id == "AgAD1"
    assert second.telegram_file_id is None
    assert await chars.list_references(db.pool, hana.id) == [first, second]
    assert len(await chars.list_references(db.pool, mio.id)) == 1

    with pytest.raises(asyncpg.CheckViolationError):
        await chars.add_reference(
            db.pool, hana.id, file_path="x.png", sha256="NOT-HEX", width=1, height=1
        )
    with pytest.raises(asyncpg.CheckViolationError):
        await chars.add_reference(
            db.pool, hana.id, file_path="x.png", sha256=SHA, width=0, height=1
        )
    with pytest.raises(asyncpg.ForeignKeyViolationError):
        await chars.add_reference(
            db.pool, uuid.uuid4(), file_path="x.png", sha256=SHA, width=1, height=1
        )
    assert len(await chars.list_references(db.pool, hana.id)) == 2  # failed inserts left nothing
