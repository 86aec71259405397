"""Shared test set-up: fixtures of the fake servers and the real embedded PostgreSQL."""

import os

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
