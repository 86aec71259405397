"""Edges of /newcharacter and of the character card (see test_bot_characters.py for the main
paths): wrong input at a step, a download Telegram refuses, other users' Create and Cancel
buttons in a group, Create refused by core, the Back button, buttons of a deleted character,
editing the reference photo, an edit whose character was deleted meanwhile, and a character
sheet with generated pictures. The real bot against the fake Bot API and a real PostgreSQL."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from bot.handlers.characters import (
    BACK,
    DELETE,
    DELETE_NO,
    DELETE_YES,
    EDIT_FIELD,
    EDIT_MENU,
    SET_STYLE,
    SHEET,
    STYLE_MENU,
)
from core.models import Character, ChatType
from core.service import Actor, CharacterDraft
from tests.e2e.conftest import MakeBot
from tests.e2e.harness import (
    BotHarness,
    Sent,
    assert_no_crash,
    button_data,
    buttons,
    send_without_size,
)
from tests.e2e.test_bot_characters import png, step
from tests.fakes.telegram import FakeChat, FakeUser, StoredMessage

BOT = "@AnimeStudioTestBot"
NOT_YOURS = "This is not your request."
STALE = "This button is no longer valid."
GONE = "That character does not exist (any more)."
CARD_BUTTONS = ["🎬 Use in a scene", "✏️ Edit", "🗂 Character sheet", "🗑 Delete"]


@pytest.fixture
async def bot(make_bot: MakeBot) -> BotHarness:
    # a generous flood limit: some tests press many buttons in a row
    return await make_bot(rate_limit_burst=200)


def labels(message: StoredMessage) -> list[str]:
    return [label for label, _ in buttons(message)]


async def seen_with(
    bot: BotHarness, name: str, *characters: CharacterDraft
) -> tuple[FakeUser, FakeChat, Actor, list[Character]]:
    user = bot.fake.user(name)
    chat = bot.fake.private_chat(user)
    actor = Actor(user.id, chat.id)
    await bot.service.seen(actor)
    made = [await bot.service.create_character(actor, draft) for draft in characters]
    return user, chat, actor, made


async def open_card(
    bot: BotHarness, chat: FakeChat, user: FakeUser, name: str, *, after: int | None = None
) -> StoredMessage:
    """/characters, then the character's button: its card (a new message)."""
    listing = await step(bot, bot.send(chat, user, "/characters"), "Your characters")
    bot.click(chat, user, listing, name)
    return await bot.wait_reply(
        Sent(chat, user, after or listing.message_id, True),
        where=lambda m: name in (m.content or "") and labels(m) == CARD_BUTTONS,
    )


async def answer(
    bot: BotHarness, chat: FakeChat, user: FakeUser, question: StoredMessage, text: str, expect: str
) -> StoredMessage:
    """Answer the bot's question as a reply (what its selective ForceReply asks for in groups)."""
    return await bot.wait_reply(bot.send(chat, user, text, reply_to=question), contains=expect)


async def to_confirm_in_group(
    bot: BotHarness, group: FakeChat, user: FakeUser, name: str
) -> StoredMessage:
    """`user` runs /newcharacter in `group` up to the Create / Cancel question."""
    ask = await step(bot, bot.send(group, user, f"/newcharacter{BOT}"), "What is their name?")
    look = await answer(bot, group, user, ask, name, f"How does {name} look")
    style = await answer(bot, group, user, look, "pink hair", "Which style")
    bot.click(group, user, style, "chibi")
    personality = await bot.wait_reply(
        Sent(group, user, style.message_id, True), contains=f"{name}'s personality"
    )
    reference = await answer(bot, group, user, personality, "/skip", "reference photo")
    return await answer(bot, group, user, reference, "/skip", "Create this character?")


async def to_confirm(bot: BotHarness, chat: FakeChat, user: FakeUser, name: str) -> StoredMessage:
    """`user` runs /newcharacter in a private chat up to the Create / Cancel question."""
    await step(bot, bot.send(chat, user, "/newcharacter"), "What is their name?")
    await step(bot, bot.send(chat, user, name), f"How does {name} look")
    style = await step(bot, bot.send(chat, user, "pink hair"), "Which style")
    bot.click(chat, user, style, "chibi")
    await bot.wait_reply(Sent(chat, user, style.message_id, True), contains="personality")
    await step(bot, bot.send(chat, user, "/skip"), "reference photo")
    return await step(bot, bot.send(chat, user, "/skip"), "Create this character?")


async def names_of(bot: BotHarness, user: FakeUser) -> list[str]:
    items, _ = await bot.service.list_characters(user.id)
    return sorted(c.name for c in items)


# -- /newcharacter ------------------------------------------------------------------------------


async def test_photo_as_appearance_and_a_reference_telegram_will_not_send(
    bot: BotHarness,
) -> None:
    alice, chat, _, _ = await seen_with(bot, "Alice")
    await step(bot, bot.send(chat, alice, "/newcharacter"), "What is their name?")
    await step(bot, bot.send(chat, alice, "Mio"), "How does Mio look")

    # a photo where a description is asked: said so, the step is asked again
    await step(
        bot,
        bot.send(chat, alice, photo=png(300, 300)),
        "The description is empty. Describe how Mio looks, in words.",
    )
    style = await step(bot, bot.send(chat, alice, "short blue hair"), "Which style")
    bot.click(chat, alice, style, "anime")
    await bot.wait_reply(Sent(chat, alice, style.message_id, True), contains="personality")
    await step(bot, bot.send(chat, alice, "/skip"), "reference photo")

    # an image file whose update carries no size: getFile refuses it ("file is too big");
    # the answer must not claim a size the bot does not know
    huge = b"\x89PNG\r\n\x1a\n" + bytes(21 * 1024 * 1024)
    sent = send_without_size(
        bot, chat, alice, document=huge, document_name="me.png", document_mime="image/png"
    )
    refused = await step(bot, sent, "too big")
    assert refused.content == "That file is too big (>20 MB); send an image under 20 MB, or /skip."
    assert [c.error for c in bot.fake.calls_of("getFile")] == ["Bad Request: file is too big"]

    # still at the reference step: a good photo goes on to the confirmation
    confirm = await step(bot, bot.send(chat, alice, photo=png(600, 800)), "Create this character?")
    assert "Reference photo: Yes" in (confirm.content or "")
    bot.click(chat, alice, confirm, "Create")
    await bot.wait_reply(Sent(chat, alice, confirm.message_id, True), contains="Mio is ready")
    (mio,), _ = await bot.service.list_characters(alice.id)
    assert mio.appearance == "short blue hair"
    assert len(await bot.service.references(mio.id)) == 1
    assert_no_crash(bot)


async def test_other_users_create_and_cancel_buttons_in_a_group(bot: BotHarness) -> None:
    """Bob, in the middle of his own /newcharacter, presses Alice's Create and Cancel: he is
    told they are not his, and neither dialog is touched (his own goes on)."""
    alice, bob = bot.fake.user("Alice"), bot.fake.user("Bob")
    group = bot.fake.group("Studio", members=[alice, bob])
    confirm_a = await to_confirm_in_group(bot, group, alice, "Aiko")
    confirm_b = await to_confirm_in_group(bot, group, bob, "Ren")
    shown = len(confirm_a.history)

    stolen = bot.click(group, bob, confirm_a, "Create")
    assert await bot.wait_toast(stolen) == NOT_YOURS
    stolen = bot.click(group, bob, confirm_a, "Cancel")
    assert await bot.wait_toast(stolen) == NOT_YOURS
    await bot.settle(0.1)
    assert len(confirm_a.history) == shown and labels(confirm_a) == ["Create", "Cancel"]
    assert await names_of(bot, alice) == [] and await names_of(bot, bob) == []

    # Bob's own dialog is intact: his Create works
    created = bot.click(group, bob, confirm_b, "Create")
    await bot.wait_reply(Sent(group, bob, confirm_b.message_id, True), contains="Ren is ready")
    assert await bot.wait_toast(created) == ""
    bot.click(group, alice, confirm_a, "Create")
    await bot.wait_reply(Sent(group, alice, confirm_b.message_id, True), contains="Aiko is ready")
    assert await names_of(bot, alice) == ["Aiko"] and await names_of(bot, bob) == ["Ren"]
    assert_no_crash(bot)


async def test_a_refused_edit_button_leaves_the_pressers_dialog_alone(bot: BotHarness) -> None:
    """In a group, Bob (in the middle of /newcharacter) presses a field button of Alice's card;
    Alice (in the middle of hers) presses one of a character deleted meanwhile. Each is told
    why, and each one's own dialog goes on."""
    alice, bob = bot.fake.user("Alice"), bot.fake.user("Bob")
    group = bot.fake.group("Studio", members=[alice, bob])
    actor = Actor(alice.id, group.id, chat_type=ChatType.GROUP)
    await bot.service.seen(actor)
    aiko = await bot.service.create_character(actor, CharacterDraft(name="Aiko", appearance="tall"))
    listing = await step(bot, bot.send(group, alice, f"/characters{BOT}"), "Your characters")
    bot.click(group, alice, listing, "Aiko")
    card = await bot.wait_reply(
        Sent(group, alice, listing.message_id, True), where=lambda m: labels(m) == CARD_BUTTONS
    )
    bot.click(group, alice, card, "Edit")
    await bot.wait_content(card, "What do you want to change about Aiko?")

    ask_bob = await step(bot, bot.send(group, bob, f"/newcharacter{BOT}"), "What is their name?")
    stolen = bot.click(group, bob, card, "Name")
    assert await bot.wait_toast(stolen) == NOT_YOURS
    await answer(bot, group, bob, ask_bob, "Ren", "How does Ren look")

    ask_alice = await step(bot, bot.send(group, alice, f"/newcharacter{BOT}"), "their name?")
    await bot.service.delete_character(actor, aiko.id)
    gone = bot.click(group, alice, card, "Appearance")
    assert await bot.wait_toast(gone) == GONE
    await answer(bot, group, alice, ask_alice, "Mio", "How does Mio look")
    assert_no_crash(bot)


async def test_create_refused_by_core_says_why(make_bot: MakeBot) -> None:
    """The name checked at the first step was taken meanwhile (in another chat); the character
    limit reached meanwhile (a character made while the dialog ran): Create answers why, its
    buttons go, nothing is stored."""
    bot = await make_bot(max_characters_per_user=3)
    alice, chat, actor, _ = await seen_with(
        bot, "Alice", CharacterDraft(name="Ren", appearance="black coat")
    )

    confirm = await to_confirm(bot, chat, alice, "Aiko")
    group = bot.fake.group("Other", members=[alice])
    elsewhere = Actor(alice.id, group.id, chat_type=ChatType.GROUP)
    await bot.service.seen(elsewhere)
    await bot.service.create_character(elsewhere, CharacterDraft(name="Aiko", appearance="tall"))
    query = bot.click(chat, alice, confirm, "Create")
    taken = "You already have a character called Aiko. Choose another name."
    assert await bot.wait_toast(query) == taken
    assert bot.fake.callback_answers[query]["show_alert"] is True  # too long for a toast
    await bot.fake.wait_for(lambda: not buttons(confirm), what="the buttons removed")
    assert await names_of(bot, alice) == ["Aiko", "Ren"]
    (aiko,) = [c for c in (await bot.service.list_characters(alice.id))[0] if c.name == "Aiko"]
    assert aiko.appearance == "tall"  # the other one was not overwritten

    confirm = await to_confirm(bot, chat, alice, "Mio")
    await bot.service.create_character(actor, CharacterDraft(name="Kai", appearance="short"))
    query = bot.click(chat, alice, confirm, "Create")
    assert await bot.wait_toast(query) == "You have 3 characters already; delete one first."
    await bot.fake.wait_for(lambda: not buttons(confirm), what="the buttons removed")
    assert await names_of(bot, alice) == ["Aiko", "Kai", "Ren"]
    assert not [m for m in bot.fake.bot_messages(chat.id) if "is ready" in (m.content or "")]
    assert_no_crash(bot)


async def test_newcharacter_at_the_limit_is_refused_before_any_question(
    make_bot: MakeBot,
) -> None:
    bot = await make_bot(max_characters_per_user=2)
    alice, chat, _, _ = await seen_with(
        bot,
        "Alice",
        CharacterDraft(name="Ren", appearance="black coat"),
        CharacterDraft(name="Kai", appearance="short"),
    )
    refused = await step(
        bot,
        bot.send(chat, alice, "/newcharacter"),
        "You have 2 characters already; delete one first.",
    )
    assert "What is their name?" not in (refused.content or "")
    # no dialog was started: the next text is not taken as a name
    after = bot.send(chat, alice, "Mio")
    await bot.settle()
    assert not any("How does Mio look" in (m.content or "") for m in bot.replies_after(after))
    assert await names_of(bot, alice) == ["Kai", "Ren"]
    assert_no_crash(bot)


# -- the card -----------------------------------------------------------------------------------


async def test_back_and_the_buttons_of_a_deleted_character(bot: BotHarness) -> None:
    draft = CharacterDraft(
        name="Aiko", appearance="silver hair, red scarf", reference=png(600, 800)
    )
    alice, chat, _, (aiko,) = await seen_with(bot, "Alice", draft)
    card = await open_card(bot, chat, alice, "Aiko")
    assert card.media_kind == "photo"

    # Edit, then Back: the card again (its caption and buttons)
    bot.click(chat, alice, card, "Edit")
    await bot.wait_content(card, "What do you want to change about Aiko?")
    bot.click(chat, alice, card, "Style")
    await bot.wait_content(card, "Choose a style for Aiko")
    back = bot.click(chat, alice, card, "Back")
    await bot.wait_content(card, "silver hair, red scarf")
    assert await bot.wait_toast(back) == ""
    assert card.media_kind == "photo" and labels(card) == CARD_BUTTONS
    assert card.history[-1].method == "editMessageCaption"

    # a second card of Aiko deletes her; the first one still shows "Delete Aiko?"
    bot.click(chat, alice, card, "Delete")
    await bot.wait_content(card, "Delete Aiko?")
    second = await open_card(bot, chat, alice, "Aiko", after=card.message_id)
    bot.click(chat, alice, second, "Delete")
    await bot.wait_content(second, "Delete Aiko?")
    bot.click(chat, alice, second, "Yes")
    await bot.wait_content(second, "Aiko was deleted.")

    # every button of the old card: a toast saying so, no edit, no message
    versions, last = len(card.history), bot.fake.bot_messages(chat.id)[-1].message_id
    owner = alice.id
    for data in (
        button_data(card, "Yes"),
        button_data(card, "No"),
        EDIT_MENU.data(aiko.id, owner=owner),
        STYLE_MENU.data(aiko.id, owner=owner),
        SET_STYLE.data(aiko.id, "cyberpunk", owner=owner),
        SHEET.data(aiko.id, owner=owner),
        BACK.data(aiko.id, owner=owner),
        DELETE.data(aiko.id, owner=owner),
        DELETE_YES.data(aiko.id, owner=owner),
        DELETE_NO.data(aiko.id, owner=owner),
        EDIT_FIELD.data(aiko.id, "reference", owner=owner),
    ):
        assert await bot.wait_toast(bot.press(chat, alice, card, data)) == GONE, data
    await bot.settle(0.1)
    assert len(card.history) == versions
    assert bot.fake.bot_messages(chat.id)[-1].message_id == last
    _, total = await bot.service.list_characters(alice.id)
    assert total == 0
    assert_no_crash(bot)


async def test_edit_the_reference_photo(bot: BotHarness) -> None:
    draft = CharacterDraft(name="Aiko", appearance="silver hair")
    alice, chat, _, (aiko,) = await seen_with(bot, "Alice", draft)
    card = await open_card(bot, chat, alice, "Aiko")
    assert card.media_kind is None  # no reference yet: a text card

    bot.click(chat, alice, card, "Edit")
    await bot.wait_content(card, "What do you want to change")
    bot.click(chat, alice, card, "Reference photo")
    await bot.wait_reply(
        Sent(chat, alice, card.message_id, True),
        contains="Send the new reference photo of Aiko, or /cancel.",
    )
    await step(bot, bot.send(chat, alice, "here it is"), "That is not a photo")
    await step(bot, bot.send(chat, alice, photo=png(40, 40)), "too small (40x40)")
    # the answers above end with "or /skip": /skip keeps the old picture
    await step(bot, bot.send(chat, alice, "/skip"), "Cancelled. Nothing was saved.")
    assert await bot.service.references(aiko.id) == []
    ignored = bot.send(chat, alice, photo=png(600, 800))  # the edit is over
    await bot.settle()
    assert not bot.replies_after(ignored)

    bot.click(chat, alice, card, "Reference photo")
    ask = await bot.wait_reply(Sent(chat, alice, ignored.message_id, True), contains="Send the new")
    sent = bot.send(chat, alice, photo=png(640, 480, (30, 160, 90)))
    await step(bot, sent, "Saved")
    new_card = await bot.wait_reply(
        Sent(chat, alice, ask.message_id, True), where=lambda m: m.media_kind == "photo"
    )
    assert "silver hair" in (new_card.caption or "") and labels(new_card) == CARD_BUTTONS
    with Image.open(io.BytesIO(new_card.media_bytes or b"")) as shown:
        assert shown.size == (640, 480)
    assert len(await bot.service.references(aiko.id)) == 1
    assert_no_crash(bot)


async def test_edit_text_wants_text(bot: BotHarness) -> None:
    alice, chat, actor, (aiko,) = await seen_with(
        bot, "Alice", CharacterDraft(name="Aiko", appearance="silver hair")
    )
    card = await open_card(bot, chat, alice, "Aiko")
    bot.click(chat, alice, card, "Edit")
    await bot.wait_content(card, "What do you want to change")
    bot.click(chat, alice, card, "Appearance")
    await bot.wait_reply(Sent(chat, alice, card.message_id, True), contains="Now: silver hair")
    await step(
        bot,
        bot.send(chat, alice, photo=png(300, 300)),
        "Please send the new value as text, or /cancel.",
    )
    await step(bot, bot.send(chat, alice, "green eyes, braid"), "Saved")
    assert (await bot.service.get_character(actor, aiko.id)).appearance == "green eyes, braid"
    assert_no_crash(bot)


async def test_edit_of_a_character_deleted_meanwhile(bot: BotHarness) -> None:
    """The character is deleted (from another card) while the bot waits for its new value:
    the answer says so and the edit is over (no further message is taken for it)."""
    alice, chat, actor, (_aiko, ren) = await seen_with(
        bot,
        "Alice",
        CharacterDraft(name="Aiko", appearance="silver hair"),
        CharacterDraft(name="Ren", appearance="black coat"),
    )
    card = await open_card(bot, chat, alice, "Aiko")
    bot.click(chat, alice, card, "Edit")
    await bot.wait_content(card, "What do you want to change")
    bot.click(chat, alice, card, "Appearance")
    await bot.wait_reply(Sent(chat, alice, card.message_id, True), contains="Send the new")
    other = await open_card(bot, chat, alice, "Aiko", after=card.message_id)
    bot.click(chat, alice, other, "Delete")
    await bot.wait_content(other, "Delete Aiko?")
    bot.click(chat, alice, other, "Yes")
    await bot.wait_content(other, "Aiko was deleted.")

    await step(bot, bot.send(chat, alice, "green eyes"), GONE)
    later = bot.send(chat, alice, "green eyes, please")
    await bot.settle()
    assert not bot.replies_after(later)

    # the same for a new reference photo
    ren_card = await open_card(bot, chat, alice, "Ren", after=later.message_id)
    bot.click(chat, alice, ren_card, "Edit")
    await bot.wait_content(ren_card, "What do you want to change")
    bot.click(chat, alice, ren_card, "Reference photo")
    await bot.wait_reply(later, contains="Send the new reference photo of Ren")
    await bot.service.delete_character(actor, ren.id)
    await step(bot, bot.send(chat, alice, photo=png(600, 800)), GONE)
    later = bot.send(chat, alice, photo=png(600, 800))
    await bot.settle()
    assert not bot.replies_after(later)
    assert await bot.service.references(ren.id) == []
    assert_no_crash(bot)


async def test_sheet_with_generated_pictures(studio: BotHarness) -> None:
    bot = studio
    draft = CharacterDraft(name="Aiko", appearance="silver hair", reference=png(600, 800))
    alice, chat, _, _ = await seen_with(bot, "Alice", draft)
    sent = bot.send(chat, alice, "/image @Aiko reading in a park")
    await bot.wait_reply(
        sent, where=lambda m: m.media_kind == "photo" and "seed" in (m.caption or ""), timeout=30
    )
    card = await open_card(bot, chat, alice, "Aiko", after=sent.message_id)
    query = bot.click(chat, alice, card, "Character sheet")
    sheet = await bot.wait_reply(
        Sent(chat, alice, card.message_id, True), contains="character sheet"
    )
    assert await bot.wait_toast(query) == "Making the sheet…"
    assert sheet.media_kind == "photo"
    assert sheet.caption == "Aiko: character sheet (2 pictures)"  # the reference and the image
    assert_no_crash(bot)
