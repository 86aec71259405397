"""A load balancer in front of several bots in webhook mode, as tests need one.

The fake Bot API POSTs every update to one webhook URL (`url`); the balancer forwards each POST
to the bot port `route(update_id)` picks and passes the answer (status and body) back. A bot
that cannot be reached answers 502, so the fake retries the update, as Telegram does.
Subclasses choose the routing: `RoundRobin`, or `Planned` (the test names the bot per update).
"""

from __future__ import annotations

import itertools
import json
from collections import Counter, deque

import aiohttp
from aiohttp import web

FORWARD_TIMEOUT_S = 10.0
_HEADERS = ("content-type", "x-telegram-bot-api-secret-token")


class WebhookBalancer:
    def __init__(self, path: str) -> None:
        self.path = path
        self.url = ""
        self.forwarded: Counter[int] = Counter()  # port -> POSTs forwarded
        self.statuses: Counter[int] = Counter()  # status -> answers
        self.handled: list[tuple[int, int]] = []  # (update id, port) answered 200
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    def route(self, update_id: int) -> int | None:
        """The port of the bot for this update; None answers 500 (nobody to send it to)."""
        raise NotImplementedError

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post(f"/{self.path}", self._forward)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}/{self.path}"
        self._session = aiohttp.ClientSession()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _forward(self, request: web.Request) -> web.Response:
        assert self._session is not None
        body = await request.read()
        update_id = int(json.loads(body)["update_id"])
        port = self.route(update_id)
        if port is None:
            return web.Response(status=500, text="no bot chosen for this update")
        headers = {k: v for k, v in request.headers.items() if k.lower() in _HEADERS}
        try:
            async with self._session.post(
                f"http://127.0.0.1:{port}/{self.path}",
                data=body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=FORWARD_TIMEOUT_S),
            ) as answer:
                payload = await answer.read()
                status = answer.status
        except (aiohttp.ClientError, TimeoutError):
            status, payload = 502, b""  # that bot is down or still starting
        self.forwarded[port] += 1
        self.statuses[status] += 1
        if status == 200:
            self.handled.append((update_id, port))
        return web.Response(status=status, body=payload)


class RoundRobin(WebhookBalancer):
    """Each POST goes to the next bot."""

    def __init__(self, path: str, ports: list[int]) -> None:
        super().__init__(path)
        self.ports = ports
        self._turn = itertools.cycle(ports)

    def route(self, update_id: int) -> int | None:
        return next(self._turn)


class Planned(WebhookBalancer):
    """Each update goes to the bot the test chose for it (`plan`, in the order the updates
    were sent); a retried update goes to the same bot."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.plan: deque[int] = deque()
        self.assigned: dict[int, int] = {}

    def route(self, update_id: int) -> int | None:
        if update_id not in self.assigned:
            if not self.plan:
                return None
            self.assigned[update_id] = self.plan.popleft()
        return self.assigned[update_id]
