"""Telegram-ready MP4 (H.264 yuv420p + AAC, `+faststart`, even size) from any ComfyUI video.

Inputs: mp4/webm/mkv/mov, animated WebP/GIF/APNG (decoded by Pillow, piped as raw frames),
or a frame sequence (a list of image files). A file that already complies is remuxed with
`-c copy`; anything else is re-encoded with a bitrate cap computed from its duration so the
result fits under the upload limit. The result says which path was taken (`remuxed`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import ffmpeg as ffmpeg_lib

from core.errors import InvalidInput, MediaError
from core.logs import get_logger
from core.media import frames as frame_source
from core.media.images import make_thumbnail_bytes
from core.media.limits import (
    TELEGRAM_THUMB_MAX_BYTES,
    TELEGRAM_THUMB_MAX_SIDE,
    TELEGRAM_UPLOAD_MAX_BYTES,
    even_video_size,
    retry_bitrate,
    thumbnail_time,
    video_bitrate_for_limit,
)
from core.media.probe import MediaInfo, probe
from core.media.runner import SAFE_DEMUXERS, file_url, input_args, run_ffmpeg

log = get_logger(__name__)

AUDIO_BPS = 128_000
MIN_VIDEO_BPS = 100_000
MAX_VIDEO_BPS = 25_000_000
MAX_ENCODE_ATTEMPTS = 3
_REMUX_CONTAINERS = ("mp4", "mov", "matroska")
_FAILED = "The video could not be converted for Telegram."


@dataclass(frozen=True)
class VideoResult:
    """A Telegram-ready video. `remuxed` is True when the streams were copied, not re-encoded."""

    path: Path
    width: int
    height: int
    duration_s: float
    size_bytes: int
    remuxed: bool
    thumbnail: Path
    has_audio: bool


def remux_blocker(info: MediaInfo, max_bytes: int) -> str | None:
    """Why `info` cannot simply be remuxed into a Telegram MP4, or `None` when it can."""
    if info.kind != "video" or info.animated:
        return "not a regular video file"
    if not any(name in info.format.split(",") for name in _REMUX_CONTAINERS):
        return f"container {info.format}"
    if info.video_codec != "h264":
        return f"video codec {info.video_codec}"
    if info.pix_fmt != "yuv420p":
        return f"pixel format {info.pix_fmt}"
    if not info.width or not info.height or info.width % 2 or info.height % 2:
        return f"odd size {info.width}x{info.height}"
    if info.audio_codec not in (None, "aac"):
        return f"audio codec {info.audio_codec}"
    if info.size_bytes > max_bytes:
        return f"size {info.size_bytes} over {max_bytes}"
    return None


@dataclass(frozen=True)
class _Source:
    """Where the frames come from: an ffmpeg-readable file, or raw frames from Pillow."""

    width: int
    height: int
    duration_s: float
    has_audio: bool
    path: Path | None = None  # read by ffmpeg
    fps: Fraction | None = None  # raw frame rate of `frames`
    frames: Callable[[], AsyncIterator[bytes]] | None = None


def encode_args(
    source: _Source,
    output: Path,
    *,
    size: tuple[int, int],
    video_bps: int,
    crf: int,
    preset: str,
    audio_bps: int = AUDIO_BPS,
) -> list[str]:
    """ffmpeg arguments (without the binary) for the H.264/AAC re-encode of `source`."""
    if source.path is not None:
        main = ffmpeg_lib.input(file_url(source.path), format_whitelist=SAFE_DEMUXERS)
    else:
        main = ffmpeg_lib.input(
            "pipe:0",
            f="rawvideo",
            pix_fmt="rgb24",
            s=f"{source.width}x{source.height}",
            framerate=str(source.fps),
        )
    video = (
        main["v:0"]
        .filter("scale", size[0], size[1], flags="lanczos")
        .filter("setsar", 1)
        .filter("format", "yuv420p")
    )
    options: dict[str, Any] = {
        "vcodec": "libx264",
        "preset": preset,
        "crf": crf,
        "maxrate": video_bps,
        "bufsize": video_bps,
        "profile:v": "high",
        "pix_fmt": "yuv420p",
        "acodec": "aac",
        "b:a": audio_bps,
        "ac": 2,
        "movflags": "+faststart",
        "f": "mp4",
    }
    if source.has_audio:
        audio = main["a:0"]
    else:
        # A silent track: some Telegram clients treat soundless MP4s as GIF animations.
        audio = ffmpeg_lib.input(
            "anullsrc=r=48000:cl=stereo", f="lavfi", t=f"{source.duration_s:.3f}"
        )
        options["shortest"] = None
    stream = ffmpeg_lib.output(video, audio, file_url(output), **options).overwrite_output()
    args: list[str] = stream.compile(cmd="ffmpeg")[1:]
    return args


def remux_args(source: Path, output: Path, has_audio: bool) -> list[str]:
    maps = ["-map", "0:v:0", *(["-map", "0:a:0"] if has_audio else [])]
    return [
        *input_args(source),
        *maps,
        "-c",
        "copy",
        "-movflags",
        "+faststart",
        "-f",
        "mp4",
        "-y",
        file_url(output),
    ]


class _Deadline:
    def __init__(self, seconds: float) -> None:
        self._end = asyncio.get_running_loop().time() + seconds

    def left(self) -> float:
        return max(0.05, self._end - asyncio.get_running_loop().time())


async def _open_source(
    source: Path | Sequence[Path],
    *,
    sequence_fps: float,
    ffmpeg: str | Path | None,
    deadline: _Deadline,
) -> tuple[_Source, MediaInfo | None]:
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        info = await probe(path, ffmpeg=ffmpeg, timeout_s=deadline.left())
        if info.kind != "video" or not info.width or not info.height:
            raise InvalidInput(
                f"{path.name} is a {info.kind}, not a video",
                user_message="That file is not a video.",
            )
        if info.animated:
            size, timing = await asyncio.to_thread(frame_source.animation_timing, path)
            return (
                _Source(
                    width=size[0],
                    height=size[1],
                    duration_s=float(timing.total_frames / timing.fps),
                    has_audio=False,
                    fps=timing.fps,
                    frames=lambda: frame_source.animation_frames(path, timing, size),
                ),
                info,
            )
        if not info.duration_s or info.duration_s <= 0:
            raise MediaError(
                f"{path.name}: unknown duration", user_message="The video file is damaged."
            )
        return (
            _Source(
                width=info.width,
                height=info.height,
                duration_s=info.duration_s,
                has_audio=info.has_audio,
                path=path,
            ),
            info,
        )
    paths = [Path(p) for p in source]
    if not paths:
        raise InvalidInput(
            "empty frame sequence", user_message="There are no frames to make a video from."
        )
    if sequence_fps <= 0:
        raise ValueError("sequence_fps must be positive")
    fps = Fraction(sequence_fps).limit_denominator(1001)
    width, height = await asyncio.to_thread(frame_source.first_frame_size, paths)
    return (
        _Source(
            width=width,
            height=height,
            duration_s=float(len(paths) / fps),
            has_audio=False,
            fps=fps,
            frames=lambda: frame_source.sequence_frames(paths, (width, height)),
        ),
        None,
    )


def _part_path(dest: Path, suffix: str) -> Path:
    return dest.parent / f".{dest.stem}.{uuid.uuid4().hex[:8]}.part{suffix}"


async def _encode_within(
    source: _Source,
    out: Path,
    *,
    size: tuple[int, int],
    max_bytes: int,
    crf: int,
    preset: str,
    ffmpeg: str | Path | None,
    deadline: _Deadline,
) -> None:
    video_bps = video_bitrate_for_limit(
        source.duration_s, max_bytes, audio_bps=AUDIO_BPS, max_bps=MAX_VIDEO_BPS
    )
    for attempt in range(1, MAX_ENCODE_ATTEMPTS + 1):
        if video_bps < MIN_VIDEO_BPS:
            raise MediaError(
                f"{source.duration_s:.1f} s cannot fit in {max_bytes} bytes",
                user_message="The video is too long to send through Telegram.",
            )
        args = encode_args(source, out, size=size, video_bps=video_bps, crf=crf, preset=preset)
        await run_ffmpeg(
            args,
            what="re-encode video",
            timeout_s=deadline.left(),
            ffmpeg=ffmpeg,
            stdin=source.frames() if source.frames is not None else None,
            user_message=_FAILED,
        )
        produced = (await asyncio.to_thread(out.stat)).st_size
        log.info("video encoded", attempt=attempt, video_bps=video_bps, size_bytes=produced)
        if produced <= max_bytes:
            return
        video_bps = retry_bitrate(video_bps, produced, max_bytes)
    raise MediaError(
        f"still over {max_bytes} bytes after {MAX_ENCODE_ATTEMPTS} encodes",
        user_message="The video is too large to send through Telegram.",
    )


async def _thumbnail(
    video: Path, at_s: float, ffmpeg: str | Path | None, deadline: _Deadline
) -> bytes:
    for seek in dict.fromkeys((at_s, 0.0)):
        result = await run_ffmpeg(
            [
                "-ss",
                f"{seek:.3f}",
                *input_args(video),
                "-frames:v",
                "1",
                "-f",
                "image2pipe",
                "-c:v",
                "png",
                "pipe:1",
            ],
            what="grab thumbnail",
            timeout_s=deadline.left(),
            ffmpeg=ffmpeg,
            capture_stdout=True,
            check=False,
        )
        if result.returncode == 0 and result.stdout:
            return await asyncio.to_thread(
                make_thumbnail_bytes,
                result.stdout,
                max_side=TELEGRAM_THUMB_MAX_SIDE,
                max_bytes=TELEGRAM_THUMB_MAX_BYTES,
            )
    raise MediaError(f"{video.name}: no frame for a thumbnail", user_message=_FAILED)


async def prepare_video(
    source: Path | Sequence[Path],
    dest: Path,
    *,
    max_bytes: int = TELEGRAM_UPLOAD_MAX_BYTES,
    sequence_fps: float = 8.0,
    max_side: int | None = None,
    crf: int = 20,
    preset: str = "veryfast",
    timeout_s: float = 900.0,
    ffmpeg: str | Path | None = None,
) -> VideoResult:
    """Make `dest` (an .mp4) and `dest.thumb.jpg` from a video file, animated image or frame
    list. Nothing is left behind on failure; `timeout_s` bounds the whole conversion."""
    dest = Path(dest)
    await asyncio.to_thread(dest.parent.mkdir, parents=True, exist_ok=True)
    deadline = _Deadline(timeout_s)
    src, info = await _open_source(
        source, sequence_fps=sequence_fps, ffmpeg=ffmpeg, deadline=deadline
    )
    thumb_dest = dest.with_name(f"{dest.stem}.thumb.jpg")
    part = _part_path(dest, ".mp4")
    try:
        blocker = remux_blocker(info, max_bytes) if info is not None else "frames from images"
        remuxed = blocker is None and src.path is not None and max_side is None
        if remuxed and src.path is not None:
            await run_ffmpeg(
                remux_args(src.path, part, src.has_audio),
                what="remux video",
                timeout_s=deadline.left(),
                ffmpeg=ffmpeg,
                user_message=_FAILED,
            )
        else:
            size = even_video_size(src.width, src.height, max_side)
            log.info("video re-encode", reason=blocker or "resize", width=size[0], height=size[1])
            await _encode_within(
                src,
                part,
                size=size,
                max_bytes=max_bytes,
                crf=crf,
                preset=preset,
                ffmpeg=ffmpeg,
                deadline=deadline,
            )
        final = await probe(part, ffmpeg=ffmpeg, timeout_s=deadline.left(), count_frames=False)
        if not final.width or not final.height:
            raise MediaError("output has no video stream", user_message=_FAILED)
        thumb = await _thumbnail(part, thumbnail_time(final.duration_s), ffmpeg, deadline)
        await asyncio.to_thread(thumb_dest.write_bytes, thumb)
        os.replace(part, dest)
    except BaseException:
        with contextlib.suppress(OSError):
            thumb_dest.unlink(missing_ok=True)
        raise
    finally:
        with contextlib.suppress(OSError):
            part.unlink(missing_ok=True)
    result = VideoResult(
        path=dest,
        width=final.width,
        height=final.height,
        duration_s=final.duration_s or src.duration_s,
        size_bytes=final.size_bytes,
        remuxed=remuxed,
        thumbnail=thumb_dest,
        has_audio=final.has_audio,
    )
    log.info(
        "video ready",
        remuxed=remuxed,
        width=result.width,
        height=result.height,
        duration_s=result.duration_s,
        size_bytes=result.size_bytes,
    )
    return result
