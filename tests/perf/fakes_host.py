"""The fakes in a process of their own, so their CPU time never lands on the bot's event loop.

    python -m tests.perf.fakes_host      # prints {"control": "http://127.0.0.1:PORT"} and serves

A small JSON control API (see `Host._routes`) creates fake ComfyUI servers and one fake Bot API,
steers them (hold/release, delays, flood model) and returns what they saw, with
`time.monotonic()` stamps: CLOCK_MONOTONIC is one clock for every process of the machine, so the
benchmark compares them with its own. The host exits on POST /shutdown or when stdin closes.

Instrumentation added to the fakes:
  ComfyUI   per prompt: `posted` (POST /prompt arrived), `start` (worker took it), `end` (just
            before `executing{node:null}` is sent); per HTTP request: route, arrival, handler end.
            `job_delay_s` makes every job last that long (on top of the fake's own work).
  Telegram  per API call: arrival (request headers read) and handler end; webhook POST start per
            update_id; an optional time-scaled flood model (`scale` x faster buckets).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from tests.fakes.comfyui import FakeComfyUI
from tests.fakes.telegram import (
    MAX_UPLOAD_BYTES,
    FakeChat,
    FakeTelegram,
    FloodModel,
    FloodViolation,
    JSONDict,
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_CALL_BOX: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "perf_call_box", default=None
)


class TimedComfy(FakeComfyUI):
    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.job_delay_s = 0.0
        self.marks: dict[str, dict[str, float]] = {}
        self.served: list[tuple[str, str, float, float]] = []  # method, route, t0, t1
        self.keep_requests = True

    def _mark(self, prompt_id: str, name: str, at: float) -> None:
        self.marks.setdefault(prompt_id, {})[name] = at

    @web.middleware
    async def _record(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        t0 = time.monotonic()
        route = request.path[4:] if request.path.startswith("/api/") else request.path
        if route == "/ws":
            return await handler(request)
        try:
            if self.keep_requests:
                return await super()._record(request, handler)
            return await handler(request)
        finally:
            t1 = time.monotonic()
            self.served.append((request.method, route, t0, t1))
            if request.method == "POST" and route == "/prompt":
                with contextlib.suppress(ValueError, TypeError, AttributeError):
                    body = json.loads(await request.read())
                    self._mark(str(body.get("prompt_id")), "posted", t0)

    async def _execute(self, job: Any) -> None:
        self._mark(job.prompt_id, "start", time.monotonic())
        if self.job_delay_s > 0:
            await asyncio.sleep(self.job_delay_s)
        await super()._execute(job)

    async def _emit(self, kind: str, data: Any, sid: str | None) -> None:
        if kind == "executing" and isinstance(data, dict) and data.get("node") is None:
            self._mark(str(data.get("prompt_id")), "end", time.monotonic())
        await super()._emit(kind, data, sid)


class ScaledFloodModel(FloodModel):
    """Telegram's buckets on a clock `scale` times faster (waits reported in real seconds)."""

    scale: float = 1.0

    def check(self, chat: FakeChat | None, method: str, now: float) -> list[FloodViolation]:
        found = super().check(chat, method, now * self.scale)
        return [
            FloodViolation(now, v.chat_id, v.method, v.rule, v.wait / self.scale) for v in found
        ]


class TimedTelegram(FakeTelegram):
    def __init__(self) -> None:
        super().__init__()
        self.arrived: dict[int, float] = {}  # index in calls -> request arrival
        self.finished: dict[int, float] = {}  # index in calls -> handler end
        self.webhook_started: dict[int, float] = {}  # update_id -> POST start
        self.reply_waiters: dict[int, asyncio.Future[float]] = {}  # chat_id -> reply arrival

    async def start(self) -> None:  # FakeTelegram.start plus a timing middleware
        app = web.Application(
            client_max_size=MAX_UPLOAD_BYTES + 1024 * 1024, middlewares=[self._stamp]
        )
        app.router.add_route("*", "/bot{token}/{method}", self._handle_api)
        app.router.add_get("/file/bot{token}/{path:.+}", self._handle_file)
        self._runner = web.AppRunner(
            app, handler_cancellation=True, shutdown_timeout=1.0, access_log=None
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, backlog=1024)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"

    @web.middleware
    async def _stamp(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        box: dict[str, Any] = {"t0": time.monotonic()}
        _CALL_BOX.set(box)
        try:
            return await handler(request)
        finally:
            index = box.get("index")
            if index is not None:
                self.finished[index] = time.monotonic()

    def _take_failure(self, method: str, p: Any) -> Any:
        # Called right after the ApiCall is appended, with no await in between.
        box = _CALL_BOX.get()
        if box is not None:
            box["index"] = len(self.calls) - 1
            self.arrived[box["index"]] = box["t0"]
            waiter = self.reply_waiters.get(p.get("chat_id"))
            if method == "sendMessage" and waiter is not None and not waiter.done():
                waiter.set_result(box["t0"])
        return super()._take_failure(method, p)

    async def post_to_webhook(self, update: JSONDict, *, secret: Any = False) -> int:
        self.webhook_started[int(update["update_id"])] = time.monotonic()
        return await super().post_to_webhook(update, secret=secret)

    def call_summary(self, index: int) -> JSONDict:
        call = self.calls[index]
        media = call.params.get("media")
        return {
            "i": index,
            "method": call.method,
            "chat_id": call.params.get("chat_id"),
            "message_id": call.params.get("message_id"),
            "at": self.arrived.get(index, call.at),
            "end": self.finished.get(index),
            "status": call.status,
            "error": call.error,
            "files": sorted(u.filename or "" for u in call.files.values()),
            "media_type": media.get("type") if isinstance(media, dict) else None,
            "result_message_id": call.result.get("message_id")
            if isinstance(call.result, dict)
            else None,
        }


class Host:
    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="animebot-perf-fakes-"))
        self.comfy: list[TimedComfy] = []
        self.telegram: TimedTelegram | None = None
        self.stopped = asyncio.Event()
        self._session: aiohttp.ClientSession | None = None

    # -- helpers ---------------------------------------------------------------------------------
    def _c(self, request: web.Request) -> TimedComfy:
        return self.comfy[int(request.match_info["n"])]

    @property
    def tg(self) -> TimedTelegram:
        assert self.telegram is not None
        return self.telegram

    @staticmethod
    async def _body(request: web.Request) -> dict[str, Any]:
        raw = await request.read()
        return json.loads(raw) if raw else {}

    # -- ComfyUI ---------------------------------------------------------------------------------
    async def comfy_new(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        server = TimedComfy(self.root / f"comfy{len(self.comfy)}")
        server.models = body.get("models") or {}
        await server.start()
        self.comfy.append(server)
        return web.json_response({"n": len(self.comfy) - 1, "url": server.base_url})

    async def comfy_config(self, request: web.Request) -> web.Response:
        server = self._c(request)
        for key, value in (await self._body(request)).items():
            if key not in ("step_delay_s", "node_delay_s", "job_delay_s", "keep_requests"):
                raise web.HTTPBadRequest(text=f"unknown setting {key}")
            setattr(server, key, value)
        return web.json_response({})

    async def comfy_hold(self, request: web.Request) -> web.Response:
        self._c(request).hold()
        return web.json_response({})

    async def comfy_release(self, request: web.Request) -> web.Response:
        self._c(request).release()
        return web.json_response({})

    async def comfy_state(self, request: web.Request) -> web.Response:
        server = self._c(request)
        return web.json_response(
            {
                "pending": len(server.pending_ids),
                "running": server.running is not None,
                "history": len(server.history),
                "requests": len(server.served),
            }
        )

    async def comfy_state_all(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "pending": [len(server.pending_ids) for server in self.comfy],
                "requests": sum(len(server.served) for server in self.comfy),
            }
        )

    async def comfy_marks(self, request: web.Request) -> web.Response:
        server = self._c(request)
        since = int(request.query.get("since", "0"))
        return web.json_response(
            {"marks": server.marks, "served": server.served[since:], "next": len(server.served)}
        )

    async def comfy_clear(self, request: web.Request) -> web.Response:
        server = self._c(request)
        server.marks.clear()
        server.served.clear()
        server.requests.clear()
        return web.json_response({})

    # -- Telegram --------------------------------------------------------------------------------
    async def tg_new(self, request: web.Request) -> web.Response:
        if self.telegram is not None:
            await self.telegram.close()
        self.telegram = TimedTelegram()
        await self.telegram.start()
        return web.json_response(
            {"token": self.tg.token, "api_url": self.tg.api_url, "file_url": self.tg.file_url}
        )

    async def tg_flood(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        scale = float(body.pop("scale", 1.0))
        model = ScaledFloodModel(**body)
        model.scale = scale
        self.tg.flood_model = model
        self.tg.flood_violations.clear()
        return web.json_response({})

    async def tg_users(self, request: web.Request) -> web.Response:
        """{"n": N, "private": bool} -> N new users (with their private chats)."""
        body = await self._body(request)
        users = []
        for index in range(int(body["n"])):
            user = self.tg.user(f"{body.get('prefix', 'User')}{index}")
            if body.get("private", True):
                self.tg.private_chat(user)
            users.append(user.id)
        return web.json_response({"users": users})

    async def tg_group(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        members = [self.tg.users[int(u)] for u in body.get("members", [])]
        chat = self.tg.group(body.get("title", "Perf group"), members=members)
        return web.json_response({"chat_id": chat.id})

    async def tg_send(self, request: web.Request) -> web.Response:
        """A user writes `text` in a chat; the fake delivers it (webhook or getUpdates)."""
        body = await self._body(request)
        chat = self.tg.chats[int(body["chat_id"])]
        user = self.tg.users[int(body["user_id"])]
        update = self.tg.inject_message(chat, user, str(body["text"]))
        return web.json_response(
            {
                "update_id": update["update_id"] if update else None,
                "message_id": update["message"]["message_id"] if update else None,
                "at": time.monotonic(),
            }
        )

    async def tg_calls(self, request: web.Request) -> web.Response:
        since = int(request.query.get("since", "0"))
        skip = {"getUpdates"}
        calls = [
            self.tg.call_summary(i)
            for i in range(since, len(self.tg.calls))
            if self.tg.calls[i].method not in skip
        ]
        return web.json_response(
            {
                "calls": calls,
                "next": len(self.tg.calls),
                "violations": len(self.tg.flood_violations),
                "violation_details": [
                    {"at": v.at, "rule": v.rule, "method": v.method, "wait_s": v.wait}
                    for v in self.tg.flood_violations[:20]
                ],
                "webhook_started": self.tg.webhook_started,
                "webhook_set": bool(self.tg.webhook_url),
                "internal_errors": self.tg.internal_errors[-5:],
            }
        )

    async def tg_wait_delivery(self, request: web.Request) -> web.Response:
        """Long-poll: the first call from index `since` to `chat_id` uploading `*suffix`."""
        body = await self._body(request)
        chat_id, since = int(body["chat_id"]), int(body.get("since", 0))
        suffix = str(body.get("suffix", "_telegram.jpg"))
        state = {"next": since}

        def find() -> int | None:
            calls = self.tg.calls
            for index in range(state["next"], len(calls)):
                call = calls[index]
                if call.params.get("chat_id") != chat_id:
                    continue
                if any((u.filename or "").endswith(suffix) for u in call.files.values()):
                    return index
            state["next"] = len(calls)
            return None

        try:
            index = await self.tg.wait_for(find, float(body.get("timeout", 30)), what="delivery")
        except AssertionError as error:
            return web.json_response({"error": str(error)}, status=504)
        return web.json_response(self.tg.call_summary(index))

    async def tg_webhook_load(self, request: web.Request) -> web.Response:
        """`concurrency` simulated users, closed loop: each POSTs an update (`text` from a new
        user in a new private chat) to the bot's webhook, waits for the bot's sendMessage to
        that chat, then sends the next; `n` updates in all. Per update: POST start, POST end,
        reply arrival (None when no reply came within `reply_timeout`)."""
        body = await self._body(request)
        n, concurrency = int(body["n"]), int(body.get("concurrency", 32))
        text = str(body.get("text", "/start"))
        reply_timeout = float(body.get("reply_timeout", 30))
        tg = self.tg
        if not tg.webhook_url:
            raise web.HTTPConflict(text="no webhook set")
        updates: list[tuple[int, JSONDict]] = []
        for index in range(n):
            user = tg.user(f"Load{index}")
            chat = tg.private_chat(user)
            update = tg.inject_message(chat, user, text)
            assert update is not None
            tg._updates.remove(update)  # POSTed below, not by the fake's sequential task
            updates.append((chat.id, update))
        pending = iter(updates)
        headers = {"X-Telegram-Bot-Api-Secret-Token": tg.webhook_secret or ""}
        results: list[list[float | None]] = []
        statuses: list[int] = []
        loop = asyncio.get_running_loop()
        connector = aiohttp.TCPConnector(limit=concurrency)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def user_loop() -> None:
                for chat_id, update in pending:
                    replied = tg.reply_waiters[chat_id] = loop.create_future()
                    t0 = time.monotonic()
                    async with session.post(tg.webhook_url, json=update, headers=headers) as resp:
                        await resp.read()
                        statuses.append(resp.status)
                    t1 = time.monotonic()
                    try:
                        t2: float | None = await asyncio.wait_for(replied, reply_timeout)
                    except TimeoutError:
                        t2 = None
                    tg.reply_waiters.pop(chat_id, None)
                    results.append([t0, t1, t2])

            started = time.monotonic()
            await asyncio.gather(*(user_loop() for _ in range(concurrency)))
        return web.json_response(
            {
                "started": started,
                "finished": time.monotonic(),
                "statuses": {str(s): statuses.count(s) for s in set(statuses)},
                "requests": results,
            }
        )

    async def shutdown(self, request: web.Request) -> web.Response:
        self.stopped.set()
        return web.json_response({})

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/comfy", self.comfy_new),
            web.post("/comfy/{n}/config", self.comfy_config),
            web.post("/comfy/{n}/hold", self.comfy_hold),
            web.post("/comfy/{n}/release", self.comfy_release),
            web.get("/comfy/{n}/state", self.comfy_state),
            web.get("/comfy/state", self.comfy_state_all),
            web.get("/comfy/{n}/marks", self.comfy_marks),
            web.post("/comfy/{n}/clear", self.comfy_clear),
            web.post("/telegram", self.tg_new),
            web.post("/telegram/flood", self.tg_flood),
            web.post("/telegram/users", self.tg_users),
            web.post("/telegram/group", self.tg_group),
            web.post("/telegram/send", self.tg_send),
            web.get("/telegram/calls", self.tg_calls),
            web.post("/telegram/wait_delivery", self.tg_wait_delivery),
            web.post("/telegram/webhook_load", self.tg_webhook_load),
            web.post("/shutdown", self.shutdown),
        ]

    async def close(self) -> None:
        for server in self.comfy:
            with contextlib.suppress(Exception):
                await server.close()
        if self.telegram is not None:
            with contextlib.suppress(Exception):
                await self.telegram.close()


async def _stdin_closed(stopped: asyncio.Event) -> None:
    """Stop when the parent goes away (its end of our stdin closes)."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while await reader.read(4096):
        pass
    stopped.set()


async def main() -> None:
    host = Host()
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.add_routes(host.routes())
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    address = runner.addresses[0]
    print(json.dumps({"control": f"http://{address[0]}:{address[1]}"}), flush=True)
    watcher = asyncio.create_task(_stdin_closed(host.stopped))
    try:
        await host.stopped.wait()
    finally:
        watcher.cancel()
        await host.close()
        await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
