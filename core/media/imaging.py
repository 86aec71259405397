"""Small Pillow helpers shared by the image, video-frame and sheet code (blocking: call them
from `asyncio.to_thread`)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import IO

from PIL import Image, ImageChops, ImageCms, ImageOps

from core.errors import MediaError

# Formats we open at all; Pillow also knows MPEG, FLI, EPS... which we never want to parse.
IMAGE_FORMATS = ("PNG", "JPEG", "MPO", "WEBP", "GIF", "BMP", "TIFF")

Background = tuple[int, int, int]
WHITE: Background = (255, 255, 255)
BLACK: Background = (0, 0, 0)

_SRGB_ICC: bytes | None = None
_ORIENTATION = 0x0112  # EXIF tag


def open_image(
    source: Path | bytes | IO[bytes], formats: tuple[str, ...] = IMAGE_FORMATS
) -> Image.Image:
    """`Image.open` limited to `formats` (reads the header only; pixels are decoded later)."""
    fp: Path | IO[bytes] = io.BytesIO(source) if isinstance(source, bytes) else source
    Image.init()  # register every plugin: `formats=` raises KeyError for ones not loaded yet
    # Some Pillow versions open MPO through the JPEG plugin and have no "MPO" opener.
    return Image.open(fp, formats=[name for name in formats if name in Image.OPEN])


def srgb_icc() -> bytes:
    global _SRGB_ICC
    if _SRGB_ICC is None:
        profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
        _SRGB_ICC = profile.tobytes()
    return _SRGB_ICC


def _has_alpha(image: Image.Image) -> bool:
    return (
        image.mode in ("RGBA", "LA", "RGBa", "La", "PA")
        or (image.mode == "P" and "transparency" in image.info)
        or (image.mode in ("RGB", "L") and "transparency" in image.info)
    )


def _opaque_unless(image: Image.Image, value: int) -> Image.Image:
    """Alpha of an "I" image: 0 where a pixel equals `value`, 255 elsewhere."""
    above = image.point(lambda pixel: pixel + -value).convert("L")  # 0 unless pixel > value
    below = image.point(lambda pixel: pixel * -1 + value).convert("L")  # 0 unless below
    return ImageChops.add(above, below).point(lambda sum_: 255 if sum_ else 0)


def to_rgb(image: Image.Image, background: Background = WHITE) -> tuple[Image.Image, bytes | None]:
    """RGB pixels plus the ICC profile that describes them.

    Transparency is flattened onto `background`; CMYK with a profile is converted to sRGB
    through colour management (its CMYK profile would be wrong on RGB pixels); 16-bit grey
    is scaled to 8 bits instead of being clipped to white.
    """
    icc: bytes | None = image.info.get("icc_profile") or None
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        image = image.convert("I")
    if image.mode == "I":
        transparent = image.info.get("transparency")
        grey = image.point(lambda value: value * (1 / 256)).convert("L")
        if isinstance(transparent, int):  # a 16-bit value: find its pixels before scaling
            image = Image.merge("LA", (grey, _opaque_unless(image, transparent)))
        else:
            image = grey
    if image.mode == "CMYK":
        if icc:
            try:
                converted = ImageCms.profileToProfile(
                    image,
                    ImageCms.ImageCmsProfile(io.BytesIO(icc)),
                    ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")),
                    outputMode="RGB",
                )
            except (ImageCms.PyCMSError, OSError):
                converted = None
            if converted is not None:
                return converted, srgb_icc()
        return image.convert("RGB"), None
    if _has_alpha(image):
        rgba = image.convert("RGBA")
        base = Image.new("RGBA", rgba.size, (*background, 255))
        base.alpha_composite(rgba)
        return base.convert("RGB"), icc
    if image.mode != "RGB":
        return image.convert("RGB"), icc
    return image, icc


def exif_transposed(image: Image.Image) -> Image.Image:
    """Apply the EXIF orientation to the pixels (and reset the tag); an upright image is
    returned as is (Pillow would copy its pixels)."""
    if image.getexif().get(_ORIENTATION, 1) not in range(2, 9):
        return image
    transposed = ImageOps.exif_transpose(image)
    return transposed if transposed is not None else image


def encode_jpeg(
    image: Image.Image,
    *,
    max_bytes: int,
    icc: bytes | None = None,
    exif: bytes | None = None,
    qualities: tuple[int, ...] = (92, 88, 84, 80, 75, 70, 65, 60),
    min_side: int = 16,
) -> bytes:
    """JPEG bytes under `max_bytes`: lower the quality first, then shrink by 20 % steps.

    No `optimize` (a second pass for optimal Huffman tables): it costs as much as the encode
    itself for ~5 % fewer bytes, and Telegram re-encodes photos anyway."""
    current = image
    while True:
        for quality in qualities:
            buffer = io.BytesIO()
            options: dict[str, object] = {"quality": quality}
            if icc:
                options["icc_profile"] = icc
            if exif:
                options["exif"] = exif
            current.save(buffer, "JPEG", **options)
            if buffer.tell() <= max_bytes:
                return buffer.getvalue()
        width, height = current.size
        if min(width, height) * 4 // 5 < min_side:
            raise MediaError(
                f"cannot encode a {image.size} image under {max_bytes} bytes",
                user_message="The image could not be made small enough.",
            )
        current = current.resize((width * 4 // 5, height * 4 // 5), Image.Resampling.LANCZOS)
