"""Helpers to run the real engine (Runtime + Orchestrator) against fakes in tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID

from core.jobs.delivery import (
    DeliveredFile,
    DeliveryLedger,
    DeliveryReceipt,
    report_sent,
    unsent_outputs,
)
from core.models import Generation, Output
from core.runtime import Runtime
from core.service import Actor
from core.settings import Settings, load_settings
from core.states import JobState

MODEL_INPUTS = {
    "ckpt_name": ["checkpoint_name", "sdxl_checkpoint_name"],
    "unet_name": ["video_unet_name", "video_i2v_unet_name"],
    "clip_name": ["video_clip_name", "video_clip_vision_name"],
    "vae_name": ["video_vae_name"],
    "model_name": ["upscale_model_name"],
}


def engine_settings(dsn: str, data_dir: Path, comfy_urls: list[str], **extra: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": dsn,
        "data_dir": data_dir,
        "comfyui_urls": ",".join(comfy_urls),
        "telegram_bot_token": "123456:TEST-TOKEN-abcdef",
        "status_port": 0,
        "backend_lost_after_s": 3,
    }
    values.update(extra)
    return load_settings(**values)


def install_models(fake: Any, settings: Settings | None = None) -> None:
    """Make a fake ComfyUI list our configured model files (a real server has them on disk);
    without `settings`, the default model names."""
    settings = settings or Settings.model_construct()
    models: dict[str, list[str]] = {}
    for input_name, fields in MODEL_INPUTS.items():
        models[input_name] = [getattr(settings, name) for name in fields]
    models["lora_name"] = ["sakura_v1.safetensors", "hero.safetensors"]
    fake.models = models


@dataclass
class RecordingDeliverer:
    """The chat side of delivery, recording instead of talking to Telegram."""

    delivered: list[tuple[Generation, list[Output]]] = field(default_factory=list)
    links: list[tuple[UUID, str]] = field(default_factory=list)
    fail_times: int = 0
    next_message_id: int = 1000
    blocked: bool = False

    async def deliver(
        self, job: Generation, outputs: list[Output], ledger: DeliveryLedger | None = None
    ) -> DeliveryReceipt:
        """Like the bot: the main result unless already sent, then the outputs not sent yet,
        each reported to `ledger` as it goes."""
        if self.fail_times > 0:
            self.fail_times -= 1
            raise ConnectionError("telegram is down")
        if self.blocked:
            return DeliveryReceipt(message_id=None, error="bot was blocked by the user")
        unsent = unsent_outputs(job, outputs)
        self.delivered.append((job, unsent))
        main_id, files = job.result_message_id, []
        for output in unsent:
            self.next_message_id += 1
            file = DeliveredFile(output.id, self.next_message_id, f"file-{output.id}")
            main = main_id is None
            main_id = file.message_id if main else main_id
            await report_sent(ledger, file, main=main)
            files.append(file)
        return DeliveryReceipt(message_id=main_id, files=files)

    async def library_linked(self, job: Generation, output: Output, link: str) -> None:
        self.links.append((output.id, link))


def actor(user_id: int = 1, chat_id: int | None = None) -> Actor:
    return Actor(
        user_id=user_id,
        chat_id=chat_id if chat_id is not None else user_id,
        first_name=f"user{user_id}",
    )


async def start_runtime(settings: Settings, deliverer: Any | None, role: str = "run") -> Runtime:
    runtime = await Runtime.start(settings, role=role)
    await runtime.start_engine(deliverer=deliverer)
    return runtime


@asynccontextmanager
async def running_engine(
    pg_dsn: str,
    tmp_path: Path,
    fakes: Sequence[Any],
    deliverer: Any | None = None,
    **settings_values: Any,
) -> AsyncIterator[Runtime]:
    """A runtime with its engine over `fakes` (each with our models installed), data in
    `tmp_path / "data"`, stopped on exit; `settings_values` override the engine settings."""
    settings = engine_settings(
        pg_dsn, tmp_path / "data", [fake.base_url for fake in fakes], **settings_values
    )
    for fake in fakes:
        install_models(fake, settings)
    runtime = await start_runtime(settings, deliverer)
    try:
        yield runtime
    finally:
        await runtime.stop()


# The transitions of a claimed job up to its delivery, for tests that walk a job there.
TO_DELIVERING = [
    JobState.SUBMITTED,
    JobState.RUNNING,
    JobState.POSTPROCESSING,
    JobState.DELIVERING,
]


async def wait_status(
    runtime: Runtime, job_id: UUID, states: set[JobState], timeout: float = 20.0
) -> Generation:
    deadline = time.monotonic() + timeout
    while True:
        job = await runtime.service.job(job_id)
        if job.status in states:
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} stuck in {job.status} (wanted {states})")
        await asyncio.sleep(0.05)


async def wait_until(predicate: Callable[[], Awaitable[bool]], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)
