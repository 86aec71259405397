"""Soundtracks end to end: search (local folder + iTunes fake), pick, queue a video with it,
and the delivered mp4 carries the music trimmed to the video's length."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import cast

import imageio_ffmpeg
import pytest

from core.errors import InvalidInput, MediaError
from core.jobs import postprocess
from core.media.probe import probe
from core.models import Generation, JobKind, LibraryStatus, Output
from core.music import mix
from core.music.service import SoundtrackChoice
from core.states import JobState
from tests import log_capture
from tests.engine import (
    RecordingDeliverer,
    actor,
    running_engine,
    wait_status,
    wait_until,
)
from tests.fakes.jellyfin import API_KEY as JELLYFIN_KEY
from tests.log_capture import Logs

logs = log_capture.logs  # the fixture (JSON lines at INFO while the test runs)
MIX_FAILED = "The soundtrack could not be added to the video."


def _tone(path: Path, seconds: float) -> Path:
    subprocess.run(
        [
            imageio_ffmpeg.get_ffmpeg_exe(),
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            f"sine=frequency=440:duration={seconds}",
            "-c:a",
            "libmp3lame",
            str(path),
        ],
        check=True,
        timeout=60,
    )
    return path


async def test_video_with_itunes_preview_and_local_file(
    pg_dsn, fake_comfy, fake_itunes, tmp_path
) -> None:
    music_dir = tmp_path / "music"
    music_dir.mkdir()
    _tone(music_dir / "Ocean Waves.mp3", 12.0)
    fake_itunes.add("sakura", fake_itunes.song(42, "Sakura Song", "Hana"))
    deliverer = RecordingDeliverer()
    async with running_engine(
        pg_dsn,
        tmp_path,
        [fake_comfy],
        deliverer,
        music_dir=music_dir,
        itunes_enabled=True,
        itunes_base_url=fake_itunes.url,
    ) as runtime:
        service = runtime.service
        me = actor(3)
        await service.seen(me)
        local = await service.search_soundtracks("ocean")
        assert [c.source for c in local] == ["local"] and local[0].title == "Ocean Waves"
        found = await service.search_soundtracks("sakura")
        assert found[0].source == "itunes" and found[0].credit().startswith("♪ Sakura Song — Hana")

        for choice in (found[0], local[0]):
            ticket = await service.request_scene(
                me, JobKind.VIDEO, "petals falling --length 2s --steps 2", soundtrack=choice
            )
            assert ticket.job.soundtrack and ticket.job.soundtrack["title"] == choice.title
            job = await wait_status(
                runtime, ticket.job.id, {JobState.DONE, JobState.FAILED}, timeout=60
            )
            assert job.status is JobState.DONE, job.error
            out = (await service.outputs(job.id))[0]
            delivered = Path(out.delivery_path or "")
            assert delivered.name.endswith("_music.mp4")
            info = await probe(delivered)
            assert info.audio_codec == "aac" and info.video_codec == "h264"
            assert info.duration_s is not None and out.duration_s is not None
            assert abs(info.duration_s - out.duration_s) < 0.3  # trimmed to the video
        assert fake_itunes.preview_calls == 1


async def test_soundtrack_rules(pg_dsn, fake_comfy, tmp_path) -> None:
    async with running_engine(pg_dsn, tmp_path, [fake_comfy], RecordingDeliverer()) as runtime:
        service = runtime.service
        me = actor(4)
        await service.seen(me)
        upload = await service.soundtrack_from_upload(
            _tone(tmp_path / "mine.mp3", 1.0).read_bytes(), "my theme.mp3"
        )
        assert upload.source == "upload" and upload.title == "my theme"
        with pytest.raises(InvalidInput) as error:
            await service.soundtrack_from_upload(b"not audio at all", "x.mp3")
        assert "not an audio file" in error.value.user_message
        with pytest.raises(InvalidInput, match="image"):
            await service.request_scene(me, JobKind.IMAGE, "a cat", soundtrack=upload)
        assert not service.music_available


async def test_a_soundtrack_gone_before_the_mix_sends_the_video_without_music(
    pg_dsn, fake_comfy, fake_jellyfin, tmp_path, logs: Logs
) -> None:
    """The picked file is deleted while the video is being made: the job is done all the same,
    the video goes out without music, the output records why (`without_music`, for the
    caption), a warning names the job and the reason; the original is kept and filed in the
    library."""
    music_dir = tmp_path / "music"
    music_dir.mkdir()
    song = _tone(music_dir / "Ocean Waves.mp3", 3.0)
    library = tmp_path / "library"
    library.mkdir()
    fake_jellyfin.add_folder("Anime Studio", [str(library)])
    deliverer = RecordingDeliverer()
    async with running_engine(
        pg_dsn,
        tmp_path,
        [fake_comfy],
        deliverer,
        music_dir=music_dir,
        jellyfin_url=fake_jellyfin.url,
        jellyfin_api_key=JELLYFIN_KEY,
        jellyfin_library_dir=library,
        jellyfin_scan_attempts=20,
        jellyfin_scan_interval_s=0.1,
    ) as runtime:
        service = runtime.service
        me = actor(3)
        await service.seen(me)
        (choice,) = await service.search_soundtracks("ocean")
        song.unlink()
        ticket = await service.request_scene(
            me, JobKind.VIDEO, "waves --length 2s --steps 2", soundtrack=choice
        )
        job = await wait_status(runtime, ticket.job.id, {JobState.DONE, JobState.FAILED}, 60)
        assert job.status is JobState.DONE, job.error
        assert job.soundtrack is not None and job.soundtrack["title"] == "Ocean Waves"
        [(delivered_job, [out])] = deliverer.delivered
        assert delivered_job.id == job.id
        video = Path(out.delivery_path or "")
        assert video.name == "00_telegram.mp4" and video.is_file()  # not "_music.mp4"
        info = await probe(video)
        assert info.video_codec == "h264"
        assert out.without_music == "gone"
        assert Path(out.file_path).is_file() and out.file_path != out.delivery_path

        async def linked() -> bool:
            return bool(deliverer.links)

        await wait_until(linked, timeout=15)
        [filed] = await service.outputs(job.id)
        assert filed.library_status is LibraryStatus.LINKED
        assert Path(filed.library_path or "").is_file()
    [line] = logs.lines("video sent without its soundtrack")
    assert line["level"] == "warning" and line["job_id"] == str(job.id)
    assert line["reason"] == "gone" and line["source"] == "local"
    assert "refused" in line["error"]
    assert [post["prompt_id"] for post in fake_comfy.prompt_posts] == [str(job.id)]


async def test_a_soundtrack_turned_off_or_without_sound_says_so_and_a_real_mix_failure_fails(
    pg_dsn, fake_comfy, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MUSIC_DIR unset since the pick (source_off), a music file with no sound (unusable): the
    video is sent without music. ffmpeg failing to mix a usable soundtrack is ours to fix: the
    job fails with that reason, as before."""
    music_dir = tmp_path / "music"
    music_dir.mkdir()
    _tone(music_dir / "Ocean Waves.mp3", 3.0)
    (music_dir / "Silent.mp3").write_bytes(b"ID3" + bytes(500))  # listed, but no sound
    async with running_engine(
        pg_dsn, tmp_path, [fake_comfy], RecordingDeliverer(), music_dir=music_dir
    ) as runtime:
        service = runtime.service
        me = actor(5)
        await service.seen(me)
        (ocean,) = await service.search_soundtracks("ocean")
        (silent,) = await service.search_soundtracks("silent")
        turned_off = runtime.settings.model_copy(update={"music_dir": None})

        async def video(choice: SoundtrackChoice) -> tuple[Generation, Output]:
            ticket = await service.request_scene(
                me, JobKind.VIDEO, "waves --length 2s --steps 2", soundtrack=choice
            )
            job = await wait_status(runtime, ticket.job.id, {JobState.DONE, JobState.FAILED}, 60)
            outs = await service.outputs(job.id)
            return job, outs[0] if outs else cast(Output, None)

        job, out = await video(silent)
        assert job.status is JobState.DONE and out.without_music == "unusable"

        real_service = postprocess.MusicService
        monkeypatch.setattr(postprocess, "MusicService", lambda _settings: real_service(turned_off))
        job, out = await video(ocean)
        assert job.status is JobState.DONE and out.without_music == "source_off"
        monkeypatch.setattr(postprocess, "MusicService", real_service)

        async def broken_ffmpeg(*args: object, **kwargs: object) -> None:
            raise MediaError("mix soundtrack: ffmpeg exited 1", user_message=MIX_FAILED)

        monkeypatch.setattr(mix, "run_ffmpeg", broken_ffmpeg)
        job, _out = await video(ocean)
        assert job.status is JobState.FAILED and job.error == MIX_FAILED
