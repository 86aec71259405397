"""Turn one downloaded ComfyUI output into what we keep and what we send.

Images: the original keeps a record of how it was made (PNG text chunks / JPEG comment) and a
Telegram-ready JPEG is derived. Videos and animations: an H.264/AAC mp4 with a thumbnail, with
the job's soundtrack mixed in when it has one (sent without it when the soundtrack cannot be
had any more: see `_with_soundtrack`).
"""

from __future__ import annotations

import asyncio
import hashlib
from concurrent import futures
from dataclasses import dataclass, field, replace
from pathlib import Path

from core.comfy.protocol import OutputRef
from core.logs import get_logger
from core.media.images import atomic_write, build_telegram_photo, stored_size
from core.media.metadata import GenerationMeta, embed_metadata_bytes
from core.media.video import prepare_video
from core.models import Generation, JobKind
from core.music.mix import UnusableAudio, mix_soundtrack
from core.music.service import (
    MissingReason,
    MusicService,
    SoundtrackChoice,
    SoundtrackUnavailable,
)
from core.settings import Settings

log = get_logger(__name__)

# Threads for the archive part of images (their tasks never wait for anything).
_ARCHIVE = futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="postprocess-archive")

_IMAGE_MIME = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".webp": "image/webp",
}


@dataclass(frozen=True)
class OutputSpec:
    kind: JobKind
    file_path: Path
    delivery_path: Path
    thumbnail_path: Path | None
    mime: str
    size_bytes: int
    sha256: str
    width: int | None
    height: int | None
    duration_s: float | None
    # The delivery file's contents when they are at hand (images): delivery sends them
    # without reading the file back. Not recorded anywhere.
    delivery_bytes: bytes | None = field(default=None, repr=False, compare=False)
    # A video sent without the job's soundtrack: why (core.music.service.MissingReason).
    without_music: str | None = None


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def meta_for(job: Generation) -> GenerationMeta:
    return GenerationMeta(
        prompt=job.prompt_positive or job.prompt_typed,
        characters=tuple(str(c) for c in job.character_ids),
        seed=job.seed,
        workflow=job.workflow,
        job_id=str(job.id),
        extra={"scene": job.prompt_typed[:1000], "negative": job.prompt_negative[:1000]},
    )


async def process_output(
    job: Generation,
    index: int,
    source: Path | bytes,
    ref: OutputRef,
    out_dir: Path,
    settings: Settings,
) -> OutputSpec:
    """The kept and the Telegram files of output `index`: `source` is the downloaded file,
    or an image's bytes (fetched in memory: no download file written and read back)."""
    if ref.kind in ("video", "animation"):
        if not isinstance(source, Path):
            raise TypeError("a video or animation is post-processed from its downloaded file")
        spec = await _video(source, out_dir / f"{index:02d}_telegram.mp4")
        if job.soundtrack:
            spec = await _with_soundtrack(
                job, spec, SoundtrackChoice.from_json(job.soundtrack), settings
            )
        return spec
    ext = ref.extension or ".bin"
    files = await asyncio.to_thread(_image_files, source, ext, index, out_dir, meta_for(job))
    return OutputSpec(
        kind=JobKind.IMAGE,
        file_path=files.original,
        delivery_path=files.photo,
        thumbnail_path=None,
        mime=_IMAGE_MIME.get(files.original.suffix, "application/octet-stream"),
        size_bytes=files.size_bytes,
        sha256=files.sha256,
        width=files.width,
        height=files.height,
        duration_s=None,
        delivery_bytes=files.photo_bytes,
    )


@dataclass(frozen=True)
class _ImageFiles:
    original: Path
    photo: Path
    photo_bytes: bytes
    size_bytes: int
    sha256: str
    width: int
    height: int


def _image_files(
    source: Path | bytes, ext: str, index: int, out_dir: Path, meta: GenerationMeta
) -> _ImageFiles:
    """The kept original (with `meta` for PNG/JPEG) and the Telegram JPEG of one image, from
    bytes in memory (blocking: one thread hop instead of one per step).

    The Telegram JPEG (decode, encode, write: what delivery waits for) is made in this thread
    while the archive part (the original written, a download file removed, size and sha256)
    runs in another: Pillow and the file system release the GIL, so the two overlap."""
    original = out_dir / f"{index:02d}_original{ext}"
    data = source if isinstance(source, bytes) else source.read_bytes()
    with_meta = ext in (".png", ".jpg", ".jpeg")
    if with_meta:
        data = embed_metadata_bytes(data, meta)
    archived = _ARCHIVE.submit(_keep_original, source, original, data)
    photo = out_dir / f"{index:02d}_telegram.jpg"
    try:
        photo_bytes, _size = build_telegram_photo(data)
        atomic_write(photo, photo_bytes)
    except BaseException:
        futures.wait([archived])  # the original is kept all the same, as in one pass
        raise
    size_bytes, sha256, (width, height) = archived.result()
    return _ImageFiles(original, photo, photo_bytes, size_bytes, sha256, width, height)


def _keep_original(
    source: Path | bytes, original: Path, data: bytes
) -> tuple[int, str, tuple[int, int]]:
    """The archive part of an image: the original kept (`data`: with its metadata, as
    fetched or as downloaded), a download file removed, and the original's size, sha256 and
    stored size (as `probe()` reports it)."""
    atomic_write(original, data)
    if isinstance(source, Path):
        source.unlink(missing_ok=True)
    return len(data), hashlib.sha256(data).hexdigest(), stored_size(data)


async def _with_soundtrack(
    job: Generation, spec: OutputSpec, choice: SoundtrackChoice, settings: Settings
) -> OutputSpec:
    """Mix the chosen soundtrack into the Telegram video (trimmed/padded, faded out, AAC).

    A soundtrack that cannot be had any more (its file deleted, MUSIC_DIR or iTunes turned off
    since it was picked, the preview not downloadable, a file without usable sound) does not
    cost the user the video: it is sent without music, and `without_music` records why (the
    caption says so in place of the credit). A failing mix of a usable soundtrack (ffmpeg,
    the disk, a timeout) still fails the job: that is ours to fix, not a change of mind."""
    music = MusicService(settings)
    try:
        audio = await music.fetch(choice)
    except SoundtrackUnavailable as error:
        return await _without_soundtrack(job, spec, choice, error.reason, error)
    finally:
        await music.close()
    mixed = spec.delivery_path.with_name(spec.delivery_path.stem + "_music.mp4")
    try:
        result = await mix_soundtrack(spec.delivery_path, audio, mixed)
    except UnusableAudio as error:
        return await _without_soundtrack(
            job, spec, choice, "gone" if error.gone else "unusable", error
        )
    return replace(spec, delivery_path=result.path)


async def _without_soundtrack(
    job: Generation,
    spec: OutputSpec,
    choice: SoundtrackChoice,
    reason: MissingReason,
    error: Exception,
) -> OutputSpec:
    """The video `spec` goes out as it is, recording why it has no music."""
    log.warning(
        "video sent without its soundtrack",
        job_id=str(job.id),
        reason=reason,
        source=choice.source,
        error=str(error),
    )
    return replace(spec, without_music=reason)


async def _video(downloaded: Path, dest: Path) -> OutputSpec:
    original = downloaded.with_name(downloaded.name.replace("_comfy", "_original"))
    await asyncio.to_thread(downloaded.replace, original)
    result = await prepare_video(original, dest)
    return OutputSpec(
        kind=JobKind.VIDEO,
        file_path=original,
        delivery_path=result.path,
        thumbnail_path=result.thumbnail,
        mime="video/mp4",
        size_bytes=original.stat().st_size,
        sha256=await asyncio.to_thread(sha256_of, original),
        width=result.width,
        height=result.height,
        duration_s=result.duration_s,
    )
