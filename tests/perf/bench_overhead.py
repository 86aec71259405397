"""1. Time the bot adds to a job: everything that is neither ComfyUI's nor Telegram's time.

The real bot (webhook mode) with a real PostgreSQL, against the fake ComfyUI (instant: no step or
node delay) and the fake Bot API, both in another process. One job at a time, started at most
every 80 ms (JOB_PERIOD_S: under Telegram's 30 messages a second), each a user's
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
the overhead is also given without it. It starts when ComfyUI's `executed` event names the
output, which the fake sends right before `executing{null}` (as the real server does: 0-3 ms
before it in 8 of the 9 recordings in ../shared/comfyui, 0.47 s in one), and it overlaps the
/history read and the `postprocessing` record: "without post-processing" subtracts its whole span, a
slight overstatement of what it saves.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import core.jobs.runner as runner_module
from tests.perf.common import (
    BenchResult,
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
from tests.sql_statements import DbStatements

COMFY_WAITED_ROUTES = ("/history/", "/view", "/queue")
USERS = 25
PACED_STEP_S = 0.003  # phase 2: ComfyUI sends its 28 sampler steps 3 ms apart
# Jobs start at most this often. A job makes about two Telegram calls (the progress message,
# the result), and Telegram lets a bot send about 30 messages a second (the bot's
# AIORateLimiter keeps it under that, with a margin). Back to back, fast jobs would exceed the
# limit and the limiter would hold deliveries back: time waited for Telegram, not added by the
# bot, yet inside "to Telegram".
JOB_PERIOD_S = 0.08


class _Phase:
    """Measures jobs one at a time through the running bot."""

    def __init__(self, fakes: Fakes, runtime: Any, comfy_n: int, users: list[int]) -> None:
        self.fakes, self.runtime, self.comfy_n, self.users = fakes, runtime, comfy_n, users
        self.served_next = 0
        self.count = 0
        self.pp_time: dict[str, float] = {}
        self.last_start = 0.0

    async def job(self) -> dict[str, float]:
        await asyncio.sleep(self.last_start + JOB_PERIOD_S - time.monotonic())
        self.last_start = time.monotonic()
        fakes = self.fakes
        user = self.users[self.count % USERS]
        self.count += 1
        calls_next = (await fakes.telegram_calls(since=10**9))["next"]
        sent: dict[str, Any] = {}

        async def send() -> None:
            # A new scene each time: the same text gives the same seed, and ComfyUI (like the
            # fake) would serve it from its node cache without sampling.
            text = f"/image a girl on a rooftop, take {self.count}"
            body = {"chat_id": user, "user_id": user, "text": text}
            sent.update(await fakes.post("/telegram/send", body))

        events = await wait_events(
            self.runtime, lambda e: e.type == "delivered", 1, 60, started=send
        )
        job_id = str(events[0].job_id)
        delivery = await fakes.post(
            "/telegram/wait_delivery", {"chat_id": user, "since": calls_next}
        )
        calls = await fakes.telegram_calls(since=10**9)
        marks_all = await fakes.comfy_marks(self.comfy_n, since=self.served_next)
        self.served_next = marks_all["next"]
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
        return {
            "to_comfy": to_comfy,
            "to_telegram": to_telegram,
            "comfy_waited": comfy_waited,
            "comfy_time": t_done - t_post,
            "pp": self.pp_time.get(job_id, 0.0),
            "total": to_comfy + to_telegram,
        }


def _report(result: BenchResult, label: str, rows: list[dict[str, float]]) -> None:
    def column(name: str) -> list[float]:
        return [row[name] for row in rows]

    result.note(f"{label}: {len(rows)} jobs one at a time, median / p90 / p99:")
    result.note(f"  update -> POST /prompt:         {dist_ms(column('to_comfy'))}")
    result.note(f"  executing{{null}} -> delivery:   {dist_ms(column('to_telegram'))}")
    result.note(f"    of which post-processing:    {dist_ms(column('pp'))}")
    result.note(f"    fake ComfyUI serving (excl.): {dist_ms(column('comfy_waited'))}")
    result.note(f"  fake ComfyUI run (excluded):    {dist_ms(column('comfy_time'))}")
    result.note(f"  bot overhead:                   {dist_ms(column('total'))}")
    without_pp = [row["total"] - row["pp"] for row in rows]
    result.note(f"  bot overhead w/o post-proc.:    {dist_ms(without_pp)}")


async def run(
    pg: Postgres,
    fakes: Fakes,
    work: Path,
    *,
    jobs: int = 200,
    paced: int = 100,
    warmup: int = 10,
    counted: int = 50,
) -> BenchResult:
    result = BenchResult("1. bot overhead per job")
    telegram = await fakes.new_telegram()
    comfy_n, comfy_url = await fakes.new_comfy(default_models())
    settings = bench_settings(
        await pg.fresh(), work / "data-overhead", [comfy_url], telegram, webhook=True
    )
    users = (await fakes.post("/telegram/users", {"n": USERS}))["users"]
    original = runner_module.process_output
    statements = DbStatements()
    instant: list[dict[str, float]] = []
    spread: list[dict[str, float]] = []
    try:
        async with running_bot(settings, fakes) as runtime:
            phase = _Phase(fakes, runtime, comfy_n, users)

            async def timed_process_output(job: Any, *args: Any, **kwargs: Any) -> Any:
                t0 = time.perf_counter()
                try:
                    return await original(job, *args, **kwargs)
                finally:
                    key = str(job.id)
                    phase.pp_time[key] = phase.pp_time.get(key, 0.0) + time.perf_counter() - t0

            runner_module.process_output = timed_process_output  # type: ignore[assignment]
            for _ in range(warmup):
                await phase.job()
            cpu0 = cpu_s()
            instant = [await phase.job() for _ in range(jobs)]
            cpu1 = cpu_s()
            with statements:  # counted on jobs of their own: the counting costs CPU too
                for _ in range(counted):
                    await phase.job()
            await fakes.post(f"/comfy/{comfy_n}/config", {"step_delay_s": PACED_STEP_S})
            spread = [await phase.job() for _ in range(paced)]
    finally:
        runner_module.process_output = original  # type: ignore[assignment]

    result.raw = {"instant": instant, "paced": spread, "statements": dict(statements.by_sql)}
    _report(result, "instant ComfyUI", instant)
    _report(result, f"ComfyUI steps {PACED_STEP_S * 1000:g} ms apart", spread)
    per_job = statements.total / max(1, counted)
    cpu_ms = (cpu1 - cpu0) / max(1, len(instant)) * 1000
    result.note(f"bot process CPU per job: {cpu_ms:.1f} ms (user+sys, the whole job)")
    result.note(f"SQL statements per job: {per_job:.1f}; most frequent:")
    for sql, count in statements.by_sql.most_common(12):
        result.note(f"  {count / max(1, counted):5.2f}  {sql}")

    total = [row["total"] for row in instant]
    without_pp = [row["total"] - row["pp"] for row in instant]
    paced_total = [row["total"] for row in spread]
    target = "median <= 10 ms"
    result.add("bot overhead/job (median/p90/p99)", dist_ms(total), target, pct(total, 50) <= 0.01)
    result.add(
        "  same without post-processing", dist_ms(without_pp), target, pct(without_pp, 50) <= 0.01
    )
    result.add("  post-processing (512x512 PNG)", dist_ms([row["pp"] for row in instant]))
    result.add(
        f"  ComfyUI steps {PACED_STEP_S * 1000:g} ms apart",
        dist_ms(paced_total),
        target,
        pct(paced_total, 50) <= 0.01,
    )
    result.add("  bot CPU per job / SQL statements per job", f"{cpu_ms:.1f} ms / {per_job:.1f}")
    return result
