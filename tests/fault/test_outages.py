"""Outages around a running `animebot run` (a real process): the bot recovers by itself.

(a) ComfyUI killed mid-job (queue and history gone), back a few seconds later: the jobs it lost
    are submitted again (same seed) and every job ends done, delivered once.
(b) PostgreSQL stopped mid-run and started again (an embedded server of the test's own).
(c) Telegram answering 429 (retry_after), 502 and hanging requests for ~5 s on every upload and
    edit: every job is still delivered once.
(d) Jellyfin down (connections accepted, never answered): delivery is not delayed or lost.
(e) Jellyfin down (connections refused) long enough for the filing backoff to grow, then back:
    the waiting results are filed at once, long before their backoff would have retried them.

The recovery times are printed (`-s`) for the README.
"""

from __future__ import annotations

import asyncio
import itertools
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from core.db import workers as workers_db
from core.db.pool import start_embedded_server
from tests.fakes.comfyui import FakeComfyUI
from tests.fakes.jellyfin import API_KEY as JELLYFIN_KEY
from tests.fakes.jellyfin import FakeJellyfin
from tests.fakes.telegram import FakeTelegram
from tests.fault.kit import (
    alive,
    all_final,
    bot_env,
    check_delivered_once,
    make_users,
    marker_in,
    prepare_comfy,
    prompt_posts,
    request_all,
    story,
    wait_jobs,
    wait_polling,
    wait_upload,
)
from tests.fault.procs import Animebot

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

STEPS = 10


async def started_bot(
    fake: FakeTelegram, comfy: FakeComfyUI, dsn: str, tmp_path: Path, **settings: Any
) -> Animebot:
    bot = Animebot(
        "bot", "run", bot_env(fake, [comfy], dsn, tmp_path / "data", **settings), tmp_path
    )
    await bot.start()
    await wait_polling(fake, bot)
    return bot


async def queued(dsn: str, count: int) -> None:
    await wait_jobs(
        dsn,
        lambda rows: len(rows) == count and all(r["progress_message_id"] for r in rows),
        20,
        "the requests queued with their progress messages",
    )


# ------------------------------------------------------------------------ (a) ComfyUI killed


async def test_comfyui_killed_mid_job_and_back(
    fake_telegram: FakeTelegram, fake_comfy: FakeComfyUI, pg_dsn: str, tmp_path: Path
) -> None:
    fake, comfy = fake_telegram, fake_comfy
    prepare_comfy(comfy, 0.1)  # 1 s per job
    bot = await started_bot(fake, comfy, pg_dsn, tmp_path, backend_lost_after_s=60)
    try:
        markers = request_all(fake, make_users(fake, 2), 2, STEPS)
        await queued(pg_dsn, 4)
        await wait_jobs(
            pg_dsn,
            lambda rows: any(r["status"] == "running" for r in rows),
            20,
            "a job running",
        )
        await asyncio.sleep(0.3)  # a few steps into it
        lost = {comfy.running.prompt_id} if comfy.running else set()
        lost |= set(comfy.pending_ids)
        assert lost, "nothing was on the GPU server"
        await comfy.kill(keep_history=False)  # a crash: queue, history and cache gone
        await asyncio.sleep(3.0)
        await comfy.start()  # same port
        back = time.monotonic()
        first = asyncio.create_task(wait_upload(fake, 40))
        rows = await wait_jobs(pg_dsn, all_final(4), 60, "every job final", check=alive(bot))
        assert await first
        recovered = time.monotonic() - back
        assert await bot.stop() == 0
    finally:
        await bot.ensure_stopped()

    uploads = check_delivered_once(fake, rows, markers)
    assert set(uploads.values()) == {1}, uploads
    posts = prompt_posts(comfy)
    for row in rows:
        expected = 2 if str(row["id"]) in lost else 1
        assert posts[str(row["id"])] == expected, (
            f"{marker_in(row, markers)} posted {posts[str(row['id'])]} times, lost: "
            f"{str(row['id']) in lost}\n" + story(fake, row, bot)
        )
    for prompt_id in lost:  # submitted again as it was: same graph, same seed
        before, again = [b["prompt"] for b in comfy.prompt_posts if b["prompt_id"] == prompt_id]
        assert before == again
    assert not bot.problems(), bot.problems()
    print(
        f"ComfyUI killed: {len(lost)} lost prompt(s) resubmitted; first result {recovered:.1f} s "
        "after the server was back"
    )


# ------------------------------------------------------------------------ (b) PostgreSQL restart


@pytest.fixture
def own_postgres(tmp_path: Path) -> Iterator[Any]:
    """An embedded PostgreSQL of this test only (so that it can be stopped and started)."""
    server = start_embedded_server(tmp_path / "pgdata")
    try:
        yield server
    finally:
        server.stop()


def restart_postgres(server: Any) -> None:
    """Start the stopped server again on the same data (blocking, run in a thread)."""
    with server._lock:
        server.ensure_postgres_running()


async def test_postgres_restarted_mid_run(
    fake_telegram: FakeTelegram, fake_comfy: FakeComfyUI, own_postgres: Any, tmp_path: Path
) -> None:
    fake, comfy = fake_telegram, fake_comfy
    admin = await asyncpg.connect(own_postgres.get_uri())
    try:
        await admin.execute('CREATE DATABASE "faults"')
    finally:
        await admin.close()
    dsn = own_postgres.get_uri(database="faults")
    prepare_comfy(comfy, 0.1)
    bot = await started_bot(fake, comfy, dsn, tmp_path, backend_lost_after_s=60)
    try:
        worker = (await bot.wait_log("runtime started"))["worker"]
        markers = request_all(fake, make_users(fake, 3), 2, STEPS)
        await queued(dsn, 6)
        await wait_jobs(
            dsn, lambda rows: any(r["status"] == "running" for r in rows), 20, "a job running"
        )
        await asyncio.to_thread(own_postgres.stop)
        down = time.monotonic()
        await asyncio.sleep(3.0)
        await asyncio.to_thread(restart_postgres, own_postgres)
        back = time.monotonic()
        first = asyncio.create_task(wait_upload(fake, 60))
        registered = await bot.wait_log("process registered again", 30)
        rows = await wait_jobs(dsn, all_final(6), 90, "every job final", check=alive(bot))
        assert await first
        recovered = time.monotonic() - back
        # the same process, alive again for the others: its liveness lock is held again
        assert registered["worker"] == worker
        assert worker in await live_workers(dsn)
        assert await bot.stop() == 0, bot.text()[-3000:]
    finally:
        await bot.ensure_stopped()

    uploads = check_delivered_once(fake, rows, markers)
    assert set(uploads.values()) == {1}, uploads
    assert set(prompt_posts(comfy).values()) == {1}  # nothing ran twice
    assert len(bot.logs) == 1, "the bot was restarted"
    interrupted = bot.events("job interrupted, resuming it")
    assert not bot.events("job crashed") and not bot.events("job failed")
    assert not [p for p in bot.problems() if "engine step failed" not in p], bot.problems()
    print(
        f"PostgreSQL down {back - down:.1f} s: process registered again "
        f"{registered['after_s']} s after losing it; first result {recovered:.1f} s after the "
        f"database was back; {len(interrupted)} job(s) waited for it and resumed"
    )


async def live_workers(dsn: str) -> list[int]:
    conn = await asyncpg.connect(dsn)
    try:
        return await workers_db.live_workers(conn)
    finally:
        await conn.close()


# ------------------------------------------------------------------------ (c) Telegram failing

STORM_S = 5.0
STORM_METHODS = ("sendPhoto", "editMessageMedia", "editMessageText", "editMessageCaption")
STORM_KINDS: tuple[int | str, ...] = (429, 502, "timeout")


async def telegram_storm(fake: FakeTelegram, seconds: float) -> int:
    """For `seconds`, every call of STORM_METHODS fails (429 retry_after=1, 502, or hangs
    `hang_seconds` and gets 504), kinds in turn; returns how many calls were failed."""
    kinds: Iterator[int | str] = itertools.cycle(STORM_KINDS)
    armed = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pending = {f.method for f in fake._failures}
        for method in STORM_METHODS:
            if method not in pending:
                fake.fail_next(method, 1, next(kinds), retry_after=1)  # type: ignore[arg-type]
                armed += 1
        await asyncio.sleep(0.02)
    failed = armed - len(fake._failures)
    fake._failures.clear()
    return failed


async def test_telegram_429_502_and_timeouts_for_a_while(
    fake_telegram: FakeTelegram, fake_comfy: FakeComfyUI, pg_dsn: str, tmp_path: Path
) -> None:
    fake, comfy = fake_telegram, fake_comfy
    fake.hang_seconds = 2.0  # a "timeout": no answer for 2 s, then 504
    prepare_comfy(comfy, 0.02)
    bot = await started_bot(fake, comfy, pg_dsn, tmp_path)
    try:
        markers = request_all(fake, make_users(fake, 4), 2, STEPS)
        await queued(pg_dsn, 8)
        started = time.monotonic()
        failed = await telegram_storm(fake, STORM_S)
        calm = time.monotonic()
        rows = await wait_jobs(pg_dsn, all_final(8), 60, "every job final", check=alive(bot))
        recovered = time.monotonic() - calm
        assert await bot.stop() == 0
    finally:
        await bot.ensure_stopped()

    uploads = check_delivered_once(fake, rows, markers)
    assert set(uploads.values()) == {1}, uploads
    refused = [c for m in STORM_METHODS for c in fake.calls_of(m) if started <= c.at <= calm]
    assert {429, 502, 504} <= {c.status for c in refused}, [(c.method, c.status) for c in refused]
    uploads_refused = [c for c in refused if c.method in ("editMessageMedia", "sendPhoto")]
    assert any(c.status != 200 for c in uploads_refused), "no delivery met the storm"
    assert not bot.problems(), bot.problems()
    print(
        f"Telegram failing for {STORM_S:.0f} s ({failed} calls refused): every job delivered "
        f"once, the last {recovered:.1f} s after Telegram was back"
    )


# ------------------------------------------------------------------------ (d) Jellyfin down


async def test_jellyfin_down_does_not_touch_delivery(
    fake_telegram: FakeTelegram, fake_comfy: FakeComfyUI, pg_dsn: str, tmp_path: Path
) -> None:
    fake, comfy = fake_telegram, fake_comfy
    prepare_comfy(comfy, 0.02)
    # Down the hard way: connections are accepted (by the kernel) and never answered.
    black_hole = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    black_hole.bind(("127.0.0.1", 0))
    black_hole.listen(64)
    jellyfin_url = f"http://127.0.0.1:{black_hole.getsockname()[1]}"
    library = tmp_path / "library"
    library.mkdir()
    bot = await started_bot(
        fake,
        comfy,
        pg_dsn,
        tmp_path,
        jellyfin_url=jellyfin_url,
        jellyfin_api_key="fault-test-jellyfin-key",
        jellyfin_library_dir=library,
        jellyfin_timeout_s=2,
    )
    try:
        markers = request_all(fake, make_users(fake, 2), 2, STEPS)
        started = time.monotonic()
        rows = await wait_jobs(pg_dsn, all_final(4), 40, "every job final", check=alive(bot))
        took = time.monotonic() - started
        await asyncio.sleep(1.0)  # filing runs after delivery: give it time to fail
        library_states = await library_status(pg_dsn)
        assert await bot.stop() == 0
    finally:
        await bot.ensure_stopped()
        black_hole.close()

    uploads = check_delivered_once(fake, rows, markers)
    assert set(uploads.values()) == {1}, uploads
    assert len(library_states) == 4 and "linked" not in library_states, library_states
    for message in fake.bot_messages():
        assert "library" not in (message.caption or "").lower()
    assert not bot.problems(), bot.problems()
    print(f"Jellyfin down: 4 jobs delivered in {took:.1f} s; library states {library_states}")


# ------------------------------------------------------------------------ (e) Jellyfin back


async def test_jellyfin_back_after_an_outage_files_the_waiting_results_at_once(
    fake_telegram: FakeTelegram,
    fake_comfy: FakeComfyUI,
    fake_jellyfin: FakeJellyfin,
    pg_dsn: str,
    tmp_path: Path,
) -> None:
    fake, comfy, jellyfin = fake_telegram, fake_comfy, fake_jellyfin
    prepare_comfy(comfy, 0.02)
    library = tmp_path / "library"
    library.mkdir()
    jellyfin.add_folder("Anime Studio", [str(library)])
    await jellyfin.stop()  # refuses connections until started again
    bot = await started_bot(
        fake,
        comfy,
        pg_dsn,
        tmp_path,
        jellyfin_url=jellyfin.url,
        jellyfin_api_key=JELLYFIN_KEY,
        jellyfin_library_dir=library,
        jellyfin_scan_interval_s=0.2,
        library_retry_s=1,  # backoff 1, 2, 4, 8, 16 s; the library is checked every second
    )
    try:
        markers = request_all(fake, make_users(fake, 2), 2, STEPS)
        rows = await wait_jobs(pg_dsn, all_final(4), 40, "every job final", check=alive(bot))
        # Until each result was tried 3 times: its next attempt is then 8 s after the last.
        waiting = await wait_library(pg_dsn, lambda outs: min(o["attempts"] for o in outs) >= 3)
        assert {o["status"] for o in waiting} == {"filed"} and all(
            o["unreachable"] for o in waiting
        )
        backoff_due = min(o["next_at"] for o in waiting)
        await jellyfin.start()
        back = time.monotonic()
        linked = await wait_library(pg_dsn, lambda outs: {o["status"] for o in outs} == {"linked"})
        took = time.monotonic() - back
        filed_by = max(o["db_now"] for o in linked)
        assert await bot.stop() == 0
    finally:
        await bot.ensure_stopped()

    assert filed_by < backoff_due, (filed_by, backoff_due)  # woken, not waited out
    assert not any(o["unreachable"] for o in linked)
    assert len(list(library.rglob("*.png"))) == 4  # each filed once, in place
    assert set(check_delivered_once(fake, rows, markers).values()) == {1}
    assert not bot.problems(), bot.problems()
    print(f"Jellyfin back after an outage: 4 waiting results linked {took:.1f} s later")


async def wait_library(
    dsn: str, predicate: Any, count: int = 4, timeout: float = 40
) -> list[dict[str, Any]]:
    """Poll the outputs' filing state until there are `count` and `predicate(outputs)`."""
    deadline = time.monotonic() + timeout
    conn = await asyncpg.connect(dsn)
    try:
        while True:
            outs = [
                dict(r)
                for r in await conn.fetch(
                    "SELECT library_status AS status, library_attempts AS attempts,"
                    " library_next_at AS next_at, library_unreachable AS unreachable,"
                    " clock_timestamp() AS db_now FROM outputs"
                )
            ]
            if len(outs) == count and predicate(outs):
                return outs
            assert time.monotonic() < deadline, f"library state not reached: {outs}"
            await asyncio.sleep(0.2)
    finally:
        await conn.close()


async def library_status(dsn: str) -> list[str]:
    conn = await asyncpg.connect(dsn)
    try:
        return [r["library_status"] for r in await conn.fetch("SELECT library_status FROM outputs")]
    finally:
        await conn.close()
