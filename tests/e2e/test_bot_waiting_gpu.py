"""ComfyUI down: the request waits in the queue ("waiting for a GPU server"), never fails, and
runs as soon as a GPU server is back."""

from __future__ import annotations

import asyncio
import time

from core.service import Actor
from core.states import JobState
from tests.e2e.harness import BotHarness
from tests.fakes.comfyui import FakeComfyUI


async def test_request_waits_for_a_gpu_server_then_runs(
    studio: BotHarness,
    fake_comfy: FakeComfyUI,
) -> None:
    bot = studio
    await fake_comfy.stop()
    alice = bot.fake.user("Alice")
    chat = bot.fake.private_chat(alice)

    sent = bot.send(chat, alice, "/image a lighthouse at dusk")
    progress = await bot.wait_reply(sent, contains="lighthouse")
    await bot.wait_content(progress, "Waiting for a free GPU server", timeout=15)
    await bot.wait_content(progress, "#1 in line", timeout=5)
    tickets = await bot.service.my_queue(Actor(user_id=alice.id, chat_id=chat.id))
    assert [t.job.status for t in tickets] == [JobState.QUEUED]
    job_id = tickets[0].job.id

    await fake_comfy.start()
    deadline = time.monotonic() + 30
    while (await bot.service.job(job_id)).status is not JobState.DONE:
        assert time.monotonic() < deadline, "the job did not run after the GPU server came back"
        await asyncio.sleep(0.1)
    assert "Waiting for a free GPU server" not in (progress.content or "")
