"""/newcharacter (every step, bad input at each), /characters (paged), the card and its buttons."""

from __future__ import annotations

import io

from PIL import Image

from bot.keyboards import SCENE, decode
from core.service import Actor, CharacterDraft
from tests.e2e.harness import BotHarness, Sent, button_data, buttons
from tests.fakes.telegram import FakeChat, FakeUser, StoredMessage


def png(width: int, height: int, colour: tuple[int, int, int] = (200, 120, 160)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(out, "PNG")
    return out.getvalue()


async def step(bot: BotHarness, sent: Sent, contains: str) -> StoredMessage:
    return await bot.wait_reply(sent, contains=contains)


async def create_via_dialog(
    bot: BotHarness, chat: FakeChat, user: FakeUser, name: str, *, style: str = "chibi"
) -> StoredMessage:
    await step(bot, bot.send(chat, user, "/newcharacter"), "name")
    await step(bot, bot.send(chat, user, name), "look")
    style_message = await step(bot, bot.send(chat, user, "silver hair, red scarf"), "style")
    bot.click(chat, user, style_message, style)
    personality = await bot.wait_reply(
        Sent(chat, user, style_message.message_id, True), contains="personality"
    )
    await step(bot, Sent(chat, user, personality.message_id, True), "")
    await step(bot, bot.send(chat, user, "/skip"), "reference photo")
    confirm = await step(bot, bot.send(chat, user, "/skip"), "Create this character?")
    bot.click(chat, user, confirm, "Create")
    return await bot.wait_reply(Sent(chat, user, confirm.message_id, True), contains="is ready")


async def test_new_character_with_bad_input_at_every_step(bot_harness: BotHarness) -> None:
    bot = bot_harness
    alice = bot.fake.user("Alice")
    chat = bot.fake.private_chat(alice)
    await bot.service.seen(Actor(alice.id, chat.id))
    await bot.service.create_character(
        Actor(alice.id, chat.id), CharacterDraft(name="Ren", appearance="tall, black hair")
    )

    await step(bot, bot.send(chat, alice, "/newcharacter"), "What is their name?")
    await step(bot, bot.send(chat, alice, "x" * 65), "too long (65 characters, at most 64)")
    await step(bot, bot.send(chat, alice, "<script>"), "may use letters, digits")
    await step(bot, bot.send(chat, alice, "Ren"), "already have a character called Ren")
    await step(bot, bot.send(chat, alice, photo=png(100, 100)), "name is empty")
    ask_look = await step(bot, bot.send(chat, alice, "  Aiko   Tanaka "), "How does")
    assert "Aiko Tanaka" in (ask_look.content or "")

    await step(bot, bot.send(chat, alice, "y" * 2001), "too long (2001 characters, at most 2000)")
    style_message = await step(bot, bot.send(chat, alice, "silver hair, red scarf"), "style")
    labels = [label for label, _ in buttons(style_message)]
    assert "ghibli-watercolor" in labels and "Cancel" in labels

    await step(bot, bot.send(chat, alice, "cyberpunk please"), "tap one of the style buttons")
    query = bot.click(chat, alice, style_message, "ghibli-watercolor")
    await bot.wait_toast(query)
    ask_personality = await bot.wait_reply(
        Sent(chat, alice, style_message.message_id, True), contains="personality"
    )
    await bot.wait_content(style_message, "ghibli-watercolor")
    assert not buttons(style_message)

    after = Sent(chat, alice, ask_personality.message_id, True)
    await step(bot, bot.send(chat, alice, "z" * 1001), "too long (1001 characters, at most 1000)")
    await step(bot, bot.send(chat, alice, "shy but brave"), "reference photo")

    await step(bot, bot.send(chat, alice, "here is my photo"), "not a photo")
    await step(bot, bot.send(chat, alice, photo=png(40, 40)), "too small (40x40)")
    await step(bot, bot.send(chat, alice, photo=png(1000, 100)), "too long and thin")
    corrupt = png(300, 300)[:200]
    await step(
        bot,
        bot.send(chat, alice, document=corrupt, document_name="me.png", document_mime="image/png"),
        "damaged or incomplete",
    )
    garbage = bot.send(
        chat, alice, document=b"GIF89a not really", document_name="x.gif", document_mime="image/gif"
    )
    await step(bot, garbage, "not an image I can read")
    pdf = bot.send(
        chat, alice, document=b"%PDF-1.4", document_name="a.pdf", document_mime="application/pdf"
    )
    await step(bot, pdf, "not a photo")

    confirm = await step(bot, bot.send(chat, alice, "/skip"), "Create this character?")
    summary = confirm.content or ""
    assert "Aiko Tanaka" in summary and "ghibli-watercolor" in summary
    assert "shy but brave" in summary
    await step(bot, bot.send(chat, alice, "yes"), "Tap Create or Cancel")
    query = bot.click(chat, alice, confirm, "Create")
    await bot.wait_toast(query)
    await bot.wait_reply(Sent(chat, alice, confirm.message_id, True), contains="is ready")
    assert after.message_id < confirm.message_id

    items, total = await bot.service.list_characters(alice.id)
    created = [c for c in items if c.name == "Aiko Tanaka"]
    assert total == 2 and created
    assert created[0].style == "ghibli-watercolor"
    assert created[0].personality == "shy but brave"
    assert created[0].appearance == "silver hair, red scarf"


async def test_cancel_leaves_at_any_step(bot_harness: BotHarness) -> None:
    bot = bot_harness
    alice = bot.fake.user("Alice")
    chat = bot.fake.private_chat(alice)
    await step(bot, bot.send(chat, alice, "/newcharacter"), "name")
    await step(bot, bot.send(chat, alice, "Mio"), "look")
    await step(bot, bot.send(chat, alice, "/cancel"), "Cancelled")
    # the dialog is over: plain text is not taken as an answer any more
    sent = bot.send(chat, alice, "blue eyes")
    await bot.settle()
    assert not bot.replies_after(sent)
    _, total = await bot.service.list_characters(alice.id)
    assert total == 0

    # the Cancel button of the style step
    await step(bot, bot.send(chat, alice, "/newcharacter"), "name")
    await step(bot, bot.send(chat, alice, "Mio"), "look")
    style_message = await step(bot, bot.send(chat, alice, "blue eyes"), "style")
    bot.click(chat, alice, style_message, "Cancel")
    await bot.wait_content(style_message, "Cancelled")
    stale = bot.click(chat, alice, style_message, "Cancel") if buttons(style_message) else None
    assert stale is None  # the buttons are gone


async def test_list_card_edit_sheet_and_delete(bot_harness: BotHarness) -> None:
    bot = bot_harness
    alice = bot.fake.user("Alice")
    chat = bot.fake.private_chat(alice)
    actor = Actor(alice.id, chat.id)
    await bot.service.seen(actor)
    for number in range(10):
        await bot.service.create_character(
            actor, CharacterDraft(name=f"Hero {number:02d}", appearance="short red hair")
        )

    listing = await step(bot, bot.send(chat, alice, "/characters"), "Your characters")
    names = [label for label, _ in buttons(listing) if label.startswith("Hero")]
    assert len(names) == 8 and "(10)" in (listing.content or "")
    bot.click(chat, alice, listing, "›")
    await bot.fake.wait_for(
        lambda: len([b for b in buttons(listing) if b[0].startswith("Hero")]) == 2,
        what="page 2",
    )
    assert "2/2" in [label for label, _ in buttons(listing)]

    hero = next(label for label, _ in buttons(listing) if label.startswith("Hero"))
    open_query = bot.click(chat, alice, listing, hero)
    card = await bot.wait_reply(Sent(chat, alice, listing.message_id, True), contains=hero)
    await bot.wait_toast(open_query)
    scene = decode(button_data(card, "Use in a scene"))
    assert scene is not None and scene.action == SCENE and scene.owner == alice.id
    character_id = scene.uuid(0)
    # bot/handlers/scenes.py takes it from there: it asks for the scene with this character
    to_scene = bot.click(chat, alice, card, "Use in a scene")
    assert "no longer valid" not in await bot.wait_toast(to_scene)
    await bot.wait_reply(Sent(chat, alice, card.message_id, True), contains=hero)

    # edit the name (a small dialog), with a bad value first
    bot.click(chat, alice, card, "Edit")
    await bot.wait_content(card, "What do you want to change")
    bot.click(chat, alice, card, "Name")
    ask = await bot.wait_reply(Sent(chat, alice, card.message_id, True), contains="Send the new")
    await step(bot, bot.send(chat, alice, "Hero 05"), "already have a character called Hero 05")
    await step(bot, bot.send(chat, alice, "Kai"), "Saved")
    new_card = await bot.wait_reply(Sent(chat, alice, ask.message_id, True), contains="Kai")
    assert (await bot.service.get_character(actor, character_id)).name == "Kai"

    # style through buttons
    bot.click(chat, alice, new_card, "Edit")
    await bot.wait_content(new_card, "What do you want to change")
    bot.click(chat, alice, new_card, "Style")
    await bot.wait_content(new_card, "Choose a style")
    saved = bot.click(chat, alice, new_card, "cyberpunk")
    assert await bot.wait_toast(saved) == "Saved."
    await bot.wait_content(new_card, "cyberpunk")
    assert (await bot.service.get_character(actor, character_id)).style == "cyberpunk"

    # the sheet needs pictures: none yet
    bot.click(chat, alice, new_card, "Character sheet")
    await bot.wait_reply(Sent(chat, alice, new_card.message_id, True), contains="no pictures")

    # delete: No keeps it, Yes deletes it
    bot.click(chat, alice, new_card, "Delete")
    await bot.wait_content(new_card, "Delete Kai?")
    kept = bot.click(chat, alice, new_card, "No")
    assert await bot.wait_toast(kept) == "Kept."
    await bot.wait_content(new_card, "short red hair")
    bot.click(chat, alice, new_card, "Delete")
    await bot.wait_content(new_card, "This cannot be undone")
    bot.click(chat, alice, new_card, "Yes")
    await bot.wait_content(new_card, "Kai was deleted.")
    _, total = await bot.service.list_characters(alice.id)
    assert total == 9
    # the old card's buttons now answer politely
    stale = bot.press(chat, alice, card.message_id, button_data(card, "Name"))
    assert "does not exist" in await bot.wait_toast(stale)


async def test_no_characters_yet(bot_harness: BotHarness) -> None:
    bot = bot_harness
    alice = bot.fake.user("Alice", language_code="ru")
    chat = bot.fake.private_chat(alice)
    reply = await step(bot, bot.send(chat, alice, "/characters"), "/newcharacter")
    assert "У вас пока нет персонажей" in (reply.content or "")


async def test_reference_photo_card_and_sheet(bot_harness: BotHarness) -> None:
    bot = bot_harness
    alice = bot.fake.user("Alice")
    chat = bot.fake.private_chat(alice)
    await step(bot, bot.send(chat, alice, "/newcharacter"), "name")
    await step(bot, bot.send(chat, alice, "Yuki"), "look")
    style_message = await step(bot, bot.send(chat, alice, "white hair, blue kimono"), "style")
    bot.click(chat, alice, style_message, "anime")
    await bot.wait_content(style_message, "Tap one. anime")
    ask = await step(bot, bot.send(chat, alice, "/skip"), "reference photo")
    confirm = await step(
        bot, bot.send(chat, alice, photo=png(600, 800, (90, 140, 220))), "Create this character?"
    )
    assert "Reference photo: Yes" in (confirm.content or "")
    assert ask.message_id < confirm.message_id
    bot.click(chat, alice, confirm, "Create")
    await bot.wait_reply(Sent(chat, alice, confirm.message_id, True), contains="is ready")
    # the temporary copy is gone, the stored reference is kept
    assert not list((bot.settings.data_dir / "tmp").glob("ref-*"))

    listing = await step(bot, bot.send(chat, alice, "/characters"), "Your characters")
    bot.click(chat, alice, listing, "Yuki")
    card = await bot.wait_reply(
        Sent(chat, alice, listing.message_id, True), where=lambda m: m.media_kind == "photo"
    )
    assert "white hair, blue kimono" in (card.caption or "")
    with Image.open(io.BytesIO(card.media_bytes or b"")) as shown:
        assert shown.size == (600, 800)

    bot.click(chat, alice, card, "Character sheet")
    sheet = await bot.wait_reply(
        Sent(chat, alice, card.message_id, True), contains="character sheet"
    )
    assert sheet.media_kind == "photo" and "1 pictures" in (sheet.caption or "")
