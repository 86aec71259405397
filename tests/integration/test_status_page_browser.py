"""The status page in a real headless Chromium: it lists a job that runs while the page is open.

Chromium is driven over the Chrome DevTools Protocol with aiohttp's WebSocket client (no extra
Python package). It must be installed (Debian: `apt-get install -y chromium`); the test fails,
never skips, when it is missing. Set CHROMIUM=/path/to/chrome to use another binary.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import shutil
import signal
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from uuid import uuid4

import aiohttp
import pytest

from core.events import JobEvent
from core.states import JobState
from tests.integration.engine_kit import submit, wait_all
from tests.integration.test_status_server import STATUS_TOKEN, status_stack

BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
START_TIMEOUT_S = 30.0
CALL_TIMEOUT_S = 10.0


def find_chromium() -> str:
    given = os.environ.get("CHROMIUM")
    if given:
        if not os.access(given, os.X_OK):
            pytest.fail(f"CHROMIUM={given} is not an executable file")
        return given
    for name in BROWSER_NAMES:
        path = shutil.which(name)
        if path:
            return path
    pytest.fail(
        "Chromium is not installed, and the status page browser test needs a real browser. "
        "Install it (Debian/Ubuntu, as root): `apt-get update && apt-get install -y chromium`, "
        "or set CHROMIUM=/path/to/chrome.",
        pytrace=False,
    )


class DevTools:
    """A minimal Chrome DevTools Protocol client for one page target."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.problems: list[str] = []  # uncaught exceptions and console/CSP errors
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for message in self.ws:
            if message.type is not aiohttp.WSMsgType.TEXT:
                continue
            data = json.loads(message.data)
            if "id" in data:
                future = self._pending.pop(data["id"], None)
                if future is not None and not future.done():
                    future.set_result(data)
            elif data.get("method") == "Runtime.exceptionThrown":
                details = data["params"]["exceptionDetails"]
                self.problems.append(f"exception: {details.get('exception', details)}")
            elif data.get("method") == "Log.entryAdded":
                entry = data["params"]["entry"]
                if entry.get("level") == "error" and entry.get("source") != "network":
                    self.problems.append(f"{entry.get('source')}: {entry.get('text')}")
            elif (
                data.get("method") == "Runtime.consoleAPICalled"
                and data["params"].get("type") == "error"
            ):
                self.problems.append(f"console.error: {data['params'].get('args')}")
        for future in self._pending.values():
            if not future.done():
                future.set_exception(ConnectionError("DevTools connection closed"))

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        call_id = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[call_id] = future
        await self.ws.send_str(json.dumps({"id": call_id, "method": method, "params": params}))
        answer = await asyncio.wait_for(future, CALL_TIMEOUT_S)
        if "error" in answer:
            raise AssertionError(f"DevTools {method} failed: {answer['error']}")
        result: dict[str, Any] = answer.get("result", {})
        return result

    async def evaluate(self, expression: str) -> Any:
        result = await self.call(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            raise AssertionError(f"page script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def wait_for(self, expression: str, timeout: float = 20.0, what: str = "") -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = await self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                text = await self.evaluate("document.body.innerText")
                raise AssertionError(f"{what or expression} not seen in {timeout} s; page:\n{text}")
            await asyncio.sleep(0.05)

    async def close(self) -> None:
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
        await self.ws.close()


async def _devtools_port(profile: Path, process: asyncio.subprocess.Process) -> int:
    marker = profile / "DevToolsActivePort"
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if marker.is_file():
            lines = marker.read_text().splitlines()
            if lines and lines[0].strip().isdigit():
                return int(lines[0])
        if process.returncode is not None:
            raise AssertionError(f"chromium exited at start with code {process.returncode}")
        if time.monotonic() > deadline:
            raise AssertionError(f"chromium wrote no {marker} within {START_TIMEOUT_S} s")
        await asyncio.sleep(0.05)


@asynccontextmanager
async def chromium_page(http: aiohttp.ClientSession) -> AsyncIterator[DevTools]:
    executable = find_chromium()
    with tempfile.TemporaryDirectory(prefix="animebot-chromium-") as folder:
        profile = Path(folder)
        process = await asyncio.create_subprocess_exec(
            executable,
            "--headless=new",
            "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0",
            f"--user-data-dir={profile}",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--no-default-browser-check",
            "--no-proxy-server",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "about:blank",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            start_new_session=True,  # its own process group: stopped as a whole, by its id
        )
        try:
            port = await _devtools_port(profile, process)
            async with http.get(f"http://127.0.0.1:{port}/json/list") as response:
                targets = await response.json()
            page = next(t for t in targets if t.get("type") == "page")
            ws = await http.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0)
            tools = DevTools(ws)
            try:
                for domain in ("Page", "Runtime", "Log"):
                    await tools.call(f"{domain}.enable")
                yield tools
            finally:
                await tools.close()
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                await process.wait()


ROWS = """
Array.from(document.querySelectorAll('#%s tr[data-job]'))
     .map(r => r.dataset.job + ':' + r.dataset.status).join(' ')
"""


async def test_page_lists_a_job_that_runs_while_it_is_open(
    pg_dsn: str, fake_comfy: Any, fake_telegram: Any, tmp_path: Path, monkeypatch: Any
) -> None:
    async with (
        status_stack(pg_dsn, fake_comfy, fake_telegram, tmp_path, monkeypatch) as s,
        chromium_page(s.http) as page,
    ):
        # A job from before the page opened comes from the snapshot.
        earlier = await submit(s.runtime, 3, "a fox in the snow --steps 2")
        await wait_all(s.runtime, [earlier])

        await page.call("Page.navigate", url=f"{s.server.url}/?token={STATUS_TOKEN}")
        await page.wait_for(
            "document.getElementById('conn') && document.getElementById('conn').dataset.state"
            " === 'live'",
            what="the live feed connected",
        )
        await page.wait_for(
            f"({ROWS % 'recent'}).includes('{str(earlier)[:8]}:done')",
            what="the earlier job from the snapshot",
        )

        fake_comfy.step_delay_s = 0.1
        job_id = await submit(s.runtime, 7, "a girl reading a book --steps 12")
        prefix = str(job_id)[:8]
        active = await page.wait_for(
            f"(() => {{ const rows = {ROWS % 'active'};"
            f" return /{prefix}:(submitted|running)/.test(rows) ? rows : ''; }})()",
            what="the running job in the Active table",
        )
        assert f"{prefix}:" in active
        (finished,) = await wait_all(s.runtime, [job_id])
        assert finished.status is JobState.DONE, finished.error
        await page.wait_for(
            f"({ROWS % 'recent'}).includes('{prefix}:done')"
            f" && !({ROWS % 'active'}).includes('{prefix}')",
            what="the finished job moved to Recent",
        )
        # Kind and creation time come from a snapshot the page fetches for a job it first
        # met through the feed.
        row = f"document.querySelector('#recent tr[data-job=\"{prefix}\"]').innerText"
        row_text = await page.wait_for(
            f"(() => {{ const t = {row}; return /image/.test(t) && /100%/.test(t) ? t : ''; }})()",
            what="the finished job's kind",
        )
        cells = row_text.split("\t")
        assert cells[:3] == [prefix, "image", "done"] and cells[5] == "7", cells
        assert cells[6].strip(), cells  # created

        # Text from events is shown as text, never parsed as HTML.
        hostile = '<img src=x onerror="window.__owned=1"><b>bold</b>'
        s.runtime.events.publish(
            JobEvent(job_id=uuid4(), type="state", status="failed", chat_id=9, message=hostile),
            broadcast=False,
        )
        await page.wait_for(
            f"document.getElementById('recent').innerText.includes({json.dumps(hostile)})",
            what="the hostile message shown literally",
        )
        injected = await page.evaluate(
            "document.querySelectorAll('#recent img, #recent b').length + (window.__owned || 0)"
        )
        assert injected == 0
        assert page.problems == [], page.problems
