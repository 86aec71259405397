"""Soundtracks end to end: search (local folder + iTunes fake), pick, queue a video with it,
and the delivered mp4 carries the music trimmed to the video's length."""

from __future__ import annotations

import subprocess
from pathlib import Path

import imageio_ffmpeg
import pytest

from core.errors import InvalidInput
from core.media.probe import probe
from core.models import JobKind
from core.states import JobState
from tests.engine import (
    RecordingDeliverer,
    actor,
    running_engine,
    wait_status,
)


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


async def test_a_soundtrack_gone_before_the_mix_fails_the_job_with_its_reason(
    pg_dsn, fake_comfy, tmp_path
) -> None:
    """The picked file is deleted while the video is being made: the job fails with the music
    service's reason (not "Internal error (MusicError)." after two crash retries)."""
    music_dir = tmp_path / "music"
    music_dir.mkdir()
    song = _tone(music_dir / "Ocean Waves.mp3", 3.0)
    async with running_engine(
        pg_dsn, tmp_path, [fake_comfy], RecordingDeliverer(), music_dir=music_dir
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
        assert job.status is JobState.FAILED
        assert job.error == "That music file cannot be used."
        assert [post["prompt_id"] for post in fake_comfy.prompt_posts] == [str(job.id)]
