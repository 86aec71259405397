"""The one long-lived WebSocket to a ComfyUI backend, reconnecting until closed.

`subscribe(prompt_id)` returns a queue of that prompt's events. Events seen before anyone
subscribed are buffered for a while (a fast job can finish before `POST /prompt` returns).
When the socket goes down each subscriber gets a `Disconnected` event; after every
reconnection a `Reconnected` event, and the `on_reconnect` callbacks run, because events sent
while the socket was down are lost: read `/history`.
A heartbeat (ping/pong) detects a half-dead connection.
With `preview_metadata` (default) the server sends type-4 previews that name their prompt;
otherwise type-1 previews are attributed to the prompt currently executing.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import random
import time
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Self

import aiohttp

from core.comfy.protocol import Event, Executing, parse_binary, parse_text
from core.comfy.routing import EventRouter, RouterLimits
from core.errors import describe
from core.logs import get_logger

log = get_logger(__name__)

ReconnectCallback = Callable[[], Awaitable[None] | None]

_MAX_MSG_SIZE = 64 * 1024 * 1024
_FEATURE_FLAGS = {"type": "feature_flags", "data": {"supports_preview_metadata": True}}


def backoff_delay(attempt: int, initial_s: float, max_s: float, rng: random.Random) -> float:
    """Capped exponential backoff with jitter in [50%, 100%] of the step."""
    step: float = min(max_s, initial_s * 2.0 ** min(attempt, 30))
    return step * (0.5 + rng.random() / 2)


def ws_url(base_url: str, client_id: str) -> str:
    base = base_url.rstrip("/")
    if base.startswith("https://"):
        base = "wss://" + base[len("https://") :]
    elif base.startswith("http://"):
        base = "ws://" + base[len("http://") :]
    return f"{base}/ws?clientId={client_id}"


class ComfySocket:
    """`await start()` once, `subscribe()` per prompt, `await close()` at the end."""

    def __init__(
        self,
        base_url: str,
        client_id: str,
        session: aiohttp.ClientSession | None = None,
        *,
        connect_timeout_s: float = 10,
        heartbeat_s: float = 15,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 30,
        limits: RouterLimits | None = None,
        rng: random.Random | None = None,
        preview_metadata: bool = True,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.client_id = client_id
        self.url = ws_url(base_url, client_id)
        self.connect_timeout_s = connect_timeout_s
        self.heartbeat_s = heartbeat_s
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.preview_metadata = preview_metadata
        self.connected = asyncio.Event()
        self.on_reconnect: list[ReconnectCallback] = []
        self.connections = 0  # successful connects so far
        self._router = EventRouter(limits)
        self._session = session
        self._owns_session = session is None
        self._rng = rng or random.Random()
        self._closing = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._callback_tasks: set[asyncio.Task[None]] = set()

    # -- public --------------------------------------------------------------------
    @property
    def is_connected(self) -> bool:
        return self.connected.is_set()

    @property
    def queue_remaining(self) -> int | None:
        """Last `status` seen, None before the first one."""
        return self._router.queue_remaining

    @property
    def current_prompt_id(self) -> str | None:
        return self._router.current_prompt_id

    def subscribe(self, prompt_id: str) -> asyncio.Queue[Event]:
        """Queue of `prompt_id`'s events, starting with any buffered ones."""
        return self._router.subscribe(prompt_id, time.monotonic())

    def unsubscribe(self, prompt_id: str) -> None:
        self._router.unsubscribe(prompt_id)

    def add_reconnect_callback(self, callback: ReconnectCallback) -> None:
        self.on_reconnect.append(callback)

    async def start(self) -> None:
        if self._task is None or self._task.done():
            self._closing.clear()
            self._task = asyncio.create_task(self._run(), name=f"comfy-ws {self.base_url}")

    async def wait_connected(self, timeout_s: float) -> bool:
        try:
            async with asyncio.timeout(timeout_s):
                await self.connected.wait()
        except TimeoutError:
            return False
        return True

    async def close(self) -> None:
        self._closing.set()
        ws = self._ws
        if ws is not None and not ws.closed:
            await ws.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for task in list(self._callback_tasks):
            task.cancel()
        self.connected.clear()
        if self._owns_session and self._session is not None and not self._session.closed:
            await self._session.close()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- loop ----------------------------------------------------------------------
    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
            self._owns_session = True
        return self._session

    async def _run(self) -> None:
        attempt = 0
        while not self._closing.is_set():
            try:
                async with asyncio.timeout(self.connect_timeout_s):
                    ws = await self._get_session().ws_connect(
                        self.url,
                        heartbeat=self.heartbeat_s,
                        max_msg_size=_MAX_MSG_SIZE,
                        timeout=aiohttp.ClientWSTimeout(ws_close=5.0),
                    )
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                delay = backoff_delay(
                    attempt, self.backoff_initial_s, self.backoff_max_s, self._rng
                )
                attempt += 1
                log.info(
                    "comfy ws connect failed",
                    url=self.base_url,
                    error=describe(exc),
                    retry_in_s=round(delay, 2),
                )
                await self._sleep(delay)
                continue
            attempt = 0
            self._ws = ws
            try:
                if self.preview_metadata:
                    await ws.send_json(_FEATURE_FLAGS)
                self.connections += 1
                self.connected.set()
                log.info("comfy ws connected", url=self.base_url, connections=self.connections)
                if self.connections > 1 or self._router.subscribed:
                    self._after_reconnect()
                await self._receive(ws)
            except (aiohttp.ClientError, OSError, RuntimeError) as exc:
                log.info("comfy ws error", url=self.base_url, error=describe(exc))
            finally:
                self.connected.clear()
                self._ws = None
                if not self._closing.is_set():
                    self._router.notify_disconnected()
                if not ws.closed:
                    await ws.close()
            if not self._closing.is_set():
                delay = backoff_delay(0, self.backoff_initial_s, self.backoff_max_s, self._rng)
                log.warning("comfy ws disconnected", url=self.base_url, retry_in_s=round(delay, 2))
                await self._sleep(delay)

    async def _receive(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for message in ws:
            if message.type == aiohttp.WSMsgType.TEXT:
                event = parse_text(message.data)
            elif message.type == aiohttp.WSMsgType.BINARY:
                event = parse_binary(message.data)
            elif message.type == aiohttp.WSMsgType.ERROR:
                log.info("comfy ws receive error", url=self.base_url, error=str(ws.exception()))
                return
            else:
                continue
            routed = self._router.route(event, time.monotonic())
            if isinstance(event, Executing) and event.node is None:
                log.debug("comfy prompt finished", prompt_id=routed)

    async def _sleep(self, delay: float) -> None:
        try:
            async with asyncio.timeout(delay):
                await self._closing.wait()
        except TimeoutError:
            pass

    def _after_reconnect(self) -> None:
        prompt_ids = self._router.notify_reconnected()
        log.info("comfy ws reconnected", url=self.base_url, subscribed=len(prompt_ids))
        for callback in list(self.on_reconnect):
            try:
                result = callback()
            except Exception:
                log.exception("comfy on_reconnect callback failed", url=self.base_url)
                continue
            if inspect.isawaitable(result):
                task = asyncio.ensure_future(self._await_callback(result))
                self._callback_tasks.add(task)
                task.add_done_callback(self._callback_tasks.discard)

    async def _await_callback(self, result: Awaitable[None]) -> None:
        try:
            await result
        except Exception:
            log.exception("comfy on_reconnect callback failed", url=self.base_url)
