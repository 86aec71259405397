"""bot.handlers.scenes.scene_question_of: which replies are answers to the bot's "what happens
in the scene?" question (also one whose wait is gone, to say that it is closed), and which are
not (so that random replies to the bot are not answered)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from telegram import Chat, Message, Update, User

from bot.context import addressed
from bot.handlers.scenes import scene_question_of
from bot.texts import t_plain

ALICE = User(id=42, first_name="Alice", is_bot=False)
STUDIO = User(id=7, first_name="Studio", is_bot=True)
OTHER_BOT = User(id=8, first_name="Other", is_bot=True)
GROUP = Chat(id=-100123, type=Chat.SUPERGROUP, title="Studio")
WHEN = datetime(2025, 1, 1, tzinfo=UTC)


class _Bot:
    """What `Message.get_bot()` needs here: the bot's id."""

    id = STUDIO.id


THE_BOT = _Bot()


def replying(text: str | None, sender: User = STUDIO, *, bot: Any = THE_BOT) -> Update:
    """Alice's reply to a message of `sender` showing `text`."""
    replied = Message(message_id=5, date=WHEN, chat=GROUP, from_user=sender, text=text)
    message = Message(
        message_id=6,
        date=WHEN,
        chat=GROUP,
        from_user=ALICE,
        text="she reads on a rooftop",
        reply_to_message=replied,
    )
    if bot is not None:
        replied.set_bot(bot)
    return Update(update_id=1, message=message)


def plain_question(lang: str, name: str = "Aiko") -> str:
    return t_plain("scenes.ask_scene", lang, name=name)


def test_replies_to_the_scene_question_are_recognised() -> None:
    for lang in ("en", "ru"):
        for text in (
            plain_question(lang),
            "Alice, " + plain_question(lang),  # addressed to the presser in a group
            "Mr, Smith, " + plain_question(lang, name="Smith, Jr."),  # commas in the names
            f"{'W' * 64}, " + plain_question(lang),  # the longest first name
        ):
            found = scene_question_of(replying(text))
            assert found is not None and found.message_id == 5, text
    # what bot.context.addressed makes of it, once Telegram shows it as plain text
    shown = addressed(ALICE, plain_question("en")).replace('<a href="tg://user?id=42">', "")
    assert scene_question_of(replying(shown.replace("</a>", ""))) is not None


def test_other_replies_are_not_answers() -> None:
    question = plain_question("en")
    for update in (
        replying("Who is in this scene? Tap your characters, then Done."),  # another question
        replying(None),  # a photo of the bot
        replying(question, ALICE),  # a user quoting the question
        replying(question, OTHER_BOT),  # another bot's message
        replying(question, bot=None),  # whose message it is cannot be known
        replying(f"⏳ Image · waiting in line\n{question}"),  # a scene quoting the question
        replying(f"Alice: {question}"),
        replying(f"{'W' * 100}, {question}"),  # not a first name before it
    ):
        assert scene_question_of(update) is None, update.message.reply_to_message  # type: ignore[union-attr]
    no_reply = Update(
        update_id=2, message=Message(message_id=7, date=WHEN, chat=GROUP, from_user=ALICE, text="x")
    )
    assert scene_question_of(no_reply) is None
