"""Prometheus metrics of one process, in their own `CollectorRegistry` (never the global one).

Served as text by the status server at `GET /metrics` (core/status_server.py).

Metric names (all prefixed `animebot_`):

* `animebot_jobs{state,kind}`: jobs by state and kind (gauge, read from the database at scrape
  time; every state x kind pair is always present, 0 when empty). Cluster-wide.
* `animebot_queue_length`: queued jobs (gauge, database at scrape time). Cluster-wide.
* `animebot_backend_in_flight{backend}`: jobs submitted/running per ComfyUI URL (gauge, database).
* `animebot_backend_healthy{backend}`: 1 when the ComfyUI backend answers its health check, else
  0 (this process's engine, or the `backends` table when this process runs no engine).
* `animebot_database_up`: 1 when the last scrape could query PostgreSQL, else 0.
* `animebot_library_outputs{state}`: delivered results by where their filing in the media
  library stands (gauge, database at scrape time; every state always present). Cluster-wide.
  States: `linked` (in Jellyfin, with a link), `filed` (written into the library folder, no
  Jellyfin API to link it), `waiting` (for a filing attempt), `waiting_unreachable` (the part of
  `waiting` whose last attempt could not reach Jellyfin), `failed` (given up), `off` (made while
  the library was off).
* `animebot_job_stage_duration_seconds{kind,stage,status}`: histogram of the stages of finished
  jobs, computed from the job row when its done/failed state event is published in this process:
  stage `queue_wait` (submitted - created), `comfyui` (postprocessing - submitted),
  `postprocessing` (delivering - postprocessing), `delivery` (finished - delivering). A failed
  job contributes the stages it completed. Only events of this process count, so summing over
  all processes counts each job once.
* `animebot_jobs_finished_total{kind,status}`: jobs that reached done/failed/cancelled (this
  process's events).
* `animebot_telegram_api_calls_total{method,status}`: Bot API calls made by the bot, by method
  (`sendMessage`, ...) and HTTP status (`200`, `400`, `429`, ...; `error` for a network error,
  `timeout` for a timeout). Fed by `record_telegram_call` below.
* `animebot_telegram_api_rate_limited_total{method}`: Bot API answers 429 (flood control).
* `animebot_event_loop_lag_last_seconds`: last measured event-loop lag (how late a 0.5 s sleep
  woke up), and `animebot_event_loop_lag_seconds`: its histogram.

The bot calls `record_telegram_call(method, status)` once per Bot API request, after the
answer (or failure) is known: `bot/request.py` (`CountingRequest`, its HTTP transport) does.
Never pass the URL itself as the method (it contains the bot token): only its last segment.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Final
from uuid import UUID

import asyncpg
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from core.db import generations as gen_db
from core.db import outputs as out_db
from core.db.outputs import LibraryCounts
from core.errors import describe
from core.events import EventBus, JobEvent
from core.logs import get_logger
from core.models import Generation, JobKind
from core.states import JobState

log = get_logger(__name__)

CONTENT_TYPE: Final = CONTENT_TYPE_LATEST

# Seconds: from a sub-second delivery to an hour-long video render.
STAGE_BUCKETS: Final = (
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    20.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
    1200.0,
    1800.0,
    3600.0,
)
LAG_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
LOOP_LAG_INTERVAL_S: Final = 0.5
DB_TIMEOUT_S: Final = 5.0

# (stage, start column, end column) of a job row.
STAGES: Final = (
    ("queue_wait", "created_at", "submitted_at"),
    ("comfyui", "submitted_at", "postprocessing_at"),
    ("postprocessing", "postprocessing_at", "delivering_at"),
    ("delivery", "delivering_at", "finished_at"),
)
_OBSERVED_STATUSES: Final = frozenset({JobState.DONE.value, JobState.FAILED.value})
_FINAL_STATUSES: Final = frozenset(s.value for s in JobState if s.final)
_METHOD: Final = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")
_SEEN_LIMIT: Final = 4096


def stage_durations(job: Generation) -> dict[str, float]:
    """Seconds spent in each stage the job went through (stages with both ends recorded)."""
    durations: dict[str, float] = {}
    for stage, start_column, end_column in STAGES:
        start: datetime | None = getattr(job, start_column)
        end: datetime | None = getattr(job, end_column)
        if start is not None and end is not None:
            durations[stage] = max(0.0, (end - start).total_seconds())
    return durations


def telegram_method_label(method: str) -> str:
    """A Bot API method name as a label; anything else (a URL, garbage) becomes `other`."""
    return method if _METHOD.fullmatch(method) else "other"


class Metrics:
    """Every metric of the process, registered in `self.registry`."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.jobs = Gauge(
            "animebot_jobs",
            "Jobs by state and kind (database, at scrape time).",
            ["state", "kind"],
            registry=r,
        )
        self.queue_length = Gauge(
            "animebot_queue_length", "Queued jobs (database, at scrape time).", registry=r
        )
        self.in_flight = Gauge(
            "animebot_backend_in_flight",
            "Jobs submitted or running per ComfyUI backend.",
            ["backend"],
            registry=r,
        )
        self.backend_healthy = Gauge(
            "animebot_backend_healthy",
            "1 when the ComfyUI backend is healthy, else 0.",
            ["backend"],
            registry=r,
        )
        self.database_up = Gauge(
            "animebot_database_up", "1 when the last scrape could query PostgreSQL.", registry=r
        )
        self.library_outputs = Gauge(
            "animebot_library_outputs",
            "Delivered results by library filing state (database, at scrape time);"
            " waiting_unreachable is the part of waiting that could not reach Jellyfin.",
            ["state"],
            registry=r,
        )
        self.stage_seconds = Histogram(
            "animebot_job_stage_duration_seconds",
            "Time finished jobs spent per stage (queue_wait, comfyui, postprocessing, delivery).",
            ["kind", "stage", "status"],
            buckets=STAGE_BUCKETS,
            registry=r,
        )
        self.jobs_finished = Counter(
            "animebot_jobs_finished",
            "Jobs that reached a final state (this process's events).",
            ["kind", "status"],
            registry=r,
        )
        self.telegram_calls = Counter(
            "animebot_telegram_api_calls",
            "Telegram Bot API calls by method and HTTP status.",
            ["method", "status"],
            registry=r,
        )
        self.telegram_rate_limited = Counter(
            "animebot_telegram_api_rate_limited",
            "Telegram Bot API 429 answers by method.",
            ["method"],
            registry=r,
        )
        self.loop_lag_last = Gauge(
            "animebot_event_loop_lag_last_seconds", "Last measured event-loop lag.", registry=r
        )
        self.loop_lag = Histogram(
            "animebot_event_loop_lag_seconds",
            f"Event-loop lag: how late a {LOOP_LAG_INTERVAL_S} s sleep wakes up.",
            buckets=LAG_BUCKETS,
            registry=r,
        )

    # -- fed by the bot ---------------------------------------------------------------------

    def record_telegram_call(self, method: str, status: int | str) -> None:
        label = telegram_method_label(method)
        code = str(status)
        self.telegram_calls.labels(method=label, status=code).inc()
        if code == "429":
            self.telegram_rate_limited.labels(method=label).inc()

    # -- fed by the background tasks --------------------------------------------------------

    def observe_job(self, job: Generation) -> None:
        """A job reached a final state: count it and, for done/failed, observe its stages."""
        status = job.status.value
        self.jobs_finished.labels(kind=job.kind.value, status=status).inc()
        if status not in _OBSERVED_STATUSES:
            return
        for stage, seconds in stage_durations(job).items():
            self.stage_seconds.labels(kind=job.kind.value, stage=stage, status=status).observe(
                seconds
            )

    def observe_loop_lag(self, seconds: float) -> None:
        self.loop_lag_last.set(seconds)
        self.loop_lag.observe(seconds)

    # -- at scrape time ---------------------------------------------------------------------

    def set_backend_health(self, health: Mapping[str, bool]) -> None:
        self.backend_healthy.clear()
        for url, healthy in health.items():
            self.backend_healthy.labels(backend=url).set(1 if healthy else 0)

    def set_job_counts(
        self, by_state: Mapping[tuple[str, str], int], in_flight: Mapping[str, int]
    ) -> None:
        self.jobs.clear()
        kinds = sorted({k.value for k in JobKind} | {kind for _, kind in by_state})
        states = [s.value for s in JobState] + sorted(
            {state for state, _ in by_state} - {s.value for s in JobState}
        )
        for state in states:
            for kind in kinds:
                self.jobs.labels(state=state, kind=kind).set(by_state.get((state, kind), 0))
        self.queue_length.set(
            sum(n for (state, _), n in by_state.items() if state == JobState.QUEUED.value)
        )
        self.in_flight.clear()
        for url, count in in_flight.items():
            self.in_flight.labels(backend=url).set(count)

    def set_library_counts(self, counts: LibraryCounts) -> None:
        for state, count in (
            ("linked", counts.linked),
            ("filed", counts.filed),
            ("waiting", counts.waiting),
            ("waiting_unreachable", counts.unreachable),
            ("failed", counts.failed),
            ("off", counts.off),
        ):
            self.library_outputs.labels(state=state).set(count)

    async def render(
        self, pool: asyncpg.Pool, backend_health: Callable[[], Awaitable[Mapping[str, bool]]]
    ) -> bytes:
        """Read the scrape-time gauges and render everything in the text format.

        A database failure sets `animebot_database_up` 0 and leaves the database gauges out
        (no stale numbers). All reads happen first; the gauges are then set and rendered with
        no await in between, so concurrent scrapes never interleave."""
        counts: tuple[dict[tuple[str, str], int], dict[str, int], LibraryCounts] | None
        try:
            async with asyncio.timeout(DB_TIMEOUT_S):
                counts = (
                    await gen_db.count_by_state(pool),
                    await gen_db.in_flight_by_backend(pool),
                    await out_db.library_counts(pool, datetime.now(UTC)),
                )
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as error:
            log.warning("metrics: database unreachable", error=describe(error))
            counts = None
        health = await backend_health()
        if counts is None:
            self.database_up.set(0)
            self.jobs.clear()
            self.in_flight.clear()
            self.queue_length.set(0)
            self.library_outputs.clear()
        else:
            by_state, in_flight, library = counts
            self.database_up.set(1)
            self.set_job_counts(by_state, in_flight)
            self.set_library_counts(library)
        self.set_backend_health(health)
        return generate_latest(self.registry)


METRICS: Final = Metrics()
"""The process's metrics, as served by the status server by default."""


def record_telegram_call(method: str, status: int | str) -> None:
    """Count one Telegram Bot API call: `method` is the API method name (`sendMessage`, never
    the URL), `status` the HTTP status code (429 also counts as rate limited) or `"error"` /
    `"timeout"` when no answer came. Safe to call from any coroutine; never raises."""
    try:
        METRICS.record_telegram_call(method, status)
    except Exception as error:  # metrics must never break a Bot API call
        log.warning("telegram metric not recorded", error=str(error))


# -- background tasks -------------------------------------------------------------------------


class LoopLagMonitor:
    """Every `interval_s`, sleeps and measures how late it woke up (the event-loop lag)."""

    def __init__(self, metrics: Metrics, interval_s: float = LOOP_LAG_INTERVAL_S) -> None:
        self.metrics = metrics
        self.interval_s = interval_s
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="loop-lag-monitor")

    async def _run(self) -> None:
        while True:
            started = time.monotonic()
            await asyncio.sleep(self.interval_s)
            lag = max(0.0, time.monotonic() - started - self.interval_s)
            self.metrics.observe_loop_lag(lag)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


class JobEventRecorder:
    """Watches the event bus; when a job of this process reaches a final state, reads its row
    and records its stage durations (each job once)."""

    def __init__(
        self,
        metrics: Metrics,
        events: EventBus,
        load_job: Callable[[UUID], Awaitable[Generation]],
        *,
        load_timeout_s: float = 10.0,
    ) -> None:
        self.metrics = metrics
        self.events = events
        self.load_job = load_job
        self.load_timeout_s = load_timeout_s
        self._seen: OrderedDict[UUID, None] = OrderedDict()
        self._task: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()

    async def start(self) -> None:
        """Returns once subscribed: no final event published after this is missed."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="job-metrics")
            await self._subscribed.wait()

    async def _run(self) -> None:
        async with self.events.subscribe() as queue:
            self._subscribed.set()
            while True:
                event = await queue.get()
                if self.counts(event):
                    await self._record(event.job_id)

    def counts(self, event: JobEvent) -> bool:
        return (
            event.type == "state"
            and event.status in _FINAL_STATUSES
            and event.origin == 0  # published by this process, not bridged from another
            and event.job_id not in self._seen
        )

    async def _record(self, job_id: UUID) -> None:
        try:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a cancel that
            # arrives as the read completes, and stop() then waits forever.
            async with asyncio.timeout(self.load_timeout_s):
                job = await self.load_job(job_id)
        except Exception as error:  # a metric is not worth crashing the watcher
            log.warning("job metrics: row not read", job_id=str(job_id), error=str(error))
            return
        if not job.status.final:
            return
        self._remember(job_id)
        self.metrics.observe_job(job)

    def _remember(self, job_id: UUID) -> None:
        self._seen[job_id] = None
        while len(self._seen) > _SEEN_LIMIT:
            self._seen.popitem(last=False)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
