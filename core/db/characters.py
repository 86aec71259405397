"""Characters (soft-deleted, name unique per owner) and their reference images."""

from __future__ import annotations

from uuid import UUID

import asyncpg

from core.db.types import Executor
from core.errors import Conflict
from core.models import Character, CharacterReference

_INSERT = """
INSERT INTO characters (owner_id, chat_id, name, appearance, personality, style,
                        negative_prompt, base_seed, lora_name, lora_strength)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
RETURNING *
"""


async def create_character(
    db: Executor,
    *,
    owner_id: int,
    chat_id: int | None,
    name: str,
    appearance: str,
    personality: str = "",
    style: str = "anime",
    negative_prompt: str = "",
    base_seed: int,
    lora_name: str | None = None,
    lora_strength: float = 0.8,
) -> Character:
    try:
        row = await db.fetchrow(
            _INSERT,
            owner_id,
            chat_id,
            name,
            appearance,
            personality,
            style,
            negative_prompt,
            base_seed,
            lora_name,
            lora_strength,
        )
    except asyncpg.UniqueViolationError:
        raise Conflict(
            f"character name {name!r} taken for owner {owner_id}",
            user_message=f"You already have a character called {name}. Choose another name.",
        ) from None
    return Character.from_record(row)  # type: ignore[no-any-return]


async def get_character(db: Executor, character_id: UUID) -> Character | None:
    row = await db.fetchrow(
        "SELECT * FROM characters WHERE id = $1 AND deleted_at IS NULL", character_id
    )
    return None if row is None else Character.from_record(row)


async def get_characters(db: Executor, ids: list[UUID]) -> list[Character]:
    rows = await db.fetch(
        "SELECT * FROM characters WHERE id = ANY($1::uuid[]) AND deleted_at IS NULL", ids
    )
    by_id = {row["id"]: Character.from_record(row) for row in rows}
    return [by_id[i] for i in ids if i in by_id]


async def names_of(db: Executor, ids: list[UUID]) -> dict[UUID, str]:
    """Names of characters by id, deleted ones included (a past job keeps its cast)."""
    rows = await db.fetch("SELECT id, name FROM characters WHERE id = ANY($1::uuid[])", ids)
    return {row["id"]: row["name"] for row in rows}


async def find_by_name(db: Executor, owner_id: int, name: str) -> Character | None:
    row = await db.fetchrow(
        "SELECT * FROM characters WHERE owner_id = $1 AND lower(name) = lower($2)"
        " AND deleted_at IS NULL",
        owner_id,
        name,
    )
    return None if row is None else Character.from_record(row)


async def list_characters(
    db: Executor, owner_id: int, *, limit: int = 50, offset: int = 0
) -> list[Character]:
    rows = await db.fetch(
        "SELECT * FROM characters WHERE owner_id = $1 AND deleted_at IS NULL"
        " ORDER BY lower(name), id LIMIT $2 OFFSET $3",
        owner_id,
        limit,
        offset,
    )
    return [Character.from_record(row) for row in rows]


async def count_characters(db: Executor, owner_id: int) -> int:
    count: int = await db.fetchval(
        "SELECT count(*) FROM characters WHERE owner_id = $1 AND deleted_at IS NULL", owner_id
    )
    return count


_UPDATE = """
UPDATE characters SET
    name = coalesce($2, name),
    appearance = coalesce($3, appearance),
    personality = coalesce($4, personality),
    style = coalesce($5, style),
    negative_prompt = coalesce($6, negative_prompt),
    lora_name = CASE WHEN $7 THEN $8 ELSE lora_name END,
    lora_strength = coalesce($9, lora_strength),
    updated_at = now()
WHERE id = $1 AND deleted_at IS NULL
RETURNING *
"""


async def update_character(
    db: Executor,
    character_id: UUID,
    *,
    name: str | None = None,
    appearance: str | None = None,
    personality: str | None = None,
    style: str | None = None,
    negative_prompt: str | None = None,
    set_lora: bool = False,
    lora_name: str | None = None,
    lora_strength: float | None = None,
) -> Character | None:
    try:
        row = await db.fetchrow(
            _UPDATE,
            character_id,
            name,
            appearance,
            personality,
            style,
            negative_prompt,
            set_lora,
            lora_name,
            lora_strength,
        )
    except asyncpg.UniqueViolationError:
        raise Conflict(
            f"character name {name!r} taken",
            user_message=f"You already have a character called {name}. Choose another name.",
        ) from None
    return None if row is None else Character.from_record(row)


async def soft_delete_character(db: Executor, character_id: UUID) -> bool:
    status: str = await db.execute(
        "UPDATE characters SET deleted_at = now(), updated_at = now()"
        " WHERE id = $1 AND deleted_at IS NULL",
        character_id,
    )
    return status.endswith(" 1")


async def add_reference(
    db: Executor,
    character_id: UUID,
    *,
    file_path: str,
    sha256: str,
    width: int,
    height: int,
    telegram_file_id: str | None = None,
) -> CharacterReference:
    row = await db.fetchrow(
        "INSERT INTO character_references (character_id, file_path, sha256, width, height,"
        " telegram_file_id) VALUES ($1, $2, $3, $4, $5, $6) RETURNING *",
        character_id,
        file_path,
        sha256,
        width,
        height,
        telegram_file_id,
    )
    return CharacterReference.from_record(row)  # type: ignore[no-any-return]


async def list_references(db: Executor, character_id: UUID) -> list[CharacterReference]:
    rows = await db.fetch(
        "SELECT * FROM character_references WHERE character_id = $1 ORDER BY created_at, id",
        character_id,
    )
    return [CharacterReference.from_record(row) for row in rows]
