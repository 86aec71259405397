"""Generation metadata in the kept original: PNG iTXt chunks, JPEG COM segment + EXIF comment.

The file is edited at the chunk/segment level, so pixels are never re-encoded (a JPEG stays
bit-identical apart from its metadata). Text is UTF-8 JSON (iTXt for PNG), so non-ASCII and
emoji prompts round-trip.
"""

from __future__ import annotations

import asyncio
import json
import os
import struct
import tempfile
import zlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from PIL import Image

from core.errors import MediaError
from core.logs import get_logger

log = get_logger(__name__)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
META_KEY = "AnimeStudio"  # iTXt keyword holding the JSON (ComfyUI's own "prompt"/"workflow" stay)
COMMENT_PREFIX = b"AnimeStudio:"
SOFTWARE = "Anime Studio Bot"
_JPEG_SEGMENT_MAX = 65533  # payload bytes in one JPEG marker segment
_EXIF_IFD = 0x8769
_USER_COMMENT = 0x9286
_SOFTWARE_TAG = 0x0131
_TEXT_CHUNKS = (b"tEXt", b"zTXt", b"iTXt")
# What Pillow raises on an EXIF block it cannot parse or write back.
_BAD_EXIF = (SyntaxError, ValueError, TypeError, KeyError, IndexError, struct.error)


@dataclass(frozen=True)
class GenerationMeta:
    """How an image was made."""

    prompt: str
    characters: tuple[str, ...] = ()
    seed: int | None = None
    workflow: str | None = None
    job_id: str | None = None
    extra: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> str:
        data: dict[str, Any] = {
            "prompt": self.prompt,
            "characters": list(self.characters),
            "seed": self.seed,
            "workflow": self.workflow,
            "job_id": self.job_id,
        }
        if self.extra:
            data["extra"] = dict(self.extra)
        return json.dumps(data, ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> GenerationMeta:
        data = json.loads(text)
        if not isinstance(data, dict) or not isinstance(data.get("prompt"), str):
            raise ValueError("not generation metadata")
        seed = data.get("seed")
        extra = data.get("extra") or {}
        return cls(
            prompt=data["prompt"],
            characters=tuple(str(name) for name in data.get("characters") or ()),
            seed=int(seed) if seed is not None else None,
            workflow=str(data["workflow"]) if data.get("workflow") is not None else None,
            job_id=str(data["job_id"]) if data.get("job_id") is not None else None,
            extra={str(k): str(v) for k, v in extra.items()} if isinstance(extra, dict) else {},
        )

    def truncated(self, max_bytes: int) -> GenerationMeta:
        """A copy whose JSON fits in `max_bytes` (UTF-8), shortening the prompt if needed."""
        if len(self.to_json().encode()) <= max_bytes:
            return self
        overhead = len(replace(self, prompt="…").to_json().encode())
        budget = max_bytes - overhead
        if budget < 0:
            raise ValueError("metadata does not fit even without a prompt")
        cut = self.prompt.encode()[:budget].decode("utf-8", "ignore")
        while True:  # JSON escapes (quotes, control characters) can still overflow
            candidate = replace(self, prompt=cut + "…")
            if len(candidate.to_json().encode()) <= max_bytes:
                return candidate
            cut = cut[: len(cut) - max(1, len(cut) // 10)]


# --- PNG -------------------------------------------------------------------------------------


def _png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    if not data.startswith(PNG_SIGNATURE):
        raise ValueError("not a PNG")
    chunks: list[tuple[bytes, bytes]] = []
    pos = len(PNG_SIGNATURE)
    while pos + 8 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        end = pos + 12 + length
        if end > len(data):
            raise ValueError("truncated PNG chunk")
        chunks.append((kind, data[pos + 8 : pos + 8 + length]))
        pos = end
        if kind == b"IEND":
            break
    if not chunks or chunks[-1][0] != b"IEND":
        raise ValueError("PNG without IEND")
    return chunks


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    crc = zlib.crc32(kind + body) & 0xFFFFFFFF
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)


def itxt_body(key: str, text: str) -> bytes:
    """An uncompressed iTXt chunk body (keyword latin-1, text UTF-8)."""
    keyword = key.encode("latin-1")
    if not 1 <= len(keyword) <= 79:
        raise ValueError("PNG keyword must be 1-79 bytes")
    return keyword + b"\x00\x00\x00" + b"\x00" + b"\x00" + text.encode("utf-8")


def _text_chunk_key(body: bytes) -> str:
    return body.split(b"\x00", 1)[0].decode("latin-1")


def _decode_text_chunk(kind: bytes, body: bytes) -> tuple[str, str]:
    key, _, rest = body.partition(b"\x00")
    if kind == b"tEXt":
        return key.decode("latin-1"), rest.decode("latin-1")
    if kind == b"zTXt":
        return key.decode("latin-1"), zlib.decompress(rest[1:]).decode("latin-1")
    compressed, rest = rest[0], rest[2:]
    _lang, _, rest = rest.partition(b"\x00")
    _translated, _, text = rest.partition(b"\x00")
    if compressed:
        text = zlib.decompress(text)
    return key.decode("latin-1"), text.decode("utf-8")


def png_set_text(data: bytes, entries: dict[str, str]) -> bytes:
    """PNG bytes with iTXt `entries` (replacing same-keyword text chunks), pixels untouched."""
    chunks = _png_chunks(data)
    kept = [
        (kind, body)
        for kind, body in chunks
        if not (kind in _TEXT_CHUNKS and _text_chunk_key(body) in entries)
    ]
    new = [(b"iTXt", itxt_body(key, text)) for key, text in entries.items()]
    first_idat = next(i for i, (kind, _) in enumerate(kept) if kind in (b"IDAT", b"IEND"))
    ordered = kept[:first_idat] + new + kept[first_idat:]
    return PNG_SIGNATURE + b"".join(_png_chunk(kind, body) for kind, body in ordered)


def png_text(data: bytes) -> dict[str, str]:
    """All tEXt/zTXt/iTXt entries of a PNG."""
    result: dict[str, str] = {}
    for kind, body in _png_chunks(data):
        if kind in _TEXT_CHUNKS:
            try:
                key, text = _decode_text_chunk(kind, body)
            except (ValueError, IndexError, zlib.error, UnicodeDecodeError):
                continue
            result[key] = text
    return result


# --- JPEG ------------------------------------------------------------------------------------


def _jpeg_segments(data: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """Marker segments before the scan data, and the rest of the file (from SOS on)."""
    if not data.startswith(b"\xff\xd8"):
        raise ValueError("not a JPEG")
    segments: list[tuple[int, bytes]] = []
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            raise ValueError("bad JPEG marker")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0xDA:  # start of scan: entropy-coded data follows
            return segments, data[pos:]
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        if length < 2 or pos + 2 + length > len(data):
            raise ValueError("truncated JPEG segment")
        segments.append((marker, data[pos + 4 : pos + 2 + length]))
        pos += 2 + length
    raise ValueError("JPEG without scan data")


def _jpeg_segment(marker: int, body: bytes) -> bytes:
    if len(body) > _JPEG_SEGMENT_MAX:
        raise ValueError("JPEG segment too long")
    return bytes((0xFF, marker)) + struct.pack(">H", len(body) + 2) + body


def _old_exif(segments: list[tuple[int, bytes]]) -> bytes | None:
    return next(
        (body for marker, body in segments if marker == 0xE1 and body.startswith(b"Exif\x00\x00")),
        None,
    )


def _exif_with_comment(old_exif: bytes | None, text: str) -> bytes | None:
    """The image's EXIF with `text` as UserComment; `None` when Pillow can neither read nor
    rewrite the image's own EXIF block (it is then kept as it is)."""
    exif = Image.Exif()
    try:
        if old_exif:
            exif.load(old_exif)
        encoding = "utf-16-le" if exif.endian == "<" else "utf-16-be"
        exif.get_ifd(_EXIF_IFD)[_USER_COMMENT] = b"UNICODE\x00" + text.encode(encoding)
        exif[_SOFTWARE_TAG] = SOFTWARE
        return b"Exif\x00\x00" + exif.tobytes()
    except _BAD_EXIF:
        if not old_exif:
            raise
        return None


def _jpeg_text_budget(segments: list[tuple[int, bytes]]) -> int:
    """UTF-8 bytes of text that fit our COM segment and, as UTF-16 (at most twice as many
    bytes), the EXIF segment next to what the image's EXIF already holds."""
    budget = _JPEG_SEGMENT_MAX - len(COMMENT_PREFIX)
    exif = _exif_with_comment(_old_exif(segments), "")
    if exif is not None:
        budget = min(budget, (_JPEG_SEGMENT_MAX - len(exif)) // 2)
    return budget


def _exif_comment(exif_payload: bytes) -> str | None:
    exif = Image.Exif()
    exif.load(exif_payload)
    raw = exif.get_ifd(_EXIF_IFD).get(_USER_COMMENT)
    if not isinstance(raw, bytes) or not raw.startswith(b"UNICODE\x00"):
        return None
    encoding = "utf-16-le" if exif.endian == "<" else "utf-16-be"
    return raw[8:].decode(encoding)


def jpeg_set_comment(data: bytes, text: str) -> bytes:
    """JPEG bytes with `text` in a COM segment and the EXIF UserComment; scan data untouched."""
    segments, scan = _jpeg_segments(data)
    exif = _exif_with_comment(_old_exif(segments), text)  # None: the old EXIF stays as is
    kept = [
        (marker, body)
        for marker, body in segments
        if not (marker == 0xFE and body.startswith(COMMENT_PREFIX))
        and not (exif is not None and marker == 0xE1 and body.startswith(b"Exif\x00\x00"))
    ]
    comment = COMMENT_PREFIX + text.encode("utf-8")
    # APP0 (JFIF) must stay first; EXIF goes right after it, our comment after the APPn block.
    if exif is not None:
        kept.insert(1 if kept and kept[0][0] == 0xE0 else 0, (0xE1, exif))
    last_app = max((i for i, (marker, _) in enumerate(kept) if 0xE0 <= marker <= 0xEF), default=-1)
    kept.insert(last_app + 1, (0xFE, comment))
    return b"\xff\xd8" + b"".join(_jpeg_segment(m, b) for m, b in kept) + scan


def jpeg_comment(data: bytes) -> str | None:
    """Our text from the COM segment, else from the EXIF UserComment."""
    segments, _ = _jpeg_segments(data)
    for marker, body in segments:
        if marker == 0xFE and body.startswith(COMMENT_PREFIX):
            return body[len(COMMENT_PREFIX) :].decode("utf-8", "replace")
    for marker, body in segments:
        if marker == 0xE1 and body.startswith(b"Exif\x00\x00"):
            return _exif_comment(body)
    return None


# --- files -----------------------------------------------------------------------------------


def embed_metadata_bytes(data: bytes, meta: GenerationMeta) -> bytes:
    """The same image with `meta` embedded (PNG or JPEG); `MediaError` for other formats."""
    try:
        if data.startswith(PNG_SIGNATURE):
            return png_set_text(
                data, {META_KEY: meta.to_json(), "Description": meta.prompt, "Software": SOFTWARE}
            )
        if data.startswith(b"\xff\xd8"):
            fitted = meta.truncated(_jpeg_text_budget(_jpeg_segments(data)[0]))
            return jpeg_set_comment(data, fitted.to_json())
    except ValueError as exc:
        raise MediaError(
            f"cannot embed metadata: {exc}", user_message="The image file is damaged."
        ) from exc
    raise MediaError(
        "metadata can only be embedded in PNG or JPEG",
        user_message="This image format cannot carry generation details.",
    )


def extract_metadata_bytes(data: bytes) -> GenerationMeta | None:
    """`GenerationMeta` from PNG or JPEG bytes; `None` when there is none (or not ours)."""
    try:
        if data.startswith(PNG_SIGNATURE):
            text: str | None = png_text(data).get(META_KEY)
        elif data.startswith(b"\xff\xd8"):
            text = jpeg_comment(data)
        else:
            return None
        return GenerationMeta.from_json(text) if text else None
    except (ValueError, KeyError, TypeError, OSError, SyntaxError, IndexError, struct.error):
        return None


def _write_metadata(path: Path, meta: GenerationMeta) -> None:
    data = path.read_bytes()
    updated = embed_metadata_bytes(data, meta)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(updated)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


async def write_generation_metadata(path: Path, meta: GenerationMeta) -> None:
    """Embed `meta` in the PNG/JPEG at `path` in place (atomic replace, pixels untouched)."""
    await asyncio.to_thread(_write_metadata, Path(path), meta)
    log.debug("generation metadata written", path=str(path), job_id=meta.job_id)


async def read_generation_metadata(path: Path) -> GenerationMeta | None:
    """The `GenerationMeta` embedded in the file at `path`, or `None`."""
    data = await asyncio.to_thread(Path(path).read_bytes)
    return extract_metadata_bytes(data)
