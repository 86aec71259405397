"""Real ffmpeg + Pillow on generated inputs: probe and Telegram-ready video conversion."""

import asyncio
import inspect
import os
from pathlib import Path

import pytest
from PIL import Image

from core.errors import InvalidInput, MediaError
from core.media.ffmpeg_bin import ffmpeg_version, locate_ffmpeg
from core.media.probe import probe
from core.media.runner import run_ffmpeg
from core.media.video import VideoResult, prepare_video


async def make(*args: str) -> None:
    """Generate a test input with ffmpeg (lavfi sources)."""
    await run_ffmpeg(["-y", *args], what="make test input", timeout_s=60)


async def make_video(
    path: Path,
    *,
    size: str = "128x96",
    seconds: float = 1.0,
    audio: bool = True,
    codec: tuple[str, ...] = ("-c:v", "libx264", "-pix_fmt", "yuv420p", "-preset", "ultrafast"),
    source: str = "testsrc",
) -> Path:
    inputs = ["-f", "lavfi", "-i", f"{source}=s={size}:r=25:d={seconds}"]
    if audio:
        inputs += ["-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}"]
    audio_codec = ["-c:a", "aac", "-shortest"] if audio else []
    await make(*inputs, *codec, *audio_codec, str(path))
    return path


def leftovers(folder: Path, keep: set[str]) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name not in keep)


def ffmpeg_children() -> list[int]:
    """Live (non-zombie) ffmpeg processes whose parent is this test process."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        if "ffmpeg" in name and int(fields[1]) == os.getpid() and fields[0] != "Z":
            found.append(int(entry))
    return found


def moov_before_mdat(path: Path) -> bool:
    data = path.read_bytes()
    return 0 < data.index(b"moov") < data.index(b"mdat")


async def check_telegram_ready(result: VideoResult) -> None:
    info = await probe(result.path)
    assert info.video_codec == "h264"
    assert info.pix_fmt == "yuv420p"
    assert info.audio_codec in ("aac", None)
    assert info.width is not None and info.height is not None
    assert info.width % 2 == 0 and info.height % 2 == 0
    assert (info.width, info.height) == (result.width, result.height)
    assert result.size_bytes == result.path.stat().st_size
    assert moov_before_mdat(result.path)
    with Image.open(result.thumbnail) as thumb:
        assert thumb.format == "JPEG"
        assert max(thumb.size) <= 320
    assert result.thumbnail.stat().st_size < 200_000


async def test_locator_and_version() -> None:
    assert locate_ffmpeg().is_file()
    version = await ffmpeg_version()
    assert version != "unknown"


async def test_probe_kinds(tmp_path: Path) -> None:
    mp4 = await make_video(tmp_path / "a.mp4", seconds=1.0)
    info = await probe(mp4)
    assert (info.kind, info.width, info.height, info.video_codec, info.audio_codec) == (
        "video",
        128,
        96,
        "h264",
        "aac",
    )
    assert info.frames == 25
    assert info.duration_s == pytest.approx(1.0, abs=0.05)
    assert info.fps == 25

    webm = await make_video(
        tmp_path / "v.webm",
        audio=False,
        codec=("-c:v", "libvpx-vp9", "-b:v", "100k", "-deadline", "realtime"),
    )
    info = await probe(webm)
    assert (info.kind, info.video_codec, info.audio_codec) == ("video", "vp9", None)
    assert "webm" in info.format

    mp3 = tmp_path / "s.mp3"
    await make("-f", "lavfi", "-i", "sine=duration=1.5", "-c:a", "libmp3lame", str(mp3))
    info = await probe(mp3)
    assert (info.kind, info.audio_codec, info.width) == ("audio", "mp3", None)
    assert info.duration_s == pytest.approx(1.5, abs=0.1)

    png = tmp_path / "p.png"
    Image.new("RGB", (33, 44)).save(png)
    info = await probe(png)
    assert (info.kind, info.format, info.width, info.height, info.frames) == (
        "image",
        "png",
        33,
        44,
        1,
    )


async def test_probe_streamed_webm_without_header_duration(tmp_path: Path) -> None:
    streamed = await run_ffmpeg(
        [
            "-f",
            "lavfi",
            "-i",
            "testsrc=s=64x48:r=20:d=1",
            "-c:v",
            "libvpx-vp9",
            "-deadline",
            "realtime",
            "-f",
            "webm",
            "pipe:1",
        ],
        what="make streamed webm",
        timeout_s=60,
        capture_stdout=True,
    )
    path = tmp_path / "streamed.webm"
    path.write_bytes(streamed.stdout)
    info = await probe(path)
    assert info.frames == 20
    assert info.duration_s == pytest.approx(1.0, abs=0.06)
    assert info.fps is None or info.fps <= 240


async def test_probe_rejects_corrupt_and_missing(tmp_path: Path) -> None:
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00\x00\x00\x18ftypisom" + os.urandom(3000))
    with pytest.raises(MediaError):
        await probe(junk)
    with pytest.raises(MediaError, match="cannot stat"):
        await probe(tmp_path / "missing.mp4")
    empty = tmp_path / "empty.webm"
    empty.write_bytes(b"")
    with pytest.raises(MediaError, match="empty"):
        await probe(empty)


async def test_odd_size_mp4_becomes_even_h264_with_silent_aac(tmp_path: Path) -> None:
    src = await make_video(
        tmp_path / "odd.mp4",
        size="127x95",
        seconds=1.0,
        audio=False,
        codec=("-c:v", "libx264", "-pix_fmt", "yuv444p", "-preset", "ultrafast"),
    )
    assert (await probe(src)).width == 127
    result = await prepare_video(src, tmp_path / "out.mp4")
    assert not result.remuxed
    assert (result.width, result.height) == (126, 94)
    assert result.has_audio  # a silent AAC track was added
    assert result.duration_s == pytest.approx(1.0, abs=0.1)
    await check_telegram_ready(result)
    assert leftovers(tmp_path, {"odd.mp4", "out.mp4", "out.thumb.jpg"}) == []


async def test_webm_vp9_is_reencoded(tmp_path: Path) -> None:
    src = await make_video(
        tmp_path / "in.webm",
        size="160x120",
        seconds=1.0,
        audio=False,
        codec=("-c:v", "libvpx-vp9", "-b:v", "100k", "-deadline", "realtime"),
    )
    result = await prepare_video(src, tmp_path / "out.mp4")
    assert not result.remuxed
    assert (result.width, result.height) == (160, 120)
    await check_telegram_ready(result)


@pytest.mark.parametrize("fmt", ["WEBP", "GIF", "PNG"])
async def test_animated_image_decoded_by_pillow(tmp_path: Path, fmt: str) -> None:
    frames = [Image.new("RGBA", (101, 77), (i * 40, 80, 200 - i * 25, 255)) for i in range(6)]
    durations = [100, 100, 200, 100, 100, 200]
    src = tmp_path / f"anim.{fmt.lower()}"
    frames[0].save(src, fmt, save_all=True, append_images=frames[1:], duration=durations, loop=0)
    info = await probe(src)
    assert info.kind == "video" and info.animated and info.frames == 6
    assert info.duration_s == pytest.approx(0.8, abs=0.01)

    result = await prepare_video(src, tmp_path / "out.mp4")
    assert not result.remuxed
    assert (result.width, result.height) == (100, 76)
    assert result.duration_s == pytest.approx(0.8, abs=0.1)
    out = await probe(result.path)
    assert out.frames == 8  # 10 fps, the 200 ms frames shown twice
    await check_telegram_ready(result)


async def test_frame_sequence_of_mixed_images(tmp_path: Path) -> None:
    paths = []
    for index in range(6):
        path = tmp_path / f"frame_{index:03}.{'png' if index % 2 else 'jpg'}"
        size = (64, 48) if index else (65, 49)  # first frame decides; odd -> even
        Image.new("RGB", size, (index * 40, 0, 0)).save(path)
        paths.append(path)
    result = await prepare_video(paths, tmp_path / "seq.mp4", sequence_fps=6)
    assert (result.width, result.height) == (64, 48)
    assert result.duration_s == pytest.approx(1.0, abs=0.1)
    assert (await probe(result.path)).frames == 6
    await check_telegram_ready(result)
    with pytest.raises(InvalidInput):
        await prepare_video([], tmp_path / "none.mp4")


@pytest.mark.parametrize("audio", [True, False])
async def test_compliant_mp4_is_remuxed(tmp_path: Path, audio: bool) -> None:
    src = await make_video(tmp_path / "ok.mp4", size="160x120", seconds=1.0, audio=audio)
    result = await prepare_video(src, tmp_path / "out.mp4")
    assert result.remuxed
    assert result.has_audio is audio
    src_info, out_info = await probe(src), await probe(result.path)
    assert out_info.frames == src_info.frames
    assert abs(result.size_bytes - src.stat().st_size) < 2000  # streams copied, not re-encoded
    await check_telegram_ready(result)


async def test_over_the_limit_is_reencoded_under_it(tmp_path: Path) -> None:
    # Compliant in every way but size: noise at a high quality is large.
    src = await make_video(
        tmp_path / "big.mp4",
        size="320x240",
        seconds=2.0,
        audio=True,
        source="testsrc2",
        codec=(
            "-vf",
            "noise=alls=80:allf=t",
            "-c:v",
            "libx264",
            "-pix_fmt",
            "yuv420p",
            "-preset",
            "ultrafast",
            "-crf",
            "5",
        ),
    )
    limit = 250_000
    assert src.stat().st_size > 2 * limit
    result = await prepare_video(src, tmp_path / "out.mp4", max_bytes=limit)
    assert not result.remuxed
    assert result.size_bytes <= limit
    assert result.duration_s == pytest.approx(2.0, abs=0.1)
    await check_telegram_ready(result)


async def test_default_limit_is_telegrams_50_mb() -> None:
    default = inspect.signature(prepare_video).parameters["max_bytes"].default
    assert default == 50 * 1024 * 1024


async def test_too_long_for_the_limit_is_a_clear_error(tmp_path: Path) -> None:
    src = await make_video(
        tmp_path / "v.webm",
        audio=False,
        seconds=1.0,
        codec=("-c:v", "libvpx-vp9", "-deadline", "realtime"),
    )
    with pytest.raises(MediaError) as caught:
        await prepare_video(src, tmp_path / "out.mp4", max_bytes=10_000)
    assert "too long" in caught.value.user_message
    assert leftovers(tmp_path, {"v.webm"}) == []


async def test_corrupted_video_fails_cleanly(tmp_path: Path) -> None:
    src = await make_video(tmp_path / "ok.mp4", seconds=1.0)
    broken = tmp_path / "broken.mp4"
    data = src.read_bytes()
    broken.write_bytes(data[: len(data) // 3])  # moov at the end is cut off
    with pytest.raises(MediaError):
        await prepare_video(broken, tmp_path / "out.mp4")
    text = tmp_path / "text.webm"
    text.write_text("hello, I am not a video")
    with pytest.raises(MediaError):
        await prepare_video(text, tmp_path / "out.mp4")
    assert leftovers(tmp_path, {"ok.mp4", "broken.mp4", "text.webm"}) == []


async def test_image_is_not_a_video(tmp_path: Path) -> None:
    png = tmp_path / "still.png"
    Image.new("RGB", (64, 64)).save(png)
    with pytest.raises(InvalidInput):
        await prepare_video(png, tmp_path / "out.mp4")


async def test_missing_binary_is_a_media_error(tmp_path: Path) -> None:
    src = tmp_path / "x.mp4"
    src.write_bytes(b"whatever")
    with pytest.raises(MediaError) as caught:
        await prepare_video(src, tmp_path / "out.mp4", ffmpeg=tmp_path / "no" / "ffmpeg")
    assert "not available" in caught.value.user_message
    with pytest.raises(MediaError):
        await run_ffmpeg(["-version"], what="x", timeout_s=5, ffmpeg="/nonexistent/ffmpeg")


async def _long_encode_input(folder: Path) -> Path:
    return await make_video(
        folder / "long.mkv",
        size="640x360",
        seconds=6.0,
        audio=False,
        source="testsrc2",
        codec=("-c:v", "mpeg4", "-q:v", "5"),
    )


async def test_timeout_kills_ffmpeg_and_cleans_up(tmp_path: Path) -> None:
    src = await _long_encode_input(tmp_path)
    started = asyncio.get_running_loop().time()
    with pytest.raises(MediaError) as caught:
        await prepare_video(src, tmp_path / "out.mp4", preset="veryslow", timeout_s=1.0)
    assert asyncio.get_running_loop().time() - started < 5
    assert "timed out" in str(caught.value)
    assert "too long" in caught.value.user_message
    assert leftovers(tmp_path, {"long.mkv"}) == []
    assert ffmpeg_children() == []


async def test_cancellation_kills_ffmpeg_and_cleans_up(tmp_path: Path) -> None:
    src = await _long_encode_input(tmp_path)
    task = asyncio.create_task(prepare_video(src, tmp_path / "out.mp4", preset="veryslow"))
    for _ in range(100):  # wait until the encode has started writing
        await asyncio.sleep(0.05)
        if any(p.name.endswith(".part.mp4") for p in tmp_path.iterdir()):
            break
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert leftovers(tmp_path, {"long.mkv"}) == []
    assert ffmpeg_children() == []
