"""Edges of the buttons under a result (see test_bot_results.py for the main paths): "use as
reference" without characters, double taps Telegram answers "not modified", a result whose
message was deleted meanwhile, buttons carrying a job of another chat (a forwarded result), a
video or a message that is no result, an original file that is gone or too big or that
Telegram refuses (a closed topic, no right to send files) or cannot take now. The real bot
against the fake Bot API, the fake ComfyUI and a real PostgreSQL."""

from __future__ import annotations

import os
from uuid import UUID

import pytest

from bot import delivery
from bot.render import ORIGINAL, REFERENCE, REFERENCE_BACK, REFERENCE_TO
from core.db import generations as gen_db
from core.db.tx import transaction
from core.models import ChatType, JobKind
from core.service import Actor
from core.states import JobState
from tests.e2e.conftest import MakeBot
from tests.e2e.harness import BotHarness, button_data, handled
from tests.e2e.test_bot_results import first_result
from tests.e2e.test_bot_scenes import RESULT_LABELS, job_of, person, wait_result
from tests.e2e.test_bot_scenes_edges import (
    Logs,
    assert_no_crash,
    dead_url,
    labels,
)
from tests.engine import TO_DELIVERING
from tests.fakes.telegram import (
    ERR_EDIT_NOT_FOUND,
    ERR_NOT_MODIFIED,
    FakeChat,
    FakeUser,
    StoredMessage,
)

NOT_A_RESULT = "I cannot find the job of this message any more."
NO_IMAGE = "This result has no picture to use."
GONE = "The original file is no longer stored."
TOO_BIG = "The original is too big to send through Telegram."
REFUSED = (
    "Telegram refused to send the file here: the topic may be closed, or I may not be allowed "
    "to send files in this chat."
)
REFUSED_RU = (
    "Telegram не дал отправить файл сюда: возможно, тема закрыта или мне нельзя отправлять "
    "файлы в этот чат."
)
PICK = "Which character should use this picture as a reference?"


def is_alert(bot: BotHarness, query: str) -> bool:
    return bool(bot.fake.callback_answers[query]["show_alert"])


def markup_edits(bot: BotHarness, message: StoredMessage) -> list[str | None]:
    """The errors of the bot's editMessageReplyMarkup calls on `message` (None: it worked)."""
    return [
        call.error
        for call in bot.fake.calls_of("editMessageReplyMarkup")
        if call.params.get("message_id") == message.message_id
    ]


async def test_use_as_reference_without_characters_says_how_to_make_one(
    studio: BotHarness, logs: Logs
) -> None:
    bot = studio
    alice, chat, _ = await person(bot, "Alice")  # no characters
    _, result = await first_result(bot, chat, alice, "/image a lighthouse at dusk")

    query = bot.click(chat, alice, result, "Use as reference")
    assert await bot.wait_toast(query) == (
        "You have no characters yet: create one with /newcharacter."
    )
    assert is_alert(bot, query)
    await handled()  # every update handled: nothing more comes
    assert labels(result) == RESULT_LABELS and markup_edits(bot, result) == []
    assert_no_crash(bot, logs)


async def test_double_taps_on_use_as_reference_and_back(studio: BotHarness, logs: Logs) -> None:
    """Each button of a double tap is handled; Telegram refuses the second, identical edit
    ("message is not modified") and that is fine: both presses answered, no error."""
    bot = studio
    alice, chat, (aiko,) = await person(bot, "Alice", "Aiko")
    _, result = await first_result(bot, chat, alice)

    reference = button_data(result, "Use as reference")
    for _ in range(2):
        assert await bot.wait_toast(bot.press(chat, alice, result, reference)) == PICK
    await bot.fake.wait_for(lambda: len(markup_edits(bot, result)) == 2, what="two edits")
    assert labels(result) == ["Aiko", "‹ Back"]

    back = button_data(result, "Back")
    for _ in range(2):
        assert await bot.wait_toast(bot.press(chat, alice, result, back)) == ""
    await bot.fake.wait_for(lambda: len(markup_edits(bot, result)) == 4, what="four edits")
    assert labels(result) == RESULT_LABELS
    edits = markup_edits(bot, result)
    assert edits[0] is None and edits[2] is None  # the first of each pair changed the buttons
    assert edits[1] == edits[3] == ERR_NOT_MODIFIED
    assert await bot.service.references(aiko.id) == []
    assert_no_crash(bot, logs)


async def test_a_result_deleted_while_its_reference_list_opens(
    studio: BotHarness, logs: Logs
) -> None:
    """The result message was deleted while "use as reference" was on its way: the press was
    answered, the refusal is logged, no update fails; the same for a character's button."""
    bot = studio
    alice, chat, (aiko,) = await person(bot, "Alice", "Aiko")
    _, result = await first_result(bot, chat, alice)
    to_aiko = REFERENCE_TO.data(aiko.id, owner=alice.id)
    bot.fake.fail_next(
        "editMessageReplyMarkup", n=2, kind=400, description=ERR_EDIT_NOT_FOUND, chat_id=chat.id
    )

    query = bot.click(chat, alice, result, "Use as reference")
    assert await bot.wait_toast(query) == PICK
    query = bot.press(chat, alice, result, to_aiko)
    assert await bot.wait_toast(query) == "Added as a reference of Aiko."
    await bot.fake.wait_for(lambda: len(logs.of("buttons not changed")) == 2, what="the logs")
    assert all("not found" in line["error"] for line in logs.of("buttons not changed"))
    assert len(await bot.service.references(aiko.id)) == 1
    assert_no_crash(bot, logs)


async def test_buttons_carrying_a_job_of_another_chat(studio: BotHarness, logs: Logs) -> None:
    """A result forwarded to a group keeps its buttons: pressed there they name a job of
    another chat, which the buttons do not act on (nothing is sent to the group)."""
    bot = studio
    alice = bot.fake.user("Alice")
    chat = bot.fake.private_chat(alice)
    group = bot.fake.group("Friends", members=[alice])
    await person(bot, "Alice", user=alice, chat=chat)
    await bot.service.seen(Actor(alice.id, group.id, chat_type=ChatType.GROUP))
    _, result = await first_result(bot, chat, alice, "/image a lighthouse at dusk")
    job = await job_of(bot, chat, result)
    in_group = await bot.wait_reply(
        bot.send(group, alice, "/start@AnimeStudioTestBot"), contains="Anime Studio"
    )
    documents = len(bot.fake.calls_of("sendDocument"))

    for action in (REFERENCE, REFERENCE_BACK, ORIGINAL):
        query = bot.press(group, alice, in_group, action.data(job.id, owner=alice.id))
        assert await bot.wait_toast(query) == NOT_A_RESULT, action.name
    await handled()  # every update handled: nothing more comes
    assert len(bot.fake.calls_of("sendDocument")) == documents
    assert markup_edits(bot, in_group) == [] and labels(in_group) == []
    assert len(logs.of("button refused")) == 3
    assert_no_crash(bot, logs)


async def _walk_to_done(bot: BotHarness, job_id: UUID, result_message_id: int) -> None:
    """A job delivered as `result_message_id`, without any output file (one transaction: the
    running engine never sees it half-way)."""
    async with transaction(bot.service.db) as conn:
        for state in TO_DELIVERING:
            await gen_db.transition(conn, job_id, state)
        await gen_db.record_delivery(conn, job_id, result_message_id=result_message_id)
        await gen_db.transition(conn, job_id, JobState.DONE)


async def test_reference_and_original_without_a_picture(make_bot: MakeBot, logs: Logs) -> None:
    """Stale or forged data: "use as reference" of a video, a character's button under a
    message that is no result, and under a result without a picture; "original" of a job
    without a file. Each gets a clear toast; no reference is added, nothing is sent."""
    bot = await make_bot(comfyui_urls=dead_url())  # no GPU: the video stays queued
    alice, chat, (aiko,) = await person(bot, "Alice", "Aiko")
    actor = Actor(alice.id, chat.id)
    video = (await bot.service.request_scene(actor, JobKind.VIDEO, "Aiko waves")).job
    message = await bot.wait_reply(bot.send(chat, alice, "/start"), contains="Anime Studio")

    async def toast(data: str) -> str:
        return await bot.wait_toast(bot.press(chat, alice, message, data))

    assert await toast(REFERENCE.data(video.id, owner=alice.id)) == NO_IMAGE
    assert await toast(REFERENCE_TO.data(aiko.id, owner=alice.id)) == NOT_A_RESULT
    assert await toast(ORIGINAL.data(video.id, owner=alice.id)) == GONE
    await _walk_to_done(bot, video.id, message.message_id)  # the message is its "result" now
    assert await toast(REFERENCE_TO.data(aiko.id, owner=alice.id)) == NO_IMAGE

    assert await bot.service.references(aiko.id) == []
    assert not bot.fake.calls_of("sendDocument") and markup_edits(bot, message) == []
    assert logs.of("reference: message is no result")
    assert_no_crash(bot, logs)


async def assert_original_refused(
    bot: BotHarness,
    chat: FakeChat,
    user: FakeUser,
    result: StoredMessage,
    logs: Logs,
    *,
    toast: str,
    reason: str,
) -> None:
    """`user` presses "Original" under `result`: an alert `toast`, no document sent, `reason`
    logged."""
    query = bot.click(chat, user, result, "Original")
    assert await bot.wait_toast(query) == toast
    assert is_alert(bot, query)
    await handled()  # every update handled: nothing more comes
    assert not bot.fake.calls_of("sendDocument")
    assert [line["reason"] for line in logs.of("original not sent")] == [reason]


async def test_original_whose_file_is_gone(studio: BotHarness, logs: Logs) -> None:
    bot = studio
    alice, chat, _ = await person(bot, "Alice", "Aiko")
    _, result = await first_result(bot, chat, alice)
    job = await job_of(bot, chat, result)
    [output] = await bot.service.outputs(job.id)
    os.remove(output.file_path)

    await assert_original_refused(
        bot, chat, alice, result, logs, toast=GONE, reason="original gone"
    )
    assert labels(result) == RESULT_LABELS
    assert_no_crash(bot, logs)


async def test_original_too_big_for_telegram(
    studio: BotHarness, monkeypatch: pytest.MonkeyPatch, logs: Logs
) -> None:
    bot = studio
    alice, chat, _ = await person(bot, "Alice", "Aiko")
    _, result = await first_result(bot, chat, alice)
    monkeypatch.setattr(delivery, "UPLOAD_MAX_BYTES", 1000)  # the picture is bigger

    await assert_original_refused(
        bot, chat, alice, result, logs, toast=TOO_BIG, reason="original too big"
    )
    assert_no_crash(bot, logs)


async def test_original_is_answered_without_a_text(studio: BotHarness, logs: Logs) -> None:
    """The press that sends the original is answered silently (no toast text at all)."""
    bot = studio
    alice, chat, _ = await person(bot, "Alice", "Aiko")
    _, result = await first_result(bot, chat, alice)

    query = bot.click(chat, alice, result, "Original")
    assert await bot.wait_toast(query) == ""
    assert bot.fake.callback_answers[query]["text"] is None
    await bot.fake.wait_for(lambda: bot.fake.calls_of("sendDocument"), what="the document")
    assert_no_crash(bot, logs)


async def test_original_in_a_closed_forum_topic_gets_its_own_alert(
    studio: BotHarness, logs: Logs
) -> None:
    """The result's topic was closed: Telegram refuses the document (TOPIC_CLOSED). The user is
    told Telegram refused it here, not "something went wrong"; the refusal is logged with the
    job; the result keeps its buttons and a later press works."""
    bot = studio
    alice = bot.fake.user("Alice")
    forum = bot.fake.forum("Studio", members=[alice])
    topic = bot.fake.add_topic(forum, "Renders")
    await person(bot, "Alice", "Aiko", user=alice, chat=forum)
    sent = bot.send(forum, alice, "/image@AnimeStudioTestBot Aiko in the rain", thread_id=topic)
    result = await bot.wait_reply(sent, contains="waiting in line")
    await wait_result(bot, result)
    job = await job_of(bot, forum, result)
    bot.fake.fail_next("sendDocument", kind=400, description="Bad Request: TOPIC_CLOSED")

    query = bot.click(forum, alice, result, "Original")
    assert await bot.wait_toast(query) == REFUSED
    assert is_alert(bot, query)
    await handled()
    [call] = bot.fake.calls_of("sendDocument")
    assert call.error == "Bad Request: TOPIC_CLOSED"
    assert call.params.get("message_thread_id") == topic
    [line] = logs.of("original refused by telegram")
    assert line["job_id"] == str(job.id) and line["level"] == "warning"
    assert line["error"] == "Topic_closed" and line["kind"] == "BadRequest"  # as PTB says it
    assert labels(result) == RESULT_LABELS

    query = bot.click(forum, alice, result, "Original")  # the topic is open again
    assert await bot.wait_toast(query) == ""
    await bot.fake.wait_for(lambda: len(bot.fake.calls_of("sendDocument")) == 2, what="a retry")
    assert bot.fake.calls_of("sendDocument")[-1].error is None
    assert_no_crash(bot, logs)


@pytest.mark.parametrize(
    ("kind", "description", "lang"),
    [
        (400, "Bad Request: not enough rights to send documents to the chat", "en"),
        (403, "Forbidden: bot was kicked from the supergroup chat", "en"),
        (400, "Bad Request: not enough rights to send documents to the chat", "ru"),
    ],
    ids=["no-rights", "forbidden", "no-rights-ru"],
)
async def test_original_telegram_refuses_for_good_gets_its_own_alert(
    studio: BotHarness, logs: Logs, kind: int, description: str, lang: str
) -> None:
    bot = studio
    alice, chat, _ = await person(bot, "Alice", "Aiko")
    _, result = await first_result(bot, chat, alice)
    job = await job_of(bot, chat, result)
    bot.fake.fail_next("sendDocument", kind=kind, description=description)
    alice.language_code = lang  # (the result's buttons stay as they were shown)

    query = bot.click(chat, alice, result, "Original")
    assert await bot.wait_toast(query) == (REFUSED if lang == "en" else REFUSED_RU)
    assert is_alert(bot, query)
    await handled()
    [line] = logs.of("original refused by telegram")
    assert line["job_id"] == str(job.id)
    assert line["error"].lower() in description.lower()  # (PTB drops "Bad Request: ")
    assert line["kind"] == ("BadRequest" if kind == 400 else "Forbidden")
    assert_no_crash(bot, logs)


@pytest.mark.parametrize(
    ("kind", "n"), [(502, 1), (429, 3)], ids=["network-error", "flood-wait-after-retries"]
)
async def test_original_when_telegram_cannot_take_it_now_keeps_the_error_alert(
    studio: BotHarness, logs: Logs, kind: int, n: int
) -> None:
    """A network error, or a flood wait still there after the rate limiter's two retries, is
    not a refusal: as before, the global error handler logs it with a reference and the
    user gets "something went wrong" (pressing again later may work)."""
    bot = studio
    alice, chat, _ = await person(bot, "Alice", "Aiko")
    _, result = await first_result(bot, chat, alice)
    bot.fake.fail_next("sendDocument", n=n, kind=kind, retry_after=1)

    query = bot.click(chat, alice, result, "Original")
    toast = await bot.wait_toast(query, timeout=15)
    assert toast.startswith("Sorry, something went wrong on my side. Reference: ")
    await handled()
    assert len(bot.fake.calls_of("sendDocument")) == n
    assert not logs.of("original refused by telegram")
    [crash] = logs.crashes()
    assert toast.endswith(crash["ref"])
