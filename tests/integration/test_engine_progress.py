"""The engine's job life seen from outside: progress events, failures with reasons, timeouts.

Real PostgreSQL, the fake ComfyUI over HTTP/WS, the real Runtime + Orchestrator.
"""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path
from typing import Any

import pytest

from core.db import generations as gen_db
from core.states import JobState
from tests.engine import RecordingDeliverer, install_models, running_engine
from tests.integration.engine_kit import (
    STATE_ORDER,
    collect_until_final,
    fast_engine,
    interrupts_for,
    job,
    posts_for,
    submit,
    wait_all,
)


def _squeeze(values: list[str]) -> list[str]:
    out: list[str] = []
    for value in values:
        if not out or out[-1] != value:
            out.append(value)
    return out


async def test_progress_events_in_order_and_recorded(
    pg_dsn: str, fake_comfy: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fast_engine(monkeypatch)
    fake_comfy.step_delay_s = 0.15
    deliverer = RecordingDeliverer()
    async with running_engine(
        pg_dsn, tmp_path, [fake_comfy], deliverer, comfyui_max_in_flight=1
    ) as runtime:
        async with runtime.events.subscribe() as queue:
            # Another user's job holds the only slot: ours waits in the queue first.
            blocker = await submit(runtime, 2, "a cat on a roof --steps 8")
            await wait_all(runtime, [blocker], {JobState.RUNNING})
            job_id = await submit(runtime, 1, "a girl reading a book --steps 4")
            events = await collect_until_final(queue, job_id)
        done = await job(runtime, job_id)
        assert done.status is JobState.DONE, done.error

        # States (queue events are the `queued` phase), in order, each once.
        phases = [e.status for e in events if e.type in ("state", "queue")]
        assert _squeeze(phases) == STATE_ORDER, phases
        first = events[0]
        assert first.type == "queue" and first.status == "queued" and first.position == 1
        assert first.eta_s is not None and first.eta_s > 0

        running_at = next(i for i, e in enumerate(events) if e.status == "running")
        post_at = next(i for i, e in enumerate(events) if e.status == "postprocessing")
        progress = [e for e in events if e.type == "progress"]
        assert progress, "no progress events"
        assert all(running_at < events.index(e) < post_at for e in progress)
        # Sampler steps x/y in order, percent strictly rising with each step.
        steps = [(e.step, e.steps, e.percent) for e in progress if e.steps == 4 and e.step]
        assert [s for s, _, _ in steps] == [1, 2, 3, 4], steps
        step_percents = [p for _, _, p in steps]
        assert all(
            a is not None and b is not None and a < b for a, b in itertools.pairwise(step_percents)
        )
        # Percent never goes back over the whole stream and reaches 100 at done.
        percents = [e.percent for e in events if e.percent is not None]
        assert percents == sorted(percents), percents
        final = next(e for e in events if e.type == "state" and e.status == "done")
        assert final.percent == 100
        assert events[-1].type == "delivered"
        # At least one preview with image bytes while running.
        previews = [e for e in events if e.type == "preview"]
        assert previews and all(e.preview and e.preview_mime == "image/jpeg" for e in previews)
        assert previews[0].preview is not None and previews[0].preview[:2] == b"\xff\xd8"
        assert all(running_at < events.index(e) < post_at for e in previews)

        # The database history: every transition, in order, chained, with timestamps.
        history = await gen_db.list_events(runtime.database.pool, job_id)
        transitions = [h for h in history if h.to_status in [*STATE_ORDER, "failed", "cancelled"]]
        assert [h.to_status for h in transitions] == STATE_ORDER
        assert [h.from_status for h in transitions] == [None, *STATE_ORDER[:-1]]
        stamps = [h.at for h in transitions]
        assert stamps == sorted(stamps)
        assert done.submitted_at and done.running_at and done.postprocessing_at
        assert done.delivering_at and done.finished_at
        assert (
            done.created_at
            <= done.submitted_at
            <= done.running_at
            <= done.postprocessing_at
            <= done.delivering_at
            <= done.finished_at
        )
        assert done.progress == 1
        assert len(deliverer.delivered) == 2


async def test_rejected_prompt_fails_with_reason_and_is_not_retried(
    pg_dsn: str, fake_comfy: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fast_engine(monkeypatch)
    deliverer = RecordingDeliverer()
    async with running_engine(pg_dsn, tmp_path, [fake_comfy], deliverer) as runtime:
        # After the engine checked the backend's object_info, the server changes under it:
        # first its checkpoint list no longer has ours.
        fake_comfy.models = {**fake_comfy.models, "ckpt_name": ["other_model.safetensors"]}
        bad_model = await submit(runtime, 1, "a knight --steps 2")
        (failed,) = await wait_all(runtime, [bad_model])
        assert failed.status is JobState.FAILED
        assert failed.error is not None
        assert "CheckpointLoaderSimple" in failed.error and "not in list" in failed.error
        assert runtime.settings.checkpoint_name in failed.error
        assert len(failed.error) < 300 and "\n" not in failed.error

        # Then a node class disappears (a custom node pack was removed).
        install_models(fake_comfy, runtime.settings)
        fake_comfy.available_nodes = {
            name for name in fake_comfy.object_info() if name != "KSampler"
        }
        no_node = await submit(runtime, 1, "a dragon --steps 2")
        (failed2,) = await wait_all(runtime, [no_node])
        assert failed2.status is JobState.FAILED
        assert failed2.error is not None and "KSampler" in failed2.error
        assert "does not exist" in failed2.error

        await asyncio.sleep(1.0)  # a retry would have happened by now
        for job_id in (bad_model, no_node):
            assert len(posts_for(fake_comfy, job_id)) == 1
            again = await job(runtime, job_id)
            assert again.status is JobState.FAILED and again.attempts == 1
        assert deliverer.delivered == []


async def test_execution_error_fails_with_node_and_message(
    pg_dsn: str, fake_comfy: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fast_engine(monkeypatch)
    async with running_engine(pg_dsn, tmp_path, [fake_comfy], RecordingDeliverer()) as runtime:
        fake_comfy.fail_next(
            "10", "CUDA out of memory. Tried to allocate 2.00 GiB", "torch.OutOfMemoryError"
        )
        job_id = await submit(runtime, 1, "a castle --steps 2")
        (failed,) = await wait_all(runtime, [job_id])
        assert failed.status is JobState.FAILED
        assert failed.error is not None
        assert "KSampler" in failed.error and "node 10" in failed.error
        assert "CUDA out of memory" in failed.error and "OutOfMemoryError" in failed.error
        await asyncio.sleep(0.5)
        assert len(posts_for(fake_comfy, job_id)) == 1
        history = await gen_db.list_events(runtime.database.pool, job_id)
        assert history[-1].to_status == "failed" and history[-1].detail["error"] == failed.error


async def test_job_timeout_fails_and_interrupts_the_prompt(
    pg_dsn: str, fake_comfy: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fast_engine(monkeypatch)
    fake_comfy.step_delay_s = 0.5
    deliverer = RecordingDeliverer()
    async with running_engine(
        pg_dsn, tmp_path, [fake_comfy], deliverer, image_timeout_s=2
    ) as runtime:
        job_id = await submit(runtime, 1, "a slow sunset --steps 30")
        (failed,) = await wait_all(runtime, [job_id], timeout=15)
        assert failed.status is JobState.FAILED
        assert failed.error is not None and "took longer than 2 seconds" in failed.error
        assert interrupts_for(fake_comfy, job_id) >= 1
        await fake_comfy.wait_idle(5)
        entry = fake_comfy.history[str(job_id)]
        assert entry["status"]["status_str"] == "error"
        kinds = [m[0] for m in entry["status"]["messages"]]
        assert "execution_interrupted" in kinds
        assert deliverer.delivered == []
