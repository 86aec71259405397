"""Generation metadata embedded in PNG/JPEG originals and read back."""

import io
from pathlib import Path

import pytest
from PIL import Image, PngImagePlugin

from core.errors import MediaError
from core.media.metadata import (
    META_KEY,
    GenerationMeta,
    embed_metadata_bytes,
    extract_metadata_bytes,
    png_text,
    read_generation_metadata,
    write_generation_metadata,
)

META = GenerationMeta(
    prompt="девочка под дождём 🌧️🌸, 桜",
    characters=("Аня", "Kai 🐉"),
    seed=1234567890123,
    workflow="sdxl_character",
    job_id="job-42",
    extra={"lora": "anime_v2"},
)


def _png(with_comfy_chunks: bool = True) -> bytes:
    info = PngImagePlugin.PngInfo()
    if with_comfy_chunks:
        info.add_text("prompt", '{"3": {"class_type": "KSampler"}}')
        info.add_text("workflow", '{"nodes": []}')
    buffer = io.BytesIO()
    Image.new("RGBA", (40, 30), (10, 200, 30, 128)).save(buffer, "PNG", pnginfo=info)
    return buffer.getvalue()


def _jpeg() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation must survive
    exif[0x010F] = "CameraMaker"
    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), (200, 10, 10)).save(buffer, "JPEG", exif=exif.tobytes(), quality=90)
    return buffer.getvalue()


def _jpeg_scan(data: bytes) -> bytes:
    return data[data.index(b"\xff\xda") :]


def test_png_round_trip_keeps_comfy_chunks_and_pixels() -> None:
    original = _png()
    updated = embed_metadata_bytes(original, META)
    assert extract_metadata_bytes(updated) == META
    text = png_text(updated)
    assert text["prompt"].startswith('{"3"')  # ComfyUI's own chunks untouched
    assert text["workflow"] == '{"nodes": []}'
    assert text["Description"] == META.prompt
    with Image.open(io.BytesIO(original)) as before, Image.open(io.BytesIO(updated)) as after:
        assert before.tobytes() == after.tobytes()
        assert after.info[META_KEY] == META.to_json()  # Pillow reads our iTXt too


def test_png_rewrite_replaces_instead_of_duplicating() -> None:
    once = embed_metadata_bytes(_png(), META)
    other = GenerationMeta(prompt="second", seed=1)
    twice = embed_metadata_bytes(once, other)
    assert extract_metadata_bytes(twice) == other
    assert twice.count(META_KEY.encode()) == 1


def test_jpeg_round_trip_keeps_scan_data_and_exif() -> None:
    original = _jpeg()
    updated = embed_metadata_bytes(original, META)
    assert extract_metadata_bytes(updated) == META
    assert _jpeg_scan(updated) == _jpeg_scan(original)  # pixels not re-encoded
    with Image.open(io.BytesIO(updated)) as image:
        image.load()
        exif = image.getexif()
        assert exif[0x0112] == 6
        assert exif[0x010F] == "CameraMaker"
        comment = image.info.get("comment")
        assert isinstance(comment, bytes) and "🌸".encode() in comment


def test_jpeg_exif_user_comment_alone_is_enough() -> None:
    updated = embed_metadata_bytes(_jpeg(), META)
    # Drop our COM segment: the EXIF UserComment still carries the metadata.
    start = updated.index(b"\xff\xfe")
    length = int.from_bytes(updated[start + 2 : start + 4], "big")
    without_com = updated[:start] + updated[start + 2 + length :]
    assert b"AnimeStudio:" not in without_com
    assert extract_metadata_bytes(without_com) == META


def test_long_prompt_is_truncated_to_fit_a_jpeg_segment() -> None:
    meta = GenerationMeta(prompt="ж" * 40_000, job_id="j")
    restored = extract_metadata_bytes(embed_metadata_bytes(_jpeg(), meta))
    assert restored is not None
    assert restored.job_id == "j"
    assert restored.prompt.endswith("…")
    assert 1000 < len(restored.prompt) < 40_000


def test_no_metadata_and_other_formats() -> None:
    assert extract_metadata_bytes(_png()) is None
    assert extract_metadata_bytes(b"GIF89a....") is None
    with pytest.raises(MediaError):
        embed_metadata_bytes(b"RIFF....WEBP", META)
    with pytest.raises(MediaError):
        embed_metadata_bytes(_png()[:60], META)  # truncated PNG


async def test_file_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "out.png"
    path.write_bytes(_png())
    await write_generation_metadata(path, META)
    assert await read_generation_metadata(path) == META
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.png"]  # no temp file left
    with Image.open(path) as image:
        image.load()  # still a valid PNG (CRCs right)
