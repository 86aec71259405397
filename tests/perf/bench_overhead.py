"""1. Time the bot adds to a job: everything that is neither ComfyUI's nor Telegram's time.

The real bot (webhook mode) with a real PostgreSQL, against the fake ComfyUI (instant: no step or
node delay) and the fake Bot API, both in another process. One job at a time, each a user's
`/image ...` update, stamped on the fakes' side with one machine-wide monotonic clock:

    t_req   the fake Bot API starts POSTing the update to the bot's webhook
    t_post  POST /prompt arrives at the fake ComfyUI
    t_done  the fake ComfyUI sends `executing{node:null}` (the job is finished there)
    t_deliv the delivery call (the result photo, `*_telegram.jpg`) arrives at the fake Bot API

    to ComfyUI   = t_post - t_req                        (update -> handler -> DB -> dispatch)
    to Telegram  = t_deliv - t_done - fake ComfyUI time spent serving the bot's /history, /view
                   and /queue requests in that window
    bot overhead = to ComfyUI + to Telegram

Post-processing (`core.jobs.postprocess.process_output`: PNG metadata, the Telegram JPEG, probe,
sha256) runs inside "to Telegram"; it is timed in the bot process and reported on its own, and
the overhead is also given without it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import core.jobs.runner as runner_module
from tests.perf.common import (
    BenchResult,
    DbStatements,
    Fakes,
    Postgres,
    bench_settings,
    cpu_s,
    default_models,
    dist_ms,
    pct,
    running_bot,
    wait_events,
)

COMFY_WAITED_ROUTES = ("/history/", "/view", "/queue")
USERS = 25


async def run(pg: Postgres, fakes: Fakes, work: Path, *, jobs: int = 200, warmup: int = 10) -> Any:
    result = BenchResult("1. bot overhead per job")
    telegram = await fakes.new_telegram()
    comfy_n, comfy_url = await fakes.new_comfy(default_models())
    settings = bench_settings(
        await pg.fresh(), work / "data-overhead", [comfy_url], telegram, webhook=True
    )
    users = (await fakes.post("/telegram/users", {"n": USERS}))["users"]

    pp_time: dict[str, float] = {}
    original = runner_module.process_output

    async def timed_process_output(job: Any, *args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return await original(job, *args, **kwargs)
        finally:
            key = str(job.id)
            pp_time[key] = pp_time.get(key, 0.0) + time.perf_counter() - t0

    runner_module.process_output = timed_process_output  # type: ignore[assignment]
    rows: list[dict[str, float]] = []
    statements = DbStatements()
    cpu = {"start": 0.0, "end": 0.0}
    try:
        async with running_bot(settings, fakes) as runtime:
            served_next = 0
            for index in range(warmup + jobs):
                if index == warmup:
                    statements.__enter__()
                    cpu["start"] = cpu_s()
                user = users[index % USERS]
                calls_next = (await fakes.telegram_calls(since=10**9))["next"]
                sent: dict[str, Any] = {}

                async def send(user: int = user, sent: dict[str, Any] = sent) -> None:
                    body = {"chat_id": user, "user_id": user, "text": "/image a girl on a rooftop"}
                    sent.update(await fakes.post("/telegram/send", body))

                events = await wait_events(
                    runtime, lambda e: e.type == "delivered", 1, 60, started=send
                )
                job_id = str(events[0].job_id)
                delivery = await fakes.post(
                    "/telegram/wait_delivery", {"chat_id": user, "since": calls_next}
                )
                calls = await fakes.telegram_calls(since=10**9)
                marks_all = await fakes.comfy_marks(comfy_n, since=served_next)
                served_next = marks_all["next"]
                if index < warmup:
                    continue
                marks = marks_all["marks"][job_id]
                t_req = calls["webhook_started"][str(sent["update_id"])]
                t_post, t_done, t_deliv = marks["posted"], marks["end"], delivery["at"]
                comfy_waited = sum(
                    t1 - t0
                    for _method, route, t0, t1 in marks_all["served"]
                    if t0 >= t_done and t1 <= t_deliv and route.startswith(COMFY_WAITED_ROUTES)
                )
                to_comfy = t_post - t_req
                to_telegram = t_deliv - t_done - comfy_waited
                rows.append(
                    {
                        "to_comfy": to_comfy,
                        "to_telegram": to_telegram,
                        "comfy_waited": comfy_waited,
                        "comfy_time": t_done - t_post,
                        "pp": pp_time.get(job_id, 0.0),
                        "total": to_comfy + to_telegram,
                    }
                )
            cpu["end"] = cpu_s()
    finally:
        statements.__exit__()
        runner_module.process_output = original  # type: ignore[assignment]

    def column(name: str) -> list[float]:
        return [row[name] for row in rows]

    total = column("total")
    without_pp = [row["total"] - row["pp"] for row in rows]
    result.raw = {"rows": rows}
    result.note(f"{len(rows)} jobs measured (after {warmup} warm-up), median / p90 / p99:")
    result.note(f"update -> POST /prompt:        {dist_ms(column('to_comfy'))}")
    result.note(f"executing{{null}} -> delivery:  {dist_ms(column('to_telegram'))}")
    result.note(f"  of which post-processing:   {dist_ms(column('pp'))}")
    result.note(f"  fake ComfyUI serving (excl): {dist_ms(column('comfy_waited'))}")
    result.note(f"fake ComfyUI run (excluded):   {dist_ms(column('comfy_time'))}")
    result.note(f"bot overhead total:            {dist_ms(total)}")
    result.note(f"bot overhead w/o post-proc.:   {dist_ms(without_pp)}")
    per_job = statements.total / max(1, len(rows))
    cpu_ms = (cpu["end"] - cpu["start"]) / max(1, len(rows)) * 1000
    result.note(f"bot process CPU per job:       {cpu_ms:.1f} ms (user+sys, all of the job)")
    result.note(f"SQL statements per job:        {per_job:.1f}; most frequent:")
    for sql, count in statements.by_sql.most_common(12):
        result.note(f"  {count / max(1, len(rows)):5.2f}  {sql}")
    result.raw["statements"] = dict(statements.by_sql)
    median = pct(total, 50)
    result.add(
        "bot overhead/job (median/p90/p99)", dist_ms(total), "median <= 10 ms", median <= 0.010
    )
    result.add(
        "  same without post-processing",
        dist_ms(without_pp),
        "median <= 10 ms",
        pct(without_pp, 50) <= 0.010,
    )
    result.add("  post-processing (512x512 PNG)", dist_ms(column("pp")))
    result.add("  bot CPU per job / SQL statements per job", f"{cpu_ms:.1f} ms / {per_job:.1f}")
    return result
