"""Dialogs expire (README, "Known limits"): each kind of dialog, started through the bot, is
stored with `expires_at` at its time to live from now (the README's numbers: `/newcharacter`
30 minutes without an answer, a character picker 24 hours, a music chooser an hour, the waits
for a scene or an audio 15 minutes), and every bot process sweeps expired dialogs every 30 s.
(tests/e2e/test_bot_dialogs_shared.py tests what happens once they expired.)"""

from __future__ import annotations

from bot import dialogs as bot_dialogs
from core.db.pool import connect
from core.service import Actor, CharacterDraft
from tests.e2e.harness import BotHarness, Sent
from tests.fakes.telegram import FakeChat

MINUTE, HOUR = 60.0, 3600.0
SLACK_S = 10.0  # from storing the dialog to reading it back


async def time_left(dsn: str, chat: FakeChat, kind: str) -> float:
    """Seconds until the (only) dialog of `kind` in `chat` expires, by the database's clock."""
    conn = await connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT extract(epoch FROM expires_at - now()) AS left_s FROM dialogs"
            " WHERE chat_id = $1 AND kind = $2",
            chat.id,
            kind,
        )
    finally:
        await conn.close()
    assert len(rows) == 1, f"{len(rows)} dialogs of kind {kind!r}"
    return float(rows[0]["left_s"])


async def assert_expires_in(dsn: str, chat: FakeChat, kind: str, ttl_s: float) -> None:
    left = await time_left(dsn, chat, kind)
    assert ttl_s - SLACK_S < left <= ttl_s, (kind, left, ttl_s)


def test_expired_dialogs_are_swept_every_30_seconds() -> None:
    assert bot_dialogs.SWEEP_INTERVAL_S == 30.0


async def test_each_dialog_is_stored_with_its_time_to_live(studio: BotHarness, pg_dsn: str) -> None:
    bot = studio
    alice = bot.fake.user("Alice")
    chat = bot.fake.private_chat(alice)
    actor = Actor(alice.id, chat.id)
    await bot.service.seen(actor)
    await bot.service.create_character(actor, CharacterDraft(name="Aiko", appearance="pink hair"))

    # /newcharacter: 30 minutes, counted again from each answer
    await bot.wait_reply(bot.send(chat, alice, "/newcharacter"), contains="their name")
    await assert_expires_in(pg_dsn, chat, "character", 30 * MINUTE)
    conn = await connect(pg_dsn)  # 29 minutes later
    try:
        await conn.execute("UPDATE dialogs SET expires_at = now() + interval '1 minute'")
    finally:
        await conn.close()
    await bot.wait_reply(bot.send(chat, alice, "Mio"), contains="How does Mio look")
    await assert_expires_in(pg_dsn, chat, "character", 30 * MINUTE)
    await bot.wait_reply(bot.send(chat, alice, "/cancel"), contains="Cancelled")

    # the character picker of a scene: 24 hours
    request = bot.send(chat, alice, "/image two friends at a festival")
    await bot.wait_reply(request, contains="Who is in this scene?")
    await assert_expires_in(pg_dsn, chat, "picker", 24 * HOUR)

    # the music chooser of a video: an hour; "send your own audio": 15 minutes
    video = bot.send(chat, alice, '/video Aiko dancing --length 2s --music "city pop"')
    chooser = await bot.wait_reply(video, contains="only your own audio can be used")
    await assert_expires_in(pg_dsn, chat, "music", HOUR)
    bot.click(chat, alice, chooser, "Send my own audio")
    await bot.wait_content(chooser, "Send me the audio")
    await assert_expires_in(pg_dsn, chat, "audio_wait", 15 * MINUTE)

    # "what happens in the scene?" (a character card's scene button): 15 minutes
    listing = await bot.wait_reply(bot.send(chat, alice, "/characters"), contains="Your")
    bot.click(chat, alice, listing, "Aiko")
    card = await bot.wait_reply(Sent(chat, alice, listing.message_id, True), contains="pink hair")
    bot.click(chat, alice, card, "Use in a scene")
    await bot.wait_reply(Sent(chat, alice, card.message_id, True), contains="What happens")
    await assert_expires_in(pg_dsn, chat, "scene_wait", 15 * MINUTE)
