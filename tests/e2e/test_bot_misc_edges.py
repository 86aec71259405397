"""Edges of /queue, /cancel, /history, /status, /settings, the admin commands and the live
progress message (see test_bot_queue.py, test_bot_settings.py, test_bot_admin.py for the main
paths): a running job in /queue and /cancel stopping it, a progress message Telegram refuses,
an ambiguous job id, a job that finished while /cancel was handled, a history page past the
end, /status for an admin, Back in /settings and a demoted admin's old keyboard, /ban and
/unban with wrong arguments. The real bot against the fake Bot API, the fake ComfyUI and a
real PostgreSQL."""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any
from uuid import UUID

import pytest

from bot.handlers.queue import HISTORY
from core.models import Generation, JobKind
from core.service import Actor
from core.states import JobState
from tests.e2e.conftest import MakeBot
from tests.e2e.harness import BotHarness, buttons, handled, job_prefix
from tests.e2e.test_bot_results_edges import _walk_to_done
from tests.e2e.test_bot_scenes import jobs_of, person
from tests.e2e.test_bot_scenes_edges import (
    Logs,
    assert_no_crash,
    dead_url,
    labels,
)
from tests.fakes.comfyui import FakeComfyUI
from tests.fakes.telegram import ERR_BLOCKED, FakeChat, FakeTelegram, FakeUser

BOT = "@AnimeStudioTestBot"


async def eventually(check: Callable[[], Awaitable[Any]], what: str, timeout: float = 15) -> Any:
    """The first truthy result of `check()`, polled until `timeout`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not (found := await check()):
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)
    return found


async def until_status(bot: BotHarness, job_id: UUID, *states: JobState) -> Generation:
    async def check() -> Generation | None:
        job = await bot.service.job(job_id)
        return job if job.status in states else None

    return await eventually(check, f"job {job_id} {[s.value for s in states]}")  # type: ignore[no-any-return]


async def queued_jobs(bot: BotHarness, actor: Actor, *texts: str) -> list[UUID]:
    return [(await bot.service.request_scene(actor, JobKind.IMAGE, text)).job.id for text in texts]


# -- /queue and /cancel ------------------------------------------------------------------------


async def test_queue_shows_a_running_job_and_cancel_stops_it(
    studio: BotHarness, fake_comfy: FakeComfyUI, logs: Logs
) -> None:
    bot = studio
    fake_comfy.step_delay_s = 0.5  # long enough to look at it running
    alice, chat, _ = await person(bot, "Alice", "Aiko")
    sent = bot.send(chat, alice, "/image Aiko in the rain")
    progress = await bot.wait_reply(sent, contains="Image")
    [job] = await jobs_of(bot, alice)

    async def running() -> bool:
        now = await bot.service.job(job.id)
        return now.status is JobState.RUNNING and now.progress > 0

    await eventually(running, "the job running, with progress")
    listing = await bot.wait_reply(bot.send(chat, alice, "/queue"), contains="Your jobs")
    line = next(x for x in (listing.content or "").splitlines() if job.id.hex[:8] in x)
    assert re.fullmatch(rf"{job.id.hex[:8]} image, generating \(\d+%\): Aiko in the rain", line)

    stop = await bot.wait_reply(bot.send(chat, alice, f"/cancel {job.id.hex[:5]}"))
    assert stop.content == f"Stopping job {job.id.hex[:8]}…"
    await until_status(bot, job.id, JobState.CANCELLED)
    await bot.wait_content(progress, "cancelled")
    assert not buttons(progress)
    assert_no_crash(bot, logs)


async def test_a_progress_message_telegram_refuses_never_blocks_the_job(
    studio: BotHarness, logs: Logs
) -> None:
    """The progress message cannot be posted (the user blocked the bot for a moment): the job
    runs all the same and its result arrives as a new message replying to the request."""
    bot = studio
    alice, chat, _ = await person(bot, "Alice", "Aiko")
    bot.fake.fail_next("sendMessage", kind=403, description=ERR_BLOCKED, chat_id=chat.id)

    sent = bot.send(chat, alice, "/image Aiko on a roof")
    result = await bot.wait_reply(sent, where=lambda m: m.media_kind == "photo", timeout=20)
    assert result.reply_to is not None and result.reply_to.message_id == sent.message_id
    assert "seed" in (result.caption or "")
    [job] = await jobs_of(bot, alice)
    job = await until_status(bot, job.id, JobState.DONE)
    assert job.progress_message_id is None and job.result_message_id == result.message_id
    assert [m.message_id for m in bot.replies_after(sent)] == [result.message_id]
    [line] = logs.of("progress message not posted")
    assert "blocked" in line["error"]
    assert_no_crash(bot, logs)


async def test_cancel_of_a_running_job_without_a_progress_message(
    studio: BotHarness, fake_comfy: FakeComfyUI, logs: Logs
) -> None:
    """/cancel of a job that is on the GPU and has no progress message (Telegram refused
    it): the user is told it is stopping, the job ends cancelled."""
    bot = studio
    fake_comfy.hold()  # the GPU takes the job but does not start it
    alice, chat, _ = await person(bot, "Alice", "Aiko")
    bot.fake.fail_next("sendMessage", kind=403, description=ERR_BLOCKED, chat_id=chat.id)
    sent = bot.send(chat, alice, "/image Aiko on a roof")
    await bot.fake.wait_for(lambda: fake_comfy.pending_ids, what="the job on the GPU")
    [job] = await jobs_of(bot, alice)
    await until_status(bot, job.id, JobState.SUBMITTED, JobState.RUNNING)

    stop = await bot.wait_reply(bot.send(chat, alice, f"/cancel {job.id.hex[:8]}"))
    assert stop.content == f"Stopping job {job.id.hex[:8]}…"
    await until_status(bot, job.id, JobState.CANCELLED)
    fake_comfy.release()
    await bot.settle(0.3)
    assert [m.message_id for m in bot.replies_after(sent)] == [stop.message_id]
    assert_no_crash(bot, logs)


async def test_a_long_queue_and_cancel_with_a_prefix_of_several_jobs(
    make_bot: MakeBot, logs: Logs
) -> None:
    """/queue gives far places in minutes; a prefix several jobs start with cancels none."""
    bot = await make_bot(
        comfyui_urls=dead_url(), comfyui_max_in_flight=2, max_queued_per_user=20, daily_quota=100
    )
    alice = bot.fake.user("Alice")
    chat = bot.fake.private_chat(alice)
    actor = Actor(alice.id, chat.id)
    await bot.service.seen(actor)
    ids = await queued_jobs(bot, actor, *(f"scene {n}" for n in range(17)))  # 16 hex digits
    digit, count = Counter(job_id.hex[0] for job_id in ids).most_common(1)[0]
    assert count >= 2
    listing = await bot.wait_reply(bot.send(chat, alice, "/queue"), contains="Your jobs")
    places = dict(re.findall(r"\((#\d+) in line, (~\d+ \w+)\)", listing.content or ""))
    assert places["#1"] == "~20 s" and places["#17"] == "~3 min"  # 9 rounds of 2 jobs

    answer = await bot.wait_reply(bot.send(chat, alice, f"/cancel {digit.upper()}"))
    assert answer.content == f"Several of your jobs start with {digit}: type more characters."
    statuses = {(await bot.service.job(job_id)).status for job_id in ids}
    assert statuses == {JobState.QUEUED}
    assert_no_crash(bot, logs)


async def test_cancel_of_a_job_that_finished_meanwhile(
    make_bot: MakeBot, monkeypatch: pytest.MonkeyPatch, logs: Logs
) -> None:
    """The job ends between /cancel finding it in the queue and cancelling it: core's reason
    is the answer, the job stays done."""
    bot = await make_bot(comfyui_urls=dead_url())
    alice = bot.fake.user("Alice")
    chat = bot.fake.private_chat(alice)
    actor = Actor(alice.id, chat.id)
    await bot.service.seen(actor)
    [job_id] = await queued_jobs(bot, actor, "a cat on a roof")
    cancel = bot.service.cancel

    async def cancel_after_the_end(asker: Actor, of: UUID) -> Any:
        await _walk_to_done(bot, of, result_message_id=1)
        return await cancel(asker, of)

    monkeypatch.setattr(bot.service, "cancel", cancel_after_the_end)
    answer = await bot.wait_reply(bot.send(chat, alice, f"/cancel {job_id.hex[:4]}"))
    assert answer.content == "That job is already done."
    assert (await bot.service.job(job_id)).status is JobState.DONE
    assert [line["kind"] for line in logs.of("request refused")] == ["InvalidInput"]
    assert_no_crash(bot, logs)


async def test_a_history_page_past_the_end_shows_the_first_page(
    make_bot: MakeBot, logs: Logs
) -> None:
    bot = await make_bot(comfyui_urls=dead_url(), max_queued_per_user=20)
    alice = bot.fake.user("Alice")
    chat = bot.fake.private_chat(alice)
    actor = Actor(alice.id, chat.id)
    await bot.service.seen(actor)
    for job_id in await queued_jobs(bot, actor, *(f"scene number {n}" for n in range(6))):
        await _walk_to_done(bot, job_id, result_message_id=1)
    page = await bot.wait_reply(bot.send(chat, alice, "/history"), contains="page 1")
    bot.click(chat, alice, page, "›")
    await bot.wait_content(page, "page 2")

    query = bot.press(chat, alice, page, HISTORY.data(40, owner=alice.id))  # forged
    assert await bot.wait_toast(query) == ""
    await bot.wait_content(page, "page 1")
    assert len(job_prefix(page.content or "")) == 5 and labels(page) == ["1", "›"]
    assert_no_crash(bot, logs)


# -- /status, /settings, admin commands -------------------------------------------------------


async def with_admin(
    make_bot: MakeBot, fake_telegram: FakeTelegram
) -> tuple[BotHarness, FakeUser, FakeChat]:
    """The bot with the user "Boss" as its admin, and Boss's private chat."""
    boss = fake_telegram.user("Boss")
    bot = await make_bot(admin_user_ids=[boss.id])
    return bot, boss, bot.fake.private_chat(boss)


async def test_status_for_an_admin_shows_the_details(
    make_bot: MakeBot, fake_telegram: FakeTelegram, fake_comfy: FakeComfyUI
) -> None:
    bot, boss, chat = await with_admin(make_bot, fake_telegram)
    message = await bot.wait_reply(bot.send(chat, boss, "/status"), contains="Checking")
    await bot.wait_content(message, "Jobs now", timeout=30)
    lines = (message.content or "").splitlines()
    assert f"comfyui {fake_comfy.base_url}: OK (ComfyUI " in "\n".join(lines)
    assert "jellyfin: NOT CONFIGURED (JELLYFIN_URL and JELLYFIN_API_KEY are not set)" in lines


async def test_settings_back_and_a_demoted_admin_choosing_a_value(
    bot_harness: BotHarness, logs: Logs
) -> None:
    bot = bot_harness
    alice = bot.fake.user("Alice")
    chat = bot.fake.private_chat(alice)
    panel = await bot.wait_reply(bot.send(chat, alice, "/settings"), contains="Settings")
    main = labels(panel)
    bot.click(chat, alice, panel, "Style")
    await bot.wait_content(panel, "Choose the default style")
    query = bot.click(chat, alice, panel, "Back")
    assert await bot.wait_toast(query) == ""
    await bot.wait_content(panel, "Settings of this chat")
    assert labels(panel) == main and "Style: anime" in (panel.content or "")

    admin = bot.fake.user("Ada")
    group = bot.fake.supergroup("Studio", admins=[admin])
    panel = await bot.wait_reply(bot.send(group, admin, f"/settings{BOT}"), contains="Settings")
    bot.click(group, admin, panel, "Aspect ratio")
    await bot.wait_content(panel, "aspect ratio")
    bot.fake.set_admins(group, [])  # demoted while the choice is open
    refused = bot.click(group, admin, panel, "16:9")
    assert await bot.wait_toast(refused) == "Only group admins can change the settings."
    await handled()  # the press is handled to its end
    assert bot.fake.callback_answers[refused]["show_alert"]
    assert (await bot.service.chat_settings(group.id)).aspect_ratio == "1:1"
    assert "Choose the default aspect ratio" in (panel.content or "")
    assert logs.of("settings change refused: not a group admin")
    assert_no_crash(bot, logs)


async def test_ban_and_unban_with_wrong_arguments(
    make_bot: MakeBot, fake_telegram: FakeTelegram, logs: Logs
) -> None:
    bot, boss, chat = await with_admin(make_bot, fake_telegram)

    async def answer(text: str) -> str:
        return (await bot.wait_reply(bot.send(chat, boss, text))).content or ""

    assert await answer("/ban") == "Usage: /ban <user id or @username>"
    assert await answer("/unban 1 2") == "Usage: /unban <user id or @username>"
    assert await answer("/ban @nobody_here") == (
        "I have never seen @nobody_here: they must write to me first."
    )
    assert await answer("/unban 424242") == (
        "I have never seen 424242: they must write to me first."
    )
    assert await answer("/ban @") == "I have never seen @: they must write to me first."
    assert_no_crash(bot, logs)
