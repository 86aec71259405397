"""Bot admin commands: /stats, /quota, /ban, /unban (ADMIN_USER_IDS only)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from core.db.pool import Database
from tests.e2e.conftest import MakeBot
from tests.e2e.harness import BotHarness
from tests.fakes.telegram import ApiCall, FakeTelegram
from tests.library_kit import seed_library_states

ADMIN_ONLY = {"stats", "quota", "ban", "unban"}  # deploy/README.md, "You do not need /setcommands"


async def test_admin_commands_are_for_admins_only(bot_harness: BotHarness) -> None:
    bot = bot_harness
    mallory = bot.fake.user("Mallory")
    chat = bot.fake.private_chat(mallory)
    for command in ("/stats", "/quota 1 5", "/ban 1", "/unban 1"):
        reply = await bot.wait_reply(bot.send(chat, mallory, command))
        assert reply.content == "This command is only for the bot's admins."


async def test_stats_quota_ban_unban(make_bot: MakeBot, fake_telegram: FakeTelegram) -> None:
    boss = fake_telegram.user("Boss", username="boss")
    boris = fake_telegram.user("Борис", language_code="ru")
    bot = await make_bot(admin_user_ids=[boss.id, boris.id], daily_quota=7)
    alice = bot.fake.user("Alice", username="alice_a")
    alice_chat, boss_chat = bot.fake.private_chat(alice), bot.fake.private_chat(boss)
    boris_chat = bot.fake.private_chat(boris)
    welcome = await bot.wait_reply(bot.send(alice_chat, alice, "/start"))

    stats = await bot.wait_reply(bot.send(boss_chat, boss, "/stats"), contains="Statistics")
    assert "Users: 2" in (stats.content or "")
    assert (stats.content or "").endswith("\nLibrary: off (JELLYFIN_LIBRARY_DIR is not set)")
    stats = await bot.wait_reply(bot.send(boris_chat, boris, "/stats"), contains="Статистика")
    assert (stats.content or "").endswith("\nМедиатека: выключена (JELLYFIN_LIBRARY_DIR не задан)")
    help_text = await bot.wait_reply(bot.send(boss_chat, boss, "/help"), contains="Admin")
    assert "/quota" in (help_text.content or "")

    usage = await bot.wait_reply(bot.send(boss_chat, boss, "/quota alice_a"), contains="Usage")
    assert "/quota <user id or @username>" in (usage.content or "")
    bad = await bot.wait_reply(bot.send(boss_chat, boss, "/quota @alice_a lots"))
    assert "whole number" in (bad.content or "")
    unknown = await bot.wait_reply(bot.send(boss_chat, boss, "/quota @nobody_here 3"))
    assert "never seen @nobody_here" in (unknown.content or "")
    done = await bot.wait_reply(bot.send(boss_chat, boss, "/quota @alice_a 3"))
    assert done.content == f"Daily quota of @alice_a ({alice.id}) is now 3."
    assert (await bot.service.find_user("alice_a")).daily_quota == 3
    back = await bot.wait_reply(bot.send(boss_chat, boss, f"/quota {alice.id} default"))
    assert "the default (7)" in (back.content or "")
    assert (await bot.service.find_user(str(alice.id))).daily_quota is None

    banned = await bot.wait_reply(bot.send(boss_chat, boss, "/ban @alice_a"))
    assert banned.content == f"@alice_a ({alice.id}) is banned."
    refused = await bot.wait_reply(bot.send(alice_chat, alice, "/characters"))
    assert refused.content == "You are not allowed to use this bot."
    press = bot.press(alice_chat, alice, welcome, f"v1|chl|{alice.id}|0")
    assert await bot.wait_toast(press) == "You are not allowed to use this bot."
    no_self_ban = await bot.wait_reply(bot.send(boss_chat, boss, "/ban @boss"))
    assert no_self_ban.content == "Admins cannot be banned."

    unbanned = await bot.wait_reply(bot.send(boss_chat, boss, f"/unban {alice.id}"))
    assert "no longer banned" in (unbanned.content or "")
    await bot.wait_reply(bot.send(alice_chat, alice, "/characters"), contains="no characters")


async def test_stats_counts_delivered_results_by_library_state(
    make_bot: MakeBot, fake_telegram: FakeTelegram, db: Database, tmp_path: Path
) -> None:
    """With the library on, one line says how delivered results are filed (`SEEDED`:
    linked 3, filed without a link 1, waiting 4 of which 2 on Jellyfin, given up 5, off 6;
    `off` is not shown), and the parts that are 0 are left out."""
    boss, boris = fake_telegram.user("Boss"), fake_telegram.user("Борис", language_code="ru")
    (tmp_path / "library").mkdir()
    bot = await make_bot(
        admin_user_ids=[boss.id, boris.id], jellyfin_library_dir=tmp_path / "library"
    )
    boss_chat, boris_chat = bot.fake.private_chat(boss), bot.fake.private_chat(boris)
    stats = await bot.wait_reply(bot.send(boss_chat, boss, "/stats"), contains="Statistics")
    assert (stats.content or "").endswith("\nLibrary: none")

    await seed_library_states(db.pool)
    stats = await bot.wait_reply(bot.send(boss_chat, boss, "/stats"), contains="Statistics")
    assert (stats.content or "").endswith(
        "\nLibrary: linked 3, filed without a link 1,"
        " waiting 4 (2 of them: Jellyfin unreachable), given up 5"
    )
    stats = await bot.wait_reply(bot.send(boris_chat, boris, "/stats"), contains="Статистика")
    assert (stats.content or "").endswith(
        "\nМедиатека: со ссылкой 3, в папке без ссылки 1,"
        " ждут 4 (из них 2: Jellyfin недоступен), не удалось 5"
    )

    # None given up, none waiting on Jellyfin: those parts go.
    await db.pool.execute(
        "DELETE FROM outputs WHERE library_status = 'failed' OR library_unreachable"
    )
    stats = await bot.wait_reply(bot.send(boss_chat, boss, "/stats"), contains="Statistics")
    assert (stats.content or "").endswith("\nLibrary: linked 3, filed without a link 1, waiting 2")


def _param(call: ApiCall, name: str) -> Any:
    value = call.params.get(name)
    return json.loads(value) if isinstance(value, str) and value[:1] in "[{" else value


async def test_admin_commands_are_published_only_in_the_admins_private_chats(
    make_bot: MakeBot, fake_telegram: FakeTelegram
) -> None:
    """setMyCommands on start: the list for everyone (once per interface language) has no
    admin command; each admin's private chat (BotCommandScopeChat) gets the full list, also
    once per language (a chat's list wins over the language's list for everyone, so a Russian
    admin would otherwise read English); nobody else gets a list of their own."""
    boss, deputy = fake_telegram.user("Boss"), fake_telegram.user("Deputy")
    await make_bot(admin_user_ids=[boss.id, deputy.id])

    published: dict[tuple[str, int | None, str], dict[str, str]] = {}
    for call in fake_telegram.calls_of("setMyCommands"):
        assert call.ok, call.error
        scope = _param(call, "scope") or {"type": "default"}
        key = (scope["type"], scope.get("chat_id"), call.params.get("language_code") or "")
        assert key not in published, f"published twice: {key}"
        published[key] = {c["command"]: c["description"] for c in _param(call, "commands")}
    assert set(published) == {
        ("default", None, ""),
        ("default", None, "ru"),
        ("chat", boss.id, ""),
        ("chat", boss.id, "ru"),
        ("chat", deputy.id, ""),
        ("chat", deputy.id, "ru"),
    }
    everyone, russian = published["default", None, ""], published["default", None, "ru"]
    assert not ADMIN_ONLY & set(everyone) and {"start", "help", "image"} <= set(everyone)
    assert set(russian) == set(everyone) and russian["help"] != everyone["help"]
    for admin in (boss, deputy):
        assert set(published["chat", admin.id, ""]) == set(everyone) | ADMIN_ONLY
        admin_russian = published["chat", admin.id, "ru"]
        assert set(admin_russian) == set(everyone) | ADMIN_ONLY
        assert admin_russian["help"] == russian["help"]
