"""Every Bot API call the bot makes is counted for /metrics, by method and outcome."""

from __future__ import annotations

import asyncio
import time

from core.metrics import METRICS
from tests.e2e.harness import BotHarness
from tests.metric_values import telegram_api_calls


async def _until(predicate: object, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        await asyncio.sleep(0.02)
    return False


async def test_telegram_calls_and_429s_are_counted(bot_harness: BotHarness) -> None:
    bot = bot_harness
    alice = bot.fake.user("Alice")
    chat = bot.fake.private_chat(alice)
    sent_before = telegram_api_calls("sendMessage", "200")
    limited_before = telegram_api_calls("sendMessage", "429")

    bot.fake.fail_next("sendMessage", 1, kind=429, retry_after=1)
    await bot.wait_reply(bot.send(chat, alice, "/start"), contains="Anime Studio")

    # The fake stores the message before the bot has read the answer: wait for the count.
    assert await _until(lambda: telegram_api_calls("sendMessage", "200") >= sent_before + 1)
    assert telegram_api_calls("sendMessage", "429") == limited_before + 1
    token = bot.settings.token()
    for metric in METRICS.registry.collect():
        for sample in metric.samples:
            assert token not in str(sample.labels)
