"""What the service refuses, and what a refusal leaves behind: the user-facing message, and
nothing queued, charged, stored or changed. Plus the cancel of a queued job that an engine
takes at that very moment.

Real PostgreSQL; the last test also runs the real engine against the fake ComfyUI.
"""

from __future__ import annotations

import asyncio
import io
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from PIL import Image

from core import director
from core.db import characters as char_db
from core.db import generations as gen_db
from core.db import outputs as out_db
from core.db import people
from core.db.pool import Database
from core.errors import AnimeBotError, InvalidInput, LimitReached, NotFound
from core.events import EventBus
from core.jobs import orchestrator as orchestrator_mod
from core.models import ChatType, JobKind
from core.service import Actor, CharacterDraft, StudioService
from core.settings import Settings
from core.states import JobState
from tests.engine import RecordingDeliverer, running_engine
from tests.integration.engine_kit import fast_engine, job, posts_for, until, wait_all

ME = Actor(user_id=1, chat_id=1, first_name="Aiko")
OTHER = Actor(user_id=2, chat_id=2, first_name="Mallory")
ADMIN = 99


@pytest.fixture
async def studio(db: Database, tmp_path: Path) -> StudioService:
    settings = Settings(
        _env_file=None,
        comfyui_urls=["http://127.0.0.1:9"],
        data_dir=tmp_path / "data",
        daily_quota=2,
        max_queued_per_user=5,
        max_characters_per_user=2,
        admin_user_ids=[ADMIN],
    )
    service = StudioService(settings, db, EventBus())
    for actor in (ME, OTHER):
        await service.seen(actor)
    return service


def refusal(error: pytest.ExceptionInfo[AnimeBotError]) -> str:
    return error.value.user_message


async def job_count(service: StudioService) -> int:
    count: int = await service.db.fetchval("SELECT count(*) FROM generations")
    return count


def png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 120, 40)).save(out, format="PNG")
    return out.getvalue()


# -- chat settings ----------------------------------------------------------------------------


async def test_settings_of_an_unknown_chat_or_with_an_unknown_preset_are_refused(
    studio: StudioService,
) -> None:
    with pytest.raises(NotFound):
        await studio.chat_settings(424242)
    preset = next(iter(director.STYLE_PRESETS))
    with pytest.raises(NotFound):
        await studio.update_chat_settings(424242, style_preset=preset)
    assert await people.get_chat(studio.db, 424242) is None  # not created by the attempt

    before = await studio.chat_settings(ME.chat_id)
    with pytest.raises(InvalidInput) as error:
        await studio.update_chat_settings(ME.chat_id, style_preset="no-such-style")
    assert refusal(error) == "Unknown style preset."
    assert (await studio.chat_settings(ME.chat_id)).style_preset == before.style_preset


# -- characters -------------------------------------------------------------------------------


async def test_the_character_limit_refuses_before_the_dialog_and_at_creation(
    studio: StudioService,
) -> None:
    await studio.check_room_for_character(ME.user_id)
    first = await studio.create_character(ME, CharacterDraft("Aiko", "short red hair"))
    await studio.create_character(ME, CharacterDraft("Ren", "tall, silver eyes"))
    message = "You have 2 characters already; delete one first."
    with pytest.raises(LimitReached) as error:
        await studio.check_room_for_character(ME.user_id)
    assert refusal(error) == message
    with pytest.raises(LimitReached) as error:
        await studio.create_character(ME, CharacterDraft("Mika", "green coat"))
    assert refusal(error) == message
    assert await char_db.count_characters(studio.db, ME.user_id) == 2
    await studio.check_room_for_character(OTHER.user_id)  # per user

    await studio.delete_character(ME, first.id)
    await studio.check_room_for_character(ME.user_id)  # room again


async def test_a_reference_is_checked_without_being_kept(studio: StudioService) -> None:
    with pytest.raises(InvalidInput) as error:
        await studio.check_reference(png(10, 10))
    assert refusal(error) == "The image is too small (10x10): each side must be at least 64 px."
    with pytest.raises(InvalidInput):
        await studio.check_reference(b"not an image at all")
    await studio.check_reference(png(128, 96))  # fine, and nothing is stored
    data_dir = studio.settings.data_dir
    assert not data_dir.exists() or not any(p.is_file() for p in data_dir.rglob("*"))


async def test_character_edits_that_are_refused_change_nothing(
    studio: StudioService, monkeypatch: pytest.MonkeyPatch
) -> None:
    aiko = await studio.create_character(ME, CharacterDraft("Aiko", "short red hair"))
    with pytest.raises(InvalidInput) as error:
        await studio.update_character(ME, aiko.id, "style", "no-such-style")
    assert refusal(error) == "Unknown style preset."
    for field in ("owner_id", "base_seed", "lora_name"):
        with pytest.raises(InvalidInput) as error:
            await studio.update_character(ME, aiko.id, field, "2")
        assert refusal(error) == "That cannot be edited."
    with pytest.raises(NotFound):  # somebody else's
        await studio.update_character(OTHER, aiko.id, "appearance", "long blue hair")
    unchanged = await studio.get_character(ME, aiko.id)
    assert (unchanged.owner_id, unchanged.style, unchanged.base_seed) == (
        ME.user_id,
        aiko.style,
        aiko.base_seed,
    )
    assert unchanged.appearance == "short red hair"

    # Deleted (from another device) between the ownership check and the edit.
    real_get = char_db.get_character

    async def read_then_deleted(db: Any, character_id: UUID) -> Any:
        found = await real_get(db, character_id)
        await char_db.soft_delete_character(db, character_id)
        return found

    monkeypatch.setattr(char_db, "get_character", read_then_deleted)
    with pytest.raises(NotFound) as error:
        await studio.update_character(ME, aiko.id, "appearance", "long blue hair")
    assert refusal(error) == "That character does not exist."
    monkeypatch.setattr(char_db, "get_character", real_get)
    assert await char_db.get_character(studio.db, aiko.id) is None
    names = await char_db.names_of(studio.db, [aiko.id])
    assert names == {aiko.id: "Aiko"}


# -- limits on requests -------------------------------------------------------------------------


async def test_the_daily_quota_refuses_and_queues_nothing(studio: StudioService) -> None:
    first = await studio.request_scene(ME, JobKind.IMAGE, "a fox in the snow")
    await studio.request_scene(ME, JobKind.IMAGE, "a cat on a roof")
    with pytest.raises(LimitReached) as error:
        await studio.request_scene(ME, JobKind.IMAGE, "a wolf at night")
    assert refusal(error) == "You have used today's quota. It resets at midnight (UTC)."
    assert await job_count(studio) == 2
    user = await people.get_user(studio.db, ME.user_id)
    assert user is not None and user.quota_used == 2  # the refused request took nothing

    await studio.request_scene(OTHER, JobKind.IMAGE, "a quota of its own")  # per user
    # A job cancelled before any GPU took it gives its share back.
    assert (await studio.cancel(ME, first.job.id)).status is JobState.CANCELLED
    again = await studio.request_scene(ME, JobKind.IMAGE, "a wolf at night")
    assert again.job.status is JobState.QUEUED


async def test_results_of_another_chat_are_refused(studio: StudioService) -> None:
    parent = (await studio.request_scene(ME, JobKind.IMAGE, "a fox in the snow")).job
    elsewhere = Actor(user_id=ME.user_id, chat_id=-1001, chat_type=ChatType.SUPERGROUP)
    for attempt in (
        studio.reroll(elsewhere, parent.id),
        studio.reroll(elsewhere, parent.id, variation=True),
        studio.upscale(elsewhere, parent.id),
        studio.animate(elsewhere, parent.id),
    ):
        with pytest.raises(NotFound) as error:
            await attempt
        assert refusal(error) == "That result is not from this chat."
    assert await job_count(studio) == 1
    user = await people.get_user(studio.db, ME.user_id)
    assert user is not None and user.quota_used == 1


async def stored_output(
    studio: StudioService, job_id: UUID, kind: JobKind, mime: str, **size: int
) -> None:
    """An output row for `job_id` whose file does not exist (`size`: its width and height)."""
    extension = mime.split("/")[1]
    await out_db.save_output(
        studio.db,
        generation_id=job_id,
        position=0,
        kind=kind,
        file_path=f"/nonexistent/{kind.value}.{extension}",
        mime=mime,
        size_bytes=1,
        sha256="0" * 64,
        **size,
    )


async def test_results_without_a_usable_image_are_refused(studio: StudioService) -> None:
    video = (await studio.request_scene(ME, JobKind.VIDEO, "a girl dancing")).job
    await stored_output(studio, video.id, JobKind.VIDEO, "video/mp4", width=320, height=240)
    for attempt in (studio.upscale(ME, video.id), studio.animate(ME, video.id)):
        with pytest.raises(InvalidInput) as error:
            await attempt
        assert refusal(error) == "That result has no image to use."

    sizeless = (await studio.request_scene(ME, JobKind.IMAGE, "a fox")).job
    await stored_output(studio, sizeless.id, JobKind.IMAGE, "image/png")  # no width or height
    with pytest.raises(InvalidInput) as error:
        await studio.upscale(ME, sizeless.id)
    assert refusal(error) == "That image cannot be upscaled."
    assert await job_count(studio) == 2


# -- cancel -----------------------------------------------------------------------------------


async def test_cancelling_somebody_else_s_job_is_refused(studio: StudioService) -> None:
    mine = (await studio.request_scene(ME, JobKind.IMAGE, "a fox in the snow")).job
    with pytest.raises(NotFound) as error:
        await studio.cancel(OTHER, mine.id)
    assert refusal(error) == "This is not your request."
    after = await studio.job(mine.id)
    assert after.status is JobState.QUEUED and not after.cancel_requested


async def _no_dispatch_loop(self: orchestrator_mod.Orchestrator) -> None:
    await asyncio.Event().wait()  # dispatch rounds are run by hand (`dispatch_once`)


async def test_cancelling_a_queued_job_an_engine_takes_meanwhile_stops_it_there(
    pg_dsn: str, fake_comfy: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The user cancels a job they see waiting; between the service reading it `queued` and
    cancelling it, an engine claims it and sends it to ComfyUI. The cancel becomes a request
    the engine honours: the prompt leaves ComfyUI's queue, the job ends `cancelled`."""
    fast_engine(monkeypatch)
    monkeypatch.setattr(orchestrator_mod.Orchestrator, "_dispatch_loop", _no_dispatch_loop)
    async with running_engine(pg_dsn, tmp_path, [fake_comfy], RecordingDeliverer()) as runtime:
        try:
            runtime.service.starter = None  # (a bot process: the engine's round takes the job)
            fake_comfy.hold()
            await runtime.service.seen(ME)
            ticket = await runtime.service.request_scene(ME, JobKind.IMAGE, "a fox --steps 2")
            assert ticket.position == 1
            job_id = ticket.job.id
            real_read = gen_db.require_generation
            taken: list[int] = []

            async def read_then_taken(db: Any, wanted: UUID) -> Any:
                found = await real_read(db, wanted)
                if wanted == job_id and not taken:
                    taken.append(await runtime.orchestrator.dispatch_once())
                return found

            monkeypatch.setattr(gen_db, "require_generation", read_then_taken)
            answer = await runtime.service.cancel(ME, job_id)
            assert taken == [1]  # the engine took it in between
            assert answer.status is JobState.SUBMITTED and answer.cancel_requested

            (ended,) = await wait_all(runtime, [job_id], timeout=5)
            assert ended.status is JobState.CANCELLED
            await until(lambda: str(job_id) not in fake_comfy.pending_ids, what="left ComfyUI")
            assert len(posts_for(fake_comfy, job_id)) == 1
            steps = [e.to_status for e in await gen_db.list_events(runtime.database.pool, job_id)]
            assert steps == ["queued", "submitted", "cancelled"]
            fake_comfy.release()
            await fake_comfy.wait_idle(5)
            assert str(job_id) not in fake_comfy.history  # never ran
            assert (await job(runtime, job_id)).status is JobState.CANCELLED
        finally:
            fake_comfy.release()


# -- admin --------------------------------------------------------------------------------------


async def test_admin_changes_to_an_unknown_user_are_refused(studio: StudioService) -> None:
    for change in (studio.set_quota(424242, 10), studio.set_banned(424242, True)):
        with pytest.raises(NotFound) as error:
            await change
        assert refusal(error) == "I have never seen that user."
    assert await people.get_user(studio.db, 424242) is None  # not created by the attempt
    assert await people.count_users(studio.db) == 2


async def test_stats_count_jobs_per_state_over_every_kind(studio: StudioService) -> None:
    await studio.request_scene(ME, JobKind.IMAGE, "a fox in the snow")
    await studio.request_scene(ME, JobKind.VIDEO, "a girl dancing")
    dropped = await studio.request_scene(OTHER, JobKind.IMAGE, "a cat on a roof")
    await studio.cancel(OTHER, dropped.job.id)
    stats = await studio.stats()
    assert stats.users == 2
    assert stats.jobs_by_state == {"queued": 2, "cancelled": 1}
    assert stats.backends == {}
