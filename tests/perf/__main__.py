"""Run the performance benchmarks and print their figures.

    python -m tests.perf                 # all seven, ~3 minutes on 2 cores
    python -m tests.perf --only 1,3      # some of them
    python -m tests.perf --json out.json # also write every figure (and raw samples) as JSON

Real PostgreSQL (embedded server, or DATABASE_URL), the fake ComfyUI and the fake Bot API in a
separate process (tests/perf/fakes_host.py), the bot in this one. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bot.cli import run_async
from core.logs import configure_logging
from tests.perf import (
    bench_backend_gap,
    bench_flood,
    bench_floor,
    bench_overhead,
    bench_scale,
    bench_video,
    bench_webhook,
)
from tests.perf.common import BenchResult, Fakes, Postgres, load_average

Bench = Callable[[Postgres, Fakes, Path], Awaitable[BenchResult]]
BENCHES: dict[str, tuple[str, Bench]] = {
    "1": ("bot overhead per job", bench_overhead.run),
    "2": ("backend idle gap", bench_backend_gap.run),
    "3": ("10k queued / 1k in flight", bench_scale.run),
    "4": ("webhook updates/s", bench_webhook.run),
    "5": ("Telegram calls per job, 429s", bench_flood.run),
    "6": ("video post-processing", bench_video.run),
    "7": ("floor of the steps of one job", bench_floor.run),
}


def table(results: list[BenchResult]) -> str:
    rows = [("metric", "value", "target", "met?")]
    for result in results:
        for m in result.metrics:
            met = "" if m.met is None else ("yes" if m.met else "NO")
            rows.append((m.name, m.value, m.target, met))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = []
    for index, row in enumerate(rows):
        lines.append("| " + " | ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)) + " |")
        if index == 0:
            lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


async def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.perf",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--only", default=",".join(BENCHES), help="comma-separated bench numbers")
    parser.add_argument("--json", type=Path, help="write all figures to this file")
    args = parser.parse_args(argv)
    chosen = [key.strip() for key in args.only.split(",") if key.strip()]
    unknown = [key for key in chosen if key not in BENCHES]
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)}")

    work = Path(tempfile.mkdtemp(prefix="animebot-perf-"))
    log_file = (work / "bot.log").open("a")
    configure_logging("INFO", "json", stream=log_file)  # production format, off the terminal
    print(f"work folder: {work} (bot log: {work / 'bot.log'})", flush=True)
    started = time.monotonic()
    pg = await Postgres.start(work)
    results: list[BenchResult] = []
    failed = False
    for key in chosen:
        title, bench = BENCHES[key]
        print(f"\n== {key}. {title} (load average {load_average()})", flush=True)
        fakes = await Fakes.start(work / "fakes.log")
        t0 = time.monotonic()
        try:
            results.append(await bench(pg, fakes, work))
        except Exception:
            failed = True
            traceback.print_exc()
            results.append(BenchResult(f"{key}. {title}", notes=["FAILED (see traceback)"]))
        finally:
            await fakes.close()
            gc.collect()
        print(f"   ({time.monotonic() - t0:.0f} s)", flush=True)

    print(
        f"\nAll figures ({time.monotonic() - started:.0f} s in all; {os.cpu_count()} CPUs,"
        f" load average now {load_average()}):\n"
    )
    print(table(results))
    if args.json:
        data: dict[str, Any] = {
            r.title: {
                "metrics": [m.__dict__ for m in r.metrics],
                "notes": r.notes,
                "raw": r.raw,
            }
            for r in results
        }
        args.json.write_text(json.dumps(data, indent=1, default=str))
    log_file.close()
    print(f"\n(logs and data in {work}; remove it when done)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(run_async(main(sys.argv[1:])))  # the event loop `animebot` runs on
