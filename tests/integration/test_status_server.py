"""The status server over real HTTP: probes, metrics, the live feed and the job snapshot.

Real PostgreSQL, the fake ComfyUI over HTTP/WS, the fake Telegram Bot API, the real Runtime and
Orchestrator. Every response body the tests see is kept and searched for secrets.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import aiohttp
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from core.db import workers as workers_db
from core.events import JobEvent
from core.metrics import Metrics
from core.runtime import Runtime
from core.settings import Settings
from core.states import JobState
from core.status_server import FEED_DISABLED, StatusServer
from tests.engine import RecordingDeliverer, engine_settings, install_models, start_runtime
from tests.integration.engine_kit import fast_engine, submit, wait_all
from tests.library_kit import seed_library_states

STATUS_TOKEN = "status-Token-9f8e7d6c5b4a"
JELLYFIN_KEY = "jellyfin-Key-0a1b2c3d4e5f"
STATE_ORDER = ["queued", "submitted", "running", "postprocessing", "delivering", "done"]


@dataclass
class Stack:
    runtime: Runtime
    settings: Settings
    server: StatusServer
    metrics: Metrics
    http: aiohttp.ClientSession
    secrets: list[str]
    bodies: list[str] = field(default_factory=list)

    async def get(self, path: str, **kwargs: Any) -> tuple[int, str]:
        async with self.http.get(self.server.url + path, **kwargs) as response:
            body = await response.text()
        self.bodies.append(body)
        return response.status, body

    async def get_json(self, path: str, **kwargs: Any) -> tuple[int, Any]:
        status, body = await self.get(path, **kwargs)
        return status, json.loads(body)

    async def metric_samples(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        status, text = await self.get("/metrics")
        assert status == 200
        samples = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
        return samples

    def assert_no_secrets(self) -> None:
        assert self.bodies
        for body in self.bodies:
            for secret in self.secrets:
                assert secret not in body, f"a secret leaked in a response: {body[:300]}"


@asynccontextmanager
async def status_stack(
    pg_dsn: str,
    fake_comfy: Any,
    fake_telegram: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    *,
    engine: bool = True,
    **extra: Any,
) -> AsyncIterator[Stack]:
    fast_engine(monkeypatch)
    values: dict[str, Any] = {
        "telegram_bot_token": fake_telegram.token,
        "telegram_api_base_url": fake_telegram.api_url,
        "status_token": STATUS_TOKEN,
        "jellyfin_api_key": JELLYFIN_KEY,
    }
    values.update(extra)
    settings = engine_settings(pg_dsn, tmp_path / "data", [fake_comfy.base_url], **values)
    install_models(fake_comfy, settings)
    if engine:
        runtime = await start_runtime(settings, RecordingDeliverer())
    else:  # a process without an engine: backend health comes from the `backends` table
        runtime = await Runtime.start(settings, role="run")
    metrics = Metrics()
    server = StatusServer(runtime, settings, metrics=metrics, host="127.0.0.1")
    try:
        await server.start()
        assert server.port > 0
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as http:
            secrets = [fake_telegram.token, fake_telegram.token.split(":", 1)[1], JELLYFIN_KEY]
            secrets.append(STATUS_TOKEN)
            yield Stack(runtime, settings, server, metrics, http, secrets)
    finally:
        await server.stop()
        await runtime.stop()


def by_name(components: list[dict[str, str]]) -> dict[str, dict[str, str]]:
    return {c["name"]: c for c in components}


async def wait_for(predicate: Any, timeout: float = 15.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached in {timeout} s")
        await asyncio.sleep(0.05)


# -- probes -----------------------------------------------------------------------------------


async def test_healthz_and_readyz_when_everything_answers(
    pg_dsn: str, fake_comfy: Any, fake_telegram: Any, tmp_path: Path, monkeypatch: Any
) -> None:
    async with status_stack(pg_dsn, fake_comfy, fake_telegram, tmp_path, monkeypatch) as s:
        status, body = await s.get_json("/healthz")
        assert (status, body) == (200, {"status": "ok"})

        status, body = await s.get_json("/readyz")
        assert status == 200, body
        assert body["status"] == "ready" and body["failures"] == []
        components = by_name(body["components"])
        assert set(components) == {"database", f"comfyui {fake_comfy.base_url}", "telegram"}
        assert all(set(c) == {"name", "state", "detail"} for c in body["components"])
        assert components["database"]["state"] == "OK"
        assert components["database"]["detail"].endswith("(DATABASE_URL), schema up to date")
        comfy = components[f"comfyui {fake_comfy.base_url}"]
        assert comfy["state"] == "OK" and comfy["detail"].startswith("ComfyUI ")
        assert components["telegram"] == {
            "name": "telegram",
            "state": "OK",
            "detail": "token accepted, bot @AnimeStudioTestBot",
        }

        # getMe is cached: a second probe does not call Telegram again.
        status, _ = await s.get_json("/readyz")
        assert status == 200
        assert [c.method for c in fake_telegram.calls].count("getMe") == 1
        s.assert_no_secrets()


async def test_readyz_503_names_a_dead_backend_then_recovers(
    pg_dsn: str, fake_comfy: Any, fake_telegram: Any, tmp_path: Path, monkeypatch: Any
) -> None:
    async with status_stack(pg_dsn, fake_comfy, fake_telegram, tmp_path, monkeypatch) as s:
        assert (await s.get_json("/readyz"))[0] == 200
        name = f"comfyui {fake_comfy.base_url}"
        await fake_comfy.kill()

        async def not_ready() -> Any:
            status, body = await s.get_json("/readyz")
            return body if status == 503 else None

        body = await wait_for(not_ready, what="readyz 503")
        assert body["status"] == "not ready"
        components = by_name(body["components"])
        assert components[name]["state"] == "FAILED" and components[name]["detail"]
        assert components["database"]["state"] == "OK"
        assert any(line.startswith(f"{name}: FAILED") for line in body["failures"])
        samples = await s.metric_samples()
        assert (
            samples[("animebot_backend_healthy", frozenset({("backend", fake_comfy.base_url)}))]
            == 0
        )

        await fake_comfy.start()  # same port: the engine's next health check sees it back

        async def ready() -> bool:
            return (await s.get_json("/readyz"))[0] == 200

        await wait_for(ready, what="readyz 200 again")
        s.assert_no_secrets()


async def test_readyz_without_engine_reads_backends_table_and_names_a_closed_database(
    pg_dsn: str, fake_comfy: Any, fake_telegram: Any, tmp_path: Path, monkeypatch: Any
) -> None:
    async with status_stack(
        pg_dsn, fake_comfy, fake_telegram, tmp_path, monkeypatch, engine=False
    ) as s:
        name = f"comfyui {fake_comfy.base_url}"
        status, body = await s.get_json("/readyz")
        assert status == 503, body
        assert by_name(body["components"])[name] == {
            "name": name,
            "state": "FAILED",
            "detail": "not checked yet (no engine running)",
        }
        # What the engine of another process records after its health check.
        pool = s.runtime.database.pool
        await workers_db.save_backend(
            pool, fake_comfy.base_url, healthy=True, version="0.3.40", last_error=None,
            missing_workflows=["txt2video_wan"], checked_at=datetime.now(UTC),
        )  # fmt: skip
        status, body = await s.get_json("/readyz")
        assert status == 200, body
        assert by_name(body["components"])[name] == {
            "name": name,
            "state": "OK",
            "detail": "ComfyUI 0.3.40; workflows not routed here: txt2video_wan",
        }
        samples = await s.metric_samples()
        assert (
            samples[("animebot_backend_healthy", frozenset({("backend", fake_comfy.base_url)}))]
            == 1
        )
        # A stale row (no engine has checked for minutes) is not evidence of health.
        await workers_db.save_backend(
            pool, fake_comfy.base_url, healthy=True, version=None, last_error=None,
            missing_workflows=[], checked_at=datetime.now(UTC) - timedelta(minutes=10),
        )  # fmt: skip
        status, body = await s.get_json("/readyz")
        assert status == 503
        assert by_name(body["components"])[name]["detail"].startswith("last checked 6")

        await pool.close()
        status, body = await s.get_json("/readyz")
        assert status == 503, body
        components = by_name(body["components"])
        assert components["database"]["state"] == "FAILED"
        assert components["database"]["detail"] == "InterfaceError: pool is closed"
        assert components[name]["state"] == "FAILED"
        assert components[name]["detail"].startswith("health unknown: database unreachable")
        assert any(line.startswith("database: FAILED") for line in body["failures"])

        # Liveness does not depend on the database; metrics still answer, saying it is down.
        assert (await s.get_json("/healthz"))[0] == 200
        samples = await s.metric_samples()
        assert samples[("animebot_database_up", frozenset())] == 0
        assert not any(name == "animebot_jobs" for name, _ in samples)
        status, body = await s.get_json("/api/jobs", params={"token": STATUS_TOKEN})
        assert status == 503 and body["error"].startswith("database unreachable")
        s.assert_no_secrets()


async def test_readyz_503_when_telegram_rejects_the_token(
    pg_dsn: str, fake_comfy: Any, fake_telegram: Any, tmp_path: Path, monkeypatch: Any
) -> None:
    wrong = "7000000001:AAWrongTokenForTests_zyxwvutsrq"
    async with status_stack(
        pg_dsn, fake_comfy, fake_telegram, tmp_path, monkeypatch, telegram_bot_token=wrong
    ) as s:
        s.secrets += [wrong, wrong.split(":", 1)[1]]
        status, body = await s.get_json("/readyz")
        assert status == 503, body
        telegram = by_name(body["components"])["telegram"]
        assert telegram == {
            "name": "telegram",
            "state": "FAILED",
            "detail": "token rejected: Unauthorized",
        }
        s.assert_no_secrets()


# -- metrics ----------------------------------------------------------------------------------


async def test_metrics_after_one_job(
    pg_dsn: str, fake_comfy: Any, fake_telegram: Any, tmp_path: Path, monkeypatch: Any
) -> None:
    async with status_stack(pg_dsn, fake_comfy, fake_telegram, tmp_path, monkeypatch) as s:
        before = await s.metric_samples()
        assert before[("animebot_jobs", frozenset({("state", "done"), ("kind", "image")}))] == 0

        job_id = await submit(s.runtime, 1, "a girl on a beach --steps 4")
        (done,) = await wait_all(s.runtime, [job_id])
        assert done.status is JobState.DONE, done.error
        s.metrics.record_telegram_call("sendPhoto", 200)
        s.metrics.record_telegram_call("editMessageText", 429)
        s.metrics.record_telegram_call(f"{fake_telegram.api_url}{fake_telegram.token}/x", 200)

        image_done = {("kind", "image"), ("stage", "comfyui"), ("status", "done")}

        async def scraped() -> Any:
            samples = await s.metric_samples()
            key = ("animebot_job_stage_duration_seconds_count", frozenset(image_done))
            lag = samples.get(("animebot_event_loop_lag_seconds_count", frozenset()), 0)
            return samples if samples.get(key) == 1 and lag >= 1 else None

        samples = await wait_for(scraped, what="the job's durations in /metrics")

        def value(name: str, **labels: str) -> float:
            return samples[(name, frozenset(labels.items()))]

        assert value("animebot_jobs", state="done", kind="image") == 1
        assert value("animebot_jobs", state="queued", kind="image") == 0
        assert value("animebot_jobs", state="running", kind="video") == 0
        assert value("animebot_queue_length") == 0
        assert value("animebot_database_up") == 1
        assert value("animebot_backend_healthy", backend=fake_comfy.base_url) == 1
        for stage in ("queue_wait", "comfyui", "postprocessing", "delivery"):
            labels = {"kind": "image", "stage": stage, "status": "done"}
            assert value("animebot_job_stage_duration_seconds_count", **labels) == 1
            assert value("animebot_job_stage_duration_seconds_sum", **labels) >= 0
            assert value("animebot_job_stage_duration_seconds_bucket", **labels, le="+Inf") == 1
        total = sum(
            value("animebot_job_stage_duration_seconds_sum", kind="image", stage=stage,
                  status="done")
            for stage in ("queue_wait", "comfyui", "postprocessing", "delivery")
        )  # fmt: skip
        assert total == pytest.approx((done.finished_at - done.created_at).total_seconds())
        assert value("animebot_jobs_finished_total", kind="image", status="done") == 1
        assert value("animebot_telegram_api_calls_total", method="sendPhoto", status="200") == 1
        assert value("animebot_telegram_api_calls_total", method="other", status="200") == 1
        assert value("animebot_telegram_api_rate_limited_total", method="editMessageText") == 1
        assert ("animebot_event_loop_lag_last_seconds", frozenset()) in samples
        assert value("animebot_event_loop_lag_seconds_count") >= 1

        # The snapshot the page starts from.
        status, body = await s.get_json(
            "/api/jobs", headers={"Authorization": f"Bearer {STATUS_TOKEN}"}
        )
        assert status == 200
        assert body["jobs"][0] == {
            "id": str(job_id)[:8],
            "kind": "image",
            "status": "done",
            "percent": 100.0,
            "chat_id": 1,
            "created": done.created_at.isoformat(),
            "updated": done.updated_at.isoformat(),
        }
        s.assert_no_secrets()


async def test_metrics_count_delivered_results_by_library_state(
    pg_dsn: str, fake_comfy: Any, fake_telegram: Any, tmp_path: Path, monkeypatch: Any
) -> None:
    """`animebot_library_outputs{state}`: every state present, 0 before any result, then the
    seeded results (tests/library_kit.py), read from the database at each scrape."""
    async with status_stack(
        pg_dsn, fake_comfy, fake_telegram, tmp_path, monkeypatch, engine=False
    ) as s:

        async def library() -> dict[str, float]:
            status, text = await s.get("/metrics")
            assert status == 200
            assert "# TYPE animebot_library_outputs gauge" in text
            return {
                sample.labels["state"]: sample.value
                for family in text_string_to_metric_families(text)
                for sample in family.samples
                if sample.name == "animebot_library_outputs"
            }

        states = ("linked", "filed", "waiting", "waiting_unreachable", "failed", "off")
        assert await library() == dict.fromkeys(states, 0)
        await seed_library_states(s.runtime.database.pool)
        assert await library() == {
            "linked": 3,
            "filed": 1,
            "waiting": 4,
            "waiting_unreachable": 2,
            "failed": 5,
            "off": 6,
        }


# -- the live feed ----------------------------------------------------------------------------


async def test_feed_and_snapshot_refuse_missing_or_wrong_tokens(
    pg_dsn: str, fake_comfy: Any, fake_telegram: Any, tmp_path: Path, monkeypatch: Any
) -> None:
    async with status_stack(pg_dsn, fake_comfy, fake_telegram, tmp_path, monkeypatch) as s:
        for path in ("/ws", "/api/jobs"):
            status, body = await s.get_json(path)
            assert status == 401 and "token is required" in body["error"]
            status, body = await s.get_json(path, params={"token": "not-the-token"})
            assert (status, body["error"]) == (401, "wrong token")
            status, body = await s.get_json(path, headers={"Authorization": "Bearer nope"})
            assert (status, body["error"]) == (401, "wrong token")
            status, body = await s.get_json(path, params={"token": STATUS_TOKEN[:-1]})
            assert status == 401
        for kwargs in ({}, {"params": {"token": "wrong"}}):
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await s.http.ws_connect(s.server.url + "/ws", **kwargs)
            assert refused.value.status == 401
        # The right token by header opens the feed.
        async with s.http.ws_connect(
            s.server.url + "/ws", headers={"Authorization": f"Bearer {STATUS_TOKEN}"}
        ) as ws:
            hello = await ws.receive_json(timeout=5)
            assert hello["type"] == "hello"

        # Without STATUS_TOKEN the feed is off, with a message that says so.
        off = StatusServer(
            s.runtime,
            s.settings.model_copy(update={"status_token": None}),
            metrics=Metrics(),
            host="127.0.0.1",
            port=0,
        )
        async with off:
            for path in ("/ws", "/api/jobs"):
                async with s.http.get(off.url + path, params={"token": STATUS_TOKEN}) as response:
                    body = await response.json()
                assert response.status == 403
                assert body == {"error": FEED_DISABLED}
            async with s.http.get(off.url + "/healthz") as response:
                assert response.status == 200
        s.assert_no_secrets()


async def _feed_until_final(
    ws: aiohttp.ClientWebSocketResponse, job_id: UUID
) -> list[dict[str, Any]]:
    received: list[dict[str, Any]] = []
    async with asyncio.timeout(30):
        while True:
            message = await ws.receive()
            assert message.type is aiohttp.WSMsgType.TEXT, message
            data = json.loads(message.data)
            if data.get("job_id") != str(job_id):
                continue
            received.append(data)
            if data["type"] == "state" and data["status"] in ("done", "failed", "cancelled"):
                return received


async def test_feed_streams_a_jobs_events_in_order(
    pg_dsn: str, fake_comfy: Any, fake_telegram: Any, tmp_path: Path, monkeypatch: Any
) -> None:
    async with status_stack(pg_dsn, fake_comfy, fake_telegram, tmp_path, monkeypatch) as s:
        fake_comfy.step_delay_s = 0.05
        async with (
            s.http.ws_connect(s.server.url + "/ws", params={"token": STATUS_TOKEN}) as ws,
            s.runtime.events.subscribe() as bus,
        ):
            assert (await ws.receive_json(timeout=5))["type"] == "hello"
            job_id = await submit(s.runtime, 1, "a girl reading a book --steps 6")
            feed = await _feed_until_final(ws, job_id)
        published: list[JobEvent] = []
        while not bus.empty():
            event = bus.get_nowait()
            if event.job_id == job_id:
                published.append(event)

        # Exactly what the bus published, in the same order (up to the final state).
        assert [(e["type"], e["status"], e["percent"], e["step"]) for e in feed] == [
            (e.type, e.status, e.percent, e.step) for e in published[: len(feed)]
        ]
        # One state event per phase (a job dispatched at once has no queued announcement).
        states = [e["status"] for e in feed if e["type"] == "state"]
        assert states in (STATE_ORDER, STATE_ORDER[1:]), states
        state_at = {e["status"]: i for i, e in enumerate(feed) if e["type"] == "state"}
        between = feed[state_at["running"] + 1 : state_at["postprocessing"]]
        progress = [e["percent"] for e in between if e["type"] == "progress"]
        assert len(progress) >= 3 and progress == sorted(progress), progress
        for event in feed:
            assert "preview" not in event
            assert event["job_id"] == str(job_id) and event["chat_id"] == 1
        previews = [e for e in feed if e["type"] == "preview"]
        assert all(set(e) >= {"type", "job_id", "status"} for e in previews)


async def test_no_secret_in_any_response(
    pg_dsn: str, fake_comfy: Any, fake_telegram: Any, tmp_path: Path, monkeypatch: Any
) -> None:
    """Even when a component's own answer contains a secret, no response repeats it."""

    async def echo(request: web.Request) -> web.Response:
        # A hostile or buggy API that quotes the request path (and so the token) back.
        return web.json_response(
            {"ok": False, "description": f"no route {request.path}"}, status=404
        )

    app = web.Application()
    app.router.add_get("/{tail:.*}", echo)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with status_stack(
            pg_dsn,
            fake_comfy,
            fake_telegram,
            tmp_path,
            monkeypatch,
            telegram_api_base_url=f"http://127.0.0.1:{port}/bot",
        ) as s:
            status, body = await s.get_json("/readyz")
            assert status == 503
            detail = by_name(body["components"])["telegram"]["detail"]
            assert detail.startswith("token rejected: no route /bot") and "***" in detail

            async with s.http.ws_connect(
                s.server.url + "/ws", params={"token": STATUS_TOKEN}
            ) as ws:
                assert (await ws.receive_json(timeout=5))["type"] == "hello"
                leaky = (
                    f"POST {fake_telegram.api_url}{fake_telegram.token}/sendPhoto {STATUS_TOKEN}"
                )
                s.runtime.events.publish(
                    JobEvent(job_id=uuid4(), type="state", status="failed", chat_id=5,
                             message=f"{leaky} key={JELLYFIN_KEY}"),
                    broadcast=False,
                )  # fmt: skip
                message = await ws.receive_str(timeout=5)
            s.bodies.append(message)
            assert json.loads(message)["message"].startswith(f"POST {fake_telegram.api_url}***")

            for path in ("/", "/healthz", "/metrics", "/ws", "/api/jobs", "/missing"):
                await s.get(path)
            await s.get("/api/jobs", params={"token": STATUS_TOKEN})
            page_status, page = await s.get("/", params={"token": STATUS_TOKEN})
            assert page_status == 200 and "<script nonce=" in page
            s.assert_no_secrets()
    finally:
        await runner.cleanup()
