"""A job running in ComfyUI when its process dies keeps showing progress after the restart.

ComfyUI sends a prompt's events to the WebSocket of the client id it was submitted with. The
new process reads that id from `/queue` and takes it over (a guest socket), so the step-by-step
progress goes on, instead of only polling `/history` until the job is done.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from core.states import JobState
from tests.engine import RecordingDeliverer, engine_settings, install_models, start_runtime
from tests.integration.engine_kit import (
    collect_until_final,
    crash,
    fast_engine,
    posts_for,
    submit,
    until,
    wait_all,
)

STEPS = 16


async def test_progress_goes_on_after_the_process_running_the_job_died(
    pg_dsn: str, fake_comfy: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fast_engine(monkeypatch)
    settings = engine_settings(pg_dsn, tmp_path / "data", [fake_comfy.base_url])
    install_models(fake_comfy, settings)
    fake_comfy.step_delay_s = 0.15
    first = await start_runtime(settings, RecordingDeliverer())
    second = None
    try:
        old_client = first.orchestrator.backends.client_id
        job_id = await submit(first, 1, f"a girl on a rooftop --steps {STEPS}")
        await wait_all(first, [job_id], {JobState.RUNNING}, timeout=10)
        await crash(first)
        await until(lambda: old_client not in fake_comfy.connected_client_ids, what="ws gone")

        chat = RecordingDeliverer()
        second = await start_runtime(settings, chat)
        async with second.events.subscribe() as queue:
            events = await collect_until_final(queue, job_id)
        steps = [e.step for e in events if e.type == "progress" and e.steps == STEPS and e.step]
        assert events[-1].type == "delivered", [e.type for e in events]
        # Step-by-step progress from the events of the prompt the dead process submitted...
        assert len(steps) >= 3 and steps == sorted(steps) and steps[-1] == STEPS, steps
        # ... on a socket under the old client id, given back once the job was done.
        assert old_client not in fake_comfy.connected_client_ids
        assert len(posts_for(fake_comfy, job_id)) == 1  # followed, never submitted again
        assert [j.id for j, _ in chat.delivered] == [job_id]
    finally:
        if second is not None:
            await second.stop()
