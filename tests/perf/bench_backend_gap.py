"""2. Backend idle gap between consecutive jobs on a saturated backend.

One fake ComfyUI (in the fakes process) whose every job lasts `JOB_S` (`job_delay_s`, plus the
fake's own work: validating, writing the PNG), COMFYUI_MAX_IN_FLIGHT=2, and `JOBS` image jobs
queued at once through the service (the engine with a recording deliverer: no Telegram here).
The fake runs its queue one job at a time, so with 2 in flight the next prompt should already
wait inside ComfyUI when one ends. Measured on the fake: gap = next job's start - previous job's
end (`executing{node:null}`); busy = sum of job durations / (last end - first start).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from core.models import JobKind
from tests.engine import RecordingDeliverer, actor, start_runtime
from tests.perf.common import (
    BenchResult,
    Fakes,
    Postgres,
    bench_settings,
    default_models,
    dist_ms,
    pct,
)

JOB_S = 0.2
JOBS = 100
USERS = 10


async def run(pg: Postgres, fakes: Fakes, work: Path) -> BenchResult:
    result = BenchResult("2. backend idle gap")
    n, url = await fakes.new_comfy(default_models(), job_delay_s=JOB_S)
    settings = bench_settings(await pg.fresh(), work / "data-gap", [url], comfyui_max_in_flight=2)
    deliverer = RecordingDeliverer()
    runtime = await start_runtime(settings, deliverer)
    try:
        users = [actor(user_id=9000 + i) for i in range(USERS)]
        for user in users:
            await runtime.service.seen(user)
        for index in range(JOBS):
            await runtime.service.request_scene(
                users[index % USERS], JobKind.IMAGE, f"scene {index} on a rooftop"
            )
        deadline = asyncio.get_running_loop().time() + JOBS * JOB_S * 4 + 60
        while len(deliverer.delivered) < JOBS:
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"only {len(deliverer.delivered)} of {JOBS} delivered")
            await asyncio.sleep(0.2)
    finally:
        await runtime.stop()
    marks = (await fakes.comfy_marks(n))["marks"]
    jobs = sorted((m["start"], m["end"]) for m in marks.values() if "start" in m and "end" in m)
    gaps = [max(0.0, jobs[i + 1][0] - jobs[i][1]) for i in range(len(jobs) - 1)]
    # The first job starts before the queue has built up; measure from the second one on.
    busy = sum(end - start for start, end in jobs[1:])
    span = jobs[-1][1] - jobs[1][0]
    result.raw = {"gaps": gaps, "jobs": jobs}
    result.note(f"{len(jobs)} jobs of ~{JOB_S * 1000:.0f} ms + the fake's work")
    result.note(f"job duration on the fake: {dist_ms([e - s for s, e in jobs])}")
    result.note(f"gap end -> next start: {dist_ms(gaps)}; max {max(gaps) * 1000:.1f} ms")
    result.note(f"busy: {busy / span * 100:.2f} % of {span:.1f} s")
    result.add("backend gap (median/p90/p99)", dist_ms(gaps), "<= 5 ms", pct(gaps, 99) <= 0.005)
    result.add("backend busy", f"{busy / span * 100:.2f} %", ">= 99.5 %", busy / span >= 0.995)
    return result
