"""3. 10,000 queued and 1,000 in flight in one process: memory and event-loop lag.

`BACKENDS` fake ComfyUI servers (in the fakes process), all on hold (they accept prompts and
keep them queued), COMFYUI_MAX_IN_FLIGHT=`PER_BACKEND` (the setting's maximum is 64), so
1,000 jobs are in flight: one JobRunner task, one WebSocket subscription and a polling loop each.
11,000 queued image jobs (copies of a real job row, from 200 users) are inserted in one
statement; the engine (dispatch, queue positions, health, runners; a recording deliverer, no
Telegram) takes it from there. Measured in the bot process: RSS, event-loop lag (a task that
sleeps 10 ms and notes how late it wakes) while dispatching and over a steady-state window, the
time to get all 1,000 prompts into the backends; then the queue queries at 10,000 queued rows.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from core.db import generations as gen_db
from core.db.pool import create_pool
from core.models import JobKind
from tests.engine import RecordingDeliverer, actor, start_runtime
from tests.perf.common import (
    BenchResult,
    Fakes,
    LagSampler,
    Postgres,
    bench_settings,
    default_models,
    dist_ms,
    ms,
    pct,
    rss_mb,
)

BACKENDS = 20
PER_BACKEND = 50
IN_FLIGHT = BACKENDS * PER_BACKEND
QUEUED = 10_000
USERS = 200
STEADY_S = 20.0
QUERY_RUNS = 20

_BULK = """
INSERT INTO generations (id, requester_id, chat_id, kind, operation, prompt_typed,
    prompt_positive, prompt_negative, character_ids, workflow, params, seed, created_at)
SELECT gen_random_uuid(), u, u, t.kind, t.operation, t.prompt_typed, t.prompt_positive,
    t.prompt_negative, t.character_ids, t.workflow, t.params, t.seed,
    now() + make_interval(secs => s * 0.0001)
FROM generations t, generate_series(1, $2::int) AS s,
    LATERAL (SELECT ($3::bigint[])[1 + s % cardinality($3::bigint[])] AS u) AS users
WHERE t.id = $1
"""


async def _timed(runs: int, call: object) -> list[float]:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        await call()  # type: ignore[operator]
        times.append(time.perf_counter() - t0)
    return times


async def run(pg: Postgres, fakes: Fakes, work: Path) -> BenchResult:
    result = BenchResult("3. 10k queued / 1k in flight")
    urls = []
    for _ in range(BACKENDS):
        n, url = await fakes.new_comfy(default_models(), keep_requests=False)
        await fakes.post(f"/comfy/{n}/hold")
        urls.append(url)
    dsn = await pg.fresh()
    settings = bench_settings(dsn, work / "data-scale", urls, comfyui_max_in_flight=PER_BACKEND)
    lag = LagSampler(0.01)
    runtime = await start_runtime(settings, RecordingDeliverer())
    samples: dict[str, float] = {}
    try:
        lag.start()
        await asyncio.sleep(2.0)
        samples["rss idle engine"] = rss_mb()
        users = [actor(user_id=20_000 + i) for i in range(USERS)]
        for user in users:
            await runtime.service.seen(user)
        ticket = await runtime.service.request_scene(users[0], JobKind.IMAGE, "a quiet rooftop")
        t_insert = time.monotonic()
        await runtime.database.pool.execute(
            _BULK, ticket.job.id, QUEUED + IN_FLIGHT - 1, [u.user_id for u in users]
        )
        await runtime.database.pool.execute("SELECT pg_notify('animebot_queue', 'bulk')")
        t_inserted = time.monotonic()
        deadline = t_inserted + 300
        while True:
            state = await fakes.get("/comfy/state")
            if sum(state["pending"]) >= IN_FLIGHT:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {sum(state['pending'])} of {IN_FLIGHT} in flight")
            await asyncio.sleep(0.25)
        t_dispatched = time.monotonic()
        samples["rss after dispatch"] = rss_mb()
        requests_before = (await fakes.get("/comfy/state"))["requests"]
        await asyncio.sleep(STEADY_S)
        t_steady = time.monotonic()
        requests_after = (await fakes.get("/comfy/state"))["requests"]
        samples["rss steady"] = rss_mb()
        queued = await runtime.database.pool.fetchval(
            "SELECT count(*) FROM generations WHERE status = 'queued'"
        )
    finally:
        await lag.stop()
        await runtime.stop()

    dispatch_lag = lag.between(t_inserted, t_dispatched)
    steady_lag = lag.between(t_dispatched, t_steady)
    poll_rate = (requests_after - requests_before) / (t_steady - t_dispatched)
    result.raw = {"dispatch_lag": dispatch_lag, "steady_lag": steady_lag, **samples}
    result.note(f"{IN_FLIGHT} in flight on {BACKENDS} backends x {PER_BACKEND}, {queued} queued")
    result.note(f"bulk insert of {QUEUED + IN_FLIGHT - 1} rows: {ms(t_inserted - t_insert)}")
    result.note(f"dispatch of {IN_FLIGHT}: {t_dispatched - t_inserted:.1f} s")
    for name, value in samples.items():
        result.note(f"{name}: {value:.0f} MB")
    result.note(f"loop lag while dispatching (p50/p90/p99): {dist_ms(dispatch_lag)}")
    result.note(f"loop lag steady ({STEADY_S:.0f} s):          {dist_ms(steady_lag)}")
    result.note(f"max lag: {max(dispatch_lag + steady_lag, default=0) * 1000:.0f} ms")
    result.note(f"HTTP requests to the backends in steady state: {poll_rate:.0f}/s")
    result.add(
        "RSS, 10k queued + 1k in flight",
        f"{samples['rss steady']:.0f} MB (idle engine {samples['rss idle engine']:.0f} MB)",
    )
    result.add(
        "loop lag p99 while dispatching 1k",
        ms(pct(dispatch_lag, 99)),
        "<= 50 ms",
        pct(dispatch_lag, 99) <= 0.05,
    )
    result.add(
        "loop lag p99 steady (1k in flight)",
        ms(pct(steady_lag, 99)),
        "<= 50 ms",
        pct(steady_lag, 99) <= 0.05,
    )
    result.add("time to dispatch 1k jobs", f"{t_dispatched - t_inserted:.1f} s")

    # The queue queries with 10,000 queued rows (engine stopped: no other load).
    pool = await create_pool(dsn, max_size=2)
    try:
        middle = await pool.fetchval(
            "SELECT id FROM generations WHERE status = 'queued'"
            " ORDER BY created_at OFFSET $1 LIMIT 1",
            QUEUED // 2,
        )
        queries = {
            "queue_head(8) (dispatch)": lambda: gen_db.queue_head(pool, 8),
            "queue_head(1000) (queue events)": lambda: gen_db.queue_head(pool, 1000),
            "queue_position(job) (enqueue, /queue)": lambda: gen_db.queue_position(pool, middle),
            "queue_positions() (all)": lambda: gen_db.queue_positions(pool),
            "in_flight_by_backend()": lambda: gen_db.in_flight_by_backend(pool),
        }
        for name, call in queries.items():
            await call()  # warm the statement cache
            times = await _timed(QUERY_RUNS, call)
            result.note(f"{name:40s} median {ms(pct(times, 50))}, max {ms(max(times))}")
            if name.startswith(("queue_head(8)", "queue_position")):
                result.add(f"{name} @10k queued", ms(pct(times, 50)))
        plan = await pool.fetch("EXPLAIN (ANALYZE, BUFFERS) " + gen_db._QUEUE_HEAD, 8, [])
        result.raw["queue_head_plan"] = [row[0] for row in plan]
    finally:
        await pool.close()
    return result
