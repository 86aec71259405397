"""Telegram photos, thumbnails and reference-photo validation with real Pillow."""

import io
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image, ImageCms

from core.errors import InvalidInput
from core.media.images import (
    PHOTO_MAX_SIDE,
    REFERENCE_MAX_FILE_BYTES,
    make_thumbnail,
    normalize_reference,
    telegram_photo,
)

RED, BLUE = (255, 0, 0), (0, 0, 255)


def _save(image: Image.Image, path: Path, fmt: str, **options: object) -> Path:
    image.save(path, fmt, **options)
    return path


def _close(a: object, b: tuple[int, ...], tolerance: int = 40) -> bool:
    assert isinstance(a, tuple)
    return all(abs(x - y) <= tolerance for x, y in zip(a, b, strict=True))


def _rotated_jpeg() -> bytes:
    """Stored 200x100, left half red / right half blue, EXIF orientation 6 (rotate 90 CW)."""
    image = Image.new("RGB", (200, 100), RED)
    image.paste(BLUE, (100, 0, 200, 100))
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", exif=exif.tobytes(), quality=95)
    return buffer.getvalue()


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that *claims* a huge size (a decompression bomb's header)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1000)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


async def test_huge_image_fits_telegram_limits_and_original_kept(tmp_path: Path) -> None:
    src = _save(Image.new("RGB", (12000, 3000), (20, 120, 220)), tmp_path / "big.jpg", "JPEG")
    before = src.read_bytes()
    result = await telegram_photo(src, max_side=None)
    assert result.path == tmp_path / "big.tg.jpg"
    assert result.width + result.height <= 10_000
    assert result.size_bytes <= 10 * 1024 * 1024
    assert src.read_bytes() == before
    with Image.open(result.path) as out:
        assert out.format == "JPEG"
        assert out.size == (result.width, result.height)
    default = await telegram_photo(src, tmp_path / "default.jpg")
    assert max(default.width, default.height) == PHOTO_MAX_SIDE


async def test_photo_under_a_small_byte_limit(tmp_path: Path) -> None:
    noise = Image.effect_noise((800, 800), 100).convert("RGB")
    src = _save(noise, tmp_path / "noise.png", "PNG")
    result = await telegram_photo(src, max_bytes=60_000)
    assert result.size_bytes <= 60_000
    assert result.path.stat().st_size == result.size_bytes


@pytest.mark.parametrize(("size", "adjust"), [((5000, 200), "pad"), ((100, 9000), "crop")])
async def test_extreme_aspect_ratio_is_brought_to_20(
    tmp_path: Path, size: tuple[int, int], adjust: str
) -> None:
    src = _save(Image.new("RGB", size, RED), tmp_path / "strip.png", "PNG")
    result = await telegram_photo(src)
    ratio = max(result.width, result.height) / min(result.width, result.height)
    assert ratio <= 20
    with Image.open(result.path) as out:
        rgb = out.convert("RGB")
        edge = rgb.getpixel((0, 0) if adjust == "crop" else (rgb.width // 2, 0))
        centre = rgb.getpixel((rgb.width // 2, rgb.height // 2))
    assert _close(centre, RED)
    if adjust == "pad":
        assert _close(edge, (255, 255, 255))  # padded with the white background
    else:
        assert _close(edge, RED)  # cropped: picture reaches the edge


async def test_alpha_is_flattened_onto_background(tmp_path: Path) -> None:
    image = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    image.paste((255, 0, 0, 255), (0, 0, 32, 64))
    src = _save(image, tmp_path / "alpha.png", "PNG")
    result = await telegram_photo(src, background=(0, 255, 0))
    with Image.open(result.path) as out:
        assert out.mode == "RGB"
        assert _close(out.getpixel((8, 32)), RED)
        assert _close(out.getpixel((56, 32)), (0, 255, 0))


async def test_exif_orientation_applied_and_icc_kept(tmp_path: Path) -> None:
    src = tmp_path / "rotated.jpg"
    src.write_bytes(_rotated_jpeg())
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    png = _save(Image.new("RGB", (50, 50), BLUE), tmp_path / "icc.png", "PNG", icc_profile=icc)
    result = await telegram_photo(src)
    with Image.open(result.path) as out:
        assert out.size == (100, 200)  # upright: portrait
        assert out.getexif().get(0x0112) in (None, 1)
        rgb = out.convert("RGB")
        assert _close(rgb.getpixel((50, 20)), RED)  # rotated 90 CW: red on top
        assert _close(rgb.getpixel((50, 180)), BLUE)
    with_icc = await telegram_photo(png)
    with Image.open(with_icc.path) as out:
        assert out.info.get("icc_profile") == icc


async def test_thumbnail_small_and_light(tmp_path: Path) -> None:
    src = _save(Image.effect_noise((1500, 1000), 80).convert("RGB"), tmp_path / "n.png", "PNG")
    thumb = await make_thumbnail(src, max_side=320)
    assert thumb == tmp_path / "n.thumb.jpg"
    assert thumb.stat().st_size < 200_000
    with Image.open(thumb) as out:
        assert out.size == (320, 213)


async def test_reference_normalized_upright_rgb_and_bounded(tmp_path: Path) -> None:
    big = Image.new("RGBA", (3000, 1500), (10, 20, 30, 255))
    buffer = io.BytesIO()
    big.save(buffer, "PNG")
    ref = await normalize_reference(buffer.getvalue(), tmp_path / "ref.png")
    assert (ref.width, ref.height) == (1536, 768)
    assert ref.source_format == "png"
    rotated = await normalize_reference(_rotated_jpeg(), tmp_path / "rot.png")
    assert (rotated.width, rotated.height) == (100, 200)
    with Image.open(rotated.path) as out:
        assert out.mode == "RGB"
        assert out.format == "PNG"
        assert _close(out.getpixel((50, 20)), RED)


async def test_reference_from_file_path(tmp_path: Path) -> None:
    src = _save(Image.new("P", (300, 200), 3), tmp_path / "pal.gif", "GIF")
    ref = await normalize_reference(src, tmp_path / "out" / "ref.png")
    assert ref.path.exists()
    with Image.open(ref.path) as out:
        assert out.mode == "RGB"


def _jpeg_bytes(size: tuple[int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (90, 90, 90)).save(buffer, "JPEG")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("data", "options", "says"),
    [
        (b"%PDF-1.4 not an image at all", {}, "not an image"),
        (b"", {}, "empty"),
        (_jpeg_bytes((600, 400))[:-400], {}, "damaged or incomplete"),
        (_png_header_only(50_000, 50_000), {}, "far too many pixels"),  # over Pillow's own limit
        (_png_header_only(8000, 6000), {}, "too large (8000x6000)"),  # over ours only
        (_jpeg_bytes((500, 500)), {"max_pixels": 200_000}, "too large (500x500)"),
        (_jpeg_bytes((50, 300)), {}, "too small (50x300)"),
        (_jpeg_bytes((500, 100)), {}, "too long and thin"),
        (_jpeg_bytes((300, 300)), {"max_file_bytes": 500}, "too big"),
    ],
)
async def test_reference_rejections_say_what_to_fix(
    tmp_path: Path, data: bytes, options: dict[str, int], says: str
) -> None:
    with pytest.raises(InvalidInput) as caught:
        await normalize_reference(data, tmp_path / "ref.png", **options)
    assert says in caught.value.user_message
    assert not (tmp_path / "ref.png").exists()


async def test_reference_file_size_checked_before_reading(tmp_path: Path) -> None:
    src = tmp_path / "huge.jpg"
    src.write_bytes(_jpeg_bytes((100, 100)))
    with pytest.raises(InvalidInput, match="bytes >"):
        await normalize_reference(src, tmp_path / "ref.png", max_file_bytes=100)
    assert REFERENCE_MAX_FILE_BYTES == 20 * 1024 * 1024


async def test_four_to_one_is_still_accepted(tmp_path: Path) -> None:
    ref = await normalize_reference(_jpeg_bytes((400, 100)), tmp_path / "r.png")
    assert (ref.width, ref.height) == (400, 100)
