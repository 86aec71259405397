"""Shared steps of the group, forum-topic and dialog tests (tests/e2e/test_groups_*.py)."""

from __future__ import annotations

from tests.e2e.harness import BotHarness, Sent
from tests.fakes.telegram import FakeChat, FakeTelegram, FakeUser, JSONDict, StoredMessage

BOT = "@AnimeStudioTestBot"


async def answer(
    bot: BotHarness, chat: FakeChat, user: FakeUser, prompt: StoredMessage, text: str, expect: str
) -> StoredMessage:
    """Answer the bot's question as a reply (what a ForceReply makes the client do)."""
    return await bot.wait_reply(bot.send(chat, user, text, reply_to=prompt), contains=expect)


async def draft_to_confirm(
    bot: BotHarness, chat: FakeChat, user: FakeUser, name: str, *, thread_id: int | None = None
) -> StoredMessage:
    """/newcharacter up to its "Create this character?" message, every answer a reply."""
    sent = bot.send(chat, user, f"/newcharacter{BOT}", thread_id=thread_id)
    ask = await bot.wait_reply(sent, contains="name")
    look = await answer(bot, chat, user, ask, name, f"How does {name} look")
    style = await answer(bot, chat, user, look, "pink hair", "Which style")
    bot.click(chat, user, style, "chibi")
    personality = await bot.wait_reply(
        Sent(chat, user, style.message_id, True), contains=f"{name}'s personality"
    )
    reference = await answer(bot, chat, user, personality, "/skip", "reference photo")
    return await answer(bot, chat, user, reference, "/skip", "Create this character?")


def sent_params(fake: FakeTelegram, message: StoredMessage) -> JSONDict:
    """The parameters of the sendMessage call that created `message`."""
    for call in fake.calls_of("sendMessage"):
        if call.ok and call.result["message_id"] == message.message_id:
            return call.params
    raise AssertionError(f"no sendMessage made message {message.message_id}")


def targets(fake: FakeTelegram, question: StoredMessage, user: FakeUser) -> bool:
    """Does a selective ForceReply of `question` reach `user`? (Bot API, ForceReply.selective:
    the users @mentioned in the text, and the sender of the message it replies to.)"""
    text = str(sent_params(fake, question).get("text") or "")
    mentioned = f"tg://user?id={user.id}" in text or (
        user.username is not None and f"@{user.username}" in text
    )
    replied = question.reply_to is not None and question.reply_to.sender.id == user.id
    return mentioned or replied
