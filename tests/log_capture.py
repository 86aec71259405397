"""The bot's log lines while a test runs, as production writes them (JSON at INFO), for tests
that check what was logged: the `logs` fixture (import it into a test module or conftest)."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from core.logs import configure_logging
from tests.conftest import TEST_LOG_LEVEL


@dataclass
class Logs:
    stream: io.StringIO

    @property
    def text(self) -> str:
        return self.stream.getvalue()

    def lines(self, event: str) -> list[dict[str, Any]]:
        parsed = [json.loads(line) for line in self.text.splitlines() if line.strip()]
        return [line for line in parsed if line.get("event") == event]


@pytest.fixture
def logs() -> Iterator[Logs]:
    stream = io.StringIO()
    configure_logging("INFO", "json", stream=stream)
    try:
        yield Logs(stream)
    finally:
        configure_logging(TEST_LOG_LEVEL, "console")  # as tests/conftest.py set it
