"""Unusual image modes through `to_rgb` and the image loaders, on real files (no mocks): CIELAB,
16-bit and low-depth PNGs with a tRNS colour key, and the TIFF/PNG/GIF/BMP modes that need a
conversion. Each comes out as RGB with the right colours and transparency flattened.

Already covered in test_media_edges.py and not repeated here: CMYK JPEG with and without a
profile, 16-bit grey PNG with and without a tRNS value."""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Sequence

import pytest
from PIL import Image, ImageCms

from core.media.images import OUTPUT_MAX_PIXELS, build_reference, build_telegram_photo
from core.media.images import load_output_image as load
from core.media.imaging import WHITE, Background, srgb_icc, to_rgb

BAND, HEIGHT = 32, 64  # each test image is vertical bands of one colour, 32x64 px each
RED, BLUE, BLACK = (255, 0, 0), (0, 0, 255), (0, 0, 0)
Colour = tuple[int, ...]


# --- helpers ---------------------------------------------------------------------------------


def _file(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def _banded(mode: str, values: Sequence[float | tuple[float, ...]]) -> Image.Image:
    """A Pillow image of `mode` with one band per pixel value."""
    image = Image.new(mode, (BAND * len(values), HEIGHT))
    for index, value in enumerate(values):
        image.paste(Image.new(mode, (BAND, HEIGHT), value), (BAND * index, 0))
    return image


def _centres(image: Image.Image, count: int) -> list[Colour]:
    assert image.mode == "RGB"
    pixels = [image.getpixel((BAND * index + BAND // 2, HEIGHT // 2)) for index in range(count)]
    assert all(isinstance(pixel, tuple) for pixel in pixels)
    return [pixel for pixel in pixels if isinstance(pixel, tuple)]


def _near(got: Sequence[Colour], expected: Sequence[Colour], tolerance: int) -> bool:
    assert len(got) == len(expected)
    return all(
        abs(a - b) <= tolerance
        for pixel, want in zip(got, expected, strict=True)
        for a, b in zip(pixel, want, strict=True)
    )


def _output_rgb(
    data: bytes, count: int, background: Background = WHITE
) -> tuple[list[Colour], bytes | None]:
    """What a generated output's Telegram photo and thumbnail start from (lossless)."""
    rgb, icc = to_rgb(load(data, OUTPUT_MAX_PIXELS), background)
    return _centres(rgb, count), icc


def _reference_rgb(data: bytes, count: int) -> list[Colour]:
    """The stored reference photo (a PNG: lossless)."""
    png, _size, _format = build_reference(data)
    with Image.open(io.BytesIO(png)) as stored:
        return _centres(stored, count)


# A minimal PNG writer for what Pillow cannot write: 16-bit colour (Pillow has no 16-bit RGB
# mode) and 2/4-bit grey with a tRNS colour key.
_CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}  # PNG colour type -> samples per pixel


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png(
    values: Sequence[Colour], *, depth: int, colour_type: int, key: tuple[int, ...] = ()
) -> bytes:
    """A PNG of one band per pixel value (samples at `depth` bits), `key` as its tRNS chunk.

    Rows use the Sub filter (each byte minus the byte one pixel to the left), so a decoder
    must know the real pixel width (6 bytes for 16-bit RGB) to get the pixels back."""
    channels = _CHANNELS[colour_type]
    samples = [sample for value in values for _ in range(BAND) for sample in value]
    assert all(len(value) == channels for value in values)
    if depth == 16:
        raw = b"".join(struct.pack(">H", sample) for sample in samples)
    elif depth == 8:
        raw = bytes(samples)
    else:  # 1, 2 or 4 bits, packed from the high bit; the row is padded to whole bytes
        bits = "".join(format(sample, f"0{depth}b") for sample in samples)
        bits += "0" * (-len(bits) % 8)
        raw = int(bits, 2).to_bytes(len(bits) // 8, "big")
    step = max(1, channels * depth // 8)
    sub = bytes((raw[i] - (raw[i - step] if i >= step else 0)) & 0xFF for i in range(len(raw)))
    ihdr = struct.pack(">IIBBBBB", BAND * len(values), HEIGHT, depth, colour_type, 0, 0, 0)
    chunks = [_chunk(b"IHDR", ihdr)]
    if key:
        chunks.append(_chunk(b"tRNS", struct.pack(f">{len(key)}H", *key)))
    chunks += [_chunk(b"IDAT", zlib.compress((b"\x01" + sub) * HEIGHT)), _chunk(b"IEND", b"")]
    return b"\x89PNG\r\n\x1a\n" + b"".join(chunks)


def test_the_png_writer_agrees_with_pillow() -> None:
    data = _png([(0x1234, 0xFFFF, 0x0001), (0, 0x8000, 0xABCD)], depth=16, colour_type=2)
    with Image.open(io.BytesIO(data)) as image:
        assert (image.mode, image.size) == ("RGB", (2 * BAND, HEIGHT))
        assert _centres(image, 2) == [(0x12, 0xFF, 0x00), (0x00, 0x80, 0xAB)]  # high bytes
    with Image.open(io.BytesIO(_png([(1,), (2,)], depth=2, colour_type=0))) as grey:
        assert [grey.getpixel((BAND * i + 1, 0)) for i in (0, 1)] == [85, 170]


# --- CIELAB ----------------------------------------------------------------------------------


def _lab(lightness: float, a: float, b: float) -> tuple[int, int, int]:
    """A CIELAB colour as Pillow's "LAB" mode holds it, checked against Pillow's own
    sRGB -> Lab conversion: L* 0..100 as 0..255, a* and b* offset by 128. (A TIFF stores a*
    and b* signed; Pillow's reader adds the 128.)"""
    return round(lightness * 255 / 100), round(a) + 128, round(b) + 128


# sRGB colours and their CIELAB values (D50, Bradford-adapted: the ICC connection space).
LAB_COLOURS = [
    (RED, _lab(54.29, 80.81, 69.89)),
    ((128, 128, 128), _lab(53.59, 0, 0)),
    ((30, 70, 220), _lab(36.02, 33.25, -81.48)),
]


def test_pillow_lab_layout_is_offset_not_signed() -> None:
    to_lab = ImageCms.buildTransform(
        ImageCms.createProfile("sRGB"), ImageCms.createProfile("LAB"), "RGB", "LAB"
    )
    for srgb, lab in LAB_COLOURS:
        got = to_lab.apply(Image.new("RGB", (1, 1), srgb)).getpixel((0, 0))
        assert isinstance(got, tuple)
        assert _near([got], [lab], 1)


@pytest.mark.parametrize(
    "icc",
    [None, ImageCms.ImageCmsProfile(ImageCms.createProfile("LAB")).tobytes()],
    ids=["no profile", "Lab profile"],
)
def test_lab_tiff_is_colour_managed_to_srgb(icc: bytes | None) -> None:
    image = _banded("LAB", [lab for _srgb, lab in LAB_COLOURS])
    data = _file(image, "TIFF", **({"icc_profile": icc} if icc else {}))
    with Image.open(io.BytesIO(data)) as opened:
        assert opened.mode == "LAB"

    colours, profile = _output_rgb(data, 3)

    # Within the rounding of 8-bit Lab (a* and b* in whole units).
    assert _near(colours, [srgb for srgb, _lab in LAB_COLOURS], 8)
    assert profile == srgb_icc()  # the pixels are sRGB now: never the Lab profile
    jpeg, _size = build_telegram_photo(data)
    with Image.open(io.BytesIO(jpeg)) as photo:
        attached = photo.info.get("icc_profile")
        assert isinstance(attached, bytes)
        assert ImageCms.ImageCmsProfile(io.BytesIO(attached)).profile.xcolor_space == "RGB "
        assert _near(_centres(photo, 3), [srgb for srgb, _lab in LAB_COLOURS], 12)


# --- PNG colour keys and 16-bit colour -------------------------------------------------------

# Four 16-bit RGB colours: the 2nd differs from the 1st in the low byte of red only, so both
# are (128, 64, 32) in 8 bits; the 3rd is (0, 0, 0) in 8 bits but its low bytes are the 1st
# one's high bytes.
DEEP = [
    (0x8000, 0x4000, 0x2000),
    (0x8001, 0x4000, 0x2000),
    (0x0080, 0x0040, 0x0020),
    (0xFFFF, 0, 0),
]
DEEP_8_BITS = [(128, 64, 32), (128, 64, 32), BLACK, RED]


@pytest.mark.parametrize("keyed", [0, 2], ids=["key with high bytes", "key in low bytes"])
def test_16_bit_rgb_colour_key_hides_exactly_its_colour(keyed: int) -> None:
    data = _png(DEEP, depth=16, colour_type=2, key=DEEP[keyed])
    expected = [WHITE if index == keyed else colour for index, colour in enumerate(DEEP_8_BITS)]

    colours, _icc = _output_rgb(data, 4)
    assert _near(colours, expected, 1)
    assert _near(_reference_rgb(data, 4), expected, 1)


@pytest.mark.parametrize(
    ("colour_type", "values", "expected"),
    [
        (
            6,
            [(0xFFFF, 0, 0, 0xFFFF), (0xFFFF, 0, 0, 0), (0, 0, 0xFFFF, 0x8000), (0, 0, 0, 0xFFFF)],
            [RED, WHITE, (127, 127, 255), BLACK],
        ),
        (
            4,
            [(0, 0xFFFF), (0, 0), (0, 0x8000), (0x8000, 0xFFFF)],
            [BLACK, WHITE, (127, 127, 127), (128, 128, 128)],
        ),
    ],
    ids=["RGBA", "grey and alpha"],
)
def test_16_bit_alpha_is_flattened(
    colour_type: int, values: list[Colour], expected: list[Colour]
) -> None:
    data = _png(values, depth=16, colour_type=colour_type)
    colours, _icc = _output_rgb(data, 4)
    assert _near(colours, expected, 1)
    assert _near(_reference_rgb(data, 4), expected, 1)


@pytest.mark.parametrize("depth", [1, 2, 4, 8])
def test_grey_colour_key_at_any_depth(depth: int) -> None:
    """1/2/4-bit grey is decoded to 0..255: its key must be scaled the same way."""
    top = (1 << depth) - 1
    levels = [0, 1, 0, 1] if depth == 1 else [0, top // 3, top * 2 // 3, top]
    key = levels[1]
    data = _png([(level,) for level in levels], depth=depth, colour_type=0, key=(key,))
    grey = [(level * 255 // top,) * 3 for level in levels]

    def expected(background: Colour) -> list[Colour]:
        return [
            background if level == key else shade for level, shade in zip(levels, grey, strict=True)
        ]

    colours, _icc = _output_rgb(data, 4, background=BLUE)
    assert _near(colours, expected(BLUE), 1)
    assert _near(_reference_rgb(data, 4), expected(WHITE), 1)


def test_8_bit_rgb_colour_key_still_works() -> None:
    image = _banded("RGB", [(10, 20, 30), (1, 2, 3), (1, 2, 4), RED])
    data = _file(image, "PNG", transparency=(1, 2, 3))
    expected = [(10, 20, 30), WHITE, (1, 2, 4), RED]
    colours, _icc = _output_rgb(data, 4)
    assert colours == expected
    assert _reference_rgb(data, 4) == expected


# --- the other modes a TIFF, PNG, GIF or BMP can hold ----------------------------------------

PALETTE = [*RED, *BLUE, 0, 255, 0]  # indexes 0, 1, 2


def _paletted(mode: str = "P") -> Image.Image:
    values: list[float | tuple[float, ...]]
    values = [0, 1, 2, 0] if mode == "P" else [(0, 255), (1, 0), (2, 128), (1, 255)]
    image = _banded(mode, values)
    image.putpalette(PALETTE)
    return image


GREY = [0, 0x8000, 0xFFFF, 0x2000]  # 16-bit levels
GREY_8_BITS = [BLACK, (128, 128, 128), WHITE, (32, 32, 32)]
FLOAT_8_BITS = [BLACK, (128, 128, 128), WHITE, (64, 64, 64)]

MODES = [
    ("1 TIFF", _file(_banded("1", [0, 1, 0, 1]), "TIFF"), [BLACK, WHITE, BLACK, WHITE]),
    ("1 BMP", _file(_banded("1", [1, 0, 1, 0]), "BMP"), [WHITE, BLACK, WHITE, BLACK]),
    ("P PNG key", _file(_paletted(), "PNG", transparency=1), [RED, WHITE, (0, 255, 0), RED]),
    ("P GIF key", _file(_paletted(), "GIF", transparency=1), [RED, WHITE, (0, 255, 0), RED]),
    (
        "P PNG alphas",
        _file(_paletted(), "PNG", transparency=b"\xff\x00\x80"),
        [RED, WHITE, (127, 255, 127), RED],
    ),
    ("PA TIFF", _file(_paletted("PA"), "TIFF"), [RED, WHITE, (127, 255, 127), BLUE]),
    *[
        (
            f"LA {fmt}",
            _file(_banded("LA", [(50, 255), (200, 0), (0, 128), (100, 255)]), fmt),
            [(50, 50, 50), WHITE, (127, 127, 127), (100, 100, 100)],
        )
        for fmt in ("PNG", "TIFF")
    ],
    ("I;16 TIFF", _file(_banded("I;16", GREY), "TIFF"), GREY_8_BITS),
    ("I TIFF", _file(_banded("I", GREY), "TIFF"), GREY_8_BITS),  # read as 16-bit too
    ("F TIFF 0..1", _file(_banded("F", [0.0, 0.5, 1.0, 0.25]), "TIFF"), FLOAT_8_BITS),
    ("F TIFF 0..255", _file(_banded("F", [0.0, 128.0, 255.0, 64.0]), "TIFF"), FLOAT_8_BITS),
    (
        "F TIFF out of range",
        _file(_banded("F", [-5.0, 1e9, float("inf"), 64.0]), "TIFF"),
        [BLACK, WHITE, WHITE, (64, 64, 64)],
    ),
    (
        "YCbCr TIFF",
        _file(_banded("RGB", [RED, BLUE, WHITE, BLACK]).convert("YCbCr"), "TIFF"),
        [RED, BLUE, WHITE, BLACK],
    ),
]


@pytest.mark.parametrize(
    ("data", "expected"), [case[1:] for case in MODES], ids=[case[0] for case in MODES]
)
def test_mode_comes_out_as_rgb_with_its_colours(data: bytes, expected: list[Colour]) -> None:
    colours, _icc = _output_rgb(data, 4)
    assert _near(colours, expected, 2)
    jpeg, _size = build_telegram_photo(data)
    with Image.open(io.BytesIO(jpeg)) as photo:
        assert _near(_centres(photo, 4), expected, 12)


def test_float_with_nan_never_raises() -> None:
    data = _file(_banded("F", [float("nan"), 0.5, 1.0, 0.25]), "TIFF")
    colours, _icc = _output_rgb(data, 4)  # a NaN first hides the range: read as 0..255
    assert len(colours) == 4
    build_telegram_photo(data)
