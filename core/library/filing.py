"""File one result into the library folder and get its Jellyfin link.

`file_output` is idempotent: calling it again with the same inputs never makes a second copy.
A name that already holds the same bytes is reused, and a stored `library_path` (from a first
attempt that raised `FilingPending` or `FilingRefused`) is resumed from. Files are written
atomically and never overwrite anything: copy to a hidden temp file in the target folder,
fsync, then hard-link it to the final name (``FileExistsError`` -> next name ``X (2).mp4``).
Disk work runs in a thread.
"""

from __future__ import annotations

import asyncio
import errno
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

from core.errors import LibraryError
from core.library.jellyfin import JellyfinClient, LibraryUnavailable
from core.library.layout import (
    MAX_COUNTER,
    FilingMetadata,
    LayoutSettings,
    build_nfo,
    display_title,
    map_path,
    nfo_name,
    numbered,
    relative_path,
    search_term,
)
from core.logs import get_logger
from core.models import JobKind

log = get_logger(__name__)

_CHUNK = 1024 * 1024
# Filesystems without hard links (FAT, some SMB/FUSE mounts) answer one of these.
_NO_LINK_ERRNOS = frozenset(
    {errno.EPERM, errno.EXDEV, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.ENOSYS}
)


@dataclass(frozen=True)
class ScanWait:
    """How long to look for the new item: Jellyfin debounces new files (60 s by default)."""

    attempts: int = 12
    interval: float = 10.0


@dataclass(frozen=True)
class FiledResult:
    library_path: Path
    jellyfin_path: str
    item_id: str | None
    link: str | None


class FilingPending(LibraryUnavailable):
    """The file is in the library folder, but Jellyfin could not be reached: store
    `result.library_path` and call `file_output(..., library_path=...)` later."""

    def __init__(self, message: str, *, result: FiledResult, status: int | None = None) -> None:
        super().__init__(message, status=status)
        self.result = result


class FilingRefused(LibraryError):
    """The file is in the library folder, but Jellyfin refused a call about it (a rejected
    key: `LibraryAuthError`; a 4xx or an answer it should not give: `LibraryRequestError`).
    `result.library_path` says where the file is; `cause` is Jellyfin's error."""

    retryable = False

    def __init__(self, cause: LibraryError, *, result: FiledResult) -> None:
        super().__init__(str(cause), user_message=cause.user_message)
        self.cause = cause
        self.result = result
        self.status: int | None = getattr(cause, "status", None)


# --- disk (blocking; called through asyncio.to_thread) ----------------------------------------


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _temp_in(directory: Path) -> Path:
    # A dot name: Jellyfin ignores hidden files, so it never indexes a half-written temp file.
    return directory / f".{uuid.uuid4().hex}.part"


def _copy_to_temp(source: Path, directory: Path) -> Path:
    tmp = _temp_in(directory)
    try:
        with source.open("rb") as src, tmp.open("xb") as dst:
            shutil.copyfileobj(src, dst, _CHUNK)
            dst.flush()
            os.fsync(dst.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def _bytes_to_temp(data: bytes, directory: Path) -> Path:
    tmp = _temp_in(directory)
    try:
        with tmp.open("xb") as dst:
            dst.write(data)
            dst.flush()
            os.fsync(dst.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def _link_no_clobber(tmp: Path, dest: Path) -> None:
    """Give `tmp` the name `dest`; raises FileExistsError instead of replacing anything."""
    try:
        os.link(tmp, dest)
    except FileExistsError:
        raise
    except OSError as error:
        if error.errno not in _NO_LINK_ERRNOS:
            raise
        # No hard links here: reserve the name exclusively, then replace our own placeholder.
        fd = os.open(dest, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        os.close(fd)
        os.replace(tmp, dest)


def _same_content(a: Path, b: Path) -> bool:
    try:
        if a.stat().st_size != b.stat().st_size:
            return False
        with a.open("rb") as fa, b.open("rb") as fb:
            while True:
                chunk_a = fa.read(_CHUNK)
                if chunk_a != fb.read(_CHUNK):
                    return False
                if not chunk_a:
                    return True
    except OSError:
        return False


def _same_bytes(path: Path, data: bytes) -> bool:
    try:
        return path.stat().st_size == len(data) and path.read_bytes() == data
    except OSError:
        return False


def write_bytes_no_clobber(dest: Path, data: bytes) -> bool:
    """Write `data` at `dest` atomically unless `dest` exists; True when written."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = _bytes_to_temp(data, dest.parent)
    try:
        _link_no_clobber(tmp, dest)
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(dest.parent)
    return True


def place_file(source: Path, dest: Path, *, sidecar: bytes | None = None) -> Path:
    """Copy `source` to `dest`, or to ``dest (2)``, ``dest (3)``... when the name is taken by
    other bytes; a name already holding the same bytes is returned as is. With `sidecar`, the
    ``.nfo`` of the chosen name is written too (and a name whose .nfo belongs to another file
    is skipped)."""
    if not source.is_file():
        raise LibraryError(f"result file {source} is missing", user_message="The result is gone.")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp: Path | None = None
    try:
        for counter in range(1, MAX_COUNTER + 1):
            candidate = dest.with_name(numbered(dest.name, counter))
            nfo = candidate.with_name(nfo_name(candidate.name)) if sidecar is not None else None
            if os.path.lexists(candidate):
                if _same_content(candidate, source):
                    if nfo is not None and sidecar is not None:
                        write_bytes_no_clobber(nfo, sidecar)
                    return candidate
                continue
            wrote_nfo = False
            if nfo is not None and sidecar is not None:
                wrote_nfo = write_bytes_no_clobber(nfo, sidecar)
                if not wrote_nfo and not _same_bytes(nfo, sidecar):
                    continue  # a sidecar left by another file: do not adopt it
            if tmp is None:
                tmp = _copy_to_temp(source, dest.parent)
            try:
                _link_no_clobber(tmp, candidate)
            except FileExistsError:
                if wrote_nfo and nfo is not None:
                    nfo.unlink(missing_ok=True)
                continue
            _fsync_dir(dest.parent)
            return candidate
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
    raise LibraryError(f"no free name for {dest} after {MAX_COUNTER} tries")


def _resume(root: Path, library_path: Path, source: Path, sidecar: bytes | None) -> Path:
    """A stored path from an earlier attempt: keep it (re-place it if it was removed)."""
    resolved_root = root.resolve()
    resolved = library_path.resolve()
    if not resolved.is_relative_to(resolved_root):
        raise LibraryError(f"stored library path {library_path} is outside {root}")
    if resolved.is_file():
        if sidecar is not None:
            write_bytes_no_clobber(resolved.with_name(nfo_name(resolved.name)), sidecar)
        return library_path
    return place_file(source, library_path, sidecar=sidecar)


# --- filing ---------------------------------------------------------------------------------


def _item_name(path: Path, meta: FilingMetadata) -> str:
    """What Jellyfin will call the item: the NFO title (video) or the file stem (photo)."""
    if meta.kind is JobKind.VIDEO:
        return display_title(meta.title, fallback="Video")
    return path.stem


async def file_output(
    client: JellyfinClient | None,
    layout: LayoutSettings,
    source: Path,
    meta: FilingMetadata,
    *,
    library_path: Path | None = None,
    wait: ScanWait | None = None,
    library_id: str | None = None,
) -> FiledResult:
    """Write `source` (+ its .nfo for a video) into the library, tell Jellyfin, wait (bounded)
    for the item and return its link; `item_id`/`link` are None when it is not indexed yet
    (retry later with `library_path=result.library_path`).

    Raises `FilingPending` (a `LibraryUnavailable`) when the file is written but Jellyfin is
    not reachable; `FilingRefused` when it is written but Jellyfin refuses (its `cause` is the
    `LibraryAuthError`/`LibraryRequestError`); both carry the written file's `result`. A plain
    `LibraryError` when the file cannot be written (nothing half-written is left behind).
    `library_id` (the library's ItemId from `ensure_library`) narrows the lookup and enables
    the newest-items fallback when the search by name finds nothing."""
    wait = wait or ScanWait()
    sidecar = build_nfo(meta) if meta.kind is JobKind.VIDEO else None
    try:
        if library_path is not None:
            path = await asyncio.to_thread(_resume, layout.root, library_path, source, sidecar)
        else:
            dest = layout.root / relative_path(meta, layout.mode, source.suffix)
            path = await asyncio.to_thread(place_file, source, dest, sidecar=sidecar)
    except OSError as error:  # disk full, I/O error, a file where a folder should be...
        raise LibraryError(f"cannot write {source.name} into the library: {error}") from error
    jellyfin_path = map_path(path, layout.path_map)
    log.info("result filed", library_path=str(path), jellyfin_path=jellyfin_path)
    if client is None:
        return FiledResult(path, jellyfin_path, None, None)

    term = search_term(_item_name(path, meta))
    try:
        item = await client.find_item_by_path(jellyfin_path, term, parent_id=library_id)
        if item is None:
            how = await client.notify_created([jellyfin_path])
            log.info("jellyfin notified", jellyfin_path=jellyfin_path, method=how)
            item = await client.wait_for_item(
                jellyfin_path,
                term,
                attempts=wait.attempts,
                interval=wait.interval,
                parent_id=library_id,
            )
        link = await client.link_for(item.id) if item is not None else None
    except LibraryUnavailable as error:
        log.warning("jellyfin unreachable, filing pending", error=str(error))
        raise FilingPending(
            str(error), result=FiledResult(path, jellyfin_path, None, None), status=error.status
        ) from error
    except LibraryError as error:  # refused (401/403, another 4xx, garbage): the file stays
        log.warning("jellyfin refused the filed result", error=str(error), library_path=str(path))
        raise FilingRefused(error, result=FiledResult(path, jellyfin_path, None, None)) from error
    if item is None:
        log.info("jellyfin item not found yet", jellyfin_path=jellyfin_path)
        return FiledResult(path, jellyfin_path, None, None)
    log.info("jellyfin item linked", item_id=item.id)
    return FiledResult(path, jellyfin_path, item.id, link)
