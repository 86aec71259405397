"""`probe(path) -> MediaInfo` without ffprobe: Pillow for images, `ffmpeg -i` for the rest."""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from PIL import Image, UnidentifiedImageError

from core.errors import MediaError
from core.media.ffmpeg_parse import parse_frame_count, parse_input_info, parse_progress_time
from core.media.imaging import open_image
from core.media.limits import normalize_frame_duration
from core.media.runner import input_args, run_ffmpeg

MediaKind = Literal["image", "video", "audio"]

_UNREADABLE = "The file is not an image, video or audio file I can read."
MAX_PLAUSIBLE_FPS = 240.0
_MAX_TIMED_FRAMES = 5000  # per-frame durations of animated images are read up to this count
# ffmpeg reads a file that stops early to its end and exits 0; it only says so in its log.
_CUT_SHORT = ("partial file", "File ended prematurely")


@dataclass(frozen=True)
class MediaInfo:
    """What a media file is. Width/height are as displayed (rotation applied).

    Animated images (WebP, GIF, APNG) are `kind="video"` with their format as `video_codec`.
    """

    kind: MediaKind
    format: str
    width: int | None = None
    height: int | None = None
    duration_s: float | None = None
    video_codec: str | None = None
    pix_fmt: str | None = None
    audio_codec: str | None = None
    fps: float | None = None
    frames: int | None = None
    rotation: int = 0
    size_bytes: int = 0

    @property
    def has_audio(self) -> bool:
        return self.audio_codec is not None

    @property
    def animated(self) -> bool:
        return self.video_codec in ("webp", "gif", "apng") and self.format == self.video_codec


def frame_durations(image: Image.Image, limit: int = _MAX_TIMED_FRAMES) -> list[float]:
    """Per-frame durations (ms) of an opened animated image (decodes frames: call in a thread)."""
    count = getattr(image, "n_frames", 1)
    durations: list[float] = []
    for index in range(min(count, limit)):
        image.seek(index)
        image.load()  # WebP reports a frame's duration only once it is loaded
        durations.append(float(image.info.get("duration") or 0))
    if count > limit and durations:
        durations.extend([durations[-1]] * (count - limit))
    image.seek(0)
    return durations


def _probe_image(path: Path, size_bytes: int) -> MediaInfo | None:
    try:
        with open_image(path) as image:
            width, height = image.size
            frames = int(getattr(image, "n_frames", 1))
            fmt = (image.format or "").lower()
            if fmt == "mpo":
                fmt, frames = "jpeg", 1  # a camera's stereo/preview JPEG: still one photo
            if frames <= 1 or fmt not in ("webp", "gif", "png"):
                return MediaInfo(
                    kind="image",
                    format=fmt,
                    width=width,
                    height=height,
                    frames=1,
                    size_bytes=size_bytes,
                )
            durations = [normalize_frame_duration(d) for d in frame_durations(image)]
    except UnidentifiedImageError:
        return None
    except Image.DecompressionBombError as exc:
        raise MediaError(f"{path.name}: {exc}", user_message="The image is far too large.") from exc
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, struct.error) as exc:
        # The last three: what Pillow raises counting the frames of a damaged GIF or TIFF.
        raise MediaError(f"{path.name}: unreadable image: {exc}", user_message=_UNREADABLE) from exc
    codec = "apng" if fmt == "png" else fmt
    total_s = sum(durations) / 1000
    return MediaInfo(
        kind="video",
        format=codec,
        width=width,
        height=height,
        duration_s=total_s,
        video_codec=codec,
        fps=round(frames / total_s, 3) if total_s > 0 else None,
        frames=frames,
        size_bytes=size_bytes,
    )


async def probe(
    path: Path,
    *,
    ffmpeg: str | Path | None = None,
    timeout_s: float = 60.0,
    count_frames: bool = True,
) -> MediaInfo:
    """Describe `path`. `MediaError` when it is missing, unreadable or has no media streams.

    For videos `count_frames` demuxes the file once (`-c copy -f null`, no decoding) to count
    frames exactly; otherwise frames are estimated from duration x fps.
    """
    path = Path(path)
    try:
        size_bytes = path.stat().st_size
    except OSError as exc:
        raise MediaError(f"cannot stat {path}: {exc}", user_message="The file is missing.") from exc
    if size_bytes == 0:
        raise MediaError(f"{path.name} is empty", user_message="The file is empty.")
    image = await asyncio.to_thread(_probe_image, path, size_bytes)
    if image is not None:
        return image

    result = await run_ffmpeg(
        input_args(path), what="probe", timeout_s=timeout_s, ffmpeg=ffmpeg, check=False
    )
    parsed = parse_input_info(result.stderr)
    if parsed is None:
        raise MediaError(f"{path.name}: ffmpeg cannot read it", user_message=_UNREADABLE)
    videos = [stream for stream in parsed.video if not stream.attached_pic]
    audio_codec = parsed.audio[0].codec if parsed.audio else None
    if not videos:
        if audio_codec is None:
            raise MediaError(f"{path.name}: no audio or video stream", user_message=_UNREADABLE)
        return MediaInfo(
            kind="audio",
            format=parsed.format,
            duration_s=parsed.duration_s,
            audio_codec=audio_codec,
            size_bytes=size_bytes,
        )

    stream = videos[0]
    width, height = stream.width, stream.height
    if stream.rotation in (90, 270):
        width, height = height, width
    duration_s = parsed.duration_s
    # A rate from "tbr" alone can be the container's time base (1k for Matroska): not a rate.
    fps = stream.fps if stream.fps and stream.fps <= MAX_PLAUSIBLE_FPS else None
    frames: int | None = None
    if count_frames:
        counted = await run_ffmpeg(
            [*input_args(path), "-map", "0:v:0", "-c", "copy", "-f", "null", "-"],
            what="count frames",
            timeout_s=timeout_s,
            ffmpeg=ffmpeg,
            check=False,
        )
        cut_short = [marker for marker in _CUT_SHORT if marker in counted.stderr]
        if counted.returncode != 0 or cut_short:
            raise MediaError(
                f"{path.name}: demuxing failed {cut_short or counted.returncode}",
                user_message="The video file is damaged.",
            )
        frames = parse_frame_count(counted.stderr)
        if duration_s is None:
            # No duration in the header (some streamed WebM): last timestamp + one frame.
            last = parse_progress_time(counted.stderr)
            if last is not None:
                duration_s = last + (1 / fps if fps else 0.0)
    if frames is None and duration_s and fps:
        frames = round(duration_s * fps)
    if duration_s is None and frames and fps:
        duration_s = frames / fps
    return MediaInfo(
        kind="video",
        format=parsed.format,
        width=width,
        height=height,
        duration_s=duration_s,
        video_codec=stream.codec,
        pix_fmt=stream.pix_fmt,
        audio_codec=audio_codec,
        fps=fps,
        frames=frames,
        rotation=stream.rotation,
        size_bytes=size_bytes,
    )
