"""4. Telegram updates handled per second in webhook mode, and handler latency.

The real bot (`run_bot`, webhook mode, secret token) against the fake Bot API; the fakes process
POSTs `/start` from N new users (each in their own private chat) to the bot's webhook port with
the secret header, `CONCURRENCY` at a time. Latency of an update = its POST start -> the bot's
sendMessage to that chat arriving at the fake; throughput = N / (first POST -> last reply).

Closed loop: `concurrency` simulated users, each sending its next update when the bot answered
the previous one. Three runs: one user at a time (the handler's latency), and 32 users with the
production rate limits (AIORateLimiter: 30 requests/s overall, Telegram's own limit, so replies
never exceed 30/s) and with those limits scaled away (`time_scale` 1000: the bot's capacity).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.perf.common import (
    BenchResult,
    Fakes,
    Postgres,
    bench_settings,
    default_models,
    dist_ms,
    pct,
    running_bot,
)

CONCURRENCY = 32
# (label, time_scale, updates, concurrent users)
RUNS = (
    ("1 user at a time, limits scaled away", 1000.0, 200, 1),
    ("32 users, production limits", 1.0, 400, CONCURRENCY),
    ("32 users, limits scaled away", 1000.0, 600, CONCURRENCY),
)


async def _load(
    pg: Postgres, fakes: Fakes, work: Path, time_scale: float, n: int, concurrency: int
) -> Any:
    telegram = await fakes.new_telegram()
    _, comfy_url = await fakes.new_comfy(default_models())
    data_dir = work / f"data-webhook-{time_scale:g}-{concurrency}"
    settings = bench_settings(await pg.fresh(), data_dir, [comfy_url], telegram, webhook=True)
    async with running_bot(settings, fakes, time_scale=time_scale):
        # A few first, so that connection set-up and first imports are not measured.
        await fakes.post("/telegram/webhook_load", {"n": 5, "concurrency": 5})
        return await fakes.post("/telegram/webhook_load", {"n": n, "concurrency": concurrency})


async def run(pg: Postgres, fakes: Fakes, work: Path) -> BenchResult:
    result = BenchResult("4. webhook updates/s")
    for label, scale, n, concurrency in RUNS:
        load = await _load(pg, fakes, work, scale, n, concurrency)
        requests = load["requests"]
        replied = [r for r in requests if r[2] is not None]
        latency = [reply - start for start, _end, reply in replied]
        post_time = [end - start for start, end, _reply in requests]
        span = load["finished"] - load["started"]
        rate = len(replied) / span
        result.raw[label] = load
        result.note(
            f"{label}: {n} x /start: {len(replied)} answered in {span:.1f} s"
            f" = {rate:.0f} updates/s; HTTP {load['statuses']}"
        )
        result.note(f"  POST -> reply: {dist_ms(latency)}; the POST itself {dist_ms(post_time)}")
        p50, p99 = pct(latency, 50) * 1000, pct(latency, 99) * 1000
        result.add(f"webhook /start, {label}", f"{rate:.0f}/s, p50 {p50:.0f} / p99 {p99:.0f} ms")
        if len(replied) < n:
            result.add("  unanswered updates", str(n - len(replied)), "0", False)
    return result
