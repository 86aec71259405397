"""The per-user flood limit lives in PostgreSQL: two bot processes (in-process webhook bots
behind the test load balancer, one database) count a user's commands and button presses in one
bucket, so a flood alternating between them is limited exactly as by one bot; plain messages
are not counted. When the database is down, the gate tells the user once that something went
wrong and no handler runs."""

from __future__ import annotations

from urllib.parse import urlsplit

import asyncpg

from bot.keyboards import NOOP
from core.db.pool import connect
from tests.e2e.conftest import MakeBot
from tests.e2e.harness import BotHarness, Cluster, Sent

BURST = 5
LIMITS = {"rate_limit_burst": BURST, "rate_limit_per_second": 0.001}  # no refill meanwhile
TOO_FAST = "You are sending commands too fast"
TOAST = "Too fast, wait a moment."
HELP = "/newcharacter"  # in every /help answer
FAILED = "something went wrong on my side"


async def test_a_flood_alternating_between_two_bots_is_limited_as_one(cluster: Cluster) -> None:
    a, b = await cluster.start_bot(**LIMITS), await cluster.start_bot(**LIMITS)
    alice, bob, carol = (cluster.fake.user(name) for name in ("Alice", "Bob", "Carol"))
    chat = cluster.fake.private_chat(alice)

    # 12 commands, every other one through the other bot: one process alone would allow its
    # burst (5 + 5 answers) and warn on each bot; together: 5 answers and one warning
    first = cluster.send(a, chat, alice, "/help")
    for index in range(1, 12):
        cluster.send((a, b)[index % 2], chat, alice, "/help")
    await a.wait_reply(first, contains=TOO_FAST)
    bob_chat = cluster.fake.private_chat(bob)
    await a.wait_reply(cluster.send(b, bob_chat, bob, "/start"), contains="Anime Studio")
    await a.settle(1.0)
    replies = [m.content or "" for m in a.replies_after(first)]
    assert sum(TOO_FAST in text for text in replies) == 1
    assert sum(HELP in text for text in replies) == BURST
    assert len(replies) == BURST + 1
    assert cluster.handled_by(a) >= 6 and cluster.handled_by(b) >= 6

    # button presses count in the same bucket, on either bot; each surplus press gets a toast
    carol_chat = cluster.fake.private_chat(carol)
    anchor = await a.wait_reply(cluster.send(b, carol_chat, carol, "/help"), contains=HELP)
    presses = [
        cluster.press((a, b)[index % 2], carol_chat, carol, anchor, NOOP.data())
        for index in range(6)
    ]
    toasts = sorted([await a.wait_toast(query) for query in presses])
    assert toasts == [""] * (BURST - 1) + [TOAST] * 2
    flooded = cluster.press(b, chat, alice, anchor, NOOP.data())  # Alice's bucket is still empty
    assert await a.wait_toast(flooded) == TOAST
    assert not cluster.balancer.plan  # every update went where the test sent it


async def test_plain_messages_are_not_counted(make_bot: MakeBot) -> None:
    """Only commands and button presses take from the bucket: a user who wrote many plain
    messages still has the whole burst of commands; the same number of commands is limited."""
    bot = await make_bot(**LIMITS)
    alice, bob = bot.fake.user("Alice"), bot.fake.user("Bob")
    chat, bob_chat = bot.fake.private_chat(alice), bot.fake.private_chat(bob)

    chatter = [bot.send(chat, alice, f"hello {number}") for number in range(3 * BURST)]
    await bot.settle(0.5)
    for _ in range(BURST + 1):  # the whole burst is left, and no more
        bot.send(chat, alice, "/help")
    await bot.wait_reply(chatter[0], contains=TOO_FAST)
    await bot.settle(0.5)
    replies = [m.content or "" for m in bot.replies_after(chatter[0])]
    assert sum(HELP in text for text in replies) == BURST
    assert sum(TOO_FAST in text for text in replies) == 1

    first = bot.send(bob_chat, bob, "/help")  # as many commands as Alice's plain messages
    for _ in range(3 * BURST - 1):
        bot.send(bob_chat, bob, "/help")
    await bot.wait_reply(first, contains=TOO_FAST)
    await bot.settle(0.5)
    replies = [m.content or "" for m in bot.replies_after(first)]
    assert sum(HELP in text for text in replies) == BURST


async def _allow_connections(dsn: str, allowed: bool) -> None:
    """Open or close the test database for new connections; closing also ends the open ones."""
    name = urlsplit(dsn).path.lstrip("/")
    admin = await connect(dsn.replace(f"/{name}", "/postgres"))
    try:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {str(allowed).lower()}')
        if not allowed:
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name
            )
    finally:
        await admin.close()


async def _says(bot: BotHarness, sent: Sent, expect: str) -> str:
    return (await bot.wait_reply(sent, contains=expect, timeout=10)).content or ""


async def test_the_database_down_is_reported_once_not_as_a_traceback(
    make_bot: MakeBot, pg_dsn: str
) -> None:
    bot = await make_bot()
    user = bot.fake.user("Alice")
    chat = bot.fake.private_chat(user)
    anchor = await bot.wait_reply(bot.send(chat, user, "/help"), contains=HELP)

    await _allow_connections(pg_dsn, False)
    try:
        sent = bot.send(chat, user, "/help")
        told = await _says(bot, sent, FAILED)
        assert "Reference:" in told and "Traceback" not in told
        press = bot.press(chat, user, anchor, NOOP.data())
        assert FAILED in await bot.wait_toast(press, timeout=10)
        await bot.settle(0.5)
        assert len(bot.replies_after(sent)) == 1  # once, and no handler answered
    finally:
        await _allow_connections(pg_dsn, True)

    # back: the next command is answered again
    await _says(bot, bot.send(chat, user, "/help"), HELP)
    rows = await _fetch_buckets(pg_dsn)
    assert rows == [user.id]


async def _fetch_buckets(dsn: str) -> list[int]:
    conn: asyncpg.Connection = await connect(dsn)
    try:
        return [row["user_id"] for row in await conn.fetch("SELECT user_id FROM rate_buckets")]
    finally:
        await conn.close()
