"""Shared machinery of the benchmarks: PostgreSQL, the fakes process, the bot, measurements."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import resource
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from core.db.migrate import migrate
from core.db.pool import connect, start_embedded_server
from core.runtime import Runtime
from core.settings import Settings, load_settings
from tests.engine import MODEL_INPUTS
from tests.webhook import free_port

PROJECT = Path(__file__).resolve().parents[2]
TEMPLATE = "animebot_perf_template"
WEBHOOK_SECRET = "perf-webhook-secret-0123456789"


# -- results ----------------------------------------------------------------------------------


@dataclass
class Metric:
    name: str
    value: str
    target: str = ""
    met: bool | None = None  # None: no target (reported only)


@dataclass
class BenchResult:
    title: str
    metrics: list[Metric] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)

    def add(self, name: str, value: str, target: str = "", met: bool | None = None) -> None:
        self.metrics.append(Metric(name, value, target, met))

    def note(self, text: str) -> None:
        self.notes.append(text)
        print(f"  {text}", flush=True)


def pct(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100); nan for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def dist_ms(values: Sequence[float]) -> str:
    """'median / p90 / p99' in ms."""
    return " / ".join(f"{pct(values, q) * 1000:.1f}" for q in (50, 90, 99)) + " ms"


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return math.nan


# -- database statements ----------------------------------------------------------------------


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def load_average() -> str:
    return " ".join(f"{v:.1f}" for v in os.getloadavg())


# -- event-loop lag ---------------------------------------------------------------------------


class LagSampler:
    """Sleeps `interval` again and again; how late it wakes is the loop's lag."""

    def __init__(self, interval: float = 0.01) -> None:
        self.interval = interval
        self.samples: list[tuple[float, float]] = []  # (time, lag)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="lag-sampler")

    async def _run(self) -> None:
        while True:
            before = time.monotonic()
            await asyncio.sleep(self.interval)
            now = time.monotonic()
            self.samples.append((now, max(0.0, now - before - self.interval)))

    def between(self, t0: float, t1: float) -> list[float]:
        return [lag for at, lag in self.samples if t0 <= at <= t1]

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


# -- PostgreSQL -------------------------------------------------------------------------------


def dsn_for(base: str, database: str) -> str:
    return urlunsplit(urlsplit(base)._replace(path="/" + database))


class Postgres:
    """The embedded server (or DATABASE_URL) with a migrated template; one database per bench."""

    def __init__(self, admin_dsn: str, server: Any = None) -> None:
        self.admin_dsn = admin_dsn
        self.server = server

    @classmethod
    async def start(cls, root: Path) -> Postgres:
        given = os.environ.get("DATABASE_URL")
        if given:
            pg = cls(given)
        else:
            server = await asyncio.to_thread(start_embedded_server, root / "pgdata")
            pg = cls(server.get_uri(), server)
        conn = await connect(pg.admin_dsn)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{TEMPLATE}"')
            await conn.execute(f'CREATE DATABASE "{TEMPLATE}"')
        finally:
            await conn.close()
        tconn = await connect(dsn_for(pg.admin_dsn, TEMPLATE))
        try:
            await migrate(tconn)
        finally:
            await tconn.close()
        return pg

    async def fresh(self) -> str:
        name = "perf_" + uuid.uuid4().hex[:12]
        conn = await connect(self.admin_dsn)
        try:
            await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{TEMPLATE}"')
        finally:
            await conn.close()
        return dsn_for(self.admin_dsn, name)


# -- the fakes process ------------------------------------------------------------------------


class Fakes:
    """Client of `tests.perf.fakes_host`, running in a subprocess."""

    def __init__(self, proc: asyncio.subprocess.Process, control: str) -> None:
        self.proc = proc
        self.control = control
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600))

    @classmethod
    async def start(cls, log_path: Path) -> Fakes:
        stderr = log_path.open("ab")
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.perf.fakes_host",
            cwd=PROJECT,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=stderr,
        )
        stderr.close()
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 60)
        if not line:
            raise RuntimeError(f"the fakes process did not start; see {log_path}")
        return cls(proc, json.loads(line)["control"])

    async def call(self, method: str, path: str, body: Any = None, **query: Any) -> Any:
        async with self.session.request(
            method, self.control + path, json=body, params=query or None
        ) as response:
            text = await response.text()
            if response.status >= 400:
                raise RuntimeError(f"{method} {path}: HTTP {response.status}: {text[:500]}")
            return json.loads(text) if text else None

    async def post(self, path: str, body: Any = None) -> Any:
        return await self.call("POST", path, body if body is not None else {})

    async def get(self, path: str, **query: Any) -> Any:
        return await self.call("GET", path, **query)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.post("/shutdown")
        await self.session.close()
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            await asyncio.wait_for(self.proc.wait(), 15)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()

    # conveniences
    async def new_comfy(self, models: dict[str, list[str]], **config: Any) -> tuple[int, str]:
        made = await self.post("/comfy", {"models": models})
        if config:
            await self.post(f"/comfy/{made['n']}/config", config)
        return int(made["n"]), str(made["url"])

    async def new_telegram(self) -> dict[str, str]:
        return dict(await self.post("/telegram"))

    async def comfy_marks(self, n: int, since: int = 0) -> dict[str, Any]:
        return dict(await self.get(f"/comfy/{n}/marks", since=since))

    async def telegram_calls(self, since: int = 0) -> dict[str, Any]:
        return dict(await self.get("/telegram/calls", since=since))


def comfy_models(settings: Settings) -> dict[str, list[str]]:
    """What a real ComfyUI would list for our configured model files (cf. tests.engine)."""
    models = {name: [getattr(settings, f) for f in fields] for name, fields in MODEL_INPUTS.items()}
    models["lora_name"] = ["sakura_v1.safetensors", "hero.safetensors"]
    return models


def default_models() -> dict[str, list[str]]:
    return comfy_models(load_settings(telegram_bot_token="1:x" + "a" * 30))


# -- settings and the bot ---------------------------------------------------------------------


def bench_settings(
    dsn: str,
    data_dir: Path,
    comfy_urls: Iterable[str],
    telegram: dict[str, str] | None = None,
    *,
    webhook: bool = False,
    **extra: Any,
) -> Settings:
    values: dict[str, Any] = {
        "database_url": dsn,
        "data_dir": data_dir,
        "comfyui_urls": ",".join(comfy_urls),
        "telegram_bot_token": "123456:TEST-TOKEN-abcdef",
        "status_port": 0,
        "admin_user_ids": [],
        "allowed_chat_ids": [],
        "jellyfin_url": None,
        "music_dir": None,
        "itunes_enabled": False,
        "telegram_webhook_url": None,
        "daily_quota": 1_000_000,
        "max_queued_per_user": 100_000,
    }
    if telegram is not None:
        values.update(
            telegram_bot_token=telegram["token"],
            telegram_api_base_url=telegram["api_url"],
            telegram_file_base_url=telegram["file_url"],
        )
    if webhook:
        port = free_port()
        values.update(
            telegram_webhook_url=f"http://127.0.0.1:{port}/telegram-hook",
            telegram_webhook_secret=WEBHOOK_SECRET,
            telegram_webhook_listen="127.0.0.1",
            telegram_webhook_port=port,
        )
    values.update(extra)
    return load_settings(**values)


@contextlib.asynccontextmanager
async def running_bot(
    settings: Settings, fakes: Fakes, *, time_scale: float = 1.0
) -> AsyncIterator[Runtime]:
    """The real bot (`run_bot`, as `animebot run` runs it) until the block ends."""
    from bot.app import run_bot

    runtime = await Runtime.start(settings, role="run")
    stop = asyncio.Event()
    task = asyncio.create_task(
        run_bot(settings, runtime, stop, time_scale=time_scale), name="run_bot"
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            if task.done():
                task.result()
                raise RuntimeError("run_bot returned during start-up")
            state = await fakes.telegram_calls(since=10**9)
            if state["webhook_set"] or not settings.telegram_webhook_url:
                break
            if time.monotonic() > deadline:
                raise RuntimeError("the bot did not set its webhook")
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)
        yield runtime
    finally:
        stop.set()
        try:
            await asyncio.wait_for(task, 30)
        finally:
            await runtime.stop()


async def wait_events(
    runtime: Runtime,
    until: Callable[[Any], bool],
    count: int,
    timeout: float,
    started: Callable[[], Awaitable[None]] | None = None,
) -> list[Any]:
    """Subscribe to the event bus, run `started`, collect `count` events matching `until`."""
    seen: list[Any] = []
    async with runtime.events.subscribe() as queue:
        if started is not None:
            await started()
        deadline = time.monotonic() + timeout
        while len(seen) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"only {len(seen)} of {count} events in {timeout:.0f} s")
            with contextlib.suppress(TimeoutError):
                event = await asyncio.wait_for(queue.get(), remaining)
                if until(event):
                    seen.append(event)
    return seen
