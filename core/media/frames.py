"""Raw RGB frames from animated images (WebP/GIF/APNG) and frame sequences, for piping into
ffmpeg (`-f rawvideo -pix_fmt rgb24`). ffmpeg's webp decoder cannot read animated WebP, and a
frame sequence may mix formats and sizes, so Pillow decodes and ffmpeg only encodes.

Each frame is decoded in a worker thread; the event loop only moves bytes.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from PIL import Image

from core.errors import MediaError
from core.media.imaging import BLACK, Background, exif_transposed, open_image, to_rgb
from core.media.limits import FrameTiming, normalize_frame_duration, plan_frame_timing
from core.media.probe import frame_durations

MAX_FRAME_PIXELS = 40_000_000


def _checked_open(path: Path) -> Image.Image:
    try:
        image = open_image(path)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise MediaError(
            f"{path.name}: cannot open frame: {exc}", user_message="A video frame is unreadable."
        ) from exc
    width, height = image.size
    if width * height > MAX_FRAME_PIXELS:
        image.close()
        raise MediaError(
            f"{path.name}: frame {width}x{height} too large",
            user_message="The frames are too large.",
        )
    return image


def _rgb_bytes(image: Image.Image, size: tuple[int, int], background: Background) -> bytes:
    rgb, _icc = to_rgb(image, background)
    if rgb.size != size:
        rgb = rgb.resize(size, Image.Resampling.LANCZOS)
    return rgb.tobytes()


def animation_timing(path: Path) -> tuple[tuple[int, int], FrameTiming]:
    """Canvas size and constant-rate timing of an animated image (blocking)."""
    with _checked_open(path) as image:
        durations = [normalize_frame_duration(d) for d in frame_durations(image)]
        return image.size, plan_frame_timing(durations)


async def animation_frames(
    path: Path, timing: FrameTiming, size: tuple[int, int], background: Background = BLACK
) -> AsyncIterator[bytes]:
    """RGB24 frames of an animated image at `timing.fps` (frames repeated as planned)."""
    image = await asyncio.to_thread(_checked_open, path)
    try:
        for index, repeat in enumerate(timing.repeats):
            if repeat == 0:
                continue

            def decode(i: int = index) -> bytes:
                image.seek(i)
                return _rgb_bytes(image, size, background)

            try:
                frame = await asyncio.to_thread(decode)
            except (OSError, EOFError, ValueError) as exc:
                raise MediaError(
                    f"{path.name}: frame {index} unreadable: {exc}",
                    user_message="The animation is damaged.",
                ) from exc
            for _ in range(repeat):
                yield frame
    finally:
        image.close()


def first_frame_size(paths: Sequence[Path]) -> tuple[int, int]:
    """Size of the first image of a sequence, after its EXIF orientation (blocking)."""
    with _checked_open(paths[0]) as image:
        try:
            return exif_transposed(image).size  # a PNG's EXIF may follow its pixels: decodes
        except (OSError, ValueError, EOFError) as exc:
            raise MediaError(
                f"{paths[0].name}: unreadable frame: {exc}",
                user_message="A video frame is unreadable.",
            ) from exc


async def sequence_frames(
    paths: Sequence[Path], size: tuple[int, int], background: Background = BLACK
) -> AsyncIterator[bytes]:
    """RGB24 frames of a list of image files, each resized to `size` if it differs."""

    def decode(path: Path) -> bytes:
        with _checked_open(path) as image:
            try:
                return _rgb_bytes(exif_transposed(image), size, background)
            except (OSError, ValueError) as exc:
                raise MediaError(
                    f"{path.name}: unreadable frame: {exc}",
                    user_message="A video frame is unreadable.",
                ) from exc

    for path in paths:
        yield await asyncio.to_thread(decode, path)
