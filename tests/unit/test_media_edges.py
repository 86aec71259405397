"""Edge and failure paths of the media modules on real files made with Pillow (no ffmpeg run):
odd colour modes, damaged or hostile images, metadata in unusual or broken files, frames of
animations and sequences, the font and ffmpeg-locator fallbacks."""

from __future__ import annotations

import io
import os
import random
import struct
import zlib
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import pytest
from PIL import Image, ImageCms, ImageFont, PngImagePlugin

from core.errors import MediaError
from core.media import ffmpeg_bin, sheet
from core.media.ffmpeg_parse import parse_input_info
from core.media.frames import animation_frames, animation_timing
from core.media.images import make_thumbnail, normalize_reference, telegram_photo
from core.media.limits import FrameTiming, plan_frame_timing
from core.media.metadata import (
    META_KEY,
    GenerationMeta,
    embed_metadata_bytes,
    extract_metadata_bytes,
    png_text,
)
from core.media.probe import frame_durations, probe
from core.media.runner import run_ffmpeg
from core.media.video import prepare_video
from tests import media_kit
from tests.unit.test_abuse_inputs import bomb_png

RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)
SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()  # an RGB profile
UNREADABLE = "The file is not an image, video or audio file I can read."
UNAVAILABLE = "Video processing is not available on this server right now."
META = GenerationMeta(prompt="Aiko on a rooftop", seed=7, job_id="job-1")

fresh_locator = media_kit.fresh_locator  # the fixture, shared with test_media_process_edges.py


# --- helpers ---------------------------------------------------------------------------------


def _bytes(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def _near(pixel: object, expected: tuple[int, ...], tolerance: int = 12) -> bool:
    assert isinstance(pixel, tuple)
    return all(abs(a - b) <= tolerance for a, b in zip(pixel, expected, strict=True))


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _noise(size: tuple[int, int], seed: int) -> Image.Image:
    """Random RGB pixels, the same on every run (they compress badly)."""
    return Image.frombytes("RGB", size, random.Random(seed).randbytes(size[0] * size[1] * 3))


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _s15(value: float) -> bytes:
    return struct.pack(">i", round(value * 65536))


def _cmyk_profile(lab: tuple[int, int, int]) -> bytes:
    """A tiny ICC v2 CMYK input profile whose A2B0 table maps every colour to one Lab value
    (8-bit encoded): colour-managed output is then that colour, a naive conversion is not."""
    grid = 2
    lut = b"mft1" + bytes(4) + bytes([4, 3, grid, 0])
    lut += b"".join(_s15(v) for v in (1, 0, 0, 0, 1, 0, 0, 0, 1))
    lut += bytes(range(256)) * 4 + bytes(lab) * grid**4 + bytes(range(256)) * 3
    text = b"test CMYK\x00"
    desc = b"desc" + bytes(4) + struct.pack(">I", len(text)) + text + bytes(8 + 2 + 1 + 67)
    wtpt = b"XYZ " + bytes(4) + _s15(0.9642) + _s15(1.0) + _s15(0.8249)
    tags = [(b"desc", desc), (b"wtpt", wtpt), (b"A2B0", lut)]
    table = struct.pack(">I", len(tags))
    body = b""
    start = 128 + 4 + 12 * len(tags)
    for signature, data in tags:
        body += bytes(-(start + len(body)) % 4)
        table += signature + struct.pack(">II", start + len(body), len(data))
        body += data
    header = struct.pack(">I", 128 + len(table) + len(body)) + b"lcms" + bytes([2, 0x10, 0, 0])
    header += b"scnr" + b"CMYK" + b"Lab " + bytes(12) + b"acsp" + bytes(24) + bytes(4)
    header += _s15(0.9642) + _s15(1.0) + _s15(0.8249)
    header += bytes(128 - len(header))
    return header + table + body


def _gif(colours: list[tuple[int, int, int]], durations: list[int]) -> bytes:
    frames = [Image.new("RGB", (16, 16), colour) for colour in colours]
    return _bytes(
        frames[0], "GIF", save_all=True, append_images=frames[1:], duration=durations, loop=0
    )


def _jpeg(exif: Image.Exif | None = None) -> bytes:
    options: dict[str, object] = {"quality": 90}
    if exif is not None:
        options["exif"] = exif.tobytes()
    return _bytes(Image.new("RGB", (40, 30), (200, 10, 10)), "JPEG", **options)


def _scan(jpeg: bytes) -> bytes:
    return jpeg[jpeg.index(b"\xff\xda") :]


def _drop_com(jpeg: bytes) -> bytes:
    start = jpeg.index(b"AnimeStudio:") - 4  # FF FE, the length, then our text
    assert jpeg[start : start + 2] == b"\xff\xfe"
    length = int.from_bytes(jpeg[start + 2 : start + 4], "big")
    return jpeg[:start] + jpeg[start + 2 + length :]


def _after_app0(jpeg: bytes, segment: bytes) -> bytes:
    """`segment` inserted right after the JFIF APP0 segment."""
    assert jpeg[2:4] == b"\xff\xe0"
    end = 4 + int.from_bytes(jpeg[4:6], "big")
    return jpeg[:end] + segment + jpeg[end:]


def _with_meta_text(text: str) -> bytes:
    info = PngImagePlugin.PngInfo()
    info.add_itxt(META_KEY, text)
    return _bytes(Image.new("RGB", (8, 8)), "PNG", pnginfo=info)


def _fake_binary(path: Path, script: str) -> Path:
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(0o755)
    return path


# --- colour modes ----------------------------------------------------------------------------


async def test_cmyk_with_its_profile_is_colour_managed_to_srgb(tmp_path: Path) -> None:
    src = tmp_path / "print.jpg"
    cmyk = Image.new("CMYK", (64, 64), (0, 255, 255, 0))  # red, if read without the profile
    src.write_bytes(_bytes(cmyk, "JPEG", icc_profile=_cmyk_profile((200, 128, 128))))

    result = await telegram_photo(src)

    with Image.open(result.path) as out:
        assert out.mode == "RGB"
        icc = out.info.get("icc_profile")
        pixel = out.getpixel((32, 32))
    assert isinstance(icc, bytes)
    profile = ImageCms.ImageCmsProfile(io.BytesIO(icc)).profile  # not the CMYK one
    assert (profile.xcolor_space, profile.profile_description) == ("RGB ", "sRGB built-in")
    assert isinstance(pixel, tuple)
    assert max(pixel) - min(pixel) <= 6  # the profile's neutral grey, not red
    assert 150 < pixel[0] < 200


@pytest.mark.parametrize(
    "icc", [None, b"not an ICC profile", SRGB], ids=["no profile", "garbage", "RGB profile"]
)
async def test_cmyk_without_a_usable_profile_is_converted_plainly(
    tmp_path: Path, icc: bytes | None
) -> None:
    src = tmp_path / "print.jpg"
    options = {"icc_profile": icc} if icc else {}
    src.write_bytes(_bytes(Image.new("CMYK", (64, 64), (0, 255, 255, 0)), "JPEG", **options))

    result = await telegram_photo(src)

    with Image.open(result.path) as out:
        assert out.mode == "RGB"
        assert "icc_profile" not in out.info  # a CMYK profile would be wrong on RGB pixels
        assert _near(out.getpixel((32, 32)), RED)


def _grey16(values: list[int], **options: object) -> bytes:
    """A 16-bit grey PNG of 64x64 bands, one per value."""
    image = Image.new("I;16", (64 * len(values), 64))
    for index, value in enumerate(values):
        image.paste(Image.new("I;16", (64, 64), value), (64 * index, 0))
    return _bytes(image, "PNG", **options)


def _bands(path: Path, count: int) -> list[object]:
    with Image.open(path) as image:
        assert image.mode == "RGB"
        return [image.getpixel((32 + 64 * index, 32)) for index in range(count)]


async def test_16_bit_grey_is_scaled_to_8_bits_not_clipped(tmp_path: Path) -> None:
    src = tmp_path / "depth.png"
    src.write_bytes(_grey16([0x8000, 0x2000, 0x0000, 0xFFFF]))
    with Image.open(src) as opened:
        assert opened.mode == "I;16"

    photo = await telegram_photo(src)
    ref = await normalize_reference(src.read_bytes(), tmp_path / "ref.png")

    expected = [(128, 128, 128), (32, 32, 32), (0, 0, 0), (255, 255, 255)]
    for path in (photo.path, ref.path):
        assert all(map(_near, _bands(path, 4), expected))


async def test_16_bit_grey_transparency_hides_exactly_its_value(tmp_path: Path) -> None:
    src = tmp_path / "depth.png"
    src.write_bytes(_grey16([0x8000, 0x8001, 0x0000, 0xFFFF], transparency=0x8000))

    photo = await telegram_photo(src, background=BLUE)

    # Only 0x8000 is transparent: not its 8-bit neighbours, not what its low byte matches.
    expected = [BLUE, (128, 128, 128), (0, 0, 0), (255, 255, 255)]
    assert all(map(_near, _bands(photo.path, 4), expected))


async def test_first_frame_of_an_animated_reference_is_kept(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (120, 80), colour) for colour in (RED, BLUE)]
    data = _bytes(frames[0], "WEBP", save_all=True, append_images=frames[1:], lossless=True)
    ref = await normalize_reference(data, tmp_path / "ref.png")
    assert (ref.width, ref.height, ref.source_format) == (120, 80, "webp")
    with Image.open(ref.path) as stored:
        assert stored.format == "PNG" and getattr(stored, "n_frames", 1) == 1
        assert _near(stored.getpixel((60, 40)), RED)


async def test_camera_mpo_is_one_still_jpeg(tmp_path: Path) -> None:
    src = tmp_path / "camera.mpo"
    Image.new("RGB", (64, 48), RED).save(
        src, "MPO", save_all=True, append_images=[Image.new("RGB", (64, 48), BLUE)]
    )
    info = await probe(src)
    assert (info.kind, info.format, info.frames) == ("image", "jpeg", 1)
    assert (info.width, info.height) == (64, 48)
    assert not info.animated
    photo = await telegram_photo(src)
    with Image.open(photo.path) as out:
        assert _near(out.getpixel((32, 24)), RED)  # the main picture, not the second one


# --- hostile and damaged images --------------------------------------------------------------


async def test_photo_that_cannot_be_made_small_enough(tmp_path: Path) -> None:
    src = tmp_path / "noise.png"
    _noise((200, 200), 1).save(src)
    with pytest.raises(MediaError) as caught:
        await telegram_photo(src, max_bytes=300)
    assert caught.value.user_message == "The image could not be made small enough."
    assert _names(tmp_path) == ["noise.png"]


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
async def test_output_over_the_pixel_limit_is_refused_before_decoding(tmp_path: Path) -> None:
    src = tmp_path / "huge.png"
    src.write_bytes(bomb_png(13_000, 12_000))  # 156 Mpx: under Pillow's own error
    with pytest.raises(MediaError) as caught:
        await telegram_photo(src)
    assert caught.value.user_message == "The image is too large to process."
    with pytest.raises(MediaError) as caught:
        await make_thumbnail(src)
    assert caught.value.user_message == "The image is too large to process."
    assert _names(tmp_path) == ["huge.png"]


@pytest.mark.parametrize(
    "data",
    [b"%PDF-1.4 a document, not a picture", bomb_png(50_000, 50_000)],
    ids=["not an image", "decompression bomb"],
)
async def test_unreadable_output_is_a_media_error(tmp_path: Path, data: bytes) -> None:
    src = tmp_path / "out.png"
    src.write_bytes(data)
    with pytest.raises(MediaError) as caught:
        await telegram_photo(src)
    assert caught.value.user_message == "The result is not a readable image."
    assert _names(tmp_path) == ["out.png"]


async def test_the_photo_never_overwrites_its_original(tmp_path: Path) -> None:
    src = tmp_path / "out.jpg"
    src.write_bytes(_jpeg())
    before = src.read_bytes()
    with pytest.raises(ValueError, match="dest must differ"):
        await telegram_photo(src, tmp_path / "." / "out.jpg")
    assert src.read_bytes() == before


def _noise_gif(count: int) -> bytes:
    """`count` frames of noise: each frame's LZW data is a few hundred bytes."""
    frames = [_noise((32, 32), seed) for seed in range(count)]
    return _bytes(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100)


def _gif_cut_in_second_frame(keep: int) -> bytes:
    """A two-frame GIF cut `keep` bytes into the second frame's graphic control extension
    (`!` 0xF9 ... 8 bytes, then the `,` image descriptor)."""
    data = _noise_gif(2)
    second = data.index(b"!\xf9\x04", data.index(b"!\xf9\x04") + 1)
    assert data[second + 8 : second + 9] == b","
    return data[: second + keep]


def _tiff_second_page_without_width() -> bytes:
    """Two TIFF pages, the second one's ImageWidth tag renamed (Pillow: "Missing dimensions")."""
    pages = [Image.new("RGB", (8, 8), colour) for colour in (RED, BLUE)]
    data = bytearray(_bytes(pages[0], "TIFF", save_all=True, append_images=pages[1:]))
    first = struct.unpack_from("<I", data, 4)[0]
    count = struct.unpack_from("<H", data, first)[0]
    second = struct.unpack_from("<I", data, first + 2 + 12 * count)[0]
    for index in range(struct.unpack_from("<H", data, second)[0]):
        entry = second + 2 + 12 * index
        if struct.unpack_from("<H", data, entry)[0] == 256:
            struct.pack_into("<H", data, entry, 0xFDE8)
    return bytes(data)


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (bomb_png(50_000, 50_000), "The image is far too large."),
        (_noise_gif(2)[:-30], UNREADABLE),  # the last frame's pixels cut short
        (_gif_cut_in_second_frame(1), UNREADABLE),  # cut in the 2nd frame's extension
        (_gif_cut_in_second_frame(9), UNREADABLE),  # cut in its image descriptor
        (_tiff_second_page_without_width(), UNREADABLE),
    ],
    ids=["bomb", "gif pixels cut", "gif extension cut", "gif descriptor cut", "tiff"],
)
async def test_probe_of_a_damaged_image_is_a_media_error(
    tmp_path: Path, data: bytes, says: str
) -> None:
    src = tmp_path / "upload.bin"
    src.write_bytes(data)
    with pytest.raises(MediaError) as caught:
        await probe(src, ffmpeg=tmp_path / "no-ffmpeg")  # images never need ffmpeg
    assert caught.value.user_message == says


# --- animations and frame sequences ----------------------------------------------------------


def test_frame_durations_past_the_limit_repeat_the_last_one() -> None:
    with Image.open(io.BytesIO(_gif([RED, GREEN, BLUE, RED], [100, 200, 300, 400]))) as image:
        assert frame_durations(image) == [100, 200, 300, 400]
        assert frame_durations(image, limit=2) == [100, 200, 200, 200]
        assert image.tell() == 0


async def test_a_frame_shorter_than_the_frame_step_is_dropped(tmp_path: Path) -> None:
    src = tmp_path / "blink.gif"
    src.write_bytes(_gif([RED, GREEN, BLUE], [90, 20, 90]))  # 90/20/90 ms: no exact rate <= 50
    size, timing = animation_timing(src)
    assert (size, timing.fps, timing.repeats) == ((16, 16), Fraction(30), [3, 0, 3])
    frames = [frame async for frame in animation_frames(src, timing, size)]
    colours = [Image.frombytes("RGB", size, frame).getpixel((8, 8)) for frame in frames]
    assert colours == [RED] * 3 + [BLUE] * 3  # 200 ms at 30 fps, the 20 ms frame skipped


def test_a_single_very_short_frame_still_makes_one_frame() -> None:
    timing = plan_frame_timing([12.0])  # rounds to 0 frames at 30 fps
    assert (timing.fps, timing.repeats, timing.total_frames) == (Fraction(30), [1], 1)


async def test_a_damaged_animation_frame_is_a_media_error(tmp_path: Path) -> None:
    src = tmp_path / "anim.gif"
    src.write_bytes(_noise_gif(3)[:-30])  # the last frame's pixels cut short
    timing = FrameTiming(fps=Fraction(10), repeats=[1, 1, 1])  # as planned from the whole file
    seen: list[bytes] = []
    with pytest.raises(MediaError) as caught:
        async for frame in animation_frames(src, timing, (32, 32)):
            seen.append(frame)
    assert caught.value.user_message == "The animation is damaged."
    assert len(seen) == 2  # the frames before the damage were delivered


def _frame(path: Path, colour: tuple[int, int, int] = RED) -> Path:
    Image.new("RGB", (32, 24), colour).save(path)
    return path


@pytest.mark.parametrize(
    ("first", "says"),
    [
        (b"just a text file", "A video frame is unreadable."),
        (bomb_png(8000, 6000), "The frames are too large."),  # 48 Mpx
        (_bytes(_noise((64, 64), 2), "PNG")[:300], "A video frame is unreadable."),
    ],
    ids=["not an image", "too many pixels", "truncated png"],
)
async def test_a_bad_first_frame_fails_before_ffmpeg_starts(
    tmp_path: Path, first: bytes, says: str
) -> None:
    bad = tmp_path / "frame_000.png"
    bad.write_bytes(first)
    paths = [bad, _frame(tmp_path / "frame_001.png")]
    with pytest.raises(MediaError) as caught:
        await prepare_video(paths, tmp_path / "out.mp4", ffmpeg=tmp_path / "no-ffmpeg")
    assert caught.value.user_message == says
    assert _names(tmp_path) == ["frame_000.png", "frame_001.png"]


def test_a_video_stream_without_a_size_is_not_a_video() -> None:
    stderr = (
        "Input #0, mov,mp4,m4a,3gp,3g2,mj2, from 'file:/tmp/x.m4v':\n"
        "  Duration: 00:00:02.00, start: 0.000000, bitrate: 130 kb/s\n"
        "  Stream #0:0[0x1](und): Video: none (xvid / 0x64697678), none, 25 fps, 25 tbr\n"
        "  Stream #0:1[0x2](und): Audio: aac (LC) (mp4a / 0x6134706D), 44100 Hz, stereo\n"
        "At least one output file must be specified\n"
    )
    parsed = parse_input_info(stderr)
    assert parsed is not None
    assert parsed.video == []  # never a 0x0 video to scale
    assert [stream.codec for stream in parsed.audio] == ["aac"]


# --- generation metadata ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "not json at all",
        "[1, 2, 3]",
        '{"seed": 1}',
        '{"prompt": "x", "seed": "not a number"}',
        '{"prompt": "x", "characters": 5}',
    ],
)
def test_foreign_or_broken_metadata_reads_as_none(text: str) -> None:
    data = _with_meta_text(text)
    assert png_text(data)[META_KEY] == text
    assert extract_metadata_bytes(data) is None


def test_jpeg_without_our_metadata_reads_as_none() -> None:
    assert extract_metadata_bytes(_jpeg()) is None
    camera = Image.Exif()
    camera[0x010F] = "Camera"
    camera.get_ifd(0x8769)[0x9286] = b"ASCII\x00\x00\x00a camera comment"
    assert extract_metadata_bytes(_jpeg(camera)) is None


def _jpeg_cut_before_scan() -> bytes:
    data = _jpeg()
    return data[: data.index(b"\xff\xda")]


@pytest.mark.parametrize(
    "data",
    [
        _jpeg()[:2] + b"\x00" + _jpeg()[3:],  # APP0 marker byte damaged
        _jpeg()[:10],  # cut inside the APP0 segment
        _jpeg_cut_before_scan(),
        _bytes(Image.new("RGB", (8, 8)), "PNG")[:-12],  # no IEND chunk
    ],
    ids=["bad marker", "truncated segment", "no scan data", "png without IEND"],
)
def test_damaged_structure_is_a_media_error_on_write_and_none_on_read(data: bytes) -> None:
    with pytest.raises(MediaError) as caught:
        embed_metadata_bytes(data, META)
    assert caught.value.user_message == "The image file is damaged."
    assert extract_metadata_bytes(data) is None


def test_jpeg_fill_bytes_between_segments_are_understood() -> None:
    original = _jpeg()
    padded = original[:2] + b"\xff\xff\xff" + original[2:]
    with Image.open(io.BytesIO(padded)) as image:
        image.load()  # still a valid JPEG
    updated = embed_metadata_bytes(padded, META)
    assert extract_metadata_bytes(updated) == META
    assert _scan(updated) == _scan(original)


def test_compressed_text_chunks_are_read_and_replaced() -> None:
    info = PngImagePlugin.PngInfo()
    info.add_itxt(META_KEY, META.to_json(), zip=True)  # as an editor re-saving the PNG does
    info.add_text("Comment", "kept " * 40, zip=True)  # a zTXt chunk
    data = _bytes(Image.new("RGB", (8, 8)), "PNG", pnginfo=info)
    assert b"zTXt" in data
    assert extract_metadata_bytes(data) == META
    assert png_text(data)["Comment"] == "kept " * 40

    other = GenerationMeta(prompt="second", seed=2)
    updated = embed_metadata_bytes(data, other)
    assert extract_metadata_bytes(updated) == other
    assert updated.count(META_KEY.encode()) == 1  # the compressed copy was replaced
    assert png_text(updated)["Comment"] == "kept " * 40


def test_damaged_text_chunks_are_skipped() -> None:
    good = _bytes(Image.new("RGB", (8, 8)), "PNG")
    iend = good.rindex(b"IEND") - 4
    broken = _png_chunk(b"zTXt", b"Broken\x00\x00not zlib data")
    broken_ours = _png_chunk(b"iTXt", META_KEY.encode() + b"\x00\x01\x00\x00\x00not zlib")
    title = _png_chunk(b"tEXt", b"Title\x00still read")
    data = good[:iend] + broken + broken_ours + title + good[iend:]
    assert png_text(data) == {"Title": "still read"}
    assert extract_metadata_bytes(data) is None


def test_prompt_of_json_escapes_is_cut_to_fit_a_jpeg_segment() -> None:
    prompt = '"quoted"\n\t' * 8000  # 80 kB of text that doubles in size as JSON
    restored = extract_metadata_bytes(embed_metadata_bytes(_jpeg(), GenerationMeta(prompt)))
    assert restored is not None
    assert restored.prompt.endswith("…")
    assert prompt.startswith(restored.prompt[:-1])
    assert len(restored.prompt) > 1000


def _camera_exif(description: str = "") -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x010F] = "CameraMaker"
    exif[0x0110] = "Model X"
    exif[0x0132] = "2024:01:01 00:00:00"
    if description:
        exif[0x010E] = description
    return exif


@pytest.mark.parametrize("description", ["", "d" * 20_000], ids=["camera EXIF", "large EXIF"])
def test_long_ascii_prompt_fits_next_to_existing_exif(description: str) -> None:
    original = _jpeg(_camera_exif(description))
    meta = GenerationMeta(prompt="masterpiece, best quality, " * 2000, job_id="j")  # 54 kB
    updated = embed_metadata_bytes(original, meta)
    restored = extract_metadata_bytes(updated)
    assert restored is not None and restored.job_id == "j"
    assert restored.prompt.endswith("…") and len(restored.prompt) > 5000
    assert extract_metadata_bytes(_drop_com(updated)) == restored  # the EXIF copy fits too
    assert _scan(updated) == _scan(original)
    with Image.open(io.BytesIO(updated)) as image:
        image.load()
        exif = image.getexif()
        assert (exif[0x0112], exif[0x0110]) == (6, "Model X")
        assert exif.get(0x010E, "") == description


def test_damaged_exif_does_not_break_reading_or_writing() -> None:
    damaged = b"Exif\x00\x00" + b"garbage!" * 4
    original = _after_app0(_jpeg(), b"\xff\xe1\x00\x28" + damaged)
    with Image.open(io.BytesIO(original)) as image:
        image.load()  # viewers still show it
    assert extract_metadata_bytes(original) is None

    updated = embed_metadata_bytes(original, META)
    assert extract_metadata_bytes(updated) == META  # from the COM segment
    assert damaged in updated  # the block Pillow cannot parse is kept as it was
    assert extract_metadata_bytes(_drop_com(updated)) is None
    assert _scan(updated) == _scan(original)
    with Image.open(io.BytesIO(updated)) as image:
        image.load()


# --- fallbacks: fonts, the ffmpeg binary -----------------------------------------------------


@pytest.fixture
def no_fonts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    broken = tmp_path / "broken.ttf"
    broken.write_bytes(b"not a font")
    monkeypatch.setattr(sheet, "_FONT_CANDIDATES", (str(broken), str(tmp_path / "none.ttf")))
    sheet._font.cache_clear()
    yield
    sheet._font.cache_clear()


@pytest.mark.usefixtures("no_fonts")
async def test_sheet_renders_with_the_built_in_font_when_none_is_installed(
    tmp_path: Path,
) -> None:
    assert sheet._font(20).getname() == ImageFont.load_default(size=20).getname()
    tile = sheet.SheetTile(_frame(tmp_path / "a.png", GREEN), "Аня 🌸")
    dest = await sheet.character_sheet([tile], "Аня", tmp_path / "sheet.jpg", tile=160)
    layout = sheet.sheet_geometry(1, tile=160)
    with Image.open(dest) as out:
        assert out.format == "JPEG"
        assert out.size == (layout.width, layout.height)
        title = out.convert("L").crop((0, 0, layout.width, layout.title_height))
    brightest = title.getextrema()[1]
    assert isinstance(brightest, int) and brightest > 200  # the title was drawn


@pytest.mark.usefixtures("fresh_locator")
def test_no_ffmpeg_anywhere_is_a_media_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import imageio_ffmpeg

    def no_binary() -> str:
        raise RuntimeError("no ffmpeg exe could be found")

    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(imageio_ffmpeg, "get_ffmpeg_exe", no_binary)
    with pytest.raises(MediaError) as caught:
        ffmpeg_bin.locate_ffmpeg()
    assert caught.value.user_message == UNAVAILABLE


async def test_a_binary_that_cannot_be_executed_is_a_media_error(tmp_path: Path) -> None:
    fake = tmp_path / "ffmpeg"
    fake.write_bytes(b"\x00\x01 not a program")
    fake.chmod(0o755)
    with pytest.raises(MediaError) as caught:
        await ffmpeg_bin.ffmpeg_version(fake)
    assert "not available" in caught.value.user_message
    with pytest.raises(MediaError) as caught:
        await run_ffmpeg(["-version"], what="probe", timeout_s=5, ffmpeg=fake)
    assert "cannot start ffmpeg" in str(caught.value)
    assert caught.value.user_message == UNAVAILABLE


async def test_version_of_a_failing_binary_is_a_media_error(tmp_path: Path) -> None:
    fake = _fake_binary(tmp_path / "ffmpeg", "echo 'ffmpeg version 1.0'\nexit 3\n")
    with pytest.raises(MediaError, match="exited 3") as caught:
        await ffmpeg_bin.ffmpeg_version(fake)
    assert "not available" in caught.value.user_message


async def test_version_of_a_hanging_binary_times_out_and_kills_it(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    fake = _fake_binary(tmp_path / "ffmpeg", f"echo $$ > {pid_file}\nexec sleep 30\n")
    with pytest.raises(MediaError, match="timed out") as caught:
        await ffmpeg_bin.ffmpeg_version(fake, timeout_s=0.3)
    assert "not available" in caught.value.user_message
    pid = int(pid_file.read_text())
    assert not os.path.exists(f"/proc/{pid}")  # killed and reaped
