"""Fixtures of the end-to-end tests: the real bot against the fakes (see harness.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from tests import log_capture
from tests.e2e.harness import BotHarness, Cluster, Logs, harness_settings, track_handling
from tests.engine import install_models
from tests.fakes.comfyui import FakeComfyUI
from tests.fakes.telegram import FakeTelegram

MakeBot = Callable[..., Awaitable[BotHarness]]


@pytest.fixture(autouse=True)
def handling(monkeypatch: pytest.MonkeyPatch) -> None:
    """Which updates the bots are handling, for `BotHarness.wait_reply` (see harness.py)."""
    track_handling(monkeypatch)


json_logs = log_capture.logs  # the log lines as JSON at INFO while the test runs


@pytest.fixture
def logs(json_logs: log_capture.Logs) -> Logs:
    """The bot's log lines while the test runs: `logs.of(event)`, `logs.crashes()`."""
    return Logs(json_logs.stream)


@pytest.fixture
async def make_bot(
    fake_telegram: FakeTelegram, fake_comfy: FakeComfyUI, pg_dsn: str, tmp_path: Path
) -> AsyncIterator[MakeBot]:
    """`bot = await make_bot(**settings)`: start the real bot with setting overrides."""
    started: list[BotHarness] = []

    async def make(**overrides: Any) -> BotHarness:
        settings = harness_settings(
            fake_telegram, fake_comfy.base_url, pg_dsn, tmp_path / "data", **overrides
        )
        harness = BotHarness(fake_telegram, settings)
        await harness.start()
        started.append(harness)
        return harness

    yield make
    for harness in reversed(started):
        await harness.close()


@pytest.fixture
async def bot_harness(make_bot: MakeBot) -> BotHarness:
    """The bot with default settings, started and polling."""
    return await make_bot()


@pytest.fixture
async def studio(make_bot: MakeBot, fake_comfy: FakeComfyUI) -> BotHarness:
    """The bot, with the fake GPU server offering the default models of every workflow."""
    install_models(fake_comfy)
    return await make_bot()


@pytest.fixture
async def cluster(
    fake_telegram: FakeTelegram, fake_comfy: FakeComfyUI, pg_dsn: str, tmp_path: Path
) -> AsyncIterator[Cluster]:
    """No bot yet: `await cluster.start_bot(**settings)` starts each one behind the balancer."""
    install_models(fake_comfy)
    cluster = Cluster(fake_telegram, fake_comfy.base_url, pg_dsn, tmp_path / "data")
    await cluster.balancer.start()
    try:
        yield cluster
    finally:
        await cluster.close()
