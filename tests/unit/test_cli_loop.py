"""`animebot` runs its event loop on uvloop where uvloop is installed (a dependency on Linux)."""

from __future__ import annotations

import asyncio
import sys

import pytest

from bot.cli import run_async


async def _loop_module() -> str:
    await asyncio.sleep(0)
    return type(asyncio.get_running_loop()).__module__


@pytest.mark.skipif(sys.platform == "win32", reason="uvloop does not exist on Windows")
def test_run_async_runs_on_uvloop() -> None:
    assert run_async(_loop_module()).startswith("uvloop")


def test_run_async_falls_back_to_asyncio_without_uvloop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # `import uvloop` raises ImportError
    assert run_async(_loop_module()).startswith("asyncio")
