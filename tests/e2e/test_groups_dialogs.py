"""Audit of groups, forum topics and concurrency: the real bot against the fake Bot API, the fake
ComfyUI and a real PostgreSQL.

The character dialog takes only what is meant for it: the answer to its own question (in a
group a reply to it; in a private chat any message, but not a reply to another question of the
bot), its commands (not a command in a caption), and the buttons of its own message. A dialog
stored before its question was recorded (an older version of the bot) goes on.
"""

from __future__ import annotations

from typing import Any

import pytest

from bot.handlers.characters import EDIT_FIELD
from bot.keyboards import SCENE
from core.db import dialogs as store
from core.dialogs import CharacterDialog
from tests.e2e.conftest import MakeBot
from tests.e2e.groups_kit import BOT, answer, draft_to_confirm
from tests.e2e.harness import BotHarness, Sent, buttons, handled
from tests.e2e.test_bot_characters import png
from tests.e2e.test_bot_scenes import jobs_of, person
from tests.e2e.test_bot_scenes_edges import dead_url
from tests.fakes.telegram import (
    FakeChat,
    FakeUser,
    StoredMessage,
)


async def test_a_reply_to_another_bot_message_is_not_the_answer_to_the_name_question(
    bot_harness: BotHarness,
) -> None:
    bot = bot_harness
    alice, bob = bot.fake.user("Alice"), bot.fake.user("Bob")
    group = bot.fake.supergroup("Studio", members=[alice, bob])
    ask = await bot.wait_reply(bot.send(group, alice, f"/newcharacter{BOT}"), contains="name")
    help_message = await bot.wait_reply(bot.send(group, bob, f"/help{BOT}"), contains="/image")

    # Alice thanks the bot for Bob's help text: a reply to the bot, so privacy mode lets it in
    chatter = bot.send(group, alice, "Thanks", reply_to=help_message)
    assert chatter.visible
    await bot.settle()
    assert not [m.content for m in bot.replies_after(chatter)]  # bug: "How does Thanks look?"
    await answer(bot, group, alice, ask, "Aiko", "How does Aiko look")


async def test_a_reply_to_the_scene_question_starts_the_scene_despite_an_open_edit(
    make_bot: MakeBot,
) -> None:
    bot = await make_bot(comfyui_urls=dead_url())  # jobs stay queued: no GPU needed
    alice = bot.fake.user("Alice")
    group = bot.fake.supergroup("Studio", members=[alice])
    _, _, (aiko,) = await person(bot, "Alice", "Aiko", user=alice, chat=group)
    anchor = bot.send(group, alice, f"/help{BOT}")
    help_message = await bot.wait_reply(anchor, contains="/image")

    # "Edit > Personality", then (changing her mind) "Use in a scene", both from Aiko's card
    bot.press(group, alice, help_message, EDIT_FIELD.data(aiko.id, "personality", owner=alice.id))
    await bot.wait_reply(anchor, contains="Send the new")
    bot.press(group, alice, help_message, SCENE.data(aiko.id, owner=alice.id))
    question = await bot.wait_reply(anchor, contains="What happens in the scene with")

    scene = bot.send(group, alice, "she reads on a rooftop", reply_to=question)
    first = await bot.wait_reply(scene)
    stored = (await bot.service.list_characters(alice.id))[0][0]
    assert stored.personality == "", f"saved as the personality; the bot said {first.content!r}"
    assert "waiting in line" in (first.content or "")
    [job] = await jobs_of(bot, alice)
    assert job.character_ids == [aiko.id] and job.prompt_typed == "she reads on a rooftop"


async def test_create_under_an_abandoned_draft_does_not_create_the_current_one(
    bot_harness: BotHarness,
) -> None:
    bot = bot_harness
    alice = bot.fake.user("Alice")
    forum = bot.fake.forum("Studio", members=[alice])
    topic_a, topic_b = bot.fake.add_topic(forum, "A"), bot.fake.add_topic(forum, "B")
    aiko = await draft_to_confirm(bot, forum, alice, "Aiko", thread_id=topic_a)
    mio = await draft_to_confirm(bot, forum, alice, "Mio", thread_id=topic_b)  # starts anew
    assert "Aiko" in (aiko.content or "") and "Mio" in (mio.content or "")

    query = bot.click(forum, alice, aiko, "Create")  # the old message in topic A
    toast = await bot.wait_toast(query)
    await handled()
    created, _ = await bot.service.list_characters(alice.id)
    assert "Mio" not in [c.name for c in created], f"Mio created; the toast said {toast!r}"
    assert buttons(mio)  # Mio's own confirmation is still open


STALE = "This button is no longer valid."


async def stored(bot: BotHarness, chat: FakeChat, user: FakeUser) -> CharacterDialog:
    dialog = await bot.service.dialogs.get(CharacterDialog, chat.id, user.id)
    assert dialog is not None
    return dialog.state  # type: ignore[no-any-return]


async def as_stored_before(bot: BotHarness, chat: FakeChat, user: FakeUser) -> None:
    """Store the user's dialog as the version before `question_id` did: without the field."""
    state: dict[str, Any] = (await stored(bot, chat, user)).model_dump(mode="json")
    del state["question_id"]
    db = bot.service.dialogs.db
    await store.put(db, chat.id, "character", user.id, user_id=user.id, state=state, ttl_s=600)
    assert (await stored(bot, chat, user)).question_id is None


async def test_a_reply_to_the_current_question_after_a_refused_answer_is_taken(
    bot_harness: BotHarness,
) -> None:
    bot = bot_harness
    alice = bot.fake.user("Alice")
    group = bot.fake.supergroup("Studio", members=[alice])
    ask = await bot.wait_reply(bot.send(group, alice, f"/newcharacter{BOT}"), contains="name")
    again = await answer(bot, group, alice, ask, "x" * 65, "too long")  # asked again (ForceReply)
    assert (await stored(bot, group, alice)).question_id == again.message_id
    look = await answer(bot, group, alice, again, "Aiko", "How does Aiko look")
    assert (await stored(bot, group, alice)).question_id == look.message_id


async def test_buttons_under_an_abandoned_question_are_no_longer_valid(
    bot_harness: BotHarness,
) -> None:
    bot = bot_harness
    alice = bot.fake.user("Alice")
    chat = bot.fake.private_chat(alice)
    styles = []
    for name in ("Aiko", "Mio"):  # the second /newcharacter starts anew
        await bot.wait_reply(bot.send(chat, alice, "/newcharacter"), contains="name")
        await bot.wait_reply(bot.send(chat, alice, name), contains=f"How does {name} look")
        styles.append(await bot.wait_reply(bot.send(chat, alice, "pink hair"), contains="style"))
    old, current = styles

    for label in ("chibi", "Cancel"):
        assert await bot.wait_toast(bot.click(chat, alice, old, label)) == STALE
    await handled()
    draft = await stored(bot, chat, alice)
    assert draft.name == "Mio" and draft.step == "style" and draft.style != "chibi"
    bot.click(chat, alice, current, "chibi")
    await bot.wait_reply(Sent(chat, alice, current.message_id, True), contains="Mio's personality")


async def test_a_command_in_a_caption_is_not_an_answer(bot_harness: BotHarness) -> None:
    bot = bot_harness
    alice = bot.fake.user("Alice")
    chat = bot.fake.private_chat(alice)
    await bot.wait_reply(bot.send(chat, alice, "/newcharacter"), contains="name")
    audio = bot.send(chat, alice, caption="/image a walk", audio=b"ID3 not really an mp3")
    await bot.wait_reply(audio, contains="Music is only for videos")  # the scene handler's
    assert not [m for m in bot.replies_after(audio) if "name" in (m.content or "")]
    assert (await stored(bot, chat, alice)).step == "name"
    await bot.wait_reply(bot.send(chat, alice, "Aiko"), contains="How does Aiko look")


async def test_in_a_private_chat_a_plain_message_answers_and_a_reply_to_the_scene_question_not(
    make_bot: MakeBot,
) -> None:
    bot = await make_bot(comfyui_urls=dead_url())  # jobs stay queued: no GPU needed
    alice, chat, (aiko,) = await person(bot, "Alice", "Aiko")
    ask = await bot.wait_reply(bot.send(chat, alice, "/newcharacter"), contains="name")
    bot.press(chat, alice, ask, SCENE.data(aiko.id, owner=alice.id))
    question = await bot.wait_reply(Sent(chat, alice, ask.message_id, True), contains="What happ")

    # both wait for a message: a plain one (no reply) is still the character dialog's answer
    await bot.wait_reply(bot.send(chat, alice, "Mio"), contains="How does Mio look")
    scene = bot.send(chat, alice, "she reads on a rooftop", reply_to=question)
    first = await bot.wait_reply(scene)
    assert "waiting in line" in (first.content or ""), first.content
    [job] = await jobs_of(bot, alice)
    assert job.character_ids == [aiko.id] and job.prompt_typed == "she reads on a rooftop"
    draft = await stored(bot, chat, alice)
    assert draft.step == "appearance" and draft.appearance == ""


@pytest.mark.parametrize("in_group", [False, True], ids=["private", "group"])
async def test_a_dialog_stored_before_questions_were_recorded_goes_on(
    bot_harness: BotHarness, in_group: bool
) -> None:
    bot = bot_harness
    alice = bot.fake.user("Alice")
    chat = bot.fake.supergroup("S", members=[alice]) if in_group else bot.fake.private_chat(alice)

    async def reply(question: StoredMessage, expect: str, text: str | None, **media: Any) -> Any:
        """The answer: a reply in a group, a plain message in a private chat."""
        sent = bot.send(chat, alice, text, reply_to=question if in_group else None, **media)
        return await bot.wait_reply(sent, contains=expect)

    start = f"/newcharacter{BOT}" if in_group else "/newcharacter"
    ask = await bot.wait_reply(bot.send(chat, alice, start), contains="name")
    await as_stored_before(bot, chat, alice)
    look = await reply(ask, "How does Aiko look", "Aiko")
    assert (await stored(bot, chat, alice)).question_id == look.message_id  # recorded again

    style = await reply(look, "Which style", "pink hair")
    await as_stored_before(bot, chat, alice)
    bot.click(chat, alice, style, "chibi")  # the buttons of such a dialog work too
    personality = await bot.wait_reply(
        Sent(chat, alice, style.message_id, True), contains="personality"
    )
    reference = await reply(personality, "reference photo", "/skip")
    confirm = await reply(reference, "Create this character?", None, photo=png(300, 300))
    await as_stored_before(bot, chat, alice)
    bot.click(chat, alice, confirm, "Create")
    await bot.wait_reply(Sent(chat, alice, confirm.message_id, True), contains="is ready")
    created, _ = await bot.service.list_characters(alice.id)
    assert [c.name for c in created] == ["Aiko"]
