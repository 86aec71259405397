"""Delivered results are filed into the Jellyfin library and the link reaches the chat side;
Jellyfin down never delays delivery, and the scheduler's retry files it later."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from core.db import outputs as out_db
from core.models import Generation, LibraryStatus
from core.runtime import Runtime
from core.states import JobState
from tests.engine import (
    RecordingDeliverer,
    running_engine,
    wait_status,
    wait_until,
)
from tests.fakes.jellyfin import API_KEY, FakeJellyfin
from tests.integration.engine_kit import submit


def _jellyfin_values(tmp_path: Path, jellyfin_url: str) -> dict[str, Any]:
    """Engine settings that file results into a new library folder, `tmp_path / "library"`."""
    library = tmp_path / "library"
    library.mkdir()
    return {
        "jellyfin_url": jellyfin_url,
        "jellyfin_api_key": API_KEY,
        "jellyfin_library_dir": library,
        "jellyfin_scan_attempts": 20,
        "jellyfin_scan_interval_s": 0.1,
        "library_retry_s": 0.2,
    }


async def _done(runtime: Runtime, user: int, scene: str) -> Generation:
    """A user's image request through the service, waited for until done."""
    return await wait_status(runtime, await submit(runtime, user, scene), {JobState.DONE})


async def _first_attempt(runtime: Runtime, job: Generation) -> None:
    """Until filing the job's output has been tried once."""

    async def tried() -> bool:
        outs = await runtime.service.outputs(job.id)
        return bool(outs) and outs[0].library_attempts >= 1

    await wait_until(tried, timeout=10)


async def _linked(deliverer: RecordingDeliverer) -> None:
    async def linked() -> bool:
        return bool(deliverer.links)

    await wait_until(linked, timeout=15)


async def test_done_job_is_filed_and_linked(pg_dsn, fake_comfy, fake_jellyfin, tmp_path) -> None:
    values = _jellyfin_values(tmp_path, fake_jellyfin.url)
    fake_jellyfin.add_folder("Anime Studio", [str(values["jellyfin_library_dir"])])
    deliverer = RecordingDeliverer()
    async with running_engine(pg_dsn, tmp_path, [fake_comfy], deliverer, **values) as runtime:
        await _done(runtime, 7, "Sakura at the beach")
        await _linked(deliverer)
        output_id, link = deliverer.links[0]
        output = await out_db.get_output(runtime.database.pool, output_id)
        assert output is not None and output.library_status is LibraryStatus.LINKED
        assert output.jellyfin_link == link
        assert link.startswith(f"{fake_jellyfin.url}/web/#/details?id=")
        filed = Path(output.library_path or "")
        assert filed.is_file() and filed.is_relative_to(runtime.settings.jellyfin_library_dir)
        assert "Sakura at the beach" in filed.name
        assert fake_jellyfin.requests_to("/Library/Media/Updated", "POST")


async def test_jellyfin_down_does_not_delay_delivery_and_retry_files_later(
    pg_dsn, fake_comfy, fake_jellyfin, tmp_path
) -> None:
    values = _jellyfin_values(tmp_path, fake_jellyfin.url)
    fake_jellyfin.add_folder("Anime Studio", [str(values["jellyfin_library_dir"])])
    await fake_jellyfin.stop()
    deliverer = RecordingDeliverer()
    async with running_engine(pg_dsn, tmp_path, [fake_comfy], deliverer, **values) as runtime:
        job = await _done(runtime, 8, "a rainy street")
        assert job.result_message_id is not None
        await _first_attempt(runtime, job)
        outs = await runtime.service.outputs(job.id)
        assert outs[0].library_status is LibraryStatus.FILED  # kept in the folder already
        assert Path(outs[0].library_path or "").is_file()
        assert not deliverer.links

        await fake_jellyfin.start()
        filer = runtime.extras["filer"]

        async def linked() -> bool:
            await filer.file_due()
            return bool(deliverer.links)

        await wait_until(linked, timeout=15)
        outs = await runtime.service.outputs(job.id)
        assert outs[0].library_status is LibraryStatus.LINKED
        files = list(runtime.settings.jellyfin_library_dir.rglob("*.png"))
        assert len(files) == 1  # the retry resumed, it did not file a second copy


async def test_library_is_created_when_allowed_and_refused_otherwise(
    pg_dsn, fake_comfy, fake_jellyfin, tmp_path
) -> None:
    values = _jellyfin_values(tmp_path, fake_jellyfin.url)
    deliverer = RecordingDeliverer()
    async with running_engine(
        pg_dsn, tmp_path, [fake_comfy], deliverer, jellyfin_create_library=True, **values
    ) as runtime:
        await _done(runtime, 9, "a quiet library")
        await _linked(deliverer)
        created = fake_jellyfin.requests_to("/Library/VirtualFolders", "POST")
        assert len(created) == 1
        assert runtime.extras["filer"].library_id is not None


async def test_missing_library_without_permission_is_retried_not_created(
    pg_dsn, fake_comfy, fake_jellyfin, tmp_path
) -> None:
    values = _jellyfin_values(tmp_path, fake_jellyfin.url)
    deliverer = RecordingDeliverer()
    async with running_engine(pg_dsn, tmp_path, [fake_comfy], deliverer, **values) as runtime:
        job = await _done(runtime, 10, "an empty shelf")
        await _first_attempt(runtime, job)
        assert not fake_jellyfin.requests_to("/Library/VirtualFolders", "POST")
        outs = await runtime.service.outputs(job.id)
        # The file is kept in the library folder; linking waits until the library exists.
        assert outs[0].library_status is LibraryStatus.FILED and not deliverer.links
        assert Path(outs[0].library_path or "").is_file()
        assert not fake_jellyfin.requests_to("/Library/Media/Updated", "POST")


async def _jellyfin_down_for_an_hour(tmp_path: Path, jellyfin: FakeJellyfin) -> dict[str, Any]:
    """Engine settings with a retry delay of an hour, and the fake Jellyfin (with the library)
    refusing connections until it is started again."""
    values = {**_jellyfin_values(tmp_path, jellyfin.url), "library_retry_s": 3600}
    jellyfin.add_folder("Anime Studio", [str(values["jellyfin_library_dir"])])
    await jellyfin.stop()
    return values


async def test_jellyfin_back_files_waiting_results_at_once_not_after_their_backoff(
    pg_dsn, fake_comfy, fake_jellyfin, tmp_path
) -> None:
    values = await _jellyfin_down_for_an_hour(tmp_path, fake_jellyfin)
    deliverer = RecordingDeliverer()
    async with running_engine(pg_dsn, tmp_path, [fake_comfy], deliverer, **values) as runtime:
        job = await _done(runtime, 9, "a quiet harbour")
        await _first_attempt(runtime, job)
        [waiting] = await runtime.service.outputs(job.id)
        assert waiting.library_unreachable and waiting.library_status is LibraryStatus.FILED
        assert waiting.library_next_at is not None
        assert waiting.library_next_at > datetime.now(UTC) + timedelta(minutes=30)

        filer = runtime.extras["filer"]
        assert await filer.file_due() == 0  # still down: asked, nothing woken, nothing tried
        [still] = await runtime.service.outputs(job.id)
        assert (still.library_attempts, still.library_next_at) == (1, waiting.library_next_at)

        await fake_jellyfin.start()
        assert await filer.file_due() == 1  # back: filed now, not in an hour
        [filed] = await runtime.service.outputs(job.id)
        assert filed.library_status is LibraryStatus.LINKED and not filed.library_unreachable
        assert [output_id for output_id, _link in deliverer.links] == [filed.id]
        assert len(list(runtime.settings.jellyfin_library_dir.rglob("*.png"))) == 1


async def test_outputs_waiting_for_other_reasons_keep_their_backoff(
    pg_dsn, fake_comfy, fake_jellyfin, tmp_path
) -> None:
    values = await _jellyfin_down_for_an_hour(tmp_path, fake_jellyfin)
    async with running_engine(
        pg_dsn, tmp_path, [fake_comfy], RecordingDeliverer(), **values
    ) as runtime:
        job = await _done(runtime, 10, "a windy hill")
        await _first_attempt(runtime, job)
        [output] = await runtime.service.outputs(job.id)
        assert output.library_unreachable
        # Its next attempt found Jellyfin answering but the item not indexed yet.
        later = datetime.now(UTC) + timedelta(hours=2)
        db = runtime.database.pool
        await out_db.record_library(
            db, output.id, status=LibraryStatus.FILED, next_attempt_at=later
        )
        await fake_jellyfin.start()
        assert await runtime.extras["filer"].resume_if_back() == 0
        [kept] = await runtime.service.outputs(job.id)
        assert kept.library_next_at == later and not kept.library_unreachable
        assert not fake_jellyfin.requests_to("/System/Info")  # nothing waits for it: not asked


async def test_only_a_process_that_delivers_files_into_the_library(
    pg_dsn, fake_comfy, fake_jellyfin, tmp_path
) -> None:
    """A worker (no deliverer) could link a result but never edit the caption: it leaves
    filing, also the scheduler's retries, to the processes that deliver."""
    values = await _jellyfin_down_for_an_hour(tmp_path, fake_jellyfin)
    async with running_engine(
        pg_dsn, tmp_path / "bot", [fake_comfy], RecordingDeliverer(), **values
    ) as bot:
        assert bot.extras["maintenance"].scheduler.get_job("library") is not None
    async with running_engine(pg_dsn, tmp_path / "worker", [fake_comfy], None, **values) as worker:
        maintenance = worker.extras["maintenance"]
        assert maintenance.scheduler.get_job("library") is None
        assert maintenance.scheduler.get_job("quotas") is not None  # the rest runs as usual
