"""The process restarts (cleanly, or killed: its liveness connection cut without clean-up)
while jobs are queued, submitted, running, post-processing and delivering. A new process on the
same database finishes every job exactly once: nothing lost, nothing run or delivered twice."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from core.comfy.client import ComfyClient
from core.db import generations as gen_db
from core.db.pool import connect
from core.states import JobState
from tests.engine import RecordingDeliverer, engine_settings, install_models, start_runtime
from tests.integration.engine_kit import (
    HangingDeliverer,
    PostprocessGate,
    crash,
    fast_engine,
    job,
    posts_for,
    sampler_seed,
    submit,
    until,
    wait_all,
)


@pytest.mark.parametrize("how", ["stop", "kill"])
async def test_restart_in_every_state_finishes_each_job_once(
    how: str, pg_dsn: str, fake_comfy: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fast_engine(monkeypatch)
    gate = PostprocessGate()
    gate.install(monkeypatch)
    settings = engine_settings(
        pg_dsn, tmp_path / "data", [fake_comfy.base_url], comfyui_max_in_flight=3
    )
    install_models(fake_comfy, settings)
    first_chat = HangingDeliverer()
    first = await start_runtime(settings, first_chat)
    second = None
    first_down = False
    try:
        # delivering: `mid` is inside the deliverer when the process dies; `sent` too, and its
        # message id gets recorded just before the process dies.
        mid = await submit(first, 1, "delivering --steps 1")
        sent = await submit(first, 2, "delivered not done --steps 1")
        await wait_all(first, [mid, sent], {JobState.DELIVERING})
        await until(lambda: {mid, sent} <= set(first_chat.attempts), what="inside deliver")

        # post-processing: a slow encode is under way.
        fake_comfy.hold()
        post = await submit(first, 3, "postprocessing --steps 1")
        gate.held.add(post)
        fake_comfy.release()
        await until(lambda: post in gate.entered, what="post-processing")

        # running (it finishes while no process watches), two submitted prompts waiting in
        # ComfyUI (one of them will be lost by ComfyUI), and one job still in our queue.
        fake_comfy.step_delay_s = 0.25
        ran = await submit(first, 4, "running --steps 4")
        await wait_all(first, [ran], {JobState.RUNNING}, timeout=10)
        waiting = await submit(first, 5, "submitted --steps 6")
        lost = await submit(first, 6, "submitted then lost --steps 2")
        await until(
            lambda: {str(waiting), str(lost)} <= set(fake_comfy.pending_ids),
            what="prompts pending in ComfyUI",
        )
        queued = await submit(first, 7, "queued --steps 1")
        ids = [mid, sent, post, ran, waiting, lost, queued]
        states = {i: (await job(first, i)).status for i in ids}
        assert states == {
            mid: JobState.DELIVERING,
            sent: JobState.DELIVERING,
            post: JobState.POSTPROCESSING,
            ran: JobState.RUNNING,
            waiting: JobState.SUBMITTED,
            lost: JobState.SUBMITTED,
            queued: JobState.QUEUED,
        }

        first_down = True
        if how == "stop":
            await first.stop()
        else:
            await crash(first)

        # While no process runs: ComfyUI loses one prompt, finishes another.
        async with ComfyClient(fake_comfy.base_url) as comfy:
            await comfy.delete_from_queue([str(lost)])
        await until(lambda: str(ran) in fake_comfy.history, what="finished while down")
        conn = await connect(pg_dsn)
        try:
            await gen_db.record_delivery(conn, sent, result_message_id=4242)
        finally:
            await conn.close()
        gate.open()

        chat = RecordingDeliverer(fail_times=2)  # the chat fails twice: delivery is retried
        second = await start_runtime(settings, chat)
        fake_comfy.step_delay_s = 0.05
        jobs = await wait_all(second, ids, timeout=40)
        assert {j.id: j.status for j in jobs} == {i: JobState.DONE for i in ids}, [
            (j.status, j.error) for j in jobs
        ]

        # Delivered exactly once each; the one whose message was recorded is not re-sent.
        delivered = Counter(j.id for j, _ in chat.delivered)
        assert delivered == Counter({i: 1 for i in ids if i != sent}), delivered
        assert (await job(second, sent)).result_message_id == 4242
        for j in jobs:
            assert j.result_message_id is not None

        # ComfyUI ran each prompt only as needed: the finished one's history was used; only
        # the prompt ComfyUI lost was submitted again, with the same seed.
        posts = {i: posts_for(fake_comfy, i) for i in ids}
        assert {i: len(p) for i, p in posts.items()} == {i: 2 if i == lost else 1 for i in ids}
        assert sampler_seed(posts[lost][0]) == sampler_seed(posts[lost][1])
        assert gate.calls.count(post) == 2  # post-processing redone after the restart

        for i in ids:
            history = await gen_db.list_events(second.database.pool, i)
            steps = [h.to_status for h in history]
            assert steps.count("done") == 1 and steps[-1] == "done", steps
            assert steps.count("queued") == 1, steps  # never requeued
            assert len(await second.service.outputs(i)) == 1
    finally:
        gate.open()
        fake_comfy.release()
        if second is not None:
            await second.stop()
        if not first_down:
            await first.stop()
