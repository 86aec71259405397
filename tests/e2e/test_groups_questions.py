"""Audit of groups, forum topics and concurrency: the real bot against the fake Bot API, the fake
ComfyUI and a real PostgreSQL.

A reply to the scene question of another topic is answered, and a question asked after a
button press in a group reaches the presser with its selective ForceReply.
"""

from __future__ import annotations

from bot.handlers.characters import EDIT_FIELD
from bot.keyboards import SCENE
from tests.e2e.conftest import MakeBot
from tests.e2e.groups_kit import BOT, targets
from tests.e2e.test_bot_scenes import person
from tests.e2e.test_bot_scenes_edges import dead_url
from tests.fakes.telegram import (
    StoredMessage,
)


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
