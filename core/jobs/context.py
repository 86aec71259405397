"""What every part of the engine shares inside one process."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from uuid import UUID

import asyncpg

from core.events import EventBus, JobEvent
from core.jobs.backends import BackendPool
from core.models import Generation, Output
from core.settings import Settings
from core.workflows.registry import Registry


@dataclass
class EngineContext:
    settings: Settings
    db: asyncpg.Pool
    events: EventBus
    registry: Registry
    backends: BackendPool
    owner: int  # this process's worker key
    cancels: dict[UUID, asyncio.Event] = field(default_factory=dict)
    delivery_wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    # Set when this process delivers: a finished job goes straight to it (lease kept), with
    # the outputs just saved and the delivery files' contents at hand (path -> bytes), so the
    # delivery need not read them back.
    hand_off: Callable[[Generation, list[Output], dict[str, bytes]], None] | None = None
    # Set when this process delivers: called once a job's prompt is in ComfyUI, so the
    # delivery can read what its message needs while ComfyUI works (never raises).
    prepare_delivery: Callable[[Generation], None] | None = None

    def cancel_event(self, job_id: UUID) -> asyncio.Event:
        return self.cancels.setdefault(job_id, asyncio.Event())

    def publish_state(self, job: Generation, message: str | None = None) -> None:
        self.events.publish(
            JobEvent(
                job_id=job.id,
                type="state",
                status=job.status.value,
                chat_id=job.chat_id,
                message=message or job.error,
                percent=job.progress * 100,
            )
        )

    def timeout_for(self, job: Generation) -> float:
        if job.kind.value == "video":
            return self.settings.video_timeout_s
        return self.settings.image_timeout_s
