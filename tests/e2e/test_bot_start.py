"""/start, /help, commands, languages, the gate (access, rate limit), errors, webhook mode."""

from __future__ import annotations

import io
import uuid

import pytest

from bot.app import webhook_path
from bot.handlers import COMMANDS
from bot.keyboards import (
    NOOP,
    SCENE,
    Callback,
    action,
    button,
    confirm,
    decode,
    int_arg,
    multi_select,
    paged,
    word_arg,
)
from bot.texts import LANGUAGES, catalog, pick_language, placeholders, t, t_plain
from core.errors import ConfigError
from core.logs import configure_logging
from tests.conftest import TEST_LOG_LEVEL
from tests.e2e.conftest import MakeBot
from tests.e2e.harness import BotHarness
from tests.fakes.telegram import FakeTelegram
from tests.webhook import free_port


async def test_start_help_and_command_list(bot_harness: BotHarness) -> None:
    bot = bot_harness
    alice = bot.fake.user("Alice")
    chat = bot.fake.private_chat(alice)

    welcome = await bot.wait_reply(bot.send(chat, alice, "/start"), contains="Anime Studio")
    assert "Alice" in (welcome.content or "")

    help_message = await bot.wait_reply(bot.send(chat, alice, "/help"), contains="/newcharacter")
    text = help_message.content or ""
    for command, _ in COMMANDS:
        assert f"/{command}" in text
    assert "/image @Aiko" in text  # examples
    assert "/stats" not in text  # admin commands only for admins

    default = bot.fake.commands[('{"type": "default"}', "")]
    assert [c["command"] for c in default] == [command for command, _ in COMMANDS]
    russian = bot.fake.commands[('{"type": "default"}', "ru")]
    assert russian[0]["description"] != default[0]["description"]


async def test_russian_user_gets_russian(bot_harness: BotHarness) -> None:
    bot = bot_harness
    ivan = bot.fake.user("Иван", language_code="ru")
    chat = bot.fake.private_chat(ivan)
    reply = await bot.wait_reply(bot.send(chat, ivan, "/start"))
    assert "Привет, Иван" in (reply.content or "")


async def test_stray_buttons_get_a_toast(bot_harness: BotHarness) -> None:
    bot = bot_harness
    alice, bob = bot.fake.user("Alice"), bot.fake.user("Bob")
    chat = bot.fake.private_chat(alice)
    message = await bot.wait_reply(bot.send(chat, alice, "/start"))

    forged = bot.press(chat, alice, message, "v1|cho|1|not-a-uuid")
    assert "no longer valid" in await bot.wait_toast(forged)
    unknown = bot.press(chat, alice, message, "something else entirely")
    assert "no longer valid" in await bot.wait_toast(unknown)
    # a well-formed button that belongs to somebody else
    other = bot.press(chat, alice, message, f"v1|chl|{bob.id}|0")
    assert await bot.wait_toast(other) == "This is not your request."


async def test_unexpected_error_gives_a_reference(
    bot_harness: BotHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    bot = bot_harness
    log = io.StringIO()
    configure_logging("INFO", "console", stream=log)
    try:

        async def broken(*_args: object, **_kwargs: object) -> object:
            raise RuntimeError("database exploded")

        monkeypatch.setattr(bot.service, "list_characters", broken)
        alice = bot.fake.user("Alice")
        chat = bot.fake.private_chat(alice)
        reply = await bot.wait_reply(bot.send(chat, alice, "/characters"), contains="Reference")
        text = reply.content or ""
        assert "database exploded" not in text and "Traceback" not in text
        reference = text.rsplit(" ", 1)[-1]
        assert len(reference) == 8
        logged = log.getvalue()
        assert reference in logged and "RuntimeError: database exploded" in logged
        assert bot.fake.token not in logged
    finally:
        configure_logging(TEST_LOG_LEVEL, "console")  # as tests/conftest.py set it


async def test_flood_is_rate_limited_politely(bot_harness: BotHarness) -> None:
    bot = bot_harness
    alice = bot.fake.user("Alice")
    chat = bot.fake.private_chat(alice)
    first = bot.send(chat, alice, "/queue")
    for _ in range(34):
        bot.send(chat, alice, "/queue")
    await bot.wait_reply(first, contains="too fast")
    await bot.settle(0.5)
    replies = bot.replies_after(first)
    warnings = [m for m in replies if "too fast" in (m.content or "")]
    assert len(warnings) == 1
    assert len(replies) < 30
    # another user is not affected
    bob = bot.fake.user("Bob")
    bob_chat = bot.fake.private_chat(bob)
    await bot.wait_reply(bot.send(bob_chat, bob, "/queue"), contains="no jobs")


async def test_allowed_chat_ids_are_enforced(
    make_bot: MakeBot, fake_telegram: FakeTelegram
) -> None:
    insider = fake_telegram.user("Ina")
    allowed_group = fake_telegram.group("Allowed", members=[insider])
    bot = await make_bot(allowed_chat_ids=[allowed_group.id])

    outsider = bot.fake.user("Eve")
    chat = bot.fake.private_chat(outsider)
    reply = await bot.wait_reply(bot.send(chat, outsider, "/start"))
    assert reply.content == "This bot is not enabled in this chat."
    press = bot.press(chat, outsider, reply, "v1|noop")
    assert await bot.wait_toast(press) == "This bot is not enabled in this chat."

    ok = await bot.wait_reply(
        bot.send(allowed_group, insider, "/start@AnimeStudioTestBot"), contains="Anime Studio"
    )
    assert ok.reply_to is not None  # groups: the answer quotes the command


async def test_webhook_mode(make_bot: MakeBot) -> None:
    port = free_port()
    bot = await make_bot(
        telegram_webhook_url=f"http://127.0.0.1:{port}/telegram/hook",
        telegram_webhook_listen="127.0.0.1",
        telegram_webhook_port=port,
        telegram_webhook_secret="s3cret-token",
    )
    assert bot.fake.webhook_url == f"http://127.0.0.1:{port}/telegram/hook"
    assert bot.fake.webhook_secret == "s3cret-token"
    alice = bot.fake.user("Alice")
    chat = bot.fake.private_chat(alice)
    reply = await bot.wait_reply(bot.send(chat, alice, "/start"), contains="Anime Studio")
    assert reply.chat_id == chat.id
    assert not bot.fake.calls_of("getUpdates")
    update = {"update_id": 1, "message": {"message_id": 1}}
    assert await bot.fake.post_to_webhook(update, secret="wrong") == 403


async def webhook_bot_without_secret(make_bot: MakeBot) -> tuple[BotHarness, str]:
    """A bot started in webhook mode with no TELEGRAM_WEBHOOK_SECRET, and the secret it set."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/telegram/hook"
    bot = await make_bot(
        telegram_webhook_url=url, telegram_webhook_listen="127.0.0.1", telegram_webhook_port=port
    )
    assert bot.settings.telegram_webhook_secret is None
    # make_bot returns on any setWebhook so far: wait for this bot's own
    await bot.fake.wait_for(lambda: bot.fake.webhook_url == url, what="its setWebhook")
    secret = bot.fake.calls_of("setWebhook")[-1].params.get("secret_token")
    assert isinstance(secret, str) and len(secret) >= 32
    assert bot.fake.webhook_secret == secret
    return bot, secret


async def test_webhook_mode_without_a_secret_picks_a_random_one_per_start(
    make_bot: MakeBot, monkeypatch: pytest.MonkeyPatch
) -> None:
    """TELEGRAM_WEBHOOK_SECRET left empty: each start registers a secret of its own with
    setWebhook, and an update POSTed without it (or with another) is refused."""
    monkeypatch.setenv("TELEGRAM_WEBHOOK_SECRET", "")
    registered: list[str] = []
    for _ in range(2):
        bot, secret = await webhook_bot_without_secret(make_bot)
        alice = bot.fake.user("Alice")
        chat = bot.fake.private_chat(alice)
        sent = bot.send(chat, alice, "/start")
        await bot.wait_reply(sent, contains="Anime Studio")  # delivered with the secret
        delivered, status = bot.fake.webhook_deliveries[-1]
        assert status == 200
        again = {**delivered, "update_id": delivered["update_id"] + 1000}
        assert await bot.fake.post_to_webhook(again, secret=None) == 403
        for earlier in registered:  # the secret of the start before
            assert await bot.fake.post_to_webhook(again, secret=earlier) == 403
        await bot.settle()
        assert len(bot.replies_after(sent)) == 1  # only the delivered /start was answered
        await bot.close()
        registered.append(secret)
    assert registered[0] != registered[1]


# -- pure parts: catalog, callback codec, rate limiter -------------------------------------------


def test_every_text_exists_in_every_language_with_the_same_placeholders() -> None:
    for key, translations in catalog().items():
        for lang in LANGUAGES:
            assert translations.get(lang), f"{key} has no {lang} text"
        english = placeholders(translations["en"])
        for lang in LANGUAGES:
            assert placeholders(translations[lang]) == english, f"{key} placeholders in {lang}"


def test_a_webhook_url_needs_a_path() -> None:
    assert webhook_path("https://bot.example.com/telegram/8f3a") == "telegram/8f3a"
    assert webhook_path("https://bot.example.com:8443/telegram/") == "telegram"
    for bare in ("https://bot.example.com", "https://bot.example.com/", "https://b.example:88//"):
        with pytest.raises(ConfigError, match="TELEGRAM_WEBHOOK_URL needs a path"):
            webhook_path(bare)


def test_texts_escape_values_and_fall_back() -> None:
    assert (
        t("chars.deleted", "en", name="<b>Ann & co</b>")
        == "&lt;b&gt;Ann &amp; co&lt;/b&gt; was deleted."
    )
    assert t_plain("admin.quota_usage", "en").startswith("Usage: /quota <user id")
    assert pick_language("ru-RU") == "ru" and pick_language("de") == "en"
    assert pick_language(None) == "en"


def test_callback_codec_round_trip_and_rejections() -> None:
    character_id = uuid.uuid4()
    data = SCENE.data(character_id, owner=9_999_999_999)
    assert len(data.encode()) <= 64
    decoded = decode(data)
    assert decoded is not None and decoded.owner == 9_999_999_999
    assert decoded.uuid(0) == character_id
    pages = action("tst_page", int_arg(50))
    picks = action("tst_pick", word_arg(["a", "b:c"]))
    assert decode(pages.data(7, owner=1)) == Callback(pages, 1, (7,))
    assert decode(picks.data("b:c", owner=1)) == Callback(picks, 1, ("b:c",))
    for bad in (
        "",
        "v2|scene|1|" + data.rsplit("|", 1)[1],  # another version
        data + "|extra",  # an argument too many
        data.rsplit("|", 1)[0],  # one missing
        data[:-1] + "!",  # not base64url
        "v1|tst_page|1|51",  # over the bound
        "v1|tst_page|1|07",  # not canonical
        "v1|tst_page|0|1",  # no owner
        "v1|tst_page|-1|1",
        "v1|tst_pick|1|d",  # not a choice
        "v1|nothing|1",
        "x" * 65,
    ):
        assert decode(bad) is None, bad
    with pytest.raises(ValueError):
        pages.data(51, owner=1)
    with pytest.raises(ValueError):
        pages.data(1)  # owned actions need their owner
    with pytest.raises(ValueError):
        action("tst_page", int_arg(60))  # another schema under a known name


def test_keyboard_builders() -> None:
    nav = action("tst_nav", int_arg(100))
    first = paged([button("a", NOOP.data())], 0, 3, lambda p: nav.data(p, owner=5))
    assert [b.text for b in first.inline_keyboard[-1]] == ["1/3", "›"]
    middle = paged([], 1, 3, lambda p: nav.data(p, owner=5))
    assert [b.text for b in middle.inline_keyboard[-1]] == ["‹", "2/3", "›"]
    single = paged([button("a", NOOP.data())], 0, 1, lambda p: nav.data(p, owner=5))
    assert len(single.inline_keyboard) == 1
    chosen = multi_select([("x", "X"), ("y", "Y")], {"y"}, lambda k: NOOP.data(), NOOP.data(), "ru")
    assert [b.text for b in chosen.inline_keyboard[0]] == ["▫️ X", "✅ Y"]
    assert chosen.inline_keyboard[-1][0].text == "Готово"
    yes_no = confirm(NOOP.data(), NOOP.data(), "en")
    assert [b.text for b in yes_no.inline_keyboard[0]] == ["Yes", "No"]
