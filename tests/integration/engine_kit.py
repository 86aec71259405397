"""Helpers shared by the engine integration tests (tests/integration/test_engine_*.py).

Real PostgreSQL, the fake ComfyUI over real HTTP/WebSocket, the real Runtime and Orchestrator;
only the engine's slow timers are shortened (module constants), so a test waits for behaviour,
not for a 5-second poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from aiohttp import web

from core.db import generations as gen_db
from core.events import JobEvent
from core.jobs import orchestrator as orchestrator_mod
from core.jobs import runner as runner_mod
from core.jobs.delivery import DeliveryLedger, DeliveryReceipt
from core.models import Generation, JobKind, Output
from core.runtime import Runtime
from core.states import JobState
from tests.engine import actor

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

FINAL = {JobState.DONE, JobState.FAILED, JobState.CANCELLED}
STATE_ORDER = ["queued", "submitted", "running", "postprocessing", "delivering", "done"]


def fast_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    """Shorter engine timers: polling, health checks, reconcile, delivery retries."""
    monkeypatch.setattr(runner_mod, "POLL_INTERVAL_S", 0.3)
    monkeypatch.setattr(orchestrator_mod, "IDLE_WAKE_S", 0.3)
    monkeypatch.setattr(orchestrator_mod, "HEALTH_INTERVAL_S", 0.5)
    monkeypatch.setattr(orchestrator_mod, "RECONCILE_INTERVAL_S", 1.0)
    monkeypatch.setattr(orchestrator_mod, "DELIVERY_RETRY_S", 0.3)


async def submit(runtime: Runtime, user: int, text: str, kind: JobKind = JobKind.IMAGE) -> UUID:
    """A user's request through the real service (the bot's entry point); returns the job id."""
    who = actor(user)
    await runtime.service.seen(who)
    ticket = await runtime.service.request_scene(who, kind, text)
    return ticket.job.id


async def job(runtime: Runtime, job_id: UUID) -> Generation:
    return await runtime.service.job(job_id)


async def wait_all(
    runtime: Runtime, job_ids: list[UUID], states: set[JobState] = FINAL, timeout: float = 30.0
) -> list[Generation]:
    deadline = time.monotonic() + timeout
    while True:
        rows = await gen_db.list_by_status(runtime.database.pool, list(JobState), limit=10_000)
        by_id = {row.id: row for row in rows}
        jobs = [by_id[i] for i in job_ids]
        if all(j.status in states for j in jobs):
            return jobs
        if time.monotonic() > deadline:
            stuck = {str(j.id)[:8]: j.status.value for j in jobs if j.status not in states}
            raise AssertionError(f"jobs not in {sorted(states)} in time: {stuck}")
        await asyncio.sleep(0.05)


async def until(predicate: Any, timeout: float = 20.0, what: str = "condition") -> None:
    """Wait for a sync or async predicate."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached in {timeout} s")
        await asyncio.sleep(0.02)


async def collect_until_final(
    queue: asyncio.Queue[JobEvent], job_id: UUID, timeout: float = 30.0
) -> list[JobEvent]:
    """This job's events up to and including its final state (and a `delivered` right after)."""
    events: list[JobEvent] = []
    async with asyncio.timeout(timeout):
        while True:
            event = await queue.get()
            if event.job_id != job_id:
                continue
            events.append(event)
            if event.type == "state" and event.final:
                break
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(1.0):
            while True:
                event = await queue.get()
                if event.job_id == job_id:
                    events.append(event)
                    if event.type == "delivered":
                        break
    return events


# -- what the fake ComfyUI received -------------------------------------------------------


def posts_for(fake: Any, job_id: UUID) -> list[dict[str, Any]]:
    """The POST /prompt bodies that carried this job's prompt id."""
    return [
        body
        for body in fake.prompt_posts
        if isinstance(body, dict) and body.get("prompt_id") == str(job_id)
    ]


def prompt_order(*fakes: Any) -> list[str]:
    """Prompt ids in the order they were posted (one fake: exact order)."""
    ids: list[str] = []
    for fake in fakes:
        ids.extend(
            str(body["prompt_id"])
            for body in fake.prompt_posts
            if isinstance(body, dict) and "prompt_id" in body
        )
    return ids


def sampler_seed(body: dict[str, Any]) -> int:
    seeds = [
        node["inputs"]["seed"]
        for node in body["prompt"].values()
        if node.get("class_type") in ("KSampler", "KSamplerAdvanced") and "seed" in node["inputs"]
    ]
    assert seeds, "no sampler seed in the prompt"
    return int(seeds[0])


def interrupts_for(fake: Any, job_id: UUID) -> int:
    return sum(
        1
        for r in fake.requests
        if r.method == "POST"
        and r.route == "/interrupt"
        and isinstance(r.json, dict)
        and r.json.get("prompt_id") == str(job_id)
    )


def queue_deletes_for(fake: Any, job_id: UUID) -> int:
    return sum(
        1
        for r in fake.requests
        if r.method == "POST"
        and r.route == "/queue"
        and isinstance(r.json, dict)
        and str(job_id) in (r.json.get("delete") or [])
    )


# -- engine seams -------------------------------------------------------------------------


@dataclass
class PostprocessGate:
    """Holds the post-processing of chosen jobs (a slow encode) until `open()`."""

    held: set[UUID] = field(default_factory=set)
    entered: set[UUID] = field(default_factory=set)
    calls: list[UUID] = field(default_factory=list)
    cancelled: list[UUID] = field(default_factory=list)
    _open: asyncio.Event = field(default_factory=asyncio.Event)

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        real = runner_mod.process_output

        async def gated(job: Generation, *args: Any, **kwargs: Any) -> Any:
            self.calls.append(job.id)
            if job.id in self.held and not self._open.is_set():
                self.entered.add(job.id)
                try:
                    await self._open.wait()
                except asyncio.CancelledError:
                    self.cancelled.append(job.id)
                    raise
            return await real(job, *args, **kwargs)

        monkeypatch.setattr(runner_mod, "process_output", gated)

    def open(self) -> None:
        self._open.set()


@dataclass
class HangingDeliverer:
    """A chat that never answers: every delivery hangs (the process dies mid-delivery)."""

    attempts: list[UUID] = field(default_factory=list)

    async def deliver(
        self, job: Generation, outputs: list[Output], ledger: DeliveryLedger | None = None
    ) -> DeliveryReceipt:
        self.attempts.append(job.id)
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def library_linked(self, job: Generation, output: Output, link: str) -> None:
        return None


async def stop_after_restart(
    first: Runtime, second: Runtime | None, *, first_crashed: bool
) -> None:
    """The end of a crash-and-restart test: the restarted process is stopped if it was
    started, the first one unless it already crashed."""
    if second is not None:
        await second.stop()
    if not first_crashed:
        await first.stop()


async def crash(runtime: Runtime) -> None:
    """kill -9 of the process, as PostgreSQL and ComfyUI see it: its liveness connection is
    cut without any clean-up, every task of the engine just stops, its sockets and database
    connections are gone. Nothing is written on the way out."""
    orch = runtime.orchestrator
    orch._stopping = True
    runtime._liveness.terminate()
    tasks = [*orch._loops, *orch.runners.values(), *orch.deliveries.values()]
    if runtime._watchdog is not None:  # else it registers the dead process again
        tasks.append(runtime._watchdog)
    maintenance = runtime.extras.get("maintenance")
    if maintenance is not None:  # no more ticks; one in progress just stops with the rest
        maintenance._stopping = True
        maintenance.scheduler.shutdown(wait=False)
        tasks.extend(maintenance._running)
    for task in tasks:
        task.cancel()
    runtime.database.pool.terminate()
    await asyncio.gather(*tasks, return_exceptions=True)
    await orch.backends.close()


def out_dir_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


# -- an outside HTTP server ---------------------------------------------------------------


@contextlib.asynccontextmanager
async def serve(handler: Handler) -> AsyncIterator[str]:
    """A real aiohttp server answering every route with `handler`; yields its base URL."""
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app, shutdown_timeout=0.1, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()
