"""The fake Bot API, exercised through python-telegram-bot's real Bot and Application."""

from __future__ import annotations

import asyncio
import io
import struct
from collections.abc import AsyncIterator

import pytest
from PIL import Image
from telegram import (
    Bot,
    BotCommand,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    InputMediaPhoto,
    Update,
)
from telegram.error import (
    BadRequest,
    Conflict,
    EndPointNotFound,
    Forbidden,
    InvalidToken,
    NetworkError,
    RetryAfter,
    TimedOut,
)
from telegram.ext import Application, CallbackQueryHandler, CommandHandler, ContextTypes
from telegram.request import HTTPXRequest

from tests.fakes.telegram import (
    ERR_NOT_MODIFIED,
    FakeTelegram,
    make_entities,
    mp4_info,
    parse_formatted,
)
from tests.webhook import serving_webhook


def png(width: int, height: int, color: str = "red") -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), color).save(out, format="PNG")
    return out.getvalue()


def jpeg(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), "blue").save(out, format="JPEG")
    return out.getvalue()


@pytest.fixture
async def bot(fake_telegram: FakeTelegram) -> AsyncIterator[Bot]:
    async with fake_telegram.make_bot() as the_bot:
        yield the_bot


async def start_polling(app: Application) -> None:  # type: ignore[type-arg]
    await app.initialize()
    assert app.updater is not None
    await app.updater.start_polling(poll_interval=0.0, timeout=2)
    await app.start()


async def stop_polling(app: Application) -> None:  # type: ignore[type-arg]
    assert app.updater is not None
    await app.updater.stop()
    await app.stop()
    await app.shutdown()


def keyboard(data: str) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup([[InlineKeyboardButton("Go", callback_data=data)]])


# --- pure helpers ---------------------------------------------------------------------------------
def test_entities_for_commands_mentions_and_urls() -> None:
    text = "🎨 /image@AnimeStudioTestBot sakura @someone_else https://x.y/z"
    entities = make_entities(text)
    assert [e["type"] for e in entities] == ["bot_command", "mention", "url"]
    assert entities[0] == {"type": "bot_command", "offset": 3, "length": 25}  # emoji = 2 units


def box(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", 8 + len(payload)) + kind + payload


def tiny_mp4(duration_ms: int, width: int, height: int) -> bytes:
    """Just the boxes Telegram reads: moov/mvhd (timescale, duration), trak/tkhd (size)."""
    mvhd = box(b"mvhd", b"\0" * 4 + struct.pack(">IIII", 0, 0, 1000, duration_ms) + b"\0" * 80)
    tkhd = box(b"tkhd", b"\0" * 80 + struct.pack(">II", width << 16, height << 16))
    return box(b"ftyp", b"isom\0\0\0\0") + box(b"moov", mvhd + box(b"trak", tkhd))


def test_mp4_probe() -> None:
    assert mp4_info(tiny_mp4(4600, 640, 360)) == (5, 640, 360)
    assert mp4_info(b"not a video") is None


def test_html_is_parsed_like_telegram() -> None:
    assert parse_formatted("<b>Done</b> &amp; <i>ok</i>", "HTML") == "Done & ok"
    assert parse_formatted("<b>raw</b>", None) == "<b>raw</b>"
    with pytest.raises(Exception, match="Unsupported start tag"):
        parse_formatted("<div>x</div>", "HTML")
    with pytest.raises(Exception, match="Can't find end tag"):
        parse_formatted("<b>x", "HTML")


# --- basics ---------------------------------------------------------------------------------------
async def test_get_me_token_check_and_unknown_method(fake_telegram: FakeTelegram, bot: Bot) -> None:
    me = await bot.get_me()
    assert me.username == "AnimeStudioTestBot" and me.is_bot
    assert me.id == int(fake_telegram.token.split(":")[0])
    with pytest.raises(EndPointNotFound):
        await bot.do_api_request("sendTelepathy", api_kwargs={"chat_id": 1})
    assert fake_telegram.calls[-1].status == 404
    wrong = Bot("7000000001:wrong-token", base_url=fake_telegram.api_url)
    with pytest.raises(InvalidToken):
        await wrong.get_me()


async def test_long_polling_waits_and_offset_confirms(
    fake_telegram: FakeTelegram, bot: Bot
) -> None:
    user = fake_telegram.user("Ann")
    chat = fake_telegram.private_chat(user)

    async def later() -> None:
        await asyncio.sleep(0.3)
        fake_telegram.inject_message(chat, user, "hello")

    task = asyncio.create_task(later())
    loop = asyncio.get_running_loop()
    started = loop.time()
    updates = await bot.get_updates(timeout=5)
    assert 0.25 < loop.time() - started < 2.0  # woke up by the new update, not the timeout
    await task
    assert [u.message.text for u in updates if u.message] == ["hello"]
    # not confirmed yet: delivered again
    again = await bot.get_updates(timeout=0)
    assert [u.update_id for u in again] == [updates[0].update_id]
    # offset confirms
    assert await bot.get_updates(offset=updates[-1].update_id + 1, timeout=0) == ()
    # an empty poll waits for its timeout
    started = loop.time()
    assert await bot.get_updates(timeout=1) == ()
    assert loop.time() - started >= 0.9
    # allowed_updates filters types
    fake_telegram.inject_message(chat, user, "skipped")
    assert await bot.get_updates(timeout=0, allowed_updates=["callback_query"]) == ()


async def test_overlapping_get_updates_conflict(fake_telegram: FakeTelegram, bot: Bot) -> None:
    first = asyncio.create_task(bot.get_updates(timeout=3))
    await asyncio.sleep(0.2)
    async with fake_telegram.make_bot() as other_process:
        second = asyncio.create_task(other_process.get_updates(timeout=0.2))
        with pytest.raises(Conflict, match="terminated by other getUpdates request"):
            await first
        assert await second == ()
    assert fake_telegram.conflicts == 1


# --- an Application over long polling -------------------------------------------------------------
async def test_command_handler_replies_in_chats_groups_and_topics(
    fake_telegram: FakeTelegram,
) -> None:
    async def start(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.effective_message is not None
        await update.effective_message.reply_text(f"hi {update.effective_user.first_name}")  # type: ignore[union-attr]

    app = fake_telegram.builder().build()
    app.add_handler(CommandHandler("start", start))
    await start_polling(app)
    try:
        user = fake_telegram.user("Ann", username="ann")
        chat = fake_telegram.private_chat(user)
        fake_telegram.inject_message(chat, user, "/start")
        reply = await fake_telegram.wait_for_message(chat.id, lambda m: m.text == "hi Ann")
        assert reply.reply_to is None  # PTB quotes only in groups

        # privacy mode: a bare /start in a group the bot never wrote in is not delivered
        group = fake_telegram.group("Friends", members=[user])
        assert fake_telegram.inject_message(group, user, "/start") is None
        assert fake_telegram.inject_message(group, user, "/start@AnimeStudioTestBot")
        in_group = await fake_telegram.wait_for_message(group.id)
        assert in_group.reply_to is not None
        assert in_group.reply_to.text == "/start@AnimeStudioTestBot"

        forum = fake_telegram.forum("Studio", members=[user])
        topic = fake_telegram.add_topic(forum, "Renders")
        fake_telegram.inject_message(forum, user, "/start@AnimeStudioTestBot", thread_id=topic)
        in_topic = await fake_telegram.wait_for_message(forum.id)
        assert in_topic.thread_id == topic
        assert in_topic.to_api()["is_topic_message"] is True
    finally:
        await stop_polling(app)
    assert fake_telegram.conflicts == 0
    assert not fake_telegram.internal_errors


async def test_callback_query_is_answered_once(fake_telegram: FakeTelegram) -> None:
    async def on_button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        query = update.callback_query
        assert query is not None
        await query.answer(f"got {query.data}")
        await query.edit_message_text("pressed")

    app = fake_telegram.builder().build()
    app.add_handler(CallbackQueryHandler(on_button, pattern=r"^v1:"))
    await start_polling(app)
    try:
        user = fake_telegram.user("Bo")
        chat = fake_telegram.private_chat(user)
        sent = await app.bot.send_message(chat.id, "choose", reply_markup=keyboard("v1:yes"))
        update = fake_telegram.inject_callback(chat, user, sent.message_id, "v1:yes")
        query_id = update["callback_query"]["id"]
        await fake_telegram.wait_for(lambda: query_id in fake_telegram.callback_answers)
        assert fake_telegram.callback_answers[query_id]["text"] == "got v1:yes"
        msg = await fake_telegram.wait_for_message(chat.id, lambda m: m.text == "pressed")
        assert msg.reply_markup is None  # an edit without markup removes the keyboard
        assert [v.text for v in msg.history] == ["choose", "pressed"]
        with pytest.raises(BadRequest, match="Query is too old"):
            await app.bot.answer_callback_query(query_id)
    finally:
        await stop_polling(app)


async def test_old_or_unknown_callback_query_cannot_be_answered(
    fake_telegram: FakeTelegram, bot: Bot
) -> None:
    user = fake_telegram.user("Di")
    chat = fake_telegram.private_chat(user)
    sent = await bot.send_message(chat.id, "pick", reply_markup=keyboard("v1:a"))
    fake_telegram.callback_ttl = 0.0
    update = fake_telegram.inject_callback(chat, user, sent.message_id, "v1:a")
    assert update["callback_query"]["message"]["reply_markup"] == keyboard("v1:a").to_dict()
    with pytest.raises(BadRequest, match="Query is too old"):
        await bot.answer_callback_query(update["callback_query"]["id"])
    with pytest.raises(BadRequest, match=r"(?i)query id is invalid"):
        await bot.answer_callback_query("12345")
    call = await fake_telegram.wait_for_call("answerCallbackQuery")
    assert call.status == 400 and fake_telegram.callback_answers == {}


# --- messages and edits ---------------------------------------------------------------------------
async def test_message_limits_and_edit_errors(fake_telegram: FakeTelegram, bot: Bot) -> None:
    chat = fake_telegram.private_chat()
    with pytest.raises(BadRequest, match="Message is too long"):
        await bot.send_message(chat.id, "x" * 4097)
    with pytest.raises(BadRequest, match="Message text is empty"):
        await bot.send_message(chat.id, "   ")
    with pytest.raises(BadRequest, match="Button_data_invalid"):
        await bot.send_message(chat.id, "x", reply_markup=keyboard("d" * 65))
    with pytest.raises(BadRequest, match="Message caption is too long"):
        await bot.send_photo(chat.id, png(10, 10), caption="c" * 1025)
    with pytest.raises(BadRequest, match="Message to edit not found"):
        await bot.edit_message_text("x", chat_id=chat.id, message_id=999)

    sent = await bot.send_message(
        chat.id, "<b>50%</b>", parse_mode="HTML", reply_markup=keyboard("s")
    )
    assert sent.text == "50%" and sent.reply_markup == keyboard("s")
    with pytest.raises(BadRequest) as info:
        await bot.edit_message_text(
            "<b>50%</b>",
            chat_id=chat.id,
            message_id=sent.message_id,
            parse_mode="HTML",
            reply_markup=keyboard("s"),
        )
    assert info.value.message.lower() == ERR_NOT_MODIFIED.removeprefix("Bad Request: ").lower()
    with pytest.raises(BadRequest, match="There is no caption in the message to edit"):
        await bot.edit_message_caption(chat.id, sent.message_id, caption="x")

    edited = await bot.edit_message_text(
        "<b>60%</b>",
        chat_id=chat.id,
        message_id=sent.message_id,
        parse_mode="HTML",
        reply_markup=keyboard("s"),
    )
    assert edited.text == "60%" and edited.edit_date is not None  # type: ignore[union-attr]
    stored = fake_telegram.message(chat.id, sent.message_id)
    assert [v.text for v in stored.history] == ["50%", "60%"]
    assert [c.status for c in fake_telegram.calls_of("editMessageText")] == [400, 400, 200]

    # a text message can get a picture; then its text is a caption
    media = await bot.edit_message_media(
        InputMediaPhoto(png(64, 48), caption="done"), chat_id=chat.id, message_id=sent.message_id
    )
    assert media.photo[-1].width == 64 and media.caption == "done"  # type: ignore[union-attr]
    with pytest.raises(BadRequest, match="There is no text in the message to edit"):
        await bot.edit_message_text("x", chat_id=chat.id, message_id=sent.message_id)
    assert stored.history[-1].media_bytes == png(64, 48)
    assert await bot.delete_message(chat.id, sent.message_id)
    with pytest.raises(BadRequest, match="Message to delete not found"):
        await bot.delete_message(chat.id, sent.message_id)


async def test_forum_thread_echo_and_blocked_users(fake_telegram: FakeTelegram, bot: Bot) -> None:
    forum = fake_telegram.forum()
    topic = fake_telegram.add_topic(forum, "Queue")
    msg = await bot.send_message(forum.id, "in topic", message_thread_id=topic)
    assert msg.message_thread_id == topic and msg.is_topic_message
    reply = await bot.send_message(forum.id, "reply", reply_to_message_id=msg.message_id)
    assert reply.message_thread_id == topic and reply.reply_to_message.message_id == msg.message_id  # type: ignore[union-attr]
    with pytest.raises(BadRequest, match="Message thread not found"):
        await bot.send_message(forum.id, "x", message_thread_id=999)
    with pytest.raises(BadRequest, match="Chat not found"):
        await bot.send_message(123, "x")
    blocked = fake_telegram.private_chat(blocked=True)
    with pytest.raises(Forbidden, match="bot was blocked by the user"):
        await bot.send_message(blocked.id, "x")


async def test_injected_failures(fake_telegram: FakeTelegram, bot: Bot) -> None:
    chat = fake_telegram.private_chat()
    fake_telegram.fail_next("sendMessage", 2, kind=429, retry_after=7)
    for _ in range(2):
        with pytest.raises(RetryAfter) as info:
            await bot.send_message(chat.id, "x")
        assert info.value.retry_after == 7
    fake_telegram.fail_next("sendmessage", kind=500)
    with pytest.raises(NetworkError, match="Internal Server Error"):
        await bot.send_message(chat.id, "x")
    assert (await bot.send_message(chat.id, "finally")).text == "finally"
    assert [c.status for c in fake_telegram.calls_of("sendMessage")] == [429, 429, 500, 200]
    assert len(fake_telegram.bot_messages(chat.id)) == 1

    fake_telegram.hang_seconds = 3.0
    fast = fake_telegram.make_bot(request=HTTPXRequest(read_timeout=0.3))
    async with fast:
        fake_telegram.fail_next("sendMessage", kind="timeout")
        with pytest.raises(TimedOut):
            await fast.send_message(chat.id, "lost")
        fake_telegram.fail_next("sendMessage", kind="timeout_after")
        with pytest.raises(TimedOut):
            await fast.send_message(chat.id, "sent but unanswered")
    assert [m.text for m in fake_telegram.bot_messages(chat.id)] == [
        "finally",
        "sent but unanswered",
    ]


# --- files ----------------------------------------------------------------------------------------
async def test_photo_upload_sizes_and_limits(fake_telegram: FakeTelegram, bot: Bot) -> None:
    chat = fake_telegram.private_chat()
    picture = png(1500, 1000)
    sent = await bot.send_photo(chat.id, picture, caption="result", reply_markup=keyboard("again"))
    sizes = [(p.width, p.height) for p in sent.photo]
    assert sizes == [(90, 60), (320, 213), (800, 533), (1280, 853), (1500, 1000)]
    assert all(p.file_size and p.file_unique_id for p in sent.photo)
    assert sent.caption == "result" and sent.reply_markup == keyboard("again")
    file = await bot.get_file(sent.photo[-1].file_id)
    assert bytes(await file.download_as_bytearray()) == picture
    thumb = await bot.get_file(sent.photo[0].file_id)
    with Image.open(io.BytesIO(bytes(await thumb.download_as_bytearray()))) as small:
        assert small.size == (90, 60)
    # resending by file_id reuses every size
    again = await bot.send_photo(chat.id, sent.photo[-1].file_id)
    assert [p.file_id for p in again.photo] == [p.file_id for p in sent.photo]

    with pytest.raises(BadRequest, match="Photo_invalid_dimensions"):
        await bot.send_photo(chat.id, png(2100, 100))  # ratio 21
    with pytest.raises(BadRequest, match="Photo_invalid_dimensions"):
        await bot.send_photo(chat.id, png(6000, 4100))  # sum 10100
    with pytest.raises(BadRequest, match="Image_process_failed"):
        await bot.send_photo(chat.id, b"not an image")
    with pytest.raises(BadRequest, match="Photo_save_file_invalid"):
        await bot.send_photo(chat.id, b"\xff" * (10 * 1024 * 1024 + 1))


async def test_documents_thumbnails_and_upload_limit(fake_telegram: FakeTelegram, bot: Bot) -> None:
    chat = fake_telegram.private_chat()
    doc = await bot.send_document(
        chat.id, b"%PDF-1.4 fake", filename="sheet.pdf", thumbnail=jpeg(200, 100)
    )
    assert doc.document.file_name == "sheet.pdf"  # type: ignore[union-attr]
    assert doc.document.thumbnail.width == 200  # type: ignore[union-attr]
    big_thumb = await bot.send_document(chat.id, b"x", filename="a.bin", thumbnail=jpeg(640, 100))
    assert big_thumb.document.thumbnail is None  # type: ignore[union-attr]  # ignored, like Telegram
    video = await bot.send_video(chat.id, tiny_mp4(3200, 640, 360), supports_streaming=True)
    assert video.video is not None
    assert (video.video.duration, video.video.width, video.video.height) == (3, 640, 360)
    given = await bot.send_video(chat.id, b"\x00" * 1000, duration=7, width=10, height=20)
    assert given.video is not None and given.video.duration == 7
    with pytest.raises(NetworkError, match="Request Entity Too Large"):
        await bot.send_document(chat.id, b"\x00" * (50 * 1024 * 1024 + 1), filename="big.bin")


async def test_user_uploads_are_downloadable(fake_telegram: FakeTelegram, bot: Bot) -> None:
    user = fake_telegram.user("Cy")
    chat = fake_telegram.private_chat(user)
    reference = png(512, 512, "green")
    fake_telegram.inject_message(chat, user, caption="/character Sakura", photo=reference)
    fake_telegram.inject_message(chat, user, document=b"hello", document_name="notes.txt")
    updates = await bot.get_updates(timeout=0)
    photo_msg, doc_msg = (u.message for u in updates)
    assert photo_msg is not None and doc_msg is not None
    assert [(p.width, p.height) for p in photo_msg.photo] == [(90, 90), (320, 320), (512, 512)]
    assert photo_msg.caption_entities[0].type == "bot_command"
    file = await photo_msg.photo[-1].get_file()
    assert bytes(await file.download_as_bytearray()) == reference
    doc_file = await doc_msg.document.get_file()  # type: ignore[union-attr]
    assert bytes(await doc_file.download_as_bytearray()) == b"hello"
    assert doc_msg.document.mime_type == "text/plain"  # type: ignore[union-attr]


# --- chat info, commands, reactions, flood control ------------------------------------------------
async def test_commands_admins_and_members(fake_telegram: FakeTelegram, bot: Bot) -> None:
    await bot.set_my_commands([BotCommand("image", "Make a picture"), BotCommand("help", "Help")])
    assert [c.command for c in await bot.get_my_commands()] == ["image", "help"]
    assert await bot.get_my_commands(language_code="de") == ()
    with pytest.raises(BadRequest, match="Bot_command_invalid"):
        await bot.set_my_commands([BotCommand("Bad-Name", "x")])

    owner, admin, member = (fake_telegram.user(n) for n in ("Own", "Adm", "Mem"))
    group = fake_telegram.supergroup("Studio", members=[member], admins=[admin], creator=owner)
    admins = await bot.get_chat_administrators(group.id)
    assert [(a.status, a.user.id) for a in admins] == [
        ("creator", owner.id),
        ("administrator", admin.id),
    ]
    assert (await bot.get_chat_member(group.id, member.id)).status == "member"
    assert (await bot.get_chat_member(group.id, fake_telegram.user("X").id)).status == "left"
    assert (await bot.get_chat(group.id)).title == "Studio"
    private = fake_telegram.private_chat(member)
    with pytest.raises(BadRequest, match="no administrators in the private chat"):
        await bot.get_chat_administrators(private.id)
    sent = await bot.send_message(private.id, "x")
    assert await bot.set_message_reaction(private.id, sent.message_id, "👍")
    assert fake_telegram.message(private.id, sent.message_id).reactions[0]["emoji"] == "👍"
    assert await bot.send_chat_action(private.id, "upload_photo")
    assert fake_telegram.chat_actions[-1]["action"] == "upload_photo"


async def test_flood_model_records_and_enforces(fake_telegram: FakeTelegram, bot: Bot) -> None:
    model = fake_telegram.enable_flood_model()
    chat = fake_telegram.private_chat()
    for i in range(5):
        await bot.send_message(chat.id, f"burst {i}")
    rules = {v.rule for v in fake_telegram.flood_violations}
    assert rules == {"private"} and len(fake_telegram.flood_violations) == 2  # burst of 3 is ok
    model.enforce = True
    with pytest.raises(RetryAfter):
        await bot.send_message(chat.id, "over")
    group = fake_telegram.group()
    fake_telegram.flood_violations.clear()
    model.enforce = False
    for i in range(21):
        await bot.send_message(group.id, f"g{i}")
    assert [v.rule for v in fake_telegram.flood_violations] == ["group"]


# --- webhook mode ---------------------------------------------------------------------------------
async def test_webhook_delivery_with_secret_token(fake_telegram: FakeTelegram) -> None:
    async def echo(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.effective_message is not None
        await update.effective_message.reply_text("via webhook")

    app = fake_telegram.builder().build()
    app.add_handler(CommandHandler("ping", echo))
    async with serving_webhook(app, path="tg", secret="s3cret_Token") as url:
        info = await app.bot.get_webhook_info()
        assert info.url == url and url.endswith("/tg")
        with pytest.raises(Conflict, match="webhook is active"):
            await app.bot.get_updates()
        user = fake_telegram.user("Wes")
        chat = fake_telegram.private_chat(user)
        update = fake_telegram.inject_message(chat, user, "/ping")
        assert update is not None
        await fake_telegram.wait_for_message(chat.id, lambda m: m.text == "via webhook")
        assert fake_telegram.webhook_deliveries[0][1] == 200
        assert await fake_telegram.post_to_webhook(update, secret="wrong") == 403
        assert (await app.bot.get_webhook_info()).pending_update_count == 0
