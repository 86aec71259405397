"""Pure size, ratio, bitrate and timing maths for Telegram media (no I/O, fully unit-tested)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

# Telegram Bot API limits.
TELEGRAM_PHOTO_MAX_BYTES = 10 * 1024 * 1024
TELEGRAM_PHOTO_MAX_DIMENSION_SUM = 10_000
TELEGRAM_PHOTO_MAX_RATIO = 20.0
TELEGRAM_UPLOAD_MAX_BYTES = 50 * 1024 * 1024  # sendVideo/sendDocument multipart upload
TELEGRAM_THUMB_MAX_SIDE = 320
TELEGRAM_THUMB_MAX_BYTES = 200 * 1000

# Past this ratio padding would leave the picture a thin line: crop instead.
PAD_UP_TO_RATIO = 2 * TELEGRAM_PHOTO_MAX_RATIO


@dataclass(frozen=True)
class PhotoPlan:
    """How to turn a `source` sized image into a Telegram photo.

    First `adjust` the canvas to `canvas` (pad: centre the picture on a background; crop: cut a
    centred box), then resize to `size`.
    """

    adjust: Literal["none", "pad", "crop"]
    canvas: tuple[int, int]
    size: tuple[int, int]


def aspect_ratio(width: int, height: int) -> float:
    """Long side over short side (>= 1)."""
    if width <= 0 or height <= 0:
        raise ValueError(f"bad size {width}x{height}")
    return max(width, height) / min(width, height)


def plan_telegram_photo(
    width: int,
    height: int,
    *,
    max_ratio: float = TELEGRAM_PHOTO_MAX_RATIO,
    max_dimension_sum: int = TELEGRAM_PHOTO_MAX_DIMENSION_SUM,
    max_side: int | None = None,
    pad_up_to_ratio: float = PAD_UP_TO_RATIO,
) -> PhotoPlan:
    """Sizes that satisfy Telegram's photo rules (ratio <= 20, width + height <= 10000).

    A ratio slightly over the limit is padded (nothing is lost); a ratio more than twice the
    limit is centre-cropped to the limit (padding would leave a sliver of picture).
    """
    ratio = aspect_ratio(width, height)
    canvas = (width, height)
    adjust: Literal["none", "pad", "crop"] = "none"
    if ratio > max_ratio:
        long_is_width = width >= height
        long_side, short_side = (width, height) if long_is_width else (height, width)
        if ratio <= pad_up_to_ratio:
            adjust = "pad"
            short_side = math.ceil(long_side / max_ratio)
        else:
            adjust = "crop"
            long_side = math.floor(short_side * max_ratio)
        canvas = (long_side, short_side) if long_is_width else (short_side, long_side)
    scale = 1.0
    cw, ch = canvas
    if cw + ch > max_dimension_sum:
        scale = min(scale, max_dimension_sum / (cw + ch))
    if max_side is not None and max(cw, ch) > max_side:
        scale = min(scale, max_side / max(cw, ch))
    size = canvas
    if scale < 1.0:
        size = (max(1, math.floor(cw * scale)), max(1, math.floor(ch * scale)))
    return PhotoPlan(adjust=adjust, canvas=canvas, size=size)


def fit_within(width: int, height: int, max_side: int) -> tuple[int, int]:
    """Scale down (never up) so the longer side is at most `max_side`, keeping the ratio."""
    if width <= 0 or height <= 0 or max_side <= 0:
        raise ValueError(f"bad size {width}x{height} / {max_side}")
    longest = max(width, height)
    if longest <= max_side:
        return width, height
    scale = max_side / longest
    return max(1, round(width * scale)), max(1, round(height * scale))


def even_video_size(width: int, height: int, max_side: int | None = None) -> tuple[int, int]:
    """Even width and height (H.264 yuv420p needs them), optionally capped on the long side."""
    if width <= 0 or height <= 0:
        raise ValueError(f"bad size {width}x{height}")
    if max_side is not None:
        width, height = fit_within(width, height, max_side)
    return max(2, width - width % 2), max(2, height - height % 2)


def video_bitrate_for_limit(
    duration_s: float,
    max_bytes: int,
    *,
    audio_bps: int,
    overhead: float = 0.06,
    max_bps: int | None = None,
) -> int:
    """Video bits per second so `duration_s` of video plus audio fits in `max_bytes`.

    `overhead` reserves a share for the container and rate-control overshoot. The result can
    be <= 0 when the audio alone would not fit; the caller decides what is too low.
    """
    if duration_s <= 0:
        raise ValueError(f"duration must be positive, got {duration_s}")
    if max_bytes <= 0 or not 0 <= overhead < 1:
        raise ValueError("bad size limit or overhead")
    total_bps = max_bytes * 8 * (1 - overhead) / duration_s
    video_bps = math.floor(total_bps - audio_bps)
    if max_bps is not None:
        video_bps = min(video_bps, max_bps)
    return video_bps


def retry_bitrate(previous_bps: int, produced_bytes: int, max_bytes: int) -> int:
    """A lower bitrate after an encode came out at `produced_bytes` > `max_bytes`."""
    if produced_bytes <= 0:
        raise ValueError("produced size must be positive")
    return math.floor(previous_bps * (max_bytes / produced_bytes) * 0.9)


def thumbnail_time(duration_s: float | None) -> float:
    """Where to grab a video thumbnail: 1 s in, or the middle of clips shorter than 2 s."""
    if not duration_s or duration_s <= 0:
        return 0.0
    return min(1.0, duration_s / 2)


@dataclass(frozen=True)
class FrameTiming:
    """Constant frame rate `fps` and how many times each source frame is repeated at it."""

    fps: Fraction
    repeats: list[int]

    @property
    def total_frames(self) -> int:
        return sum(self.repeats)


def normalize_frame_duration(duration_ms: float | None) -> float:
    """Browsers show GIF/WebP frames of <= 10 ms (or none) for 100 ms; so do we."""
    if duration_ms is None or duration_ms <= 10:
        return 100.0
    return float(duration_ms)


def plan_frame_timing(durations_ms: list[float], *, max_fps: int = 50) -> FrameTiming:
    """Turn per-frame durations (animated WebP/GIF/APNG) into a constant-rate frame plan.

    When the greatest common divisor of the (whole-millisecond) durations gives a rate of at
    most `max_fps`, that rate is exact: each frame is repeated `duration / gcd` times (equal
    durations -> every frame once). Otherwise 30 fps with cumulative rounding, so the total
    time is kept and a very short frame may be dropped.
    """
    if not durations_ms:
        raise ValueError("no frames")
    durations = [normalize_frame_duration(d) for d in durations_ms]
    whole = [round(d) for d in durations]
    step = whole[0]
    for value in whole[1:]:
        step = math.gcd(step, value)
    if step > 0 and all(abs(d - w) < 1e-6 for d, w in zip(durations, whole, strict=True)):
        fps = Fraction(1000, step)
        if fps <= max_fps:
            return FrameTiming(fps=fps, repeats=[w // step for w in whole])
    fps = Fraction(min(30, max_fps))
    repeats: list[int] = []
    elapsed = 0.0
    shown = 0
    for duration in durations:
        elapsed += duration
        target = round(elapsed * fps / 1000)
        repeats.append(max(0, target - shown))
        shown += repeats[-1]
    if shown == 0:
        repeats[0] = 1
    return FrameTiming(fps=fps, repeats=repeats)
