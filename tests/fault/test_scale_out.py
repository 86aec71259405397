"""Two `animebot run` processes in webhook mode plus two `animebot worker` processes, on one
PostgreSQL and two ComfyUI backends: each of 30 jobs runs once and is delivered once.

The fake Telegram POSTs every update to one webhook URL: a round-robin forwarder in the
test stands in front of the two bots (as a load balancer would). A POST with a wrong or missing
secret is refused and nothing of it is processed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.fakes.balancer import RoundRobin
from tests.fakes.comfyui import FakeComfyUI
from tests.fakes.telegram import FakeTelegram
from tests.fault.kit import (
    alive,
    all_final,
    check_delivered_once,
    jobs,
    make_users,
    prepare_comfy,
    prompt_posts,
    request_all,
    wait_jobs,
)
from tests.fault.procs import Animebot, child_env
from tests.webhook import free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(150)]

USERS = 6
PER_USER = 5
JOBS = USERS * PER_USER
STEPS = 8
STEP_DELAY_S = 0.03
SECRET = "fault-test-secret_0123456789"
PATH = "telegram"
START_TIMEOUT_S = 60.0


def fake_update(fake: FakeTelegram, text: str) -> dict[str, Any]:
    """An update Telegram never sent (for the forged POSTs)."""
    user = fake.user("Mallory")
    chat = fake.private_chat(user)
    return {
        "update_id": 999_000_001,
        "message": {
            "message_id": 4242,
            "from": user.to_api(),
            "chat": chat.to_api(),
            "date": int(time.time()),
            "text": text,
            "entities": [{"type": "bot_command", "offset": 0, "length": 6}],
        },
    }


async def post(port: int, update: dict[str, Any], secret: str | None) -> int:
    headers = {"X-Telegram-Bot-Api-Secret-Token": secret} if secret else {}
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"http://127.0.0.1:{port}/{PATH}",
            json=update,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=10),
        ) as answer,
    ):
        await answer.read()
        return answer.status


async def test_two_bots_two_workers_each_job_runs_and_is_delivered_once(
    fake_telegram: FakeTelegram,
    fake_comfy_factory: Callable[[], Awaitable[FakeComfyUI]],
    pg_dsn: str,
    tmp_path: Path,
) -> None:
    fake = fake_telegram
    comfies = [await fake_comfy_factory() for _ in range(2)]
    for comfy in comfies:
        prepare_comfy(comfy, STEP_DELAY_S)
    ports = [free_port(), free_port()]
    balancer = RoundRobin(PATH, ports)
    await balancer.start()
    common: dict[str, Any] = {
        "database_url": pg_dsn,
        "data_dir": tmp_path / "data",  # one host: the bots read what the workers produced
        "comfyui_urls": ",".join(c.base_url for c in comfies),
        "backend_lost_after_s": 15,
    }
    bot_env = child_env(
        **common,
        telegram_bot_token=fake.token,
        telegram_api_base_url=fake.api_url,
        telegram_file_base_url=fake.file_url,
        telegram_webhook_url=balancer.url,
        telegram_webhook_secret=SECRET,
        telegram_webhook_listen="127.0.0.1",
    )
    procs = [
        Animebot("bot1", "run", {**bot_env, "TELEGRAM_WEBHOOK_PORT": str(ports[0])}, tmp_path),
        Animebot("bot2", "run", {**bot_env, "TELEGRAM_WEBHOOK_PORT": str(ports[1])}, tmp_path),
        Animebot("worker1", "worker", child_env(**common), tmp_path),
        Animebot("worker2", "worker", child_env(**common), tmp_path),
    ]
    bots, workers = procs[:2], procs[2:]
    people = make_users(fake, USERS)
    try:
        started = time.monotonic()
        for proc in procs:
            await proc.start()
        await asyncio.gather(*(p.wait_log("orchestrator started", START_TIMEOUT_S) for p in procs))
        await asyncio.gather(
            *(b.wait_log("receiving updates by webhook", START_TIMEOUT_S) for b in bots)
        )
        startup_s = time.monotonic() - started
        assert fake.webhook_url == balancer.url and fake.webhook_secret == SECRET

        # A forged update (wrong secret, then none) is refused by each bot and never handled.
        forged = fake_update(fake, "/image forged request mkbadq")
        for port in ports:
            assert await post(port, forged, "wrong-secret") == 403
            assert await post(port, forged, None) == 403

        markers = request_all(fake, people, PER_USER, STEPS)
        rows = await wait_jobs(pg_dsn, all_final(JOBS), 90, "30 jobs final", check=alive(*procs))
        finished_s = time.monotonic() - started
        codes = [await p.stop() for p in procs]
        assert codes == [0, 0, 0, 0], [(p.name, p.text()[-2000:]) for p in procs]
    finally:
        for proc in procs:
            await proc.ensure_stopped()
        await balancer.close()

    # each job: one run on ComfyUI, one delivery, one visible result
    uploads = check_delivered_once(fake, rows, markers)
    assert set(uploads.values()) == {1}, {m: n for m, n in uploads.items() if n != 1}
    posts = prompt_posts(*comfies)
    assert sorted(posts) == sorted(str(r["id"]) for r in rows)
    assert set(posts.values()) == {1}, {k: v for k, v in posts.items() if v != 1}
    assert {r["attempts"] for r in rows} == {1}

    # the work was shared, and only the bots delivered
    ran = {p.name: len(p.events("prompt submitted")) for p in procs}
    delivered = {p.name: [r["job_id"] for r in p.events("job delivered")] for p in procs}
    assert sum(ran.values()) == JOBS, ran
    assert sum(1 for n in ran.values() if n) >= 3, f"work not shared: {ran}"
    assert not any(delivered[w.name] for w in workers), delivered
    all_delivered = [job for ids in delivered.values() for job in ids]
    assert sorted(all_delivered) == sorted(str(r["id"]) for r in rows)
    assert balancer.forwarded[ports[0]] >= JOBS // 2 and balancer.forwarded[ports[1]] >= JOBS // 2
    assert set(balancer.statuses) == {200}, balancer.statuses

    # the forged request: no job, no answer to Mallory
    assert not [r for r in await jobs(pg_dsn) if "mkbadq" in r["prompt_typed"]]
    assert not [m for m in fake.bot_messages() if m.chat.first_name == "Mallory"]
    for proc in procs:
        assert not proc.problems(), (proc.name, proc.problems())
    assert not fake.internal_errors
    print(
        f"scale-out: 4 processes up in {startup_s:.1f} s; 30 jobs done in "
        f"{finished_s - startup_s:.1f} s; prompts submitted per process {ran}; "
        f"delivered per bot { {n: len(v) for n, v in delivered.items() if v} }; "
        f"webhook POSTs per bot {dict(balancer.forwarded)}"
    )
