"""5. Telegram calls per delivered job, and no 429 for a burst of 100 jobs in one group.

The real bot (webhook mode) against the fake Bot API with its flood model enforced (a violation
is answered with 429): private chats 1 msg/s (burst 3), groups 20 msg/min, 30 msg/s overall.
At 20 msg/min, 100 jobs in one group (>= 2 messages each) take over 10 minutes in real time, so
time runs `TIME_SCALE` times faster on both sides, and only for rate limits:
  - the fake's flood model reads a clock `TIME_SCALE`x faster (same budgets, windows / 30);
  - the bot runs with `run_bot(time_scale=TIME_SCALE)`: its AIORateLimiter periods (1 s overall,
    60 s per group) and the progress editor's PacingPolicy (private/group intervals, group and
    global windows, preview interval) are divided by `TIME_SCALE`.
Nothing else is scaled (timeouts, ComfyUI's job length, the bot's work). `USERS` users in one
group send `JOBS` `/image` commands at once; the fake ComfyUI takes ~`STEP_S` x 28 steps per job.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

from tests.fakes.telegram import FakeTelegram
from tests.perf.common import (
    BenchResult,
    Fakes,
    Postgres,
    bench_settings,
    default_models,
    running_bot,
    wait_events,
)

TIME_SCALE = 30.0
JOBS = 100
USERS = 10
STEP_S = 0.005
BOT_USERNAME = FakeTelegram().bot_user.username


async def run(pg: Postgres, fakes: Fakes, work: Path) -> BenchResult:
    result = BenchResult("5. Telegram calls per job, 429s")
    telegram = await fakes.new_telegram()
    await fakes.post("/telegram/flood", {"scale": TIME_SCALE, "enforce": True})
    _, comfy_url = await fakes.new_comfy(default_models(), step_delay_s=STEP_S)
    settings = bench_settings(
        await pg.fresh(), work / "data-flood", [comfy_url], telegram, webhook=True
    )
    users = (await fakes.post("/telegram/users", {"n": USERS, "private": False}))["users"]
    group = (await fakes.post("/telegram/group", {"members": users}))["chat_id"]
    async with running_bot(settings, fakes, time_scale=TIME_SCALE) as runtime:
        first_call = (await fakes.telegram_calls(since=10**9))["next"]
        loop = asyncio.get_running_loop()
        started = loop.time()
        started_at = time.monotonic()

        async def burst() -> None:
            for index in range(JOBS):
                user = users[index % USERS]
                # Addressed to the bot: with privacy mode a group bot sees only such commands.
                text = f"/image@{BOT_USERNAME} scene {index} a girl on a rooftop"
                await fakes.post(
                    "/telegram/send", {"chat_id": group, "user_id": user, "text": text}
                )

        await wait_events(runtime, lambda e: e.type == "delivered", JOBS, 600, started=burst)
        elapsed = loop.time() - started
        await asyncio.sleep(2.0)  # late edits, if any, are counted too
        calls = await fakes.telegram_calls(since=first_call)

    in_group = [c for c in calls["calls"] if c["chat_id"] == group]
    by_method = Counter(c["method"] for c in in_group)
    throttled = [c for c in calls["calls"] if c["status"] == 429]
    failed = Counter(f"{c['method']}: {c['error']}" for c in in_group if c["status"] != 200)
    sends = sum(n for m, n in by_method.items() if m.startswith("send") and m != "sendChatAction")
    edits = sum(n for m, n in by_method.items() if m.startswith("edit"))
    answers = by_method.get("answerCallbackQuery", 0)
    other = sum(by_method.values()) - sends - edits - answers
    result.raw = {"by_method": dict(by_method), "failed": dict(failed)}
    result.note(f"{JOBS} jobs from {USERS} users in one group, delivered in {elapsed:.1f} s")
    result.note(
        f"(x{TIME_SCALE:g} = {elapsed * TIME_SCALE / 60:.0f} min of Telegram rate-limit time)"
    )
    result.note(f"calls to the group by method: {dict(by_method.most_common())}")
    result.note(f"flood violations recorded by the fake: {calls['violations']}")
    for v in calls["violation_details"]:
        t = v["at"] - started_at
        result.note(
            f"  {v['method']} at +{t:.2f} s: {v['rule']} rule, {v['wait_s'] * 1000:.0f} ms early"
        )
    if failed:
        result.note(f"failed calls: {dict(failed)}")
    result.add(
        "Telegram calls per delivered job",
        f"{(sends + edits + answers + other) / JOBS:.2f} (sends {sends / JOBS:.2f},"
        f" edits {edits / JOBS:.2f}, answers {answers / JOBS:.2f}, other {other / JOBS:.2f})",
    )
    result.add(
        f"429s, burst of {JOBS} jobs in one group",
        str(len(throttled)),
        "0",
        not throttled and calls["violations"] == 0,
    )
    return result
