"""ProgressEditor + PtbEditSender driving PTB's real Bot against the fake Bot API."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator

import pytest
from PIL import Image
from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup

from bot.progress import PacingPolicy, ProgressContent, ProgressEditor, PtbEditSender
from tests.fakes.telegram import FakeTelegram


def cancel_button() -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup([[InlineKeyboardButton("Cancel", callback_data="v1:cancel:42")]])


def png(color: str) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 64), color).save(out, format="PNG")
    return out.getvalue()


@pytest.fixture
async def bot(fake_telegram: FakeTelegram) -> AsyncIterator[Bot]:
    async with fake_telegram.make_bot() as the_bot:
        yield the_bot


async def start_job(bot: Bot, editor: ProgressEditor, chat_id: int) -> int:
    first = ProgressContent("⏳ Queued", reply_markup=cancel_button())
    sent = await bot.send_message(chat_id, first.text, reply_markup=cancel_button())
    editor.register(chat_id, sent.message_id, first)
    return sent.message_id


async def test_final_state_arrives_after_a_429(fake_telegram: FakeTelegram, bot: Bot) -> None:
    chat = fake_telegram.private_chat()
    editor = ProgressEditor(PtbEditSender(bot), policy=PacingPolicy(private_interval=0.2))
    message_id = await start_job(bot, editor, chat.id)
    fake_telegram.fail_next("editMessageText", kind=429, retry_after=1)
    editor.submit(chat.id, message_id, ProgressContent("✅ Done"), final=True)
    assert await editor.flush(5.0)
    calls = fake_telegram.calls_of("editMessageText")
    assert [c.status for c in calls] == [429, 200]
    assert calls[1].at - calls[0].at >= 1.0
    stored = fake_telegram.message(chat.id, message_id)
    assert stored.text == "✅ Done" and stored.reply_markup is None
    await editor.close()


async def test_rapid_updates_become_few_edits_and_never_not_modified(
    fake_telegram: FakeTelegram, bot: Bot
) -> None:
    fake_telegram.enable_flood_model()
    chat = fake_telegram.private_chat()
    editor = ProgressEditor(PtbEditSender(bot))  # the production pace: 1 edit / 1.5 s
    message_id = await start_job(bot, editor, chat.id)
    for i in range(100):
        state = ProgressContent(f"🎨 Rendering… {i // 2}%", reply_markup=cancel_button())
        editor.submit(chat.id, message_id, state)  # every state twice: duplicates included
        await asyncio.sleep(0.02)
    final = ProgressContent("✅ Done in 2.1 s")
    editor.submit(chat.id, message_id, final, final=True)
    assert await editor.flush(10.0)
    edits = fake_telegram.calls_of("editMessageText")
    assert 1 <= len(edits) <= 4
    assert all(c.status == 200 for c in edits)  # in particular no "message is not modified"
    stored = fake_telegram.message(chat.id, message_id)
    assert stored.text == final.text and stored.history[-1].text == final.text
    assert fake_telegram.flood_violations == []
    # late states of the finished job change nothing
    editor.submit(chat.id, message_id, ProgressContent("🎨 Rendering… 99%"))
    assert await editor.flush(1.0)
    assert len(fake_telegram.calls_of("editMessageText")) == len(edits)
    await editor.close()


async def test_previews_turn_the_message_into_a_photo(
    fake_telegram: FakeTelegram, bot: Bot
) -> None:
    chat = fake_telegram.private_chat()
    policy = PacingPolicy(private_interval=0.1, preview_interval=1.2)
    editor = ProgressEditor(PtbEditSender(bot), policy=policy)
    message_id = await start_job(bot, editor, chat.id)
    editor.submit(chat.id, message_id, ProgressContent("step 1", None, png("red"), "p1"))
    assert await editor.flush(3.0)
    # the next preview comes too soon: its text goes first (as a caption), the image later
    editor.submit(chat.id, message_id, ProgressContent("step 2", None, png("green"), "p2"))
    assert await editor.flush(3.0)
    result = png("blue")
    editor.submit(chat.id, message_id, ProgressContent("done", None, result, "final"), final=True)
    assert await editor.flush(3.0)
    stored = fake_telegram.message(chat.id, message_id)
    assert [v.method for v in stored.history] == [
        "sendMessage",
        "editMessageMedia",
        "editMessageCaption",
        "editMessageMedia",
        "editMessageMedia",
    ]
    assert [v.caption for v in stored.history[1:]] == ["step 1", "step 2", "step 2", "done"]
    assert stored.media_kind == "photo" and stored.media_bytes == result
    assert all(c.status == 200 for c in fake_telegram.calls if c.method.startswith("edit"))
    await editor.close()


async def test_deleted_message_and_blocked_user_never_break_the_job(
    fake_telegram: FakeTelegram, bot: Bot
) -> None:
    chat = fake_telegram.private_chat()
    editor = ProgressEditor(PtbEditSender(bot), policy=PacingPolicy(private_interval=0.05))
    deleted = await start_job(bot, editor, chat.id)
    await bot.delete_message(chat.id, deleted)
    editor.submit(chat.id, deleted, ProgressContent("10%"))
    assert await editor.flush(2.0)
    editor.submit(chat.id, deleted, ProgressContent("20%"))
    assert await editor.flush(2.0)
    assert [c.status for c in fake_telegram.calls_of("editMessageText")] == [400]

    other = await start_job(bot, editor, chat.id)
    fake_telegram.block(chat)
    editor.submit(chat.id, other, ProgressContent("done"), final=True)
    assert await editor.flush(2.0)
    assert fake_telegram.calls_of("editMessageText")[-1].status == 403
    assert editor.stats.failed == 2
    await editor.close()
