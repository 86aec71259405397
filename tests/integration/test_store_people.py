"""core.db.people against a real PostgreSQL: users, chats, roles, bans and the daily quota."""

from __future__ import annotations

import asyncio
from datetime import date, timedelta
from typing import Any

import asyncpg
import pytest

from core.db import people
from core.db.pool import Database
from core.models import ChatType, Role

TODAY = date(2030, 6, 15)
TOMORROW = TODAY + timedelta(days=1)


async def test_upsert_get_find_and_count_users(db: Database) -> None:
    assert await people.count_users(db.pool) == 0
    first = await people.upsert_user(
        db.pool, 1001, first_name="Ann", username="ann", last_name="Lee", language_code="en"
    )
    assert (first.id, first.first_name, first.username, first.last_name) == (
        1001,
        "Ann",
        "ann",
        "Lee",
    )
    assert first.language_code == "en"
    assert first.role is Role.USER
    assert first.daily_quota is None
    assert first.quota_used == 0
    assert first.created_at == first.last_seen_at

    await asyncio.sleep(0.01)
    second = await people.upsert_user(db.pool, 1001, first_name="Annie", username="annie2")
    assert second.first_name == "Annie"
    assert second.username == "annie2"
    assert second.last_name is None  # the latest profile wins, including cleared fields
    assert second.language_code is None
    assert second.created_at == first.created_at
    assert second.last_seen_at > first.last_seen_at
    assert await people.get_user(db.pool, 1001) == second
    assert await people.count_users(db.pool) == 1

    await people.upsert_user(db.pool, 1, first_name="A")
    await people.set_role(db.pool, 1, Role.ADMIN)
    await people.set_daily_quota(db.pool, 1, 7)
    again = await people.upsert_user(db.pool, 1, first_name="B")
    assert again.role is Role.ADMIN
    assert again.daily_quota == 7

    assert await people.get_user(db.pool, 42) is None
    await people.upsert_user(db.pool, 42, first_name="Kai", username="KaiSan")
    await people.upsert_user(db.pool, 43, first_name="NoName")
    found = await people.find_user_by_username(db.pool, "@kaisan")
    assert found is not None and found.id == 42
    found = await people.find_user_by_username(db.pool, "KAISAN")
    assert found is not None and found.id == 42
    assert await people.find_user_by_username(db.pool, "nobody") is None
    assert await people.count_users(db.pool) == 4


async def test_roles_and_bans(db: Database) -> None:
    assert await people.set_role(db.pool, 5, Role.ADMIN) is None  # unknown user
    await people.upsert_user(db.pool, 5, first_name="E")
    admin = await people.set_role(db.pool, 5, Role.ADMIN)
    assert admin is not None and admin.role is Role.ADMIN
    banned = await people.set_role(db.pool, 5, Role.BANNED)
    assert banned is not None and banned.role is Role.BANNED
    stored = await people.get_user(db.pool, 5)
    assert stored is not None and stored.role is Role.BANNED
    unbanned = await people.set_role(db.pool, 5, Role.USER)
    assert unbanned is not None and unbanned.role is Role.USER

    await people.upsert_user(db.pool, 6, first_name="F")
    with pytest.raises(asyncpg.CheckViolationError):
        await db.pool.execute("UPDATE users SET role = 'god' WHERE id = 6")


async def test_quota_limit_new_day_and_unknown_user(db: Database) -> None:
    await people.upsert_user(db.pool, 7, first_name="G")
    taken = [await people.take_quota(db.pool, 7, TODAY, 3) for _ in range(3)]
    assert taken == [1, 2, 3]
    assert await people.take_quota(db.pool, 7, TODAY, 3) is None
    assert await people.take_quota(db.pool, 7, TODAY, 3) is None
    user = await people.get_user(db.pool, 7)
    assert user is not None and user.quota_used == 3 and user.quota_day == TODAY

    await people.upsert_user(db.pool, 8, first_name="H")
    assert await people.take_quota(db.pool, 8, TODAY, 2) == 1
    assert await people.take_quota(db.pool, 8, TODAY, 2) == 2
    assert await people.take_quota(db.pool, 8, TODAY, 2) is None
    assert await people.take_quota(db.pool, 8, TOMORROW, 2) == 1
    user = await people.get_user(db.pool, 8)
    assert user is not None and user.quota_day == TOMORROW and user.quota_used == 1

    await people.upsert_user(db.pool, 9, first_name="I")
    assert await people.take_quota(db.pool, 9, TODAY, 0) is None
    assert await people.take_quota(db.pool, 999, TODAY, 10) is None


async def test_per_user_quota_override(db: Database) -> None:
    await people.upsert_user(db.pool, 10, first_name="J")
    await people.upsert_user(db.pool, 11, first_name="K")
    raised = await people.set_daily_quota(db.pool, 10, 4)
    assert raised is not None and raised.daily_quota == 4
    used = [await people.take_quota(db.pool, 10, TODAY, 1) for _ in range(5)]
    assert used == [1, 2, 3, 4, None]
    # The other user still has the default.
    assert await people.take_quota(db.pool, 11, TODAY, 1) == 1
    assert await people.take_quota(db.pool, 11, TODAY, 1) is None
    # Override to zero blocks; back to NULL restores the default.
    await people.set_daily_quota(db.pool, 11, 0)
    assert await people.take_quota(db.pool, 11, TOMORROW, 5) is None
    back = await people.set_daily_quota(db.pool, 11, None)
    assert back is not None and back.daily_quota is None
    assert await people.take_quota(db.pool, 11, TOMORROW, 5) == 1
    assert await people.set_daily_quota(db.pool, 12345, 3) is None


async def test_give_back_concurrency_and_reset(db: Database) -> None:
    await people.upsert_user(db.pool, 12, first_name="L")
    assert await people.take_quota(db.pool, 12, TODAY, 2) == 1
    assert await people.take_quota(db.pool, 12, TODAY, 2) == 2
    await people.give_back_quota(db.pool, 12, TODAY)
    assert await people.take_quota(db.pool, 12, TODAY, 2) == 2
    # Never below zero.
    for _ in range(4):
        await people.give_back_quota(db.pool, 12, TODAY)
    user = await people.get_user(db.pool, 12)
    assert user is not None and user.quota_used == 0
    # A give-back for another day (the counter moved on) is ignored.
    assert await people.take_quota(db.pool, 12, TOMORROW, 2) == 1
    await people.give_back_quota(db.pool, 12, TODAY)
    user = await people.get_user(db.pool, 12)
    assert user is not None and user.quota_used == 1

    await people.upsert_user(db.pool, 13, first_name="M")
    results = await asyncio.gather(*(people.take_quota(db.pool, 13, TODAY, 5) for _ in range(20)))
    assert sorted(r for r in results if r is not None) == [1, 2, 3, 4, 5]
    assert results.count(None) == 15

    for uid in (20, 21, 22):
        await people.upsert_user(db.pool, uid, first_name=str(uid))
    await people.take_quota(db.pool, 20, TODAY, 5)
    await people.take_quota(db.pool, 20, TODAY, 5)
    await people.take_quota(db.pool, 21, TOMORROW, 5)
    await db.pool.execute("UPDATE users SET quota_day = $1 WHERE id = 22", TODAY)
    reset = await people.reset_quotas(db.pool, TOMORROW)
    assert reset == 3  # users 13, 20 and 22; 12 and 21 are already on TOMORROW
    u20 = await people.get_user(db.pool, 20)
    u21 = await people.get_user(db.pool, 21)
    assert u20 is not None and (u20.quota_used, u20.quota_day) == (0, TOMORROW)
    assert u21 is not None and (u21.quota_used, u21.quota_day) == (1, TOMORROW)
    assert await people.reset_quotas(db.pool, TOMORROW) == 0


async def test_upsert_chat_and_get(db: Database) -> None:
    assert await people.get_chat(db.pool, -100) is None
    chat = await people.upsert_chat(db.pool, -100, ChatType.GROUP, title="Old")
    assert (chat.id, chat.type, chat.title, chat.is_forum) == (-100, ChatType.GROUP, "Old", False)
    assert chat.style_preset == "anime"
    assert chat.aspect_ratio == "1:1"
    assert chat.video_seconds == 3
    assert chat.send_original is False
    assert chat.language is None

    await asyncio.sleep(0.01)
    upgraded = await people.upsert_chat(
        db.pool, -100, ChatType.SUPERGROUP, title="New", is_forum=True
    )
    assert upgraded.type is ChatType.SUPERGROUP
    assert upgraded.title == "New"
    assert upgraded.is_forum is True
    assert upgraded.created_at == chat.created_at
    assert upgraded.last_seen_at > chat.last_seen_at
    assert await people.get_chat(db.pool, -100) == upgraded

    await people.upsert_chat(db.pool, 77, ChatType.PRIVATE)
    await people.update_chat_settings(db.pool, 77, style_preset="chibi")
    again = await people.upsert_chat(db.pool, 77, ChatType.PRIVATE)
    assert again.style_preset == "chibi"


async def test_update_chat_settings(db: Database) -> None:
    assert await people.update_chat_settings(db.pool, 1, style_preset="x") is None
    await people.upsert_chat(db.pool, 1, ChatType.PRIVATE)
    updated = await people.update_chat_settings(
        db.pool,
        1,
        style_preset="ghibli",
        aspect_ratio="16:9",
        video_seconds=5,
        send_original=True,
        language="ja",
    )
    assert updated is not None
    assert (
        updated.style_preset,
        updated.aspect_ratio,
        updated.video_seconds,
        updated.send_original,
        updated.language,
    ) == ("ghibli", "16:9", 5, True, "ja")
    # None leaves a field unchanged.
    partial = await people.update_chat_settings(db.pool, 1, aspect_ratio="9:16")
    assert partial is not None
    assert partial.aspect_ratio == "9:16"
    assert partial.style_preset == "ghibli"
    assert partial.video_seconds == 5
    assert partial.send_original is True
    assert partial.language == "ja"
    # False is a real value, not "unchanged".
    off = await people.update_chat_settings(db.pool, 1, send_original=False)
    assert off is not None and off.send_original is False

    await people.upsert_chat(db.pool, 2, ChatType.PRIVATE)
    with pytest.raises(asyncpg.CheckViolationError):
        await people.update_chat_settings(db.pool, 2, aspect_ratio="wide")
    with pytest.raises(asyncpg.CheckViolationError):
        await people.update_chat_settings(db.pool, 2, video_seconds=31)
    chat = await people.get_chat(db.pool, 2)
    assert chat is not None and chat.aspect_ratio == "1:1" and chat.video_seconds == 3


async def test_seen_upserts_the_user_and_the_chat_in_one_statement(db: Database) -> None:
    user, chat = await people.seen(
        db.pool,
        user_id=7,
        first_name="Mio",
        username="mio",
        language_code="ru",
        chat_id=-100,
        chat_type=ChatType.SUPERGROUP,
        title="Studio",
        is_forum=True,
    )
    assert (user.id, user.first_name, user.username, user.language_code) == (7, "Mio", "mio", "ru")
    assert user.role is Role.USER and user.created_at == user.last_seen_at
    assert (chat.id, chat.type, chat.title, chat.is_forum) == (
        -100,
        ChatType.SUPERGROUP,
        "Studio",
        True,
    )
    assert await people.set_role(db.pool, 7, Role.BANNED) is not None

    again, chat_again = await people.seen(
        db.pool,
        user_id=7,
        first_name="Mio 2",
        username=None,
        language_code=None,
        chat_id=-100,
        chat_type=ChatType.SUPERGROUP,
        title="Studio renamed",
        is_forum=False,
    )
    assert (again.first_name, again.username, again.role) == ("Mio 2", None, Role.BANNED)
    assert again.last_seen_at > user.last_seen_at and again.created_at == user.created_at
    assert (chat_again.title, chat_again.is_forum) == ("Studio renamed", False)
    assert chat_again.created_at == chat.created_at
    assert await people.get_user(db.pool, 7) == again
    assert await people.get_chat(db.pool, -100) == chat_again


async def test_seen_only_reads_a_user_and_chat_seen_a_moment_ago_unchanged(db: Database) -> None:
    fields: dict[str, Any] = {
        "user_id": 8,
        "first_name": "Rin",
        "username": "rin",
        "language_code": "en",
        "chat_id": 8,
        "chat_type": ChatType.PRIVATE,
        "title": None,
        "is_forum": False,
    }

    async def versions() -> tuple[str, str]:
        row = await db.pool.fetchrow(
            "SELECT (SELECT xmin::text FROM users WHERE id = 8) AS u,"
            " (SELECT xmin::text FROM chats WHERE id = 8) AS c"
        )
        assert row is not None
        return row["u"], row["c"]

    user, chat = await people.seen(db.pool, **fields)
    written = await versions()
    again, chat_again = await people.seen(db.pool, **fields)
    assert (again, chat_again) == (user, chat)  # the stored rows, as read
    assert await versions() == written  # no new row version: nothing was written

    # A changed field is written at once (the user's, not the chat's).
    renamed, chat_same = await people.seen(db.pool, **(fields | {"language_code": "ru"}))
    assert renamed.language_code == "ru" and chat_same == chat
    now_written = await versions()
    assert now_written[0] != written[0] and now_written[1] == written[1]

    # Last seen more than SEEN_REFRESH ago: written again, with a new time.
    await db.pool.execute(
        "UPDATE users SET last_seen_at = now() - $1::interval WHERE id = 8", people.SEEN_REFRESH * 2
    )
    await db.pool.execute(
        "UPDATE chats SET last_seen_at = now() - $1::interval WHERE id = 8", people.SEEN_REFRESH * 2
    )
    later, chat_later = await people.seen(db.pool, **(fields | {"language_code": "ru"}))
    assert later.last_seen_at > renamed.last_seen_at and chat_later.last_seen_at > chat.last_seen_at
