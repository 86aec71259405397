"""Audit of groups, forum topics and concurrency: the real bot against the fake Bot API, the fake
ComfyUI and a real PostgreSQL.

Tests marked `xfail(strict=True)` show a bug that is still open (each reason says which); the
others pin down behaviour that works and was not tested before.
"""

from __future__ import annotations

from bot.handlers.characters import EDIT_FIELD
from bot.keyboards import SCENE
from tests.e2e.conftest import MakeBot
from tests.e2e.harness import BotHarness, Sent
from tests.e2e.test_bot_scenes import person
from tests.e2e.test_bot_scenes_edges import dead_url
from tests.fakes.telegram import (
    FakeChat,
    FakeTelegram,
    FakeUser,
    JSONDict,
    StoredMessage,
)

BOT = "@AnimeStudioTestBot"
ANONYMOUS_ADMIN_ID = 1087968824  # @GroupAnonymousBot: the sender of an anonymous admin's message


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


async def test_questions_after_a_button_press_target_the_user_with_their_force_reply(
    make_bot: MakeBot,
) -> None:
    bot = await make_bot(comfyui_urls=dead_url())
    alice = bot.fake.user("Alice")
    group = bot.fake.supergroup("Studio", members=[alice])
    _, _, (aiko,) = await person(bot, "Alice", "Aiko", user=alice, chat=group)
    anchor = bot.send(group, alice, f"/newcharacter{BOT}")
    ask = await bot.wait_reply(anchor, contains="name")
    assert (ask.reply_markup or {}).get("selective") is True
    assert targets(bot.fake, ask, alice)  # a reply to her command: hers

    bot.press(group, alice, ask, SCENE.data(aiko.id, owner=alice.id))
    scene = await bot.wait_reply(anchor, contains="What happens in the scene with")
    bot.press(group, alice, ask, EDIT_FIELD.data(aiko.id, "appearance", owner=alice.id))
    edit = await bot.wait_reply(anchor, contains="Send the new")
    for question in (scene, edit):
        assert (question.reply_markup or {}).get("selective") is True
    assert [targets(bot.fake, q, alice) for q in (scene, edit)] == [True, True]


async def test_a_reply_to_the_scene_question_of_another_topic_is_answered(
    make_bot: MakeBot,
) -> None:
    bot = await make_bot(comfyui_urls=dead_url())
    alice = bot.fake.user("Alice")
    forum = bot.fake.forum("Studio", members=[alice])
    topic_a, topic_b = bot.fake.add_topic(forum, "A"), bot.fake.add_topic(forum, "B")
    _, _, (aiko,) = await person(bot, "Alice", "Aiko", user=alice, chat=forum)
    questions: list[StoredMessage] = []
    for topic in (topic_a, topic_b):
        anchor = bot.send(forum, alice, f"/help{BOT}", thread_id=topic)
        help_message = await bot.wait_reply(anchor, contains="/image")
        bot.press(forum, alice, help_message, SCENE.data(aiko.id, owner=alice.id))
        questions.append(await bot.wait_reply(anchor, contains="What happens in the scene"))
    assert [q.thread_id for q in questions] == [topic_a, topic_b]

    scene = bot.send(forum, alice, "she reads on a rooftop", reply_to=questions[0])
    assert scene.visible and scene.thread_id == topic_a
    await bot.settle()
    assert bot.replies_after(scene), "silence"
