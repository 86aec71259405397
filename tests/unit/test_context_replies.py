"""bot.context.reply: a question with a selective ForceReply targets its user (Bot API,
ForceReply.selective: the users @mentioned in the text, and the sender of the message it
replies to). Asked after a button press in a group, it is not a reply to the user's message,
so it mentions them; everything else is sent as it was."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from telegram import (
    CallbackQuery,
    Chat,
    ForceReply,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    Message,
    Update,
    User,
)
from telegram.constants import ParseMode

from bot.context import MENTION_NAME_MAX, ReplyMarkup, addressed, mention, reply
from bot.handlers.characters import NAME_MAX
from bot.render import TEXT_LIMIT, utf16_len
from bot.texts import LANGUAGES, t, t_plain

ALICE = User(id=42, first_name="Alice", is_bot=False)
BOT = User(id=7, first_name="Studio", is_bot=True, username="AnimeStudioTestBot")
GROUP = Chat(id=-100123, type=Chat.SUPERGROUP, title="Studio")
PRIVATE = Chat(id=ALICE.id, type=Chat.PRIVATE)
WHEN = datetime(2025, 1, 1, tzinfo=UTC)
ASK = ForceReply(selective=True, input_field_placeholder="She reads…")


def pressed(chat: Chat, user: User = ALICE) -> Update:
    """A button press under a message of the bot."""
    shown = Message(message_id=10, date=WHEN, chat=chat, from_user=BOT, text="card")
    query = CallbackQuery(id="q", from_user=user, chat_instance="c", message=shown, data="x")
    return Update(update_id=1, callback_query=query)


def written(chat: Chat, user: User = ALICE) -> Update:
    """A message of the user."""
    return Update(
        update_id=2, message=Message(message_id=11, date=WHEN, chat=chat, from_user=user, text="x")
    )


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """What `reply` sends: the arguments of each Message.reply_text."""
    calls: list[dict[str, Any]] = []

    async def reply_text(self: Message, text: str, **kwargs: Any) -> Message:
        calls.append({"text": text, **kwargs})
        return self

    monkeypatch.setattr(Message, "reply_text", reply_text)
    return calls


async def send(
    sent: list[dict[str, Any]],
    update: Update,
    text: str,
    markup: ReplyMarkup | None,
    **kwargs: Any,
) -> dict[str, Any]:
    await reply(update, text, markup=markup, **kwargs)
    return sent[-1]


async def test_a_question_after_a_button_press_in_a_group_mentions_the_presser(
    sent: list[dict[str, Any]],
) -> None:
    call = await send(sent, pressed(GROUP), "🎬 What happens in the scene with <b>Aiko</b>?", ASK)
    assert call["text"] == (
        '<a href="tg://user?id=42">Alice</a>, 🎬 What happens in the scene with <b>Aiko</b>?'
    )
    assert call["parse_mode"] == ParseMode.HTML and call["reply_markup"] is ASK
    assert call["do_quote"] is False

    # a plain-text question is escaped and sent as HTML
    call = await send(sent, pressed(GROUP), "Send <your> answer & more", ASK, html=False)
    assert (
        call["text"] == '<a href="tg://user?id=42">Alice</a>, Send &lt;your&gt; answer &amp; more'
    )
    assert call["parse_mode"] == ParseMode.HTML

    # a question to a message of the user that does not quote it mentions them too
    call = await send(sent, written(GROUP), "Name?", ASK, quote=False)
    assert call["text"].startswith('<a href="tg://user?id=42">Alice</a>, ')


async def test_other_replies_are_sent_as_they_were(sent: list[dict[str, Any]]) -> None:
    buttons = InlineKeyboardMarkup([[InlineKeyboardButton("ok", callback_data="ok")]])
    cases: list[tuple[Update, ReplyMarkup | None, dict[str, Any]]] = [
        (pressed(PRIVATE), ASK, {}),  # a private chat: nobody else to target
        (pressed(PRIVATE), None, {}),
        (written(GROUP), ASK, {}),  # quotes the user's message: targets its sender
        (pressed(GROUP), ForceReply(selective=False), {}),  # targets every member
        (pressed(GROUP), buttons, {}),
        (pressed(GROUP), None, {}),
    ]
    for update, markup, kwargs in cases:
        call = await send(sent, update, "Which <b>style</b>?", markup, **kwargs)
        assert call["text"] == "Which <b>style</b>?", (update, markup)
        assert call["parse_mode"] == ParseMode.HTML
    call = await send(sent, pressed(PRIVATE), "plain <text>", ASK, html=False)
    assert call["text"] == "plain <text>" and call["parse_mode"] is None


def test_the_mention_works_for_any_name() -> None:
    assert mention(User(id=1, first_name="<Ann & Bo>", is_bot=False)) == (
        '<a href="tg://user?id=1">&lt;Ann &amp; Bo&gt;</a>'
    )
    # a right-to-left name is isolated: it cannot reorder the question after it
    assert mention(User(id=2, first_name="ليلى", is_bot=False)) == (
        '<a href="tg://user?id=2">\u2068ليلى\u2069</a>'
    )
    # a blank first name: the username, else the id (never an empty link)
    assert mention(User(id=3, first_name=" ", is_bot=False, username="ann")) == (
        '<a href="tg://user?id=3">ann</a>'
    )
    assert mention(User(id=4, first_name="\u3000", is_bot=False)).endswith(">4</a>")
    long = mention(User(id=5, first_name="W" * 200, is_bot=False))
    assert long.count("W") == MENTION_NAME_MAX


def test_addressed_questions_fit_telegram() -> None:
    """The longest question asked after a button press, addressed to the longest name, stays
    far below Telegram's 4096 characters, in every language."""
    user = User(id=2**52, first_name="W" * MENTION_NAME_MAX, is_bot=False)
    name = "W" * NAME_MAX
    for lang in LANGUAGES:
        questions = [
            t("scenes.ask_scene", lang, name=name),
            t("chars.ask_personality", lang, name=name),
            t("chars.edit_ask_reference", lang, name=name),
            t(
                "chars.edit_ask_text",
                lang,
                field=t_plain("chars.field_appearance", lang).lower(),
                name=name,
                current="W" * 300,
            ),
        ]
        for question in questions:
            text = addressed(user, question)
            assert utf16_len(text) < TEXT_LIMIT // 4, (lang, len(text))
