"""Users and chats seen by the bot, roles, bans, per-user daily quota counters, and groups
upgraded to supergroups."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

from core.db.tx import transaction
from core.db.types import Executor
from core.models import Chat, ChatType, Role, User

_UPSERT_USER = """
INSERT INTO users (id, username, first_name, last_name, language_code)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (id) DO UPDATE SET
    username = EXCLUDED.username,
    first_name = EXCLUDED.first_name,
    last_name = EXCLUDED.last_name,
    language_code = EXCLUDED.language_code,
    last_seen_at = now()
RETURNING *
"""


async def upsert_user(
    db: Executor,
    user_id: int,
    *,
    first_name: str,
    username: str | None = None,
    last_name: str | None = None,
    language_code: str | None = None,
) -> User:
    row = await db.fetchrow(_UPSERT_USER, user_id, username, first_name, last_name, language_code)
    return User.from_record(row)  # type: ignore[no-any-return]


async def get_user(db: Executor, user_id: int) -> User | None:
    row = await db.fetchrow("SELECT * FROM users WHERE id = $1", user_id)
    return None if row is None else User.from_record(row)


async def find_user_by_username(db: Executor, username: str) -> User | None:
    row = await db.fetchrow(
        "SELECT * FROM users WHERE lower(username) = lower($1)", username.lstrip("@")
    )
    return None if row is None else User.from_record(row)


async def set_role(db: Executor, user_id: int, role: Role) -> User | None:
    row = await db.fetchrow(
        "UPDATE users SET role = $2 WHERE id = $1 RETURNING *", user_id, role.value
    )
    return None if row is None else User.from_record(row)


async def set_daily_quota(db: Executor, user_id: int, quota: int | None) -> User | None:
    row = await db.fetchrow(
        "UPDATE users SET daily_quota = $2 WHERE id = $1 RETURNING *", user_id, quota
    )
    return None if row is None else User.from_record(row)


async def lock_user(db: Executor, user_id: int) -> None:
    """Hold the user's row until the transaction ends: their checks and inserts run one at a
    time (a flood of concurrent requests cannot all pass a limit at once)."""
    await db.execute("SELECT 1 FROM users WHERE id = $1 FOR UPDATE", user_id)


_TAKE_QUOTA = """
UPDATE users SET
    quota_used = CASE WHEN quota_day = $2 THEN quota_used + 1 ELSE 1 END,
    quota_day = $2
WHERE id = $1
  AND (CASE WHEN quota_day = $2 THEN quota_used ELSE 0 END) < coalesce(daily_quota, $3)
RETURNING quota_used
"""


async def take_quota(db: Executor, user_id: int, today: date, default_quota: int) -> int | None:
    """Count one generation against today's quota; None when the quota is used up."""
    used: int | None = await db.fetchval(_TAKE_QUOTA, user_id, today, default_quota)
    return used


async def give_back_quota(db: Executor, user_id: int, today: date) -> None:
    await db.execute(
        "UPDATE users SET quota_used = greatest(quota_used - 1, 0)"
        " WHERE id = $1 AND quota_day = $2",
        user_id,
        today,
    )


async def reset_quotas(db: Executor, today: date) -> int:
    """Zero every counter of a past day; returns how many users were reset."""
    status: str = await db.execute(
        "UPDATE users SET quota_used = 0, quota_day = $1 WHERE quota_day <> $1", today
    )
    return int(status.split()[-1])


async def count_users(db: Executor) -> int:
    count: int = await db.fetchval("SELECT count(*) FROM users")
    return count


_UPSERT_CHAT = """
INSERT INTO chats (id, type, title, is_forum)
VALUES ($1, $2, $3, $4)
ON CONFLICT (id) DO UPDATE SET
    type = EXCLUDED.type,
    title = EXCLUDED.title,
    is_forum = EXCLUDED.is_forum,
    last_seen_at = now()
RETURNING *
"""


async def upsert_chat(
    db: Executor,
    chat_id: int,
    chat_type: ChatType,
    *,
    title: str | None = None,
    is_forum: bool = False,
) -> Chat:
    row = await db.fetchrow(_UPSERT_CHAT, chat_id, chat_type.value, title, is_forum)
    return Chat.from_record(row)  # type: ignore[no-any-return]


# Most updates come from a user and chat seen a moment ago, unchanged: those rows are only
# read (no write, so no WAL flush on the path of every update). A row is written when it is
# new, when a field changed, or when its `last_seen_at` is more than SEEN_REFRESH old.
_SEEN = """
WITH cu AS (
    SELECT * FROM users WHERE id = $1
), u AS (
    INSERT INTO users (id, username, first_name, language_code)
    SELECT $1, $2, $3, $4
    WHERE NOT EXISTS (
        SELECT 1 FROM cu WHERE cu.last_seen_at > now() - $9::interval
          AND (cu.username, cu.first_name, cu.last_name, cu.language_code)
              IS NOT DISTINCT FROM ($2, $3, NULL::text, $4)
    )
    ON CONFLICT (id) DO UPDATE SET
        username = EXCLUDED.username,
        first_name = EXCLUDED.first_name,
        last_name = NULL,
        language_code = EXCLUDED.language_code,
        last_seen_at = now()
    RETURNING *
), cc AS (
    SELECT * FROM chats WHERE id = $5
), c AS (
    INSERT INTO chats (id, type, title, is_forum)
    SELECT $5, $6, $7, $8
    WHERE NOT EXISTS (
        SELECT 1 FROM cc WHERE cc.last_seen_at > now() - $9::interval
          AND (cc.type, cc.title, cc.is_forum) IS NOT DISTINCT FROM ($6, $7, $8)
    )
    ON CONFLICT (id) DO UPDATE SET
        type = EXCLUDED.type,
        title = EXCLUDED.title,
        is_forum = EXCLUDED.is_forum,
        last_seen_at = now()
    RETURNING *
)
SELECT coalesce((SELECT to_json(u) FROM u), (SELECT to_json(cu) FROM cu)) AS user_row,
    coalesce((SELECT to_json(c) FROM c), (SELECT to_json(cc) FROM cc)) AS chat_row
"""
SEEN_REFRESH = timedelta(minutes=1)


async def seen(
    db: Executor,
    *,
    user_id: int,
    first_name: str,
    username: str | None,
    language_code: str | None,
    chat_id: int,
    chat_type: ChatType,
    title: str | None,
    is_forum: bool,
) -> tuple[User, Chat]:
    """Both upserts of an update's user and chat, in one statement (one round trip); a row
    seen less than SEEN_REFRESH ago with the same fields is only read."""
    values = (user_id, username, first_name, language_code)
    chat_values = (chat_id, chat_type.value, title, is_forum)
    row = await db.fetchrow(_SEEN, *values, *chat_values, SEEN_REFRESH)
    assert row is not None
    return User.from_record(row["user_row"]), Chat.from_record(row["chat_row"])


async def get_chat(db: Executor, chat_id: int) -> Chat | None:
    row = await db.fetchrow("SELECT * FROM chats WHERE id = $1", chat_id)
    return None if row is None else Chat.from_record(row)


_UPDATE_CHAT_SETTINGS = """
UPDATE chats SET
    style_preset = coalesce($2, style_preset),
    aspect_ratio = coalesce($3, aspect_ratio),
    video_seconds = coalesce($4, video_seconds),
    send_original = coalesce($5, send_original),
    language = coalesce($6, language)
WHERE id = $1
RETURNING *
"""


async def update_chat_settings(
    db: Executor,
    chat_id: int,
    *,
    style_preset: str | None = None,
    aspect_ratio: str | None = None,
    video_seconds: int | None = None,
    send_original: bool | None = None,
    language: str | None = None,
) -> Chat | None:
    row = await db.fetchrow(
        _UPDATE_CHAT_SETTINGS,
        chat_id,
        style_preset,
        aspect_ratio,
        video_seconds,
        send_original,
        language,
    )
    return None if row is None else Chat.from_record(row)


# -- a group upgraded to a supergroup -------------------------------------------------------------

_RECORD_MIGRATION = """
INSERT INTO chat_migrations (from_chat_id, to_chat_id) VALUES ($1, $2)
ON CONFLICT (from_chat_id) DO NOTHING
RETURNING to_chat_id
"""

# The group's settings onto the supergroup's row: a new row when the bot has not seen the
# supergroup yet (always), or over the row it has (only with $4, the first call; its type,
# title and forum flag are kept).
_COPY_SETTINGS = """
INSERT INTO chats (id, type, title, is_forum, style_preset, aspect_ratio, video_seconds,
                   send_original, language, created_at)
SELECT $2, 'supergroup', coalesce($3, o.title), false, o.style_preset, o.aspect_ratio,
       o.video_seconds, o.send_original, o.language, o.created_at
FROM chats o WHERE o.id = $1
ON CONFLICT (id) DO UPDATE SET
    style_preset = EXCLUDED.style_preset,
    aspect_ratio = EXCLUDED.aspect_ratio,
    video_seconds = EXCLUDED.video_seconds,
    send_original = EXCLUDED.send_original,
    language = EXCLUDED.language,
    created_at = least(chats.created_at, EXCLUDED.created_at)
WHERE $4
"""

# Jobs not delivered yet: their result goes to the supergroup. Their request and progress
# messages are in the old group (the supergroup numbers its messages anew: the same ids there
# are other messages), so they are forgotten. Delivered jobs stay: their messages, and the
# buttons under them, are in the old group.
_MOVE_JOBS = """
UPDATE generations SET
    chat_id = $2,
    request_message_id = NULL,
    progress_message_id = NULL,
    updated_at = now()
WHERE chat_id = $1 AND finished_at IS NULL AND result_message_id IS NULL
"""

_MOVE_CHARACTERS = "UPDATE characters SET chat_id = $2 WHERE chat_id = $1"

# Per-user dialogs (key = the user id) follow, unless the user already has one of that kind in
# the supergroup (that newer one wins; the old one expires). Dialogs tied to a message of the
# old group (a picker, a music chooser) stay with it.
_MOVE_DIALOGS = """
UPDATE dialogs d SET chat_id = $2
WHERE d.chat_id = $1 AND d.key = d.user_id
  AND NOT EXISTS (
      SELECT 1 FROM dialogs n WHERE n.chat_id = $2 AND n.kind = d.kind AND n.key = d.key
  )
"""


@dataclass(frozen=True)
class ChatMigration:
    """What `migrate_chat` did. `first`: this call recorded the upgrade; `settings_copied`:
    the group's settings were written onto the supergroup's row; the counts are rows moved."""

    first: bool
    settings_copied: bool
    jobs: int
    characters: int
    dialogs: int


def _count(status: str) -> int:
    return int(status.split()[-1])


async def migrate_chat(
    db: Executor, old_chat_id: int, new_chat_id: int, *, title: str | None = None
) -> ChatMigration:
    """Move the stored state of group `old_chat_id`, upgraded to supergroup `new_chat_id`,
    in one transaction. Idempotent: only the first call (the one that records the upgrade)
    copies the group's settings over a supergroup row the bot may have recorded meanwhile
    (with the defaults); a later one only creates the row when it is missing. Every call
    moves the undelivered jobs, the characters and the per-user dialogs still under the old
    id. Concurrent calls wait for each other (on the record's key). `title`: the
    supergroup's, when known."""
    async with transaction(db) as conn:
        first = await conn.fetchval(_RECORD_MIGRATION, old_chat_id, new_chat_id) is not None
        status = await conn.execute(_COPY_SETTINGS, old_chat_id, new_chat_id, title, first)
        copied = _count(status) > 0
        jobs = _count(await conn.execute(_MOVE_JOBS, old_chat_id, new_chat_id))
        characters = _count(await conn.execute(_MOVE_CHARACTERS, old_chat_id, new_chat_id))
        dialogs = _count(await conn.execute(_MOVE_DIALOGS, old_chat_id, new_chat_id))
    return ChatMigration(first, copied, jobs, characters, dialogs)


async def migrated_from(db: Executor, chat_id: int) -> list[int]:
    """The groups upgraded to supergroup `chat_id` (at most one, in Telegram)."""
    rows = await db.fetch(
        "SELECT from_chat_id FROM chat_migrations WHERE to_chat_id = $1 ORDER BY from_chat_id",
        chat_id,
    )
    return [row["from_chat_id"] for row in rows]


async def upgraded_from_one_another(db: Executor, chat_a: int, chat_b: int) -> bool:
    """Was one of the two chats upgraded to the other?"""
    found: bool = await db.fetchval(
        "SELECT EXISTS (SELECT 1 FROM chat_migrations WHERE"
        " (from_chat_id = $1 AND to_chat_id = $2) OR (from_chat_id = $2 AND to_chat_id = $1))",
        chat_a,
        chat_b,
    )
    return found
