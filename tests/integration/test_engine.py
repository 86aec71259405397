"""The engine end to end: real PostgreSQL, the fake ComfyUI over HTTP/WS, real media files."""

from __future__ import annotations

from pathlib import Path

from core.models import JobKind
from core.states import JobState
from tests.engine import (
    RecordingDeliverer,
    actor,
    running_engine,
    wait_status,
)


async def test_image_job_from_request_to_delivery(pg_dsn: str, fake_comfy, tmp_path: Path) -> None:
    deliverer = RecordingDeliverer()
    async with running_engine(pg_dsn, tmp_path, [fake_comfy], deliverer) as runtime:
        me = actor(1)
        await runtime.service.seen(me)
        ticket = await runtime.service.request_scene(
            me, JobKind.IMAGE, "a girl on a beach --ar 3:2"
        )
        assert ticket.job.status is JobState.QUEUED
        job = await wait_status(runtime, ticket.job.id, {JobState.DONE, JobState.FAILED})
        assert job.status is JobState.DONE, job.error
        assert job.result_message_id == deliverer.next_message_id
        outputs = await runtime.service.outputs(job.id)
        assert len(outputs) == 1
        out = outputs[0]
        assert Path(out.file_path).is_file() and Path(out.delivery_path or "").is_file()
        assert out.width and out.height and out.width > out.height  # 3:2
        assert Path(out.file_path).parent == runtime.settings.outputs_dir / str(job.id)
        posted = fake_comfy.prompt_posts
        assert len(posted) == 1
