"""The status HTTP server (aiohttp) on STATUS_PORT: probes, metrics, a live job feed and a page.

* `GET /healthz`: liveness, 200 `{"status": "ok"}` while the event loop runs.
* `GET /readyz`: readiness, 200 when the database answers, at least one ComfyUI backend is
  healthy and (when a bot token is set) Telegram accepts it (`getMe`, cached 30 s); else 503.
  One entry per component, `{name, state, detail}`, with the wording of `animebot doctor`.
* `GET /metrics`: Prometheus text format (core/metrics.py lists the metrics).
* `GET /ws`: a WebSocket feed of job events as JSON (previews announced without their bytes);
  needs STATUS_TOKEN as `?token=` or `Authorization: Bearer`; disabled (403) when it is unset.
* `GET /api/jobs`: active and recent jobs (same token), the snapshot the page starts from.
* `GET /`: a read-only page listing active and recent jobs, live from `/ws`
  (open `/?token=...`).

No response ever carries a secret: every text that comes from elsewhere (check details, event
messages) passes through the log redactor plus this process's own secrets, and credentials
inside URLs are masked.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from importlib import resources
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

import aiohttp
import asyncpg
from aiohttp import web

from core.db import workers as workers_db
from core.errors import describe
from core.events import JobEvent
from core.health import (
    CHECK_TIMEOUT_S,
    ComponentHealth,
    HealthState,
    check_database,
    check_telegram,
    failed,
    guarded,
    ok,
)
from core.logs import get_logger, redact
from core.metrics import CONTENT_TYPE, METRICS, JobEventRecorder, LoopLagMonitor, Metrics
from core.settings import Settings
from core.states import JobState

if TYPE_CHECKING:
    from core.runtime import Runtime

log = get_logger(__name__)

DEFAULT_HOST: Final = "0.0.0.0"  # noqa: S104 - scraped by Prometheus from other hosts
TELEGRAM_CACHE_S: Final = 30.0
BACKEND_ROW_STALE_S: Final = 120.0  # a `backends` row older than this is not evidence of health
WS_SEND_TIMEOUT_S: Final = 10.0
WS_HEARTBEAT_S: Final = 20.0
MAX_FEED_CLIENTS: Final = 32
RECENT_JOBS: Final = 50
MAX_LISTED_JOBS: Final = 200
DB_TIMEOUT_S: Final = 5.0
PAGE_FILE: Final = "status_page.html"
FEED_DISABLED: Final = "the live feed is disabled: set STATUS_TOKEN to enable it"
_URL_CREDENTIALS: Final = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@]+@")
_FINAL: Final = [s.value for s in JobState if s.final]

_RECENT_JOBS_SQL: Final = """
SELECT id, kind, status, progress, chat_id, created_at, updated_at FROM generations
WHERE id IN (SELECT id FROM generations ORDER BY created_at DESC, id LIMIT $1)
   OR status <> ALL($2::text[])
ORDER BY created_at DESC, id
LIMIT $3
"""

_SECURITY_HEADERS: Final = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
}


class StatusServer:
    """`await StatusServer(runtime, settings).start()`; `.port` is the bound port;
    `await stop()` closes the feed clients and the listener."""

    def __init__(
        self,
        runtime: Runtime,
        settings: Settings,
        *,
        metrics: Metrics | None = None,
        host: str = DEFAULT_HOST,
        port: int | None = None,
        telegram_cache_s: float = TELEGRAM_CACHE_S,
    ) -> None:
        self.runtime = runtime
        self.settings = settings
        self.metrics = metrics or METRICS
        self.host = host
        self._requested_port = settings.status_port if port is None else port
        self.port = 0
        self.telegram_cache_s = telegram_cache_s
        self._secrets = _secrets_of(settings)
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._telegram: tuple[float, ComponentHealth] | None = None
        self._telegram_lock = asyncio.Lock()
        self._feeds: set[web.WebSocketResponse] = set()
        self._lag = LoopLagMonitor(self.metrics)
        self._recorder = JobEventRecorder(self.metrics, runtime.events, runtime.service.job)
        self._page = resources.files("core").joinpath(PAGE_FILE).read_text(encoding="utf-8")

    # -- lifecycle --------------------------------------------------------------------------

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host  # noqa: S104
        return f"http://{host}:{self.port}"

    async def start(self) -> None:
        if self._runner is not None:
            return
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=CHECK_TIMEOUT_S, connect=CHECK_TIMEOUT_S)
        )
        app = web.Application(middlewares=[_security_headers])
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/ws", self._ws)
        app.router.add_get("/api/jobs", self._jobs)
        app.router.add_get("/", self._index)
        # No access log: feed URLs carry the token in their query string.
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
        try:
            await runner.setup()
            site = web.TCPSite(runner, self.host, self._requested_port)
            await site.start()
            self.port = _bound_port(runner)
            self._lag.start()
            await self._recorder.start()
        except BaseException:
            await runner.cleanup()
            await self._session.close()
            await self._lag.stop()
            await self._recorder.stop()
            raise
        self._runner = runner
        feed = self.settings.status_token is not None
        log.info("status server listening", host=self.host, port=self.port, feed=feed)

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        await self._recorder.stop()
        await self._lag.stop()
        for ws in list(self._feeds):
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):
                    await ws.close(code=aiohttp.WSCloseCode.GOING_AWAY, message=b"server stopping")
        if runner is not None:
            await runner.cleanup()
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> StatusServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- readiness --------------------------------------------------------------------------

    async def readiness(self) -> tuple[bool, list[ComponentHealth]]:
        """The components behind /readyz, and whether the process is ready."""
        database, backends, telegram = await asyncio.gather(
            _guard("database", lambda: check_database(self.runtime.database)),
            self.backend_checks(),
            self.telegram_check(),
        )
        components = [database, *backends, telegram]
        ready = (
            database.state is HealthState.OK
            and any(b.state is HealthState.OK for b in backends)
            and telegram.state is not HealthState.FAILED
        )
        return ready, components

    async def backend_checks(self) -> list[ComponentHealth]:
        """One line per configured ComfyUI backend, from this process's engine, else from the
        `backends` table the engines of other processes keep up to date."""
        orchestrator = self.runtime.orchestrator
        if orchestrator is not None:
            return [
                _backend_line(url, h.healthy, h.version, h.last_error, sorted(h.missing))
                for url, h in orchestrator.backends.handles.items()
            ]
        try:
            async with asyncio.timeout(DB_TIMEOUT_S):
                stored = await workers_db.list_backends(self.runtime.database.pool)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as error:
            reason = f"health unknown: database unreachable ({describe(error)})"
            return [failed(f"comfyui {url}", reason) for url in self.settings.comfyui_urls]
        rows = {b.url: b for b in stored}
        lines = []
        now = datetime.now(UTC)
        for url in self.settings.comfyui_urls:
            row = rows.get(url)
            name = f"comfyui {url}"
            if row is None or row.checked_at is None:
                lines.append(failed(name, "not checked yet (no engine running)"))
            elif (age := (now - row.checked_at).total_seconds()) > BACKEND_ROW_STALE_S:
                lines.append(failed(name, f"last checked {age:.0f} s ago (no engine running?)"))
            else:
                lines.append(
                    _backend_line(
                        url, row.healthy, row.version, row.last_error, row.missing_workflows
                    )
                )
        return lines

    async def backend_health(self) -> dict[str, bool]:
        return {line.name.removeprefix("comfyui "): line.ok for line in await self.backend_checks()}

    async def telegram_check(self) -> ComponentHealth:
        """`getMe` through the shared session, cached `telegram_cache_s` seconds."""
        async with self._telegram_lock:
            cached = self._telegram
            if cached is not None and time.monotonic() - cached[0] < self.telegram_cache_s:
                return cached[1]
            token = self.settings.telegram_bot_token
            session = self._session
            if session is None:
                return failed("telegram", "status server not started")
            result = await _guard(
                "telegram",
                lambda: check_telegram(
                    session,
                    self.settings.telegram_api_base_url,
                    token.get_secret_value() if token is not None else None,
                ),
            )
            self._telegram = (time.monotonic(), result)
            return result

    # -- handlers ---------------------------------------------------------------------------

    async def _healthz(self, _request: web.Request) -> web.Response:
        return self._json({"status": "ok"})

    async def _readyz(self, _request: web.Request) -> web.Response:
        ready, components = await self.readiness()
        body = {
            "status": "ready" if ready else "not ready",
            "components": [
                {"name": c.name, "state": c.state.value, "detail": c.detail} for c in components
            ],
            "failures": [c.line() for c in components if c.state is HealthState.FAILED],
        }
        return self._json(body, status=200 if ready else 503)

    async def _metrics(self, _request: web.Request) -> web.Response:
        text = await self.metrics.render(self.runtime.database.pool, self.backend_health)
        return web.Response(
            body=self.scrub(text.decode("utf-8")).encode("utf-8"),
            headers={"Content-Type": CONTENT_TYPE},
        )

    async def _index(self, _request: web.Request) -> web.Response:
        nonce = secrets.token_urlsafe(16)
        csp = (
            f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; "
            "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
            "frame-ancestors 'none'"
        )
        return web.Response(
            text=self._page.replace("{{nonce}}", nonce),
            content_type="text/html",
            headers={"Content-Security-Policy": csp},
        )

    async def _jobs(self, request: web.Request) -> web.Response:
        denied = self._authorize(request)
        if denied is not None:
            return denied
        try:
            async with asyncio.timeout(DB_TIMEOUT_S):
                rows = await self.runtime.database.pool.fetch(
                    _RECENT_JOBS_SQL, RECENT_JOBS, _FINAL, MAX_LISTED_JOBS
                )
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as error:
            return self._json({"error": f"database unreachable: {describe(error)}"}, status=503)
        jobs = [
            {
                "id": str(row["id"])[:8],
                "kind": row["kind"],
                "status": row["status"],
                "percent": round(float(row["progress"]) * 100, 1),
                "chat_id": row["chat_id"],
                "created": row["created_at"].isoformat(),
                "updated": row["updated_at"].isoformat(),
            }
            for row in rows
        ]
        return self._json({"jobs": jobs, "server_time": datetime.now(UTC).isoformat()})

    async def _ws(self, request: web.Request) -> web.StreamResponse:
        denied = self._authorize(request)
        if denied is not None:
            return denied
        if len(self._feeds) >= MAX_FEED_CLIENTS:
            return self._json({"error": "too many live feed clients"}, status=503)
        ws = web.WebSocketResponse(heartbeat=WS_HEARTBEAT_S, max_msg_size=4096)
        # Subscribed before the handshake completes: a client that sees the upgrade misses
        # no event published afterwards.
        async with self.runtime.events.subscribe() as queue:
            await ws.prepare(request)
            self._feeds.add(ws)
            reader = asyncio.create_task(_drain(ws), name="status-feed-reader")
            getter: asyncio.Task[JobEvent] | None = None
            try:
                await self._send(ws, {"type": "hello", "server_time": _now()})
                while not ws.closed:
                    getter = asyncio.create_task(queue.get())
                    done, _ = await asyncio.wait(
                        {getter, reader}, return_when=asyncio.FIRST_COMPLETED
                    )
                    if getter not in done:
                        break  # the client closed (or the server is stopping)
                    await self._send(ws, feed_message(getter.result()))
            except (ConnectionError, TimeoutError, aiohttp.ClientError):
                pass  # the client went away or stopped reading
            finally:
                self._feeds.discard(ws)
                for task in (getter, reader):
                    if task is not None and not task.done():
                        task.cancel()
                        with contextlib.suppress(asyncio.CancelledError):
                            await task
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(1.0):
                        await ws.close()
        return ws

    # -- helpers ----------------------------------------------------------------------------

    async def _send(self, ws: web.WebSocketResponse, message: Mapping[str, Any]) -> None:
        async with asyncio.timeout(WS_SEND_TIMEOUT_S):
            await ws.send_str(self.scrub(json.dumps(message)))

    def _authorize(self, request: web.Request) -> web.Response | None:
        """None when the request carries STATUS_TOKEN; else the 401/403 to answer."""
        if self.settings.status_token is None or not self.settings.status_token.get_secret_value():
            return self._json({"error": FEED_DISABLED}, status=403)
        expected = self.settings.status_token.get_secret_value().encode("utf-8")
        given = request.query.get("token")
        header = request.headers.get("Authorization", "")
        if given is None and header[:7].lower() == "bearer ":
            given = header[7:].strip()
        if given is None:
            return self._json(
                {"error": "a token is required: ?token= or Authorization: Bearer"},
                status=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        if not hmac.compare_digest(given.encode("utf-8"), expected):
            return self._json(
                {"error": "wrong token"}, status=401, headers={"WWW-Authenticate": "Bearer"}
            )
        return None

    def scrub(self, text: str) -> str:
        """Mask every secret this process knows, and credentials inside URLs."""
        text = redact(text)
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, "***")
        return _URL_CREDENTIALS.sub(r"\1***@", text)

    def _json(
        self,
        data: Mapping[str, Any],
        *,
        status: int = 200,
        headers: Mapping[str, str] | None = None,
    ) -> web.Response:
        return web.Response(
            text=self.scrub(json.dumps(data)),
            status=status,
            content_type="application/json",
            headers=headers,
        )


def feed_message(event: JobEvent) -> dict[str, Any]:
    """An event as the feed sends it: JobEvent.to_json's fields, never the preview bytes."""
    data: dict[str, Any] = json.loads(event.to_json())
    data.pop("preview", None)
    return data


def _backend_line(
    url: str, healthy: bool, version: str | None, error: str | None, missing: list[str]
) -> ComponentHealth:
    """The doctor's line for a backend: `comfyui URL: OK (ComfyUI v)` or FAILED (reason)."""
    name = f"comfyui {url}"
    if not healthy:
        return failed(name, error or "not checked yet")
    detail = f"ComfyUI {version or 'unknown version'}"
    if missing:
        detail += f"; workflows not routed here: {', '.join(missing)}"
    return ok(name, detail)


async def _guard(name: str, check: Callable[[], Awaitable[ComponentHealth]]) -> ComponentHealth:
    """core.health.guarded, plus what it lets through: database errors (a closed pool) and
    anything else (a non-JSON answer), so a probe always answers with a FAILED line."""
    try:
        return await guarded(name, check)
    except (asyncpg.PostgresError, asyncpg.InterfaceError) as error:
        return failed(name, describe(error))
    except Exception as error:
        log.warning("readiness check crashed", check=name, error=repr(error))
        return failed(name, describe(error))


async def _drain(ws: web.WebSocketResponse) -> None:
    """Read (and ignore) what the client sends, until it closes."""
    async for _message in ws:
        pass


def _secrets_of(settings: Settings) -> list[str]:
    values: list[str] = []
    for secret in (
        settings.telegram_bot_token,
        settings.status_token,
        settings.jellyfin_api_key,
        settings.telegram_webhook_secret,
        settings.database_url,
    ):
        value = secret.get_secret_value() if secret is not None else ""
        values.append(value)
        if secret is settings.telegram_bot_token and ":" in value:
            values.append(value.split(":", 1)[1])  # the token's secret part alone
    if settings.database_url is not None:
        with contextlib.suppress(ValueError):
            values.append(urlsplit(settings.database_url.get_secret_value()).password or "")
    # Very short values would mask ordinary text; the settings redactor ignores them too.
    return sorted({v for v in values if len(v) >= 6}, key=len, reverse=True)


def _bound_port(runner: web.AppRunner) -> int:
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            return int(address[1])
    raise RuntimeError("the status server is not listening on a TCP port")


def _now() -> str:
    return datetime.now(UTC).isoformat()


@web.middleware
async def _security_headers(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    response = await handler(request)
    if not isinstance(response, web.WebSocketResponse):
        for key, value in _SECURITY_HEADERS.items():
            response.headers.setdefault(key, value)
    return response
