"""The real `animebot` as child processes, for the fault tests.

    bot = Animebot("bot", "run", env, tmp_path)
    await bot.start()
    await bot.wait_log("orchestrator started")
    await bot.kill9()          # SIGKILL, like a power cut
    await bot.start()          # a new process, logs in a new file
    await bot.stop()           # SIGTERM and wait; returns the exit code

Every process gets only the settings a test gives it (nothing from the developer's shell or a
`.env`: it runs in its own working directory), JSON logs on stderr (one file per start, parsed
by `records()`), and NO_PROXY for the fakes on 127.0.0.1. Processes run with asyncio, so the
fake servers in the test's event loop keep answering meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from core.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMMAND = [sys.executable, "-m", "bot.cli"]


def child_env(**settings: Any) -> dict[str, str]:
    """The environment of a child: no inherited setting, JSON logs, no proxy for 127.0.0.1."""
    names = {name.upper() for name in Settings.model_fields}
    env = {key: value for key, value in os.environ.items() if key.upper() not in names}
    env.update(
        {
            "PYTHONPATH": str(ROOT),
            "PYTHONUNBUFFERED": "1",
            "STATUS_PORT": "0",
            "LOG_FORMAT": "json",
            "LOG_LEVEL": "INFO",
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
        }
    )
    env.update({key.upper(): str(value) for key, value in settings.items() if value is not None})
    return env


class Animebot:
    """One `animebot <command>` that can be started, killed and started again."""

    def __init__(self, name: str, command: str, env: dict[str, str], workdir: Path) -> None:
        self.name = name
        self.command = command
        self.env = env
        self.cwd = workdir / f"{name}-cwd"
        self.cwd.mkdir(parents=True, exist_ok=True)
        self.logs: list[Path] = []
        self.exit_codes: list[int] = []
        self.started_at = 0.0  # time.monotonic() of the last start
        self.process: asyncio.subprocess.Process | None = None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    async def start(self, **extra_env: str) -> None:
        assert not self.running, f"{self.name} is already running"
        log = self.cwd.parent / f"{self.name}-{len(self.logs) + 1}.log"
        self.logs.append(log)
        self.started_at = time.monotonic()
        with log.open("wb") as stderr:
            self.process = await asyncio.create_subprocess_exec(
                *COMMAND,
                self.command,
                cwd=self.cwd,
                env={**self.env, **extra_env},
                stdin=asyncio.subprocess.DEVNULL,
                stdout=stderr,
                stderr=stderr,
            )

    async def kill9(self) -> None:
        """SIGKILL now (no clean-up of any kind) and reap the process."""
        assert self.process is not None and self.running, f"{self.name} is not running"
        self.process.send_signal(signal.SIGKILL)
        self.exit_codes.append(await self.process.wait())

    async def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM and wait for a clean exit (SIGKILL after `timeout`); the exit code."""
        if self.process is None:
            return 0
        if self.running:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), timeout)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
                self.exit_codes.append(-9)
                return -9
        code = self.process.returncode
        assert code is not None
        self.exit_codes.append(code)
        self.process = None
        return code

    async def ensure_stopped(self) -> None:
        """Test clean-up: whatever state it is in, no child is left behind."""
        if self.running:
            assert self.process is not None
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            await self.process.wait()

    # -- logs ------------------------------------------------------------------------------------

    def text(self, run: int | None = None) -> str:
        """The raw output of one run (1-based; None: all runs)."""
        paths = self.logs if run is None else [self.logs[run - 1]]
        return "".join(p.read_text(errors="replace") for p in paths if p.exists())

    def records(self, run: int | None = None) -> list[dict[str, Any]]:
        """The JSON log records of one run (None: all runs), each with `_run` added."""
        found: list[dict[str, Any]] = []
        runs = range(1, len(self.logs) + 1) if run is None else [run]
        for number in runs:
            path = self.logs[number - 1]
            if not path.exists():
                continue
            for line in path.read_text(errors="replace").splitlines():
                if not line.startswith("{"):
                    continue
                with contextlib.suppress(ValueError):
                    record = json.loads(line)
                    record["_run"] = number
                    found.append(record)
        return found

    def events(self, event: str, run: int | None = None) -> list[dict[str, Any]]:
        return [r for r in self.records(run) if r.get("event") == event]

    async def wait_log(self, event: str, timeout: float = 30.0) -> dict[str, Any]:
        """The first record `event` of the current run; fails if the process exits first."""
        deadline = time.monotonic() + timeout
        run = len(self.logs)
        while True:
            found = self.events(event, run)
            if found:
                return found[0]
            if not self.running:
                raise AssertionError(
                    f"{self.name} exited ({self.process and self.process.returncode}) before "
                    f"logging {event!r}:\n{self.text(run)[-4000:]}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{self.name} did not log {event!r} in {timeout} s:\n{self.text(run)[-4000:]}"
                )
            await asyncio.sleep(0.05)

    def problems(self) -> list[str]:
        """Tracebacks and error records of every run (a killed run ends mid-line: ignored)."""
        found = [
            f"run {r['_run']}: {r.get('event')} {r.get('exception', '')}"[:2000]
            for r in self.records()
            if r.get("level") in ("error", "critical")
        ]
        for number in range(1, len(self.logs) + 1):
            for line in self.text(number).splitlines():
                if line.startswith("Traceback"):
                    found.append(f"run {number}: a bare traceback")
        return found
