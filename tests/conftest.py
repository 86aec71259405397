"""Shared test set-up: fixtures of the fake servers and the real embedded PostgreSQL, and the
bot's own logging for every test."""

import os

import pytest

from core.logs import configure_logging

# Local fake servers must never go through a proxy.
os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")
os.environ.setdefault("no_proxy", "127.0.0.1,localhost")

pytest_plugins = [
    "tests.fakes.comfyui",
    "tests.fakes.telegram",
    "tests.fakes.jellyfin",
    "tests.fakes.itunes",
    "tests.pg",
]

TEST_LOG_LEVEL = "WARNING"


@pytest.fixture(autouse=True, scope="session")
def bot_logging() -> None:
    """Every test logs as `animebot` does (core.logs: one formatter, the secrets redactor, plain
    tracebacks), at TEST_LOG_LEVEL. Left unconfigured, structlog prints each logged exception
    with rich and all its local variables: under load, seconds of blocked event loop per error
    (the database-down test then missed its deadline)."""
    configure_logging(TEST_LOG_LEVEL, "console")
