"""Small Pillow helpers shared by the image, video-frame and sheet code (blocking: call them
from `asyncio.to_thread`)."""

from __future__ import annotations

import functools
import io
from pathlib import Path
from typing import IO, cast

from PIL import Image, ImageChops, ImageCms, ImageFile, ImageOps

from core.errors import MediaError

# Formats we open at all; Pillow also knows MPEG, FLI, EPS... which we never want to parse.
IMAGE_FORMATS = ("PNG", "JPEG", "MPO", "WEBP", "GIF", "BMP", "TIFF")

Background = tuple[int, int, int]
WHITE: Background = (255, 255, 255)
BLACK: Background = (0, 0, 0)

_SRGB_ICC: bytes | None = None
_ORIENTATION = 0x0112  # EXIF tag
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


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


@functools.cache
def _lab_to_srgb_transform() -> ImageCms.ImageCmsTransform:
    return ImageCms.buildTransform(
        ImageCms.createProfile("LAB"), ImageCms.createProfile("sRGB"), "LAB", "RGB"
    )


def _has_alpha(image: Image.Image) -> bool:
    return (
        image.mode in ("RGBA", "LA", "RGBa", "La", "PA")
        or (image.mode == "P" and "transparency" in image.info)
        or (image.mode in ("RGB", "L", "1") and "transparency" in image.info)
    )


def _opaque_unless(image: Image.Image, value: int) -> Image.Image:
    """Alpha of an "I" image: 0 where a pixel equals `value`, 255 elsewhere."""
    above = image.point(lambda pixel: pixel + -value).convert("L")  # 0 unless pixel > value
    below = image.point(lambda pixel: pixel * -1 + value).convert("L")  # 0 unless below
    return ImageChops.add(above, below).point(lambda sum_: 255 if sum_ else 0)


def _deep_grey_to_8_bits(image: Image.Image) -> Image.Image:
    """16/32-bit integer or float grey as "L" ("LA" for a 16-bit grey with a transparent
    value); other modes are returned as they are.

    Integers are read as 16-bit (0..65535) and scaled, not clipped to white. Floats are read
    as 0..1 when every value is in that range (how image editors store them), else as
    Pillow's own 0..255."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        image = image.convert("I")
    if image.mode == "I":
        transparent = image.info.get("transparency")
        grey = image.point(lambda value: value * (1 / 256)).convert("L")
        if isinstance(transparent, int):  # a 16-bit value: find its pixels before scaling
            return Image.merge("LA", (grey, _opaque_unless(image, transparent)))
        return grey
    if image.mode == "F":
        low, high = cast("tuple[float, float]", image.getextrema())
        scale = 255.0 if low >= 0.0 and high <= 1.0 else 1.0
        return image.point(lambda value: value * scale + 0.5).convert("L")  # F -> L truncates
    return image


def _cmyk_to_rgb(image: Image.Image, icc: bytes | None) -> tuple[Image.Image, bytes | None]:
    """Through colour management with the image's own profile; plainly without one (its CMYK
    profile would be wrong on RGB pixels)."""
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


def _flatten(image: Image.Image, background: Background) -> Image.Image:
    rgba = image.convert("RGBA")
    base = Image.new("RGBA", rgba.size, (*background, 255))
    base.alpha_composite(rgba)
    return base.convert("RGB")


def to_rgb(image: Image.Image, background: Background = WHITE) -> tuple[Image.Image, bytes | None]:
    """RGB pixels plus the ICC profile that describes them.

    Transparency is flattened onto `background` (a PNG colour key must have been fixed by
    `apply_png_colour_key`); CMYK with a profile and CIELAB are converted to sRGB through
    colour management; 16-bit and float grey are scaled to 8 bits instead of being clipped.
    """
    icc: bytes | None = image.info.get("icc_profile") or None
    if image.mode == "LAB":
        # Pillow holds L as 0..255 for L* 0..100 and a/b offset by 128, as LittleCMS expects.
        return _lab_to_srgb_transform().apply(image), srgb_icc()
    if image.mode == "CMYK":
        return _cmyk_to_rgb(image, icc)
    image = _deep_grey_to_8_bits(image)
    if _has_alpha(image):
        return _flatten(image, background), icc
    if image.mode != "RGB":
        return image.convert("RGB"), icc
    return image, icc


def _png_bit_depth(source: Path | bytes) -> int | None:
    """The bit depth in a PNG's IHDR, or None for any other file."""
    if isinstance(source, Path):
        with source.open("rb") as handle:
            head = handle.read(26)
    else:
        head = source[:26]
    if len(head) < 26 or head[:8] != _PNG_SIGNATURE or head[12:16] != b"IHDR":
        return None
    return head[24]


def _equal_to(band: Image.Image, value: int) -> Image.Image:
    """An "L" band: 255 where `band` is `value`, 0 elsewhere."""
    return band.point([255 if level == value else 0 for level in range(256)])


def _colour_key_alpha(high: Image.Image, low: Image.Image, key: tuple[int, ...]) -> Image.Image:
    """Alpha of a 16-bit RGB image split in its high and low bytes: 0 where all three samples
    equal `key`, 255 elsewhere."""
    bands = [*high.split(), *low.split()]
    values = [sample >> 8 for sample in key] + [sample & 0xFF for sample in key]
    hit = _equal_to(bands[0], values[0])
    for band, value in zip(bands[1:], values[1:], strict=True):
        hit = ImageChops.multiply(hit, _equal_to(band, value))  # 255 only where all are
    return ImageChops.invert(hit)


def apply_png_colour_key(image: Image.Image, source: Path | bytes) -> None:
    """Make a PNG's tRNS colour key fit its decoded pixels (call after `image.load()`).

    Pillow keeps the key at the file's bit depth (Pillow 10 even for 1-bit grey) but decodes
    1/2/4-bit grey to 0..255 and 16-bit RGB to its high bytes, so such a key matched no pixel
    (or the wrong ones). A low-depth grey key is scaled like the pixels; a 16-bit RGB key
    becomes an alpha band, exact to 16 bits: the file is decoded a second time for the low
    bytes.
    """
    key = image.info.get("transparency")
    if image.format != "PNG" or image.mode not in ("1", "L", "RGB") or key is None:
        return
    depth = _png_bit_depth(source)
    if depth is None:
        return
    if image.mode in ("1", "L") and isinstance(key, int) and depth < 8:
        top = (1 << depth) - 1
        image.info["transparency"] = (key & top) * (255 // top)
    elif image.mode == "RGB" and isinstance(key, tuple) and len(key) == 3 and depth == 16:
        with open_image(source, ("PNG",)) as low:
            assert isinstance(low, ImageFile.ImageFile)
            # "RGB;16L" keeps the second byte of each sample: the low byte of PNG's big-endian
            # samples (Pillow's own "RGB;16B" keeps the first, the high byte).
            tiles = [(*tile[:3], "RGB;16L") for tile in low.tile]
            low.tile = cast("list[ImageFile._Tile]", tiles)  # Pillow 10 has plain tuples
            low.load()
            alpha = _colour_key_alpha(image, low, key)
        image.putalpha(alpha)
        del image.info["transparency"]


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
