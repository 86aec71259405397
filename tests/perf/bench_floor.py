"""7. The floor under benchmark 1: the bare steps any bot with our guarantees takes per job.

Benchmark 1 measures the time the bot adds to a job. This one measures, each alone and with
nothing else running, the steps that no such bot can leave out, each done the cheapest way
(no bot code around them), against the same PostgreSQL and fakes on the same 2 cores:

    webhook      the fake Bot API starts POSTing an update -> a bare python-telegram-bot
                 webhook application (tornado, as ours) calls its one handler
    record       one durable row: INSERT of a one-row autocommit transaction (it waits for the
                 WAL flush, as every commit does); a job needs at least two (the job before
                 its prompt goes out, so it is never lost; `delivering` before the upload, so it
                 is never delivered twice)
    prompt       POST /prompt with a real workflow (the bot's aiohttp client): call -> arrival
                 at the fake ComfyUI
    download     GET /view of a 512x512 PNG: call -> bytes in memory, minus the fake's serving
                 (the bot's own download, to a file, is printed beside it, not counted)
    jpeg         the PNG decoded and encoded as the Telegram JPEG (Pillow, in a thread)
    upload       send_photo of that JPEG through python-telegram-bot and our transport:
                 call -> arrival at the fake Bot API

floor = webhook + 2 x record + prompt + download + jpeg + upload (sums of medians). Left out,
so the floor is if anything low: the WebSocket event that says the job is finished, checking
who asks (access, flood limit), reading the characters, the claim of a GPU slot, and the
progress message.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

from telegram import Bot, Update
from telegram.ext import Application, ContextTypes, TypeHandler

from bot.request import CountingRequest
from core.comfy.client import ComfyClient, ComfyError
from core.comfy.protocol import OutputRef
from core.db.pool import connect
from core.media.images import build_telegram_photo
from tests.fakes.comfyui import write_png
from tests.perf.common import (
    WEBHOOK_SECRET,
    BenchResult,
    Fakes,
    Postgres,
    default_models,
    dist_ms,
    pct,
)
from tests.webhook import serving_webhook

SAMPLES = 200
WARMUP = 10
TEMPLATE = Path(__file__).resolve().parents[2] / "core/workflows/templates/txt2img_sd15.json"


async def _samples(step: Callable[[], Awaitable[float]], n: int = SAMPLES) -> list[float]:
    for _ in range(WARMUP):
        await step()
    return [await step() for _ in range(n)]


async def _webhook(fakes: Fakes, telegram: dict[str, str], user: int) -> list[float]:
    handled: asyncio.Queue[tuple[int, float]] = asyncio.Queue()

    async def record(update: Update, _context: ContextTypes.DEFAULT_TYPE) -> None:
        handled.put_nowait((update.update_id, time.monotonic()))

    app = (
        Application.builder()
        .token(telegram["token"])
        .base_url(telegram["api_url"])
        .request(CountingRequest())
        .get_updates_request(CountingRequest())
        .build()
    )
    app.add_handler(TypeHandler(Update, record))

    async def one() -> float:
        body = {"chat_id": user, "user_id": user, "text": "/start"}
        sent = await fakes.post("/telegram/send", body)
        update_id, at = await asyncio.wait_for(handled.get(), 10)
        assert update_id == sent["update_id"]
        started = (await fakes.telegram_calls(since=10**9))["webhook_started"]
        return at - float(started[str(update_id)])

    async with serving_webhook(app, path="hook", secret=WEBHOOK_SECRET):
        return await _samples(one)


async def _record(dsn: str) -> list[float]:
    conn = await connect(dsn)
    try:
        await conn.execute("CREATE TABLE floor_probe (id uuid PRIMARY KEY, body jsonb NOT NULL)")

        async def one() -> float:
            t0 = time.monotonic()
            await conn.execute(
                "INSERT INTO floor_probe (id, body) VALUES ($1, $2)", uuid.uuid4(), '{"n": 1}'
            )
            return time.monotonic() - t0

        return await _samples(one)
    finally:
        await conn.close()


async def _comfy(
    fakes: Fakes, comfy_n: int, url: str, work: Path
) -> tuple[dict[str, list[float]], list[float]]:
    prompt = json.loads(TEMPLATE.read_text())
    png = work / "floor.png"
    write_png(png, 512, 512, "floor", {})
    async with ComfyClient(url) as client:
        name = await client.upload_image(png, "floor.png")
        ref = OutputRef(node_id="9", filename=name, subfolder="", type="input", animated=False)
        marks_next = (await fakes.comfy_marks(comfy_n, since=10**9))["next"]

        async def post() -> float:
            prompt_id = str(uuid.uuid4())
            t0 = time.monotonic()
            # The fake may reject the unfilled template: it has arrived all the same.
            with contextlib.suppress(ComfyError):
                await client.submit(prompt, prompt_id=prompt_id, client_id="floor")
            marks = await fakes.comfy_marks(comfy_n, since=10**9)
            return float(marks["marks"][prompt_id]["posted"]) - t0

        async def timed_view(fetch: Callable[[], Awaitable[object]]) -> float:
            nonlocal marks_next
            t0 = time.monotonic()
            await fetch()
            t1 = time.monotonic()
            marks = await fakes.comfy_marks(comfy_n, since=marks_next)
            marks_next = marks["next"]
            served = [s for s in marks["served"] if s[1] == "/view"]
            return (t1 - t0) - (served[-1][3] - served[-1][2])

        async def bare() -> bytes:
            params = {"filename": ref.filename, "subfolder": "", "type": ref.type}
            async with client.session.get(client.url("/view"), params=params) as response:
                return await response.read()

        async def to_file() -> None:
            (await client.download(ref, work, "floor_download.png")).unlink()

        posts = await _samples(post)
        downloads = await _samples(lambda: timed_view(bare))
        ours = await _samples(lambda: timed_view(to_file))
    data = png.read_bytes()

    async def jpeg() -> float:
        t0 = time.monotonic()
        await asyncio.to_thread(build_telegram_photo, data)
        return time.monotonic() - t0

    steps = {"prompt": posts, "download": downloads, "jpeg": await _samples(jpeg)}
    return steps, ours


async def _upload(fakes: Fakes, telegram: dict[str, str], user: int, photo: bytes) -> list[float]:
    bot = Bot(telegram["token"], base_url=telegram["api_url"], request=CountingRequest())
    await bot.initialize()

    async def one() -> float:
        since = (await fakes.telegram_calls(since=10**9))["next"]
        t0 = time.monotonic()
        await bot.send_photo(user, photo)
        calls = (await fakes.telegram_calls(since=since))["calls"]
        (sent,) = [c for c in calls if c["method"] == "sendPhoto"]
        return float(sent["at"]) - t0

    try:
        return await _samples(one)
    finally:
        await bot.shutdown()


async def run(pg: Postgres, fakes: Fakes, work: Path) -> BenchResult:
    result = BenchResult("7. floor of the steps of one job")
    telegram = await fakes.new_telegram()
    (user,) = (await fakes.post("/telegram/users", {"n": 1}))["users"]
    comfy_n, comfy_url = await fakes.new_comfy(default_models())
    steps: dict[str, list[float]] = {"webhook": await _webhook(fakes, telegram, user)}
    steps["record"] = await _record(await pg.fresh())
    comfy_steps, our_download = await _comfy(fakes, comfy_n, comfy_url, work)
    steps.update(comfy_steps)
    png = work / "floor.png"
    photo, _size = build_telegram_photo(png.read_bytes())
    steps["upload"] = await _upload(fakes, telegram, user, photo)

    counted: dict[str, int] = {"record": 2}
    floor = sum(pct(values, 50) * counted.get(name, 1) for name, values in steps.items())
    result.raw = {"steps": steps}
    result.note(f"each step alone, {SAMPLES} times, median / p90 / p99:")
    for name, values in steps.items():
        times = f" (x{counted[name]})" if name in counted else ""
        result.note(f"  {name + times:14} {dist_ms(values)}")
    medians = " + ".join(
        f"{pct(v, 50) * 1000:.1f}" + (f" x{counted[k]}" if k in counted else "")
        for k, v in steps.items()
    )
    result.add("floor per job: sum of the bare steps' medians", f"{floor * 1000:.1f} ms")
    result.add("  webhook + 2 records + prompt + download + jpeg + upload", medians + " ms")
    result.note(f"  (the bot's download, to a file: {dist_ms(our_download)})")
    return result
