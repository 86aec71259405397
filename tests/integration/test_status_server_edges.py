"""Edges of the operations surface over real HTTP/WebSocket and a real PostgreSQL.

The live feed with clients that never read, talk back or are too many, and a server that stops
with clients connected or cannot bind its port; /readyz and /metrics when a component hangs,
answers garbage or crashes, or the database hangs; secrets the log redactor does not know; the
job metrics when an event and its row disagree; and the doctor's own failure lines (it shares
its checks with /readyz, core/health.py).

Each process here runs without an engine (backend health comes from the `backends` table), so
nothing talks to a real ComfyUI or Telegram: every outside server is a local aiohttp app.
"""

from __future__ import annotations

import asyncio
import errno
import json
import shutil
import socket
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import uuid4

import aiohttp
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr
from structlog.testing import capture_logs

from bot.commands import doctor_command
from core import health as health_mod
from core import metrics as metrics_mod
from core import status_server as status_mod
from core.db import workers as workers_db
from core.doctor import run_checks
from core.events import JobEvent
from core.health import ComponentHealth, HealthState
from core.logs import redact
from core.metrics import Metrics
from core.runtime import Runtime
from core.settings import Settings, load_settings
from core.status_server import MAX_FEED_CLIENTS, StatusServer
from core.workflows import registry as registry_mod
from tests.engine import actor, engine_settings
from tests.fakes.telegram import FakeTelegram
from tests.integration.engine_kit import serve, submit
from tests.integration.test_status_server import Stack as StatusStack

TOKEN = "status-Token-edges-5e4d3c2b1a"
COMFY = "http://127.0.0.1:9"  # never contacted: no engine runs in these processes
BIG = 256 * 1024  # bytes of text per event when a test wants the socket buffers full


# -- helpers ----------------------------------------------------------------------------------


@dataclass
class Stack(StatusStack):
    """test_status_server's stack, plus the live feed and what other processes record."""

    def url(self, path: str) -> str:
        return self.server.url + path

    async def feed(self) -> aiohttp.ClientWebSocketResponse:
        ws = await self.http.ws_connect(self.url("/ws"), params={"token": TOKEN})
        assert (await ws.receive_json(timeout=5))["type"] == "hello"
        return ws

    async def fresh_backend_row(self) -> None:
        """What the engine of another process records after a good health check."""
        await workers_db.save_backend(
            self.runtime.database.pool, COMFY, healthy=True, version="0.3.40", last_error=None,
            missing_workflows=[], checked_at=datetime.now(UTC),
        )  # fmt: skip

    def publish(self, chat_id: int, message: str | None = None) -> None:
        self.runtime.events.publish(
            JobEvent(job_id=uuid4(), type="state", status="running", chat_id=chat_id,
                     message=message),
            broadcast=False,
        )  # fmt: skip


@asynccontextmanager
async def edge_stack(pg_dsn: str, tmp_path: Path, **extra: Any) -> AsyncIterator[Stack]:
    values: dict[str, Any] = {"status_token": TOKEN, "telegram_bot_token": None}
    values.update(extra)
    settings = engine_settings(pg_dsn, tmp_path / "data", [COMFY], **values)
    runtime = await Runtime.start(settings, role="run")
    metrics = Metrics()
    server = StatusServer(runtime, settings, metrics=metrics, host="127.0.0.1", port=0)
    try:
        await server.start()
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as http:
            yield Stack(runtime, settings, server, metrics, http, secrets=[TOKEN])
    finally:
        await server.stop()
        await runtime.stop()


async def stuck_client(port: int) -> socket.socket:
    """A feed client that completes the handshake, then never reads again (tiny receive
    buffer): the server's sends to it block once the socket buffers are full."""
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await loop.sock_connect(sock, ("127.0.0.1", port))
    request = (
        f"GET /ws?token={TOKEN} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n"
    )
    await loop.sock_sendall(sock, request.encode())
    head = b""
    while b"\r\n\r\n" not in head:  # byte by byte: nothing after the headers is read
        chunk = await loop.sock_recv(sock, 1)
        assert chunk, "the server closed the handshake"
        head += chunk
    assert head.startswith(b"HTTP/1.1 101 "), head
    return sock


async def read_until_eof(sock: socket.socket, timeout: float = 5.0) -> int:
    """Everything the server still sends, until it closes the connection; bytes read."""
    loop = asyncio.get_running_loop()
    total = 0
    async with asyncio.timeout(timeout):
        while chunk := await loop.sock_recv(sock, 1 << 16):
            total += len(chunk)
    return total


def backlog(stack: Stack) -> int:
    """Events published but not yet taken by their subscribers: > 0 once a feed is stuck."""
    return max((sub.queue.qsize() for sub in stack.runtime.events._subs), default=0)


async def until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        await asyncio.sleep(0.02)


@asynccontextmanager
async def stuck_and_reading_clients(
    stack: Stack,
) -> AsyncIterator[tuple[socket.socket, aiohttp.ClientWebSocketResponse]]:
    """A stuck feed client and a reading one, both open on the server; the stuck one's socket
    is closed on the way out."""
    stuck = await stuck_client(stack.server.port)
    try:
        ws = await stack.feed()
        await until(lambda: len(stack.server._feeds) == 2, 5, "both feeds open")
        yield stuck, ws
    finally:
        stuck.close()


async def block_stuck_client(stack: Stack, ws: aiohttp.ClientWebSocketResponse) -> int:
    """Publish big events (the reading client `ws` takes each) until the server's send to the
    stuck client blocks; returns how many were published (chat ids 0..n-1)."""
    sent = 0
    for _ in range(40):  # at most 40 x 8 x 256 KiB: far more than any socket buffer
        for _ in range(8):
            stack.publish(sent, "x" * BIG)
            sent += 1
        for expected in range(sent - 8, sent):
            assert (await ws.receive_json(timeout=5))["chat_id"] == expected
        await asyncio.sleep(0.05)
        if backlog(stack) > 0:
            return sent
    raise AssertionError("the stuck client never blocked")


def by_name(components: list[dict[str, str]]) -> dict[str, dict[str, str]]:
    return {c["name"]: c for c in components}


async def failing_readyz(stack: Stack) -> tuple[float, dict[str, Any], dict[str, dict[str, str]]]:
    """/readyz while a component fails: how long it took to answer 503, its body, and its
    components by name."""
    started = time.monotonic()
    status, body = await stack.get_json("/readyz")
    took = time.monotonic() - started
    assert status == 503, body
    return took, body, by_name(body["components"])


def metric_samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


# -- the live feed ----------------------------------------------------------------------------


async def test_a_client_that_never_reads_is_dropped_and_never_delays_the_others(
    pg_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(status_mod, "WS_SEND_TIMEOUT_S", 1.0)
    async with edge_stack(pg_dsn, tmp_path) as s, stuck_and_reading_clients(s) as (stuck, ws):
        started = time.monotonic()
        sent = await block_stuck_client(s, ws)  # the reader got every one, in order

        # The stuck one is dropped once a send has waited WS_SEND_TIMEOUT_S ...
        await until(lambda: len(s.server._feeds) == 1, 5, "the stuck client dropped")
        assert time.monotonic() - started < 5
        # ... its connection closed (what was buffered, then EOF), not left open.
        assert await read_until_eof(stuck) > 0
        # The reader still gets everything published afterwards; the server answers.
        s.publish(sent)
        assert (await ws.receive_json(timeout=5))["chat_id"] == sent
        assert await s.get_json("/healthz") == (200, {"status": "ok"})
        await ws.close()


@pytest.mark.timeout(30)  # before the fix, publish() spun forever: the whole process froze
async def test_a_burst_of_state_changes_while_a_client_is_stuck_freezes_nothing(
    pg_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """More state changes than a subscriber's queue holds arrive while a feed client is stuck:
    the other client gets all of them in order, and the stuck one still goes away."""
    monkeypatch.setattr(status_mod, "WS_SEND_TIMEOUT_S", 2.0)
    async with edge_stack(pg_dsn, tmp_path) as s, stuck_and_reading_clients(s) as (_, ws):
        first = await block_stuck_client(s, ws)
        burst = range(first, first + 1200)  # > the 1000 events a subscriber queue holds
        for chat_id in burst:
            s.publish(chat_id)
        assert backlog(s) >= 1200  # the stuck feed's queue: every state change kept
        got = [(await ws.receive_json(timeout=5))["chat_id"] for _ in burst]
        assert got == list(burst)
        assert await s.get_json("/healthz") == (200, {"status": "ok"})
        await until(lambda: len(s.server._feeds) == 1, 5, "the stuck client dropped")
        await until(lambda: backlog(s) == 0, 5, "the stuck feed's queue released")
        await ws.close()


async def test_client_messages_are_ignored_and_an_oversized_one_closes_only_that_client(
    pg_dsn: str, tmp_path: Path
) -> None:
    async with edge_stack(pg_dsn, tmp_path) as s:
        chatty, rude = await s.feed(), await s.feed()
        await chatty.send_str("ping from the page")
        await chatty.send_bytes(b"\x00\x01")
        await rude.send_str("x" * 10_000)  # over the feed's 4 KiB message limit
        closing = await rude.receive(timeout=5)
        assert closing.type is aiohttp.WSMsgType.CLOSE
        assert closing.data == aiohttp.WSCloseCode.MESSAGE_TOO_BIG
        await until(lambda: len(s.server._feeds) == 1, 5, "the rude client dropped")
        s.publish(41)
        assert (await chatty.receive_json(timeout=5))["chat_id"] == 41
        await chatty.close()
        await rude.close()


async def test_the_feed_refuses_clients_over_the_cap_and_frees_the_slot_on_close(
    pg_dsn: str, tmp_path: Path
) -> None:
    async with edge_stack(pg_dsn, tmp_path) as s:
        clients = [await s.feed() for _ in range(MAX_FEED_CLIENTS)]
        try:
            status, body = await s.get_json("/ws", params={"token": TOKEN})
            assert (status, body) == (503, {"error": "too many live feed clients"})
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await s.http.ws_connect(s.url("/ws"), params={"token": TOKEN})
            assert refused.value.status == 503
            # A wrong token is still refused as such, whatever the load.
            status, body = await s.get_json("/ws", params={"token": "wrong-token"})
            assert (status, body) == (401, {"error": "wrong token"})
            # Every client at the cap still gets every event.
            s.publish(7)
            for ws in clients:
                assert (await ws.receive_json(timeout=5))["chat_id"] == 7

            await clients.pop().close()
            await until(lambda: len(s.server._feeds) < MAX_FEED_CLIENTS, 5, "slot freed")
            clients.append(await s.feed())
        finally:
            for ws in clients:
                await ws.close()


async def test_stop_says_going_away_to_clients_and_never_hangs_on_a_stuck_one(
    pg_dsn: str, tmp_path: Path
) -> None:
    async with edge_stack(pg_dsn, tmp_path) as s:
        port = s.server.port
        session = s.server._session
        await s.server.start()  # a second start is a no-op: same listener, same session
        assert (s.server.port, s.server._session) == (port, session)

        async with stuck_and_reading_clients(s) as (stuck, ws):
            await block_stuck_client(s, ws)  # its send now waits up to WS_SEND_TIMEOUT_S (10 s)
            started = time.monotonic()
            await s.server.stop()
            assert time.monotonic() - started < 4.5  # 1 s per stuck close + 2 s shutdown

            closing = await ws.receive(timeout=5)
            assert closing.type is aiohttp.WSMsgType.CLOSE
            assert (closing.data, closing.extra) == (
                aiohttp.WSCloseCode.GOING_AWAY,
                "server stopping",
            )
            assert s.server._feeds == set()
            await read_until_eof(stuck)  # the stuck client's connection is closed too
            with pytest.raises(aiohttp.ClientConnectionError):
                await s.get("/healthz")  # nothing listens any more
            await ws.close()


async def test_a_port_already_taken_fails_start_and_leaves_nothing_behind(
    pg_dsn: str, tmp_path: Path
) -> None:
    async with edge_stack(pg_dsn, tmp_path) as s:
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            subscribers = len(s.runtime.events._subs)
            other = StatusServer(
                s.runtime, s.settings, metrics=Metrics(), host="127.0.0.1", port=port
            )
            with pytest.raises(OSError) as failed:
                await other.start()
            assert failed.value.errno == errno.EADDRINUSE
            assert other._session is not None and other._session.closed
            assert len(s.runtime.events._subs) == subscribers  # its recorder never subscribed
            await other.stop()  # harmless after a failed start
        assert await s.get_json("/healthz") == (200, {"status": "ok"})  # the first one serves


# -- readiness: components that hang, answer garbage or crash ---------------------------------


async def test_readyz_answers_in_bounded_time_when_telegram_never_answers(
    pg_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(health_mod, "CHECK_TIMEOUT_S", 1.0)
    calls: list[str] = []
    release = asyncio.Event()

    async def hang(request: web.Request) -> web.Response:
        calls.append(request.path)
        await release.wait()
        return web.json_response({"ok": True, "result": {"username": "late"}})

    token = "7000000003:AAHangingTokenForTests_abcdefghij"
    async with serve(hang) as base:
        try:
            async with edge_stack(
                pg_dsn, tmp_path, telegram_bot_token=token, telegram_api_base_url=f"{base}/bot"
            ) as s:
                await s.fresh_backend_row()
                took, body, components = await failing_readyz(s)
                assert 1.0 <= took < 3
                assert components["telegram"] == {
                    "name": "telegram",
                    "state": "FAILED",
                    "detail": "no answer within 1 s",
                }
                assert components["database"]["state"] == "OK"
                assert components[f"comfyui {COMFY}"]["state"] == "OK"
                assert body["failures"] == ["telegram: FAILED (no answer within 1 s)"]

                # The answer is cached: the next probe does not wait on Telegram again.
                started = time.monotonic()
                assert (await s.get_json("/readyz"))[0] == 503
                assert time.monotonic() - started < 0.9
                assert len(calls) == 1
                assert token.split(":")[1] not in json.dumps(body)
        finally:
            release.set()


@pytest.mark.parametrize(
    ("status", "content_type", "text"),
    [
        (502, "text/html", "<html><body><h1>502 Bad Gateway</h1></body></html>"),
        (200, "application/json", '["not", "an", "object"]'),
        (200, "application/json", '{"ok": true}'),
        (200, "application/json", '{"ok": true, "result": ["AnimeStudioTestBot"]}'),
    ],
    ids=["html error page", "a json list", "ok without result", "result not an object"],
)
async def test_readyz_names_a_telegram_answer_that_is_not_the_bot_api(
    pg_dsn: str, tmp_path: Path, status: int, content_type: str, text: str
) -> None:
    async def answer(_request: web.Request) -> web.Response:
        return web.Response(status=status, text=text, content_type=content_type)

    async with serve(answer) as base, edge_stack(
        pg_dsn, tmp_path, telegram_bot_token="7000000004:AAGarbageTokenForTests_abcdefgh",
        telegram_api_base_url=f"{base}/bot",
    ) as s:  # fmt: skip
        await s.fresh_backend_row()
        code, body = await s.get_json("/readyz")
        assert code == 503, body
        assert by_name(body["components"])["telegram"] == {
            "name": "telegram",
            "state": "FAILED",
            "detail": f"HTTP {status} from {base}/bot: not a Telegram Bot API answer",
        }
        assert body["failures"] == [
            f"telegram: FAILED (HTTP {status} from {base}/bot: not a Telegram Bot API answer)"
        ]


async def test_readyz_and_metrics_answer_in_bounded_time_while_the_database_hangs(
    pg_dsn: str, tmp_path: Path, fake_telegram: FakeTelegram, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every pooled connection is taken (stuck queries): nothing waits longer than its
    timeout, each probe says what is wrong, and all recovers when the pool frees up."""
    monkeypatch.setattr(health_mod, "CHECK_TIMEOUT_S", 1.0)
    monkeypatch.setattr(status_mod, "DB_TIMEOUT_S", 0.5)
    monkeypatch.setattr(metrics_mod, "DB_TIMEOUT_S", 0.5)
    async with edge_stack(
        pg_dsn, tmp_path, telegram_bot_token=fake_telegram.token,
        telegram_api_base_url=fake_telegram.api_url,
    ) as s:  # fmt: skip
        await s.fresh_backend_row()
        assert (await s.get_json("/readyz"))[0] == 200
        library = ("animebot_library_outputs", frozenset({("state", "linked")}))
        assert metric_samples((await s.get("/metrics"))[1])[library] == 0
        pool = s.runtime.database.pool
        held = [await pool.acquire(timeout=5) for _ in range(pool.get_max_size())]
        try:
            took, body, components = await failing_readyz(s)
            assert took < 3
            assert components["database"] == {
                "name": "database",
                "state": "FAILED",
                "detail": "no answer within 1 s",
            }
            backend = components[f"comfyui {COMFY}"]
            assert backend["state"] == "FAILED"
            # The timeout's own text is empty: the reason names it, with no dangling ": ".
            assert backend["detail"] == "health unknown: database unreachable (TimeoutError)"
            assert components["telegram"]["state"] == "OK"

            started = time.monotonic()
            status, text = await s.get("/metrics")
            assert time.monotonic() - started < 4
            assert status == 200
            samples = metric_samples(text)
            assert samples[("animebot_database_up", frozenset())] == 0
            assert not any(name == "animebot_jobs" for name, _ in samples)
            assert not any(name == "animebot_library_outputs" for name, _ in samples)
            assert samples[("animebot_backend_healthy", frozenset({("backend", COMFY)}))] == 0

            status, body = await s.get_json("/api/jobs", params={"token": TOKEN})
            assert (status, body) == (503, {"error": "database unreachable: TimeoutError"})
            assert await s.get_json("/healthz") == (200, {"status": "ok"})
        finally:
            for conn in held:
                await pool.release(conn)
        status, body = await s.get_json("/readyz")
        assert status == 200, body
        samples = metric_samples((await s.get("/metrics"))[1])
        assert samples[("animebot_database_up", frozenset())] == 1
        assert samples[library] == 0


async def test_readyz_turns_a_crashing_check_into_a_failed_line(
    pg_dsn: str, tmp_path: Path, fake_telegram: FakeTelegram, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A check that raises what no one expected: 503 with the reason, not a 500, and the
    credentials in the reason masked."""
    password = "Unregistered-Pw-7a6b5c4d"

    async def crash(_database: object) -> ComponentHealth:
        raise RuntimeError(f"cannot parse postgresql://animebot:{password}@db.internal:5432/x")

    monkeypatch.setattr(status_mod, "check_database", crash)
    async with edge_stack(
        pg_dsn, tmp_path, telegram_bot_token=fake_telegram.token,
        telegram_api_base_url=fake_telegram.api_url,
    ) as s:  # fmt: skip
        await s.fresh_backend_row()
        with capture_logs() as logs:
            status, text = await s.get("/readyz")
        assert status == 503, text
        assert password not in text
        body = json.loads(text)
        components = by_name(body["components"])
        assert components["database"] == {
            "name": "database",
            "state": "FAILED",
            "detail": "RuntimeError: cannot parse postgresql://***@db.internal:5432/x",
        }
        assert components[f"comfyui {COMFY}"]["state"] == "OK"
        assert components["telegram"]["state"] == "OK"
        assert [e["check"] for e in logs if e["event"] == "readiness check crashed"] == ["database"]


# -- secrets, job metrics, NOTIFY failures ----------------------------------------------------


async def test_secrets_the_log_redactor_does_not_know_are_masked_in_the_feed(
    pg_dsn: str, tmp_path: Path
) -> None:
    """Settings built without validation (model_copy) never registered their secrets with the
    log redactor: the server masks them from its own list."""
    key, tail, password = "Jf-Unregistered-0f1e2d3c", "AAUnregisteredTail_98765", "Pw-4c3b2a19"
    bot_token = f"7000000005:{tail}"
    async with edge_stack(pg_dsn, tmp_path) as s:
        settings = s.settings.model_copy(
            update={
                "jellyfin_api_key": SecretStr(key),
                "telegram_bot_token": SecretStr(bot_token),
                "database_url": SecretStr(f"postgresql://animebot:{password}@db:5432/animebot"),
            }
        )
        message = f"jellyfin key {key}; bot {bot_token}; tail {tail}; password {password}"
        assert redact(message) == message  # the log redactor alone would leak all of them
        async with (
            StatusServer(
                s.runtime, settings, metrics=Metrics(), host="127.0.0.1", port=0
            ) as server,
            s.http.ws_connect(server.url + "/ws", params={"token": TOKEN}) as ws,
        ):
            assert (await ws.receive_json(timeout=5))["type"] == "hello"
            s.publish(9, message)
            got = await ws.receive_str(timeout=5)
        assert json.loads(got)["message"] == "jellyfin key ***; bot ***; tail ***; password ***"


async def test_a_final_event_its_row_does_not_confirm_is_not_counted(
    pg_dsn: str, tmp_path: Path
) -> None:
    """A `done` event published before the row says so (a premature or stray event) is not
    counted, and does not stop the job's real final state from being counted later."""
    async with edge_stack(pg_dsn, tmp_path) as s:
        early = await submit(s.runtime, 1, "a girl on a beach")  # queued: no engine here
        other = await submit(s.runtime, 1, "a cat on a roof")

        async def finished(expected: dict[str, float]) -> dict[str, float]:
            deadline = time.monotonic() + 5
            while True:
                samples = metric_samples((await s.get("/metrics"))[1])
                counts = {
                    dict(labels)["status"]: value
                    for (name, labels), value in samples.items()
                    if name == "animebot_jobs_finished_total"
                }
                if counts == expected or time.monotonic() > deadline:
                    return counts
                await asyncio.sleep(0.05)

        s.runtime.events.publish(
            JobEvent(job_id=early, type="state", status="done", chat_id=1), broadcast=False
        )
        # The recorder takes events in order: once `other` is counted, `early`'s stray
        # event has been handled (its row read while still queued).
        await s.runtime.service.cancel(actor(1), other)
        assert await finished({"cancelled": 1}) == {"cancelled": 1}
        await s.runtime.service.cancel(actor(1), early)  # its real final state
        assert await finished({"cancelled": 2}) == {"cancelled": 2}


async def test_the_feed_still_delivers_when_the_broadcast_to_other_processes_fails(
    pg_dsn: str, tmp_path: Path
) -> None:
    async with edge_stack(pg_dsn, tmp_path) as s:
        ws = await s.feed()
        await s.runtime.database.pool.close()  # NOTIFY has no connection left
        with capture_logs() as logs:
            s.runtime.events.publish(
                JobEvent(job_id=uuid4(), type="state", status="failed", chat_id=3)
            )
            assert (await ws.receive_json(timeout=5))["chat_id"] == 3
            await until(
                lambda: any(e["event"] == "event broadcast failed" for e in logs), 5, "logged"
            )
        (failure,) = [e for e in logs if e["event"] == "event broadcast failed"]
        assert failure["log_level"] == "warning" and "closed" in failure["error"]
        await ws.close()


# -- the doctor (same checks as /readyz) ------------------------------------------------------


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only what a test passes counts: no setting from the developer's environment."""
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)


def doctor_settings(tmp_path: Path, **values: Any) -> Settings:
    return load_settings(_env_file=None, data_dir=tmp_path / "data", status_port=0, **values)


@pytest.mark.usefixtures("clean_env")
@pytest.mark.parametrize(
    "answer", [{"ok": True}, {"ok": True, "result": None}], ids=["no result", "result null"]
)
async def test_doctor_reports_a_malformed_telegram_answer_instead_of_crashing(
    pg_dsn: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], answer: dict[str, Any]
) -> None:
    async def reply(_request: web.Request) -> web.Response:
        return web.json_response(answer)

    token = "7000000006:AAMalformedTokenForTests_abcdefg"
    async with serve(reply) as base:
        settings = doctor_settings(
            tmp_path, database_url=pg_dsn, comfyui_urls=COMFY,
            telegram_bot_token=token, telegram_api_base_url=f"{base}/bot",
        )  # fmt: skip
        lines = {line.name: line for line in await run_checks(settings)}
        assert lines["telegram"] == ComponentHealth(
            "telegram",
            HealthState.FAILED,
            f"HTTP 200 from {base}/bot: not a Telegram Bot API answer",
        )
        assert lines["database"].state is HealthState.OK
        assert await doctor_command(settings) == 1
    out = capsys.readouterr().out
    assert f"telegram: FAILED (HTTP 200 from {base}/bot: not a Telegram Bot API answer)" in out
    assert token.split(":")[1] not in out


@pytest.mark.usefixtures("clean_env")
async def test_doctor_names_a_broken_builtin_workflow_and_half_configured_jellyfin(
    pg_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A packaging mistake and a missing setting: one FAILED line each, and the doctor goes
    on with the other components instead of crashing (exit status 1)."""
    builtins = tmp_path / "templates"
    shutil.copytree(registry_mod.BUILTIN_DIR, builtins)
    manifest = sorted(builtins.glob("*.manifest.json"))[0]
    manifest.write_text("{ not json")
    monkeypatch.setattr(registry_mod, "BUILTIN_DIR", builtins)
    settings = doctor_settings(
        tmp_path, database_url=pg_dsn, comfyui_urls=COMFY,
        jellyfin_url="http://127.0.0.1:9", jellyfin_api_key="jellyfin-Key-9z8y7x6w",
    )  # fmt: skip
    results = await run_checks(settings)
    lines = {line.name: line for line in results}
    assert lines["workflows"].state is HealthState.FAILED
    assert manifest.name in lines["workflows"].detail
    assert not any(name.startswith("workflow ") for name in lines)
    assert lines["jellyfin"] == ComponentHealth(
        "jellyfin", HealthState.FAILED, "JELLYFIN_LIBRARY_DIR is not set"
    )
    assert lines["database"].state is HealthState.OK
    assert {"telegram", "ffmpeg", "music folder", "itunes previews"} <= set(lines)
    assert not all(line.ok for line in results)  # what makes `animebot doctor` exit 1
