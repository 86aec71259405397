"""Find the ffmpeg binary and read its version.

Order: an explicit path (from configuration or a test), then `ffmpeg` on PATH, then the binary
bundled with imageio-ffmpeg. There is no ffprobe requirement: probing parses `ffmpeg -i`.
"""

from __future__ import annotations

import asyncio
import functools
import os
import re
import shutil
from pathlib import Path

from core.errors import MediaError
from core.logs import get_logger

log = get_logger(__name__)

_UNAVAILABLE = "Video processing is not available on this server right now."
_VERSION_RE = re.compile(r"ffmpeg version (\S+)")


def _check_executable(path: Path) -> Path:
    if not path.is_file():
        raise MediaError(f"ffmpeg binary not found at {path}", user_message=_UNAVAILABLE)
    if not os.access(path, os.X_OK):
        raise MediaError(f"ffmpeg binary at {path} is not executable", user_message=_UNAVAILABLE)
    return path


@functools.lru_cache(maxsize=1)
def _default_ffmpeg() -> Path:
    on_path = shutil.which("ffmpeg")
    if on_path:
        return _check_executable(Path(on_path))
    try:
        import imageio_ffmpeg

        bundled = str(imageio_ffmpeg.get_ffmpeg_exe())
    except (ImportError, RuntimeError) as exc:
        raise MediaError(
            f"no ffmpeg on PATH and imageio-ffmpeg has none: {exc}", user_message=_UNAVAILABLE
        ) from exc
    return _check_executable(Path(bundled))


def locate_ffmpeg(explicit: str | Path | None = None) -> Path:
    """The ffmpeg executable to run; `MediaError` when there is none (never a hang or a crash)."""
    if explicit is not None:
        return _check_executable(Path(explicit))
    return _default_ffmpeg()


def parse_version(banner: str) -> str:
    """`'ffmpeg version 6.1.1-3 Copyright...'` -> `'6.1.1-3'`; `'unknown'` when absent."""
    match = _VERSION_RE.search(banner)
    return match.group(1) if match else "unknown"


async def ffmpeg_version(ffmpeg: str | Path | None = None, *, timeout_s: float = 15.0) -> str:
    """The version string of the binary `locate_ffmpeg(ffmpeg)` finds."""
    exe = locate_ffmpeg(ffmpeg)
    try:
        proc = await asyncio.create_subprocess_exec(
            str(exe),
            "-hide_banner",
            "-version",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
    except OSError as exc:
        raise MediaError(f"cannot start {exe}: {exc}", user_message=_UNAVAILABLE) from exc
    try:
        async with asyncio.timeout(timeout_s):
            out, _ = await proc.communicate()
    except TimeoutError as exc:
        proc.kill()
        await proc.wait()
        raise MediaError(f"{exe} -version timed out", user_message=_UNAVAILABLE) from exc
    if proc.returncode != 0:
        raise MediaError(f"{exe} -version exited {proc.returncode}", user_message=_UNAVAILABLE)
    version = parse_version(out.decode("utf-8", "replace"))
    log.debug("ffmpeg located", path=str(exe), version=version)
    return version
