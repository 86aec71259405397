"""Edge and failure paths that run the real ffmpeg (tiny inputs): rotated, empty, truncated and
undecodable videos, frame sequences that break mid-encode, a clip that cannot fit, the runner's
stderr and stdin handling, and where the ffmpeg binary is found."""

from __future__ import annotations

import asyncio
import io
import random
import re
import struct
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from PIL import Image

from core.errors import MediaError
from core.media import ffmpeg_bin
from core.media.ffmpeg_parse import parse_input_info
from core.media.probe import probe
from core.media.runner import _STDERR_KEEP, input_args, run_ffmpeg
from core.media.video import prepare_video
from tests import media_kit
from tests.integration.test_media_video import ffmpeg_children

RED, BLUE = (255, 0, 0), (0, 0, 255)
X264 = ("-c:v", "libx264", "-preset", "ultrafast")

fresh_locator = media_kit.fresh_locator  # the fixture, shared with tests/unit/test_media_edges.py


async def make(*args: str) -> None:
    await run_ffmpeg(["-y", *args], what="make test input", timeout_s=30)


async def make_video(path: Path, *options: str, seconds: float = 0.4) -> Path:
    source = f"testsrc=s=64x48:r=25:d={seconds}"
    await make("-f", "lavfi", "-i", source, *X264, "-pix_fmt", "yuv420p", *options, str(path))
    return path


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


async def first_frame(path: Path) -> Image.Image:
    """The first frame as a player shows it (ffmpeg applies the display rotation)."""
    result = await run_ffmpeg(
        [*input_args(path), "-frames:v", "1", "-f", "image2pipe", "-c:v", "png", "pipe:1"],
        what="grab a frame",
        timeout_s=30,
        capture_stdout=True,
    )
    with Image.open(io.BytesIO(result.stdout)) as image:
        return image.convert("RGB")


def near(pixel: object, expected: tuple[int, int, int], tolerance: int = 40) -> bool:
    assert isinstance(pixel, tuple)
    return all(abs(a - b) <= tolerance for a, b in zip(pixel, expected, strict=True))


def top_and_bottom(image: Image.Image) -> tuple[object, object]:
    middle = image.width // 2
    return image.getpixel((middle, 4)), image.getpixel((middle, image.height - 5))


# --- videos ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("pix_fmt", "remuxed"), [("yuv420p", True), ("yuv444p", False)])
async def test_portrait_phone_video_stays_portrait_and_upright(
    tmp_path: Path, pix_fmt: str, remuxed: bool
) -> None:
    stored = tmp_path / "stored.mp4"  # 64x48 as stored: red left half, blue right half
    await make(
        *("-f", "lavfi", "-i", "color=red:s=32x48:r=25:d=0.4"),
        *("-f", "lavfi", "-i", "color=blue:s=32x48:r=25:d=0.4"),
        *("-filter_complex", "hstack", *X264, "-pix_fmt", pix_fmt, str(stored)),
    )
    phone = tmp_path / "phone.mp4"  # shown turned 90 degrees: portrait, blue on top
    await make("-display_rotation", "90", "-i", str(stored), "-c", "copy", str(phone))

    info = await probe(phone)
    assert (info.rotation, info.width, info.height) == (90, 48, 64)
    shown = await first_frame(phone)
    assert shown.size == (48, 64)
    top, bottom = top_and_bottom(shown)
    assert near(top, BLUE) and near(bottom, RED)

    result = await prepare_video(phone, tmp_path / "out.mp4")

    assert result.remuxed is remuxed
    assert (result.width, result.height) == (48, 64)
    out = await first_frame(result.path)
    assert out.size == (48, 64)
    top, bottom = top_and_bottom(out)
    assert near(top, BLUE) and near(bottom, RED)
    with Image.open(result.thumbnail) as thumb:
        assert thumb.size == (48, 64)
        top, bottom = top_and_bottom(thumb.convert("RGB"))
        assert near(top, BLUE) and near(bottom, RED)
    assert names(tmp_path) == ["out.mp4", "out.thumb.jpg", "phone.mp4", "stored.mp4"]


async def test_video_with_an_empty_video_track_is_unreadable(tmp_path: Path) -> None:
    empty = tmp_path / "empty.mp4"
    await make("-f", "lavfi", "-i", "color=red:s=32x32:r=25", "-frames:v", "0", *X264, str(empty))
    with pytest.raises(MediaError, match="no audio or video stream") as caught:
        await probe(empty)
    assert caught.value.user_message == "The file is not an image, video or audio file I can read."
    with pytest.raises(MediaError, match="no audio or video stream"):
        await prepare_video(empty, tmp_path / "out.mp4")
    assert names(tmp_path) == ["empty.mp4"]


@pytest.mark.parametrize(
    ("name", "options", "keep"),
    [("cut.mp4", ("-movflags", "+faststart"), 0.5), ("cut.mkv", (), 0.6)],
    ids=["mp4", "mkv"],
)
async def test_truncated_video_is_reported_damaged(
    tmp_path: Path, name: str, options: tuple[str, ...], keep: float
) -> None:
    whole = await make_video(tmp_path / f"whole{Path(name).suffix}", *options)
    cut = tmp_path / name  # a download that stopped early: header intact, frames missing
    data = whole.read_bytes()
    cut.write_bytes(data[: int(len(data) * keep)])

    with pytest.raises(MediaError) as caught:
        await probe(cut)
    assert caught.value.user_message == "The video file is damaged."
    with pytest.raises(MediaError) as caught:
        await prepare_video(cut, tmp_path / "out.mp4")
    assert caught.value.user_message == "The video file is damaged."
    assert names(tmp_path) == sorted([name, whole.name])
    assert (await probe(whole)).frames == 10  # the whole file is fine


def _zero_mdat(data: bytes) -> bytes:
    """The same MP4 with every byte of its media data zeroed (boxes and sample tables kept)."""
    out = bytearray(data)
    pos = 0
    while pos + 8 <= len(out):
        size, kind = struct.unpack_from(">I4s", out, pos)
        if kind == b"mdat":
            out[pos + 8 : pos + size] = bytes(size - 8)
        pos += size
    return bytes(out)


async def test_undecodable_video_fails_cleanly(tmp_path: Path) -> None:
    whole = await make_video(tmp_path / "whole.mp4")
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(_zero_mdat(whole.read_bytes()))
    with pytest.raises(MediaError, match="ffmpeg exited") as caught:
        await prepare_video(broken, tmp_path / "out.mp4")
    assert caught.value.user_message == "The video could not be converted for Telegram."
    assert names(tmp_path) == ["broken.mp4", "whole.mp4"]
    assert ffmpeg_children() == []


# --- frame sequences -------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["truncated", "not an image"])
async def test_bad_frame_mid_sequence_stops_ffmpeg_and_cleans_up(tmp_path: Path, bad: str) -> None:
    paths = []
    for index in range(5):
        path = tmp_path / f"frame_{index}.png"
        pixels = random.Random(index).randbytes(64 * 48 * 3)  # the same on every run
        Image.frombytes("RGB", (64, 48), pixels).save(path)
        paths.append(path)
    damaged = paths[3]
    if bad == "truncated":
        damaged.write_bytes(damaged.read_bytes()[:200])  # header fine, pixels cut short
    else:
        damaged.write_text("a text file named like a frame")

    with pytest.raises(MediaError) as caught:
        await prepare_video(paths, tmp_path / "out.mp4", sequence_fps=10)
    assert caught.value.user_message == "A video frame is unreadable."
    assert names(tmp_path) == [p.name for p in paths]  # no .part, no thumbnail
    assert ffmpeg_children() == []


async def test_clip_still_over_the_limit_after_retries_is_refused(tmp_path: Path) -> None:
    # One frame at 1000 fps: the bitrate budget stays high, the MP4 headers alone exceed it.
    frame = tmp_path / "frame.png"
    Image.new("RGB", (32, 32), RED).save(frame)
    with pytest.raises(MediaError, match="after 3 encodes") as caught:
        await prepare_video([frame], tmp_path / "out.mp4", sequence_fps=1000, max_bytes=800)
    assert caught.value.user_message == "The video is too large to send through Telegram."
    assert names(tmp_path) == ["frame.png"]


# --- the runner and the binary ---------------------------------------------------------------


async def test_huge_stderr_keeps_its_head_and_tail(tmp_path: Path) -> None:
    result = await run_ffmpeg(
        [
            *("-f", "lavfi", "-i", "testsrc=s=16x16:r=100:d=20"),
            *("-vf", "showinfo", "-f", "null", "-"),
        ],
        what="log every frame",
        timeout_s=30,
    )
    assert len(result.stderr) <= 2 * _STDERR_KEEP + 16  # bounded, whatever ffmpeg prints
    parsed = parse_input_info(result.stderr)  # the head: stream info
    assert parsed is not None and (parsed.video[0].width, parsed.video[0].height) == (16, 16)
    shown = {int(n) for n in re.findall(r"\bn:\s*(\d+)\b", result.stderr)}
    assert {0, 1999} <= shown  # the first frame logged and the last one (the tail)
    assert len(shown) < 2000  # the middle was dropped
    assert "\n...\n" in result.stderr


async def test_ffmpeg_that_stops_reading_its_input_ends_the_feed(tmp_path: Path) -> None:
    closed: list[bool] = []

    async def endless_frames() -> AsyncIterator[bytes]:
        try:
            while True:
                yield bytes(16 * 16 * 3)
        finally:
            closed.append(True)

    started = asyncio.get_running_loop().time()
    result = await run_ffmpeg(
        [
            *("-f", "rawvideo", "-pix_fmt", "rgb24", "-s", "16x16", "-framerate", "25"),
            *("-i", "pipe:0", "-frames:v", "1", "-f", "null", "-"),
        ],
        what="read one frame",
        timeout_s=10,
        stdin=endless_frames(),
    )
    assert result.returncode == 0
    assert closed == [True]  # the generator was closed at once, not left to the GC
    assert asyncio.get_running_loop().time() - started < 5
    assert ffmpeg_children() == []


@pytest.mark.usefixtures("fresh_locator")
async def test_ffmpeg_on_path_is_preferred_to_the_bundled_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bundled = ffmpeg_bin.locate_ffmpeg()
    on_path = tmp_path / "ffmpeg"
    on_path.symlink_to(bundled)
    monkeypatch.setenv("PATH", str(tmp_path))
    ffmpeg_bin._default_ffmpeg.cache_clear()

    assert ffmpeg_bin.locate_ffmpeg() == on_path
    assert await ffmpeg_bin.ffmpeg_version() == await ffmpeg_bin.ffmpeg_version(bundled)
