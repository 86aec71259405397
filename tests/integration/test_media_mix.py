"""Real ffmpeg: mixing a soundtrack into a video (trim, fade, pad, replace audio)."""

from __future__ import annotations

import array
import math
from pathlib import Path

import pytest

from core.errors import MediaError
from core.media.ffmpeg_parse import parse_input_info
from core.media.probe import probe
from core.media.runner import input_args, run_ffmpeg
from core.music.mix import mix_soundtrack

RATE = 8000


async def make(*args: str) -> None:
    await run_ffmpeg(["-y", *args], what="make test input", timeout_s=60)


async def make_video(path: Path, seconds: float) -> Path:
    """H.264 video whose own audio track is pure silence (so leaking it would show)."""
    await make(
        "-f",
        "lavfi",
        "-i",
        f"testsrc=s=128x96:r=25:d={seconds}",
        "-f",
        "lavfi",
        "-i",
        f"anullsrc=r=44100:cl=mono:d={seconds}",
        "-c:v",
        "libx264",
        "-pix_fmt",
        "yuv420p",
        "-preset",
        "ultrafast",
        "-c:a",
        "aac",
        "-shortest",
        str(path),
    )
    return path


AUDIO_CODECS = {
    "mp3": ("-c:a", "libmp3lame"),
    "m4a": ("-c:a", "aac"),
    "ogg": ("-c:a", "libopus"),  # a Telegram voice note
    "wav": ("-c:a", "pcm_s16le"),
}


async def make_audio(path: Path, seconds: float) -> Path:
    source = f"sine=frequency=440:duration={seconds}"
    if path.suffix == ".wav":
        source = f"anoisesrc=color=pink:amplitude=0.5:seed=42:duration={seconds}"  # repeatable
    await make("-f", "lavfi", "-i", source, *AUDIO_CODECS[path.suffix[1:]], str(path))
    return path


async def decoded_audio(path: Path) -> array.array[int]:
    result = await run_ffmpeg(
        [*input_args(path), "-map", "0:a:0", "-ac", "1", "-ar", str(RATE), "-f", "s16le", "pipe:1"],
        what="decode audio",
        timeout_s=30,
        capture_stdout=True,
    )
    samples = array.array("h")
    samples.frombytes(result.stdout)
    return samples


def rms(samples: array.array[int], start_s: float, end_s: float) -> float:
    window = samples[int(start_s * RATE) : int(end_s * RATE)]
    assert len(window) > 0
    return math.sqrt(sum(s * s for s in window) / len(window))


async def audio_stream_count(path: Path) -> int:
    result = await run_ffmpeg(input_args(path), what="inspect", timeout_s=30, check=False)
    parsed = parse_input_info(result.stderr)
    assert parsed is not None
    return len(parsed.audio)


@pytest.mark.parametrize("suffix", ["mp3", "wav"])
async def test_longer_audio_is_trimmed_and_faded(tmp_path: Path, suffix: str) -> None:
    video = await make_video(tmp_path / "v.mp4", 3.0)
    audio = await make_audio(tmp_path / f"song.{suffix}", 5.0)
    result = await mix_soundtrack(video, audio, tmp_path / "out.mp4")
    assert result.path == tmp_path / "out.mp4"
    assert result.audio_duration_s == pytest.approx(5.0, abs=0.1)

    samples = await decoded_audio(result.path)
    assert len(samples) / RATE == pytest.approx(3.0, abs=0.06)  # audio as long as the video
    loud = rms(samples, 0.1, 0.5)
    assert loud > 1000  # the music replaced the silent track
    assert rms(samples, 0.6, 0.95) > 0.8 * loud  # no fade before the last 2 s (from 1.0 s)
    assert 0.3 * loud < rms(samples, 1.9, 2.1) < 0.7 * loud  # halfway through the fade
    assert rms(samples, 2.8, 2.97) < 0.2 * loud  # nearly silent at the very end
    assert await audio_stream_count(result.path) == 1

    info, source = await probe(result.path), await probe(video)
    assert info.video_codec == "h264" and info.audio_codec == "aac"
    assert info.frames == source.frames  # video stream copied
    data = result.path.read_bytes()
    assert data.index(b"moov") < data.index(b"mdat")  # +faststart
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4", "song." + suffix, "v.mp4"]


@pytest.mark.parametrize("suffix", ["ogg", "m4a"])
async def test_shorter_audio_is_faded_and_padded_with_silence(tmp_path: Path, suffix: str) -> None:
    video = await make_video(tmp_path / "v.mp4", 4.0)
    audio = await make_audio(tmp_path / f"voice.{suffix}", 2.5)
    result = await mix_soundtrack(video, audio, tmp_path / "out.mp4")

    samples = await decoded_audio(result.path)
    assert len(samples) / RATE == pytest.approx(4.0, abs=0.06)
    loud = rms(samples, 0.2, 0.5)
    assert loud > 1000
    assert rms(samples, 2.3, 2.45) < 0.35 * loud  # faded at the end of the music
    assert rms(samples, 2.8, 3.9) < 30  # then silence up to the video's end
    assert await audio_stream_count(result.path) == 1


async def test_bad_audio_is_a_media_error_and_leaves_nothing(tmp_path: Path) -> None:
    video = await make_video(tmp_path / "v.mp4", 1.0)
    bad = tmp_path / "song.mp3"
    bad.write_bytes(b"ID3" + bytes(500))
    with pytest.raises(MediaError):
        await mix_soundtrack(video, bad, tmp_path / "out.mp4")
    with pytest.raises(MediaError):  # an image is not a video to mix into
        await mix_soundtrack(bad, video, tmp_path / "out.mp4")
    with pytest.raises(MediaError) as caught:
        await mix_soundtrack(video, video, tmp_path / "out.mp4", ffmpeg="/nonexistent/ffmpeg")
    assert "not available" in caught.value.user_message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["song.mp3", "v.mp4"]


async def test_mix_timeout_cleans_up(tmp_path: Path) -> None:
    video = await make_video(tmp_path / "v.mp4", 2.0)
    audio = await make_audio(tmp_path / "a.wav", 2.0)
    with pytest.raises(MediaError, match="timed out"):
        await mix_soundtrack(video, audio, tmp_path / "out.mp4", timeout_s=0.001)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.wav", "v.mp4"]
