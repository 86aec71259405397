"""Structured logs of a real request: JSON lines carrying the chat, the user and the job."""

from __future__ import annotations

import io
import json

from core.logs import configure_logging
from tests.conftest import TEST_LOG_LEVEL
from tests.e2e.harness import BotHarness


async def test_request_log_lines_carry_chat_user_and_job(bot_harness: BotHarness) -> None:
    bot = bot_harness
    log = io.StringIO()
    configure_logging("INFO", "json", stream=log)
    try:
        alice = bot.fake.user("Alice")
        chat = bot.fake.private_chat(alice)
        await bot.wait_reply(bot.send(chat, alice, "/image a red umbrella"), contains="umbrella")
        await bot.settle(0.3)
        lines = [json.loads(line) for line in log.getvalue().splitlines() if line.strip()]
    finally:
        configure_logging(TEST_LOG_LEVEL, "console")  # as tests/conftest.py set it
    queued = [line for line in lines if line.get("event") == "job queued"]
    assert queued, "no 'job queued' line"
    assert queued[0]["chat_id"] == chat.id and queued[0]["user_id"] == alice.id
    assert len(queued[0]["job_id"]) == 36
    token = bot.fake.token
    assert all(token not in json.dumps(line) for line in lines)
