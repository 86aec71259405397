"""Images with Pillow, off the event loop: Telegram photos, thumbnails, reference photos.

- `telegram_photo`: a JPEG derived from any output (the original is kept untouched) within
  Telegram's photo limits (<= 10 MB, width + height <= 10000, ratio <= 20), EXIF orientation
  applied, ICC profile kept, transparency flattened onto a background.
- `make_thumbnail`: small JPEG for lists.
- `normalize_reference`: validate an untrusted upload (type, truncation, pixel bomb, size,
  ratio) and store it as an upright RGB PNG of bounded size for ComfyUI.
"""

from __future__ import annotations

import asyncio
import io
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from core.errors import InvalidInput, MediaError
from core.logs import get_logger
from core.media.imaging import (
    WHITE,
    Background,
    apply_png_colour_key,
    encode_jpeg,
    exif_transposed,
    open_image,
    to_rgb,
)
from core.media.limits import (
    TELEGRAM_PHOTO_MAX_BYTES,
    TELEGRAM_THUMB_MAX_BYTES,
    aspect_ratio,
    fit_within,
    plan_telegram_photo,
)

log = get_logger(__name__)

# Telegram keeps photos at most 2560 px on the long side; sending more is wasted upload.
PHOTO_MAX_SIDE = 2560
LIST_THUMB_SIDE = 256
OUTPUT_MAX_PIXELS = 150_000_000  # generated outputs (trusted, but still bounded)

REFERENCE_MIN_SIDE = 64
REFERENCE_MAX_SIDE = 1536
REFERENCE_MAX_FILE_BYTES = 20 * 1024 * 1024
REFERENCE_MAX_PIXELS = 40_000_000
REFERENCE_MAX_RATIO = 4.0
REFERENCE_FORMATS = ("JPEG", "MPO", "PNG", "WEBP", "GIF", "BMP")


@dataclass(frozen=True)
class PhotoResult:
    path: Path
    width: int
    height: int
    size_bytes: int


@dataclass(frozen=True)
class ReferenceImage:
    path: Path
    width: int
    height: int
    source_format: str


def atomic_write(dest: Path, data: bytes) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def stored_size(source: Path | bytes) -> tuple[int, int]:
    """Width and height as stored (no EXIF rotation), from the header only (blocking)."""
    with open_image(source) as image:
        return image.size


def load_output_image(source: Path | bytes, max_pixels: int) -> Image.Image:
    """Open and decode a generated image (first frame of an animation), EXIF-upright."""
    name = source.name if isinstance(source, Path) else "image"
    try:
        image = open_image(source)
        width, height = image.size
        if width * height > max_pixels:
            raise MediaError(
                f"{name}: {width}x{height} over {max_pixels} pixels",
                user_message="The image is too large to process.",
            )
        image.load()
        apply_png_colour_key(image, source)
    except (UnidentifiedImageError, Image.DecompressionBombError) as exc:
        raise MediaError(
            f"{name}: {exc}", user_message="The result is not a readable image."
        ) from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise MediaError(
            f"{name}: unreadable image: {exc}", user_message="The result image is damaged."
        ) from exc
    return exif_transposed(image)


def _exif_bytes(image: Image.Image) -> bytes | None:
    exif = image.getexif()
    if not exif:
        return None
    exif.pop(0x0112, None)  # pixels are upright now
    data = exif.tobytes()
    return data if len(data) < 60_000 else None


def build_telegram_photo(
    source: Path | bytes,
    *,
    max_bytes: int = TELEGRAM_PHOTO_MAX_BYTES,
    max_side: int | None = PHOTO_MAX_SIDE,
    background: Background = WHITE,
) -> tuple[bytes, tuple[int, int]]:
    """JPEG bytes and size of the Telegram photo for `source` (blocking)."""
    image = load_output_image(source, OUTPUT_MAX_PIXELS)
    exif = _exif_bytes(image)
    rgb, icc = to_rgb(image, background)
    plan = plan_telegram_photo(rgb.width, rgb.height, max_side=max_side)
    if plan.adjust == "pad":
        canvas = Image.new("RGB", plan.canvas, background)
        canvas.paste(rgb, ((plan.canvas[0] - rgb.width) // 2, (plan.canvas[1] - rgb.height) // 2))
        rgb = canvas
    elif plan.adjust == "crop":
        left = (rgb.width - plan.canvas[0]) // 2
        top = (rgb.height - plan.canvas[1]) // 2
        rgb = rgb.crop((left, top, left + plan.canvas[0], top + plan.canvas[1]))
    if rgb.size != plan.size:
        rgb = rgb.resize(plan.size, Image.Resampling.LANCZOS, reducing_gap=3.0)
    data = encode_jpeg(rgb, max_bytes=max_bytes, icc=icc, exif=exif)
    with open_image(data, formats=("JPEG",)) as written:  # its size (it may have shrunk)
        return data, written.size


async def telegram_photo(
    source: Path,
    dest: Path | None = None,
    *,
    max_bytes: int = TELEGRAM_PHOTO_MAX_BYTES,
    max_side: int | None = PHOTO_MAX_SIDE,
    background: Background = WHITE,
) -> PhotoResult:
    """Write a Telegram-ready JPEG next to `source` (default `<stem>.tg.jpg`); keep `source`."""
    source = Path(source)
    dest = Path(dest) if dest is not None else source.with_name(f"{source.stem}.tg.jpg")
    if dest.resolve() == source.resolve():
        raise ValueError("dest must differ from source: the original is kept")
    data, size = await asyncio.to_thread(
        build_telegram_photo, source, max_bytes=max_bytes, max_side=max_side, background=background
    )
    await asyncio.to_thread(atomic_write, dest, data)
    log.debug("telegram photo", source=source.name, width=size[0], height=size[1], bytes=len(data))
    return PhotoResult(path=dest, width=size[0], height=size[1], size_bytes=len(data))


def make_thumbnail_bytes(
    source: Path | bytes,
    *,
    max_side: int = LIST_THUMB_SIDE,
    max_bytes: int = TELEGRAM_THUMB_MAX_BYTES,
    background: Background = WHITE,
) -> bytes:
    """A JPEG at most `max_side` px on its long side and `max_bytes` long (blocking)."""
    image = load_output_image(source, OUTPUT_MAX_PIXELS)
    rgb, icc = to_rgb(image, background)
    size = fit_within(rgb.width, rgb.height, max_side)
    if size != rgb.size:
        rgb = rgb.resize(size, Image.Resampling.LANCZOS)
    return encode_jpeg(rgb, max_bytes=max_bytes, icc=icc, qualities=(85, 75, 65, 55, 45))


async def make_thumbnail(
    source: Path,
    dest: Path | None = None,
    *,
    max_side: int = LIST_THUMB_SIDE,
    max_bytes: int = TELEGRAM_THUMB_MAX_BYTES,
) -> Path:
    """Write a list thumbnail (default `<stem>.thumb.jpg`) and return its path."""
    source = Path(source)
    dest = Path(dest) if dest is not None else source.with_name(f"{source.stem}.thumb.jpg")
    data = await asyncio.to_thread(
        make_thumbnail_bytes, source, max_side=max_side, max_bytes=max_bytes
    )
    await asyncio.to_thread(atomic_write, dest, data)
    return dest


def _reject(reason: str, user_message: str) -> InvalidInput:
    log.info("reference photo rejected", reason=reason)
    return InvalidInput(reason, user_message=user_message)


def _too_big(size: int, limit: int) -> InvalidInput:
    limit_mb = max(1, limit // (1024 * 1024))
    return _reject(
        f"file {size} bytes > {limit}",
        f"The file is too big: please send an image under {limit_mb} MB.",
    )


def validate_reference(
    data: bytes,
    *,
    min_side: int = REFERENCE_MIN_SIDE,
    max_file_bytes: int = REFERENCE_MAX_FILE_BYTES,
    max_pixels: int = REFERENCE_MAX_PIXELS,
    max_ratio: float = REFERENCE_MAX_RATIO,
) -> Image.Image:
    """Check an untrusted upload and return it decoded (blocking).

    Dimensions are checked from the header *before* any pixel is decoded, so a decompression
    bomb costs nothing; truncated files fail the full decode.
    """
    if len(data) > max_file_bytes:
        raise _too_big(len(data), max_file_bytes)
    if not data:
        raise _reject("empty file", "The file is empty: please send a photo.")
    try:
        image = open_image(data, REFERENCE_FORMATS)
    except Image.DecompressionBombError as exc:
        raise _reject(f"decompression bomb: {exc}", "The image has far too many pixels.") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise _reject(
            f"not an image: {exc}",
            "That is not an image I can read: please send a JPEG, PNG or WebP photo.",
        ) from exc
    width, height = image.size
    if width * height > max_pixels:
        raise _reject(
            f"{width}x{height} > {max_pixels} pixels",
            f"The image is too large ({width}x{height}): please send one under "
            f"{max_pixels // 1_000_000} megapixels.",
        )
    if min(width, height) < min_side:
        raise _reject(
            f"{width}x{height} below {min_side} px",
            f"The image is too small ({width}x{height}): each side must be at least {min_side} px.",
        )
    if aspect_ratio(width, height) > max_ratio:
        raise _reject(
            f"ratio {width}x{height} over {max_ratio}",
            f"The image is too long and thin ({width}x{height}): crop it to at most "
            f"{max_ratio:g}:1.",
        )
    try:
        if image.format in ("JPEG", "MPO"):
            # Decode at a reduced scale when the result will be shrunk anyway.
            image.draft("RGB", (REFERENCE_MAX_SIDE, REFERENCE_MAX_SIDE))
        image.load()
        apply_png_colour_key(image, data)
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise _reject(
            f"decode failed: {exc}",
            "The image file is damaged or incomplete: please send it again.",
        ) from exc
    return image


def build_reference(
    data: bytes,
    *,
    max_side: int = REFERENCE_MAX_SIDE,
    min_side: int = REFERENCE_MIN_SIDE,
    max_file_bytes: int = REFERENCE_MAX_FILE_BYTES,
    max_pixels: int = REFERENCE_MAX_PIXELS,
    max_ratio: float = REFERENCE_MAX_RATIO,
) -> tuple[bytes, tuple[int, int], str]:
    """PNG bytes, size and source format of a validated, normalized reference (blocking)."""
    image = validate_reference(
        data,
        min_side=min_side,
        max_file_bytes=max_file_bytes,
        max_pixels=max_pixels,
        max_ratio=max_ratio,
    )
    source_format = (image.format or "unknown").lower()
    upright = exif_transposed(image)
    rgb, icc = to_rgb(upright, WHITE)
    size = fit_within(rgb.width, rgb.height, max_side)
    if size != rgb.size:
        rgb = rgb.resize(size, Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    rgb.save(buffer, "PNG", icc_profile=icc, optimize=False)
    return buffer.getvalue(), rgb.size, source_format


async def normalize_reference(
    source: bytes | Path,
    dest: Path,
    *,
    max_side: int = REFERENCE_MAX_SIDE,
    min_side: int = REFERENCE_MIN_SIDE,
    max_file_bytes: int = REFERENCE_MAX_FILE_BYTES,
    max_pixels: int = REFERENCE_MAX_PIXELS,
    max_ratio: float = REFERENCE_MAX_RATIO,
) -> ReferenceImage:
    """Validate an uploaded reference photo and store it at `dest` as an upright RGB PNG.

    Raises `InvalidInput` whose `user_message` says what to fix.
    """
    if isinstance(source, Path):
        size = await asyncio.to_thread(lambda: source.stat().st_size)
        if size > max_file_bytes:
            raise _too_big(size, max_file_bytes)
        data = await asyncio.to_thread(source.read_bytes)
    else:
        data = source
    png, (width, height), source_format = await asyncio.to_thread(
        build_reference,
        data,
        max_side=max_side,
        min_side=min_side,
        max_file_bytes=max_file_bytes,
        max_pixels=max_pixels,
        max_ratio=max_ratio,
    )
    dest = Path(dest)
    await asyncio.to_thread(atomic_write, dest, png)
    return ReferenceImage(path=dest, width=width, height=height, source_format=source_format)
