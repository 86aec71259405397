"""The "what happens in the scene?" question of a character card's scene button, and the
questions asked after a button press, in groups and private chats: the real bot against the
fake Bot API and a real PostgreSQL (no GPU: jobs stay queued).

- In a group every open scene question of a user can be answered (one wait per question);
  a reply to one that is closed (answered, expired) is told so, a reply to another user's
  question too, a reply to another bot message is left alone.
- In a private chat the next message answers the newest question, as before; a reply to an
  older (replaced) question is told that it is closed instead of starting the newest one.
- A question asked after a button press in a group mentions the presser (so that its selective
  ForceReply opens their reply box); in a private chat it does not.
"""

from __future__ import annotations

from bot.keyboards import SCENE
from core.db.pool import connect
from tests.e2e.conftest import MakeBot
from tests.e2e.groups_kit import BOT, sent_params, targets
from tests.e2e.harness import BotHarness, Sent, assert_no_crash
from tests.e2e.test_bot_scenes import jobs_of, person
from tests.e2e.test_bot_scenes_edges import dead_url
from tests.fakes.telegram import FakeChat, FakeUser, StoredMessage

CLOSED = "This question is closed"


async def ask_scene(
    bot: BotHarness,
    chat: FakeChat,
    user: FakeUser,
    character_id: object,
    *,
    thread_id: int | None = None,
) -> StoredMessage:
    """Press the scene button of a character under the bot's /help answer; the question."""
    command = "/help" if chat.type == "private" else f"/help{BOT}"
    anchor = bot.send(chat, user, command, thread_id=thread_id)
    help_message = await bot.wait_reply(anchor, contains="/image")
    bot.press(chat, user, help_message, SCENE.data(character_id, owner=user.id))
    return await bot.wait_reply(anchor, contains="🎬")  # in English or Russian


async def answer(
    bot: BotHarness, chat: FakeChat, user: FakeUser, question: StoredMessage, text: str
) -> StoredMessage:
    """Reply `text` to `question`; the bot's first reply."""
    return await bot.wait_reply(bot.send(chat, user, text, reply_to=question))


async def test_two_open_scene_questions_in_a_group_are_both_answered(
    make_bot: MakeBot,
) -> None:
    bot = await make_bot(comfyui_urls=dead_url())
    alice, bob = bot.fake.user("Alice"), bot.fake.user("Bob")
    group = bot.fake.supergroup("Studio", members=[alice, bob])
    _, _, (aiko, mio) = await person(bot, "Alice", "Aiko", "Mio", user=alice, chat=group)
    about_aiko = await ask_scene(bot, group, alice, aiko.id)
    about_mio = await ask_scene(bot, group, alice, mio.id)

    # another member's reply to Alice's question: not theirs, and the question stays open
    refused = await answer(bot, group, bob, about_aiko, "he flies a kite")
    assert refused.content == "This is not your request."
    # a reply to another message of the bot is no answer to any question
    help_message = await bot.wait_reply(bot.send(group, alice, f"/help{BOT}"), contains="/image")
    thanks = bot.send(group, alice, "thanks", reply_to=help_message)
    assert thanks.visible
    await bot.settle()
    assert not bot.replies_after(thanks)

    # the newer question first, then the older one: each starts a scene with its character
    second = await answer(bot, group, alice, about_mio, "she sings in the rain")
    first = await answer(bot, group, alice, about_aiko, "she reads on a rooftop")
    assert "waiting in line" in (second.content or "") and "waiting in line" in (
        first.content or ""
    )
    jobs = {job.prompt_typed: job.character_ids for job in await jobs_of(bot, alice)}
    assert jobs == {"she reads on a rooftop": [aiko.id], "she sings in the rain": [mio.id]}
    assert await jobs_of(bot, bob) == []
    assert_no_crash(bot)


async def test_a_reply_to_a_closed_scene_question_is_told_so(
    make_bot: MakeBot, pg_dsn: str
) -> None:
    bot = await make_bot(comfyui_urls=dead_url())
    alice = bot.fake.user("Alice")
    olga = bot.fake.user("Olga", language_code="ru")
    forum = bot.fake.forum("Studio", members=[alice, olga])
    topic = bot.fake.add_topic(forum, "Renders")
    _, _, (aiko,) = await person(bot, "Alice", "Aiko", user=alice, chat=forum)
    _, _, (ren,) = await person(bot, "Olga", "Ren", user=olga, chat=forum)

    # answered: a second reply to the same question
    question = await ask_scene(bot, forum, alice, aiko.id, thread_id=topic)
    await answer(bot, forum, alice, question, "she reads on a rooftop")
    again = await answer(bot, forum, alice, question, "she sings in the rain")
    assert (again.content or "").startswith(CLOSED), again.content
    assert "🎬 Use in a scene" in (again.content or "") and again.thread_id == topic
    assert again.reply_to is not None and again.reply_to.sender.id == alice.id

    # expired (15 minutes without an answer), in Russian
    question = await ask_scene(bot, forum, olga, ren.id, thread_id=topic)
    conn = await connect(pg_dsn)
    try:
        await conn.execute(
            "UPDATE dialogs SET expires_at = now() - interval '1 second'"
            " WHERE chat_id = $1 AND kind = 'scene_wait' AND user_id = $2",
            forum.id,
            olga.id,
        )
    finally:
        await conn.close()
    late = await answer(bot, forum, olga, question, "он читает на крыше")
    assert (late.content or "").startswith("Этот вопрос закрыт"), late.content
    assert "🎬 В сцену" in (late.content or "")
    assert await jobs_of(bot, olga) == []

    assert_no_crash(bot)


async def test_scene_questions_in_a_private_chat(make_bot: MakeBot) -> None:
    """Unchanged: no mention, no ForceReply, the next message answers the newest question.
    New: a reply to an older question it replaced is told that it is closed."""
    bot = await make_bot(comfyui_urls=dead_url())
    alice, chat, (aiko, mio) = await person(bot, "Alice", "Aiko", "Mio")
    older = await ask_scene(bot, chat, alice, aiko.id)
    newer = await ask_scene(bot, chat, alice, mio.id)
    for question in (older, newer):
        params = sent_params(bot.fake, question)
        assert "tg://user" not in str(params.get("text")) and "reply_markup" not in params
        assert (question.content or "").startswith("🎬 What happens")

    late = await answer(bot, chat, alice, older, "she reads on a rooftop")
    assert (late.content or "").startswith(CLOSED), late.content
    started = await bot.wait_reply(bot.send(chat, alice, "she sings in the rain"))
    assert "waiting in line" in (started.content or "")
    [job] = await jobs_of(bot, alice)
    assert job.character_ids == [mio.id] and job.prompt_typed == "she sings in the rain"
    assert_no_crash(bot)


async def test_questions_after_a_button_press_mention_the_presser(make_bot: MakeBot) -> None:
    """The personality question after the style button, for a user whose name needs escaping
    and who has no username, in English and in Russian."""
    bot = await make_bot(comfyui_urls=dead_url())
    ann = bot.fake.user("<Ann & Bo>")
    olga = bot.fake.user("Ольга", language_code="ru")
    group = bot.fake.group("Studio", members=[ann, olga])
    expected = {
        ann.id: "<Ann & Bo>, Describe Aiko's personality",
        olga.id: "Ольга, Опишите характер Mio",
    }
    for user, name in ((ann, "Aiko"), (olga, "Mio")):
        anchor = bot.send(group, user, f"/newcharacter{BOT}")
        ask = await bot.wait_reply(anchor)
        look = await answer(bot, group, user, ask, name)
        style = await answer(bot, group, user, look, "pink hair")
        assert style.reply_markup is not None and "inline_keyboard" in style.reply_markup
        bot.click(group, user, style, "chibi")
        personality = await bot.wait_reply(Sent(group, user, style.message_id, True), contains=name)
        assert (personality.content or "").startswith(expected[user.id]), personality.content
        assert (personality.reply_markup or {}).get("selective") is True
        assert targets(bot.fake, personality, user)
        text = str(sent_params(bot.fake, personality)["text"])
        assert text.startswith(f'<a href="tg://user?id={user.id}">')
    assert_no_crash(bot)
