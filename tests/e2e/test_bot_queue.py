"""/queue, /cancel <id prefix>, /history (paged), /status."""

from __future__ import annotations

from uuid import UUID

from bot.keyboards import uuid_to_text
from core.db import generations as gen_db
from core.db.tx import transaction
from core.models import JobKind
from core.service import Actor
from core.states import JobState
from tests.e2e.conftest import MakeBot
from tests.e2e.harness import BotHarness, Sent, buttons, job_prefix
from tests.fakes.telegram import FakeChat, FakeUser
from tests.webhook import free_port


def _dead_url() -> str:
    return f"http://127.0.0.1:{free_port()}"  # nobody listens


async def _queue_jobs(bot: BotHarness, chat: FakeChat, user: FakeUser, *texts: str) -> list[UUID]:
    actor = Actor(user.id, chat.id)
    await bot.service.seen(actor)
    ids = []
    for text in texts:
        ticket = await bot.service.request_scene(actor, JobKind.IMAGE, text)
        ids.append(ticket.job.id)
    return ids


async def test_queue_and_cancel(make_bot: MakeBot) -> None:
    bot = await make_bot(comfyui_urls=_dead_url())  # no GPU reachable: jobs stay queued
    alice, bob = bot.fake.user("Alice"), bot.fake.user("Bob")
    chat = bot.fake.private_chat(alice)
    await bot.wait_reply(bot.send(chat, alice, "/queue"), contains="no jobs waiting")

    first, second, third = await _queue_jobs(
        bot, chat, alice, "a cat on a roof", "a dog in the rain", "a fox in snow"
    )
    listing = await bot.wait_reply(bot.send(chat, alice, "/queue"), contains="Your jobs")
    text = listing.content or ""
    assert job_prefix(text) == [third.hex[:8], second.hex[:8], first.hex[:8]]
    assert "#1 in line" in text and "#3 in line" in text and "~" in text
    assert "a cat on a roof" in text

    reply = await bot.wait_reply(bot.send(chat, alice, f"/cancel {first.hex[:6]}"))
    assert reply.content == f"Job {first.hex[:8]} cancelled."
    assert (await bot.service.job(first)).status is JobState.CANCELLED

    not_found = await bot.wait_reply(bot.send(chat, alice, "/cancel abcdef12"))
    assert "starts with abcdef12" in (not_found.content or "")
    bad = await bot.wait_reply(bot.send(chat, alice, "/cancel zz!"))
    assert "0-9 and a-f" in (bad.content or "")
    usage = await bot.wait_reply(bot.send(chat, alice, "/cancel"), contains="Usage")
    assert len(buttons(usage)) == 2

    # buttons under /queue: only for their owner
    other = bot.click(chat, bob, listing, f"Cancel {second.hex[:8]}")
    assert await bot.wait_toast(other) == "This is not your request."
    mine = bot.click(chat, alice, listing, f"Cancel {second.hex[:8]}")
    assert await bot.wait_toast(mine) == f"Job {second.hex[:8]} cancelled."
    await bot.fake.wait_for(lambda: len(buttons(listing)) == 1, what="one button left")
    assert (await bot.service.job(second)).status is JobState.CANCELLED
    # a stale button: the job is already cancelled
    stale = bot.press(chat, alice, listing, f"v1|qc|{alice.id}|{uuid_to_text(second)}")
    assert "already cancelled" in await bot.wait_toast(stale)
    assert (await bot.service.job(third)).status is JobState.QUEUED


async def _finish(bot: BotHarness, job_id: UUID) -> None:
    """Walk a job to done in one transaction: the running engine never sees it half-way
    (it would deliver a job it found `delivering`)."""
    async with transaction(bot.service.db) as conn:
        for state in (
            JobState.SUBMITTED,
            JobState.RUNNING,
            JobState.POSTPROCESSING,
            JobState.DELIVERING,
            JobState.DONE,
        ):
            if state is JobState.DONE:
                await gen_db.record_delivery(conn, job_id, result_message_id=1)
            await gen_db.transition(conn, job_id, state)


async def test_history_is_paged(make_bot: MakeBot) -> None:
    bot = await make_bot(comfyui_urls=_dead_url(), max_queued_per_user=20)
    alice = bot.fake.user("Alice")
    chat = bot.fake.private_chat(alice)
    await bot.wait_reply(bot.send(chat, alice, "/history"), contains="no finished jobs")
    ids = await _queue_jobs(bot, chat, alice, *(f"scene number {n}" for n in range(7)))
    for job_id in ids:
        await _finish(bot, job_id)

    page = await bot.wait_reply(bot.send(chat, alice, "/history"), contains="Finished jobs")
    assert len(job_prefix(page.content or "")) == 5 and "scene number 6" in (page.content or "")
    assert [label for label, _ in buttons(page)] == ["1", "›"]
    bot.click(page.chat, alice, page, "›")
    await bot.wait_content(page, "page 2")
    assert len(job_prefix(page.content or "")) == 2 and "scene number 0" in (page.content or "")
    assert [label for label, _ in buttons(page)] == ["‹", "2"]


async def test_status_lines(bot_harness: BotHarness) -> None:
    bot = bot_harness
    alice = bot.fake.user("Alice")
    chat = bot.fake.private_chat(alice)
    sent = bot.send(chat, alice, "/status")
    message = await bot.wait_reply(sent, contains="Checking")
    await bot.wait_content(message, "Status", timeout=30)
    text = message.content or ""
    assert "database: OK" in text and "telegram: OK" in text
    assert "jellyfin: NOT CONFIGURED" in text
    assert "Jobs now: 0 waiting, 0 in progress" in text
    assert "http://" not in text  # addresses only for admins
    assert isinstance(sent, Sent)
