"""Groups and forum topics: addressed commands, replies to the bot, per-user dialogs, owners."""

from __future__ import annotations

from tests.e2e.harness import BotHarness, Sent, buttons
from tests.fakes.telegram import FakeChat, FakeUser, StoredMessage

BOT = "@AnimeStudioTestBot"


async def answer(
    bot: BotHarness, chat: FakeChat, user: FakeUser, prompt: StoredMessage, text: str, expect: str
) -> StoredMessage:
    """Answer the bot's question as a reply (what a ForceReply makes the client do)."""
    return await bot.wait_reply(bot.send(chat, user, text, reply_to=prompt), contains=expect)


async def test_commands_for_other_bots_are_ignored(bot_harness: BotHarness) -> None:
    bot = bot_harness
    alice = bot.fake.user("Alice")
    group = bot.fake.group("Friends", members=[alice])
    ignored = bot.send(group, alice, "/start@SomeOtherBot")
    await bot.settle()
    assert not bot.replies_after(ignored)
    reply = await bot.wait_reply(bot.send(group, alice, f"/start{BOT}"), contains="Anime Studio")
    assert reply.reply_to is not None and reply.reply_to.sender.id == alice.id
    # once the bot posted, the plain command reaches it too (privacy mode rules)
    await bot.wait_reply(bot.send(group, alice, "/help"), contains="/newcharacter")


async def test_two_users_create_characters_in_one_forum_topic(bot_harness: BotHarness) -> None:
    bot = bot_harness
    alice, bob = bot.fake.user("Alice"), bot.fake.user("Bob")
    forum = bot.fake.forum("Studio", members=[alice, bob])
    topic = bot.fake.add_topic(forum, "Characters")

    ask_a = await bot.wait_reply(
        bot.send(forum, alice, f"/newcharacter{BOT}", thread_id=topic), contains="name"
    )
    ask_b = await bot.wait_reply(
        bot.send(forum, bob, f"/newcharacter{BOT}", thread_id=topic),
        contains="name",
        where=lambda m: m.message_id != ask_a.message_id,
    )
    for prompt in (ask_a, ask_b):
        assert prompt.thread_id == topic
        assert (prompt.reply_markup or {}).get("force_reply") is True  # asked as a reply
        assert (prompt.reply_markup or {}).get("selective") is True

    # chatter that is no reply to the bot does not reach it (privacy mode)
    hidden = bot.send(forum, alice, "just chatting", thread_id=topic)
    assert not hidden.visible

    look_a = await answer(bot, forum, alice, ask_a, "Aiko", "How does Aiko look")
    look_b = await answer(bot, forum, bob, ask_b, "Ren", "How does Ren look")
    assert look_a.thread_id == topic and look_b.thread_id == topic
    style_a = await answer(bot, forum, alice, look_a, "pink hair", "Which style")
    style_b = await answer(bot, forum, bob, look_b, "black coat", "Which style")

    # Bob presses Alice's style buttons: not his dialog
    stolen = bot.click(forum, bob, style_a, "chibi")
    assert await bot.wait_toast(stolen) == "This is not your request."
    assert buttons(style_a)

    bot.click(forum, alice, style_a, "chibi")
    personality_a = await bot.wait_reply(
        Sent(forum, alice, style_b.message_id, True), contains="Aiko's personality"
    )
    bot.click(forum, bob, style_b, "cyberpunk")
    personality_b = await bot.wait_reply(
        Sent(forum, bob, style_b.message_id, True), contains="Ren's personality"
    )
    ref_a = await answer(bot, forum, alice, personality_a, "/skip", "reference photo of Aiko")
    ref_b = await answer(bot, forum, bob, personality_b, "/skip", "reference photo of Ren")
    confirm_a = await answer(bot, forum, alice, ref_a, "/skip", "Create this character?")
    confirm_b = await answer(bot, forum, bob, ref_b, "/skip", "Create this character?")
    assert "Aiko" in (confirm_a.content or "") and "Ren" in (confirm_b.content or "")

    bot.click(forum, alice, confirm_a, "Create")
    bot.click(forum, bob, confirm_b, "Create")
    done_a = await bot.wait_reply(
        Sent(forum, alice, confirm_b.message_id, True), contains="Aiko is ready"
    )
    done_b = await bot.wait_reply(
        Sent(forum, bob, confirm_b.message_id, True), contains="Ren is ready"
    )
    assert done_a.thread_id == topic and done_b.thread_id == topic
    alice_chars, _ = await bot.service.list_characters(alice.id)
    bob_chars, _ = await bot.service.list_characters(bob.id)
    assert [(c.name, c.style) for c in alice_chars] == [("Aiko", "chibi")]
    assert [(c.name, c.style) for c in bob_chars] == [("Ren", "cyberpunk")]

    # lists and cards answer in the topic; cards' buttons are their owner's
    listing = await bot.wait_reply(
        bot.send(forum, alice, f"/characters{BOT}", thread_id=topic), contains="Your characters"
    )
    assert listing.thread_id == topic
    bot.click(forum, alice, listing, "Aiko")
    card = await bot.wait_reply(Sent(forum, alice, listing.message_id, True), contains="pink hair")
    assert card.thread_id == topic
    other = bot.click(forum, bob, card, "Delete")
    assert await bot.wait_toast(other) == "This is not your request."
    assert "pink hair" in (card.content or "")
