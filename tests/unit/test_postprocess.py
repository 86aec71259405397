"""Post-processing of an image output: the kept original and the Telegram JPEG, made in two
threads, are exactly what one pass in order makes (the files and every recorded field)."""

from __future__ import annotations

import hashlib
import io
import struct
import zlib
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast
from uuid import UUID

import pytest
from PIL import Image

from core.comfy.protocol import OutputRef
from core.errors import MediaError
from core.jobs.postprocess import meta_for, process_output
from core.media.images import build_telegram_photo, stored_size
from core.media.metadata import embed_metadata_bytes, read_generation_metadata
from core.models import Generation, JobKind
from core.settings import Settings

JOB = cast(
    Generation,
    SimpleNamespace(
        id=UUID(int=42),
        prompt_positive="masterpiece, Aiko on a rooftop",
        prompt_typed="Aiko on a rooftop 🌆",
        prompt_negative="blurry",
        character_ids=[UUID(int=7)],
        seed=123,
        workflow="txt2img_sd15",
        soundtrack=None,
    ),
)


def _png(mode: str = "RGBA") -> bytes:
    image = Image.new(mode, (300, 200), (200, 80, 120, 128) if mode == "RGBA" else (200, 80, 120))
    image.paste((10, 200, 30) + ((255,) if mode == "RGBA" else ()), (0, 0, 150, 100))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def _rotated_jpeg() -> bytes:
    """A JPEG with EXIF (orientation 6): the photo carries the EXIF the metadata edits."""
    image = Image.new("RGB", (200, 100), (255, 0, 0))
    image.paste((0, 0, 255), (100, 0, 200, 100))
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", exif=exif.tobytes(), quality=90)
    return buffer.getvalue()


def _webp() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (120, 80), (0, 120, 255)).save(buffer, "WEBP")
    return buffer.getvalue()


def _damaged_png() -> bytes:
    """Chunks that parse (the metadata can be embedded) around pixels that do not decode."""
    data = _png("RGB")
    start = data.index(b"IDAT") - 4
    (length,) = struct.unpack(">I", data[start : start + 4])
    body = b"\x00" * length  # not zlib
    chunk = struct.pack(">I", length) + b"IDAT" + body
    chunk += struct.pack(">I", zlib.crc32(b"IDAT" + body) & 0xFFFFFFFF)
    return data[:start] + chunk + data[start + 12 + length :]


def _expected(download: bytes, ext: str) -> dict[str, Any]:
    """What one pass in order made: metadata in the original, the JPEG from that original."""
    kept = embed_metadata_bytes(download, meta_for(JOB)) if ext != ".webp" else download
    photo, _size = build_telegram_photo(kept)
    return {
        "original": kept,
        "photo": photo,
        "sha256": hashlib.sha256(kept).hexdigest(),
        "size": stored_size(kept),
    }


@pytest.mark.parametrize(
    ("ext", "make", "mime"),
    [
        (".png", _png, "image/png"),
        (".jpg", _rotated_jpeg, "image/jpeg"),
        (".webp", _webp, "image/webp"),
    ],
)
@pytest.mark.parametrize("fetched", [False, True], ids=["downloaded file", "fetched bytes"])
async def test_the_files_and_fields_are_those_of_one_pass(
    tmp_path: Path, ext: str, make: Any, mime: str, fetched: bool
) -> None:
    download = make()
    downloaded = tmp_path / f"00_comfy{ext}"
    if not fetched:
        downloaded.write_bytes(download)
    ref = OutputRef("9", f"ComfyUI_00001_{ext}", "", "output")
    settings = Settings(_env_file=None, comfyui_urls=["http://127.0.0.1:9"], data_dir=tmp_path)

    source = download if fetched else downloaded  # the runner fetches images in memory
    spec = await process_output(JOB, 0, source, ref, tmp_path, settings)

    expected = _expected(download, ext)
    assert spec.kind is JobKind.IMAGE and spec.mime == mime
    assert spec.file_path == tmp_path / f"00_original{ext}"
    assert spec.delivery_path == tmp_path / "00_telegram.jpg" and spec.thumbnail_path is None
    assert spec.file_path.read_bytes() == expected["original"]
    assert spec.delivery_path.read_bytes() == expected["photo"]
    assert spec.delivery_bytes == expected["photo"]  # handed to delivery in memory
    assert (spec.size_bytes, spec.sha256) == (len(expected["original"]), expected["sha256"])
    assert (spec.width, spec.height) == expected["size"]
    assert spec.duration_s is None
    assert not downloaded.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["00_original" + ext, "00_telegram.jpg"]
    if ext != ".webp":
        meta = await read_generation_metadata(spec.file_path)
        assert meta is not None and meta.job_id == str(JOB.id)


@pytest.mark.parametrize("fetched", [False, True], ids=["downloaded file", "fetched bytes"])
async def test_a_damaged_image_fails_and_its_original_is_kept(
    tmp_path: Path, fetched: bool
) -> None:
    downloaded = tmp_path / "00_comfy.png"
    download = _damaged_png()
    if not fetched:
        downloaded.write_bytes(download)
    ref = OutputRef("9", "ComfyUI_00001_.png", "", "output")
    settings = Settings(_env_file=None, comfyui_urls=["http://127.0.0.1:9"], data_dir=tmp_path)

    with pytest.raises(MediaError):
        await process_output(JOB, 0, download if fetched else downloaded, ref, tmp_path, settings)

    # As before: the original (with its metadata) is kept, the download is gone, no photo.
    original = tmp_path / "00_original.png"
    assert original.read_bytes() == embed_metadata_bytes(download, meta_for(JOB))
    assert not downloaded.exists() and not (tmp_path / "00_telegram.jpg").exists()


async def test_videos_are_post_processed_from_their_downloaded_file(tmp_path: Path) -> None:
    ref = OutputRef("9", "clip_00001.mp4", "", "output")
    settings = Settings(_env_file=None, comfyui_urls=["http://127.0.0.1:9"], data_dir=tmp_path)
    with pytest.raises(TypeError):  # the runner fetches only images in memory
        await process_output(JOB, 0, b"\x00\x00\x00\x18ftypmp42", ref, tmp_path, settings)
    assert list(tmp_path.iterdir()) == []
