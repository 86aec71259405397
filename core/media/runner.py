"""Run ffmpeg as an asyncio subprocess: timeout, kill on cancel, `MediaError` on failure.

Never a shell: argv is a list, and file names are passed as `file:` URLs of absolute paths so a
name can neither start with `-` nor be read as another protocol (`concat:`, `http:`...).
Inputs are restricted to a list of ordinary demuxers (`-format_whitelist`), so a crafted file
(an HLS playlist named `.mp3`, say) cannot make ffmpeg read other files or the network.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from core.errors import MediaError
from core.logs import get_logger
from core.media.ffmpeg_bin import locate_ffmpeg

log = get_logger(__name__)

# Demuxers ffmpeg may use on our inputs (names as ffmpeg spells them; one match is enough).
SAFE_DEMUXERS = (
    "mov,mp4,m4a,3gp,3g2,mj2,matroska,webm,avi,flv,mpegts,ogg,mp3,wav,aac,flac,"
    "gif,apng,webp_pipe,png_pipe,jpeg_pipe,bmp_pipe"
)

_STDERR_KEEP = 256 * 1024


def file_url(path: Path) -> str:
    """`/tmp/a b.mp4` -> `file:/tmp/a b.mp4` (absolute, never an option, never a protocol)."""
    return "file:" + str(Path(path).resolve())


def input_args(path: Path) -> list[str]:
    """`-format_whitelist ... -i file:/abs/path` for one untrusted input file."""
    return ["-format_whitelist", SAFE_DEMUXERS, "-i", file_url(path)]


@dataclass(frozen=True)
class RunResult:
    returncode: int
    stdout: bytes
    stderr: str


def stderr_tail(stderr: str, lines: int = 6) -> str:
    """The last meaningful lines of ffmpeg's stderr (progress lines dropped), for error text."""
    kept = [
        line.strip()
        for line in stderr.replace("\r", "\n").splitlines()
        if line.strip() and not line.lstrip().startswith(("frame=", "size="))
    ]
    return " | ".join(kept[-lines:])


class _StderrBuffer:
    """Keeps the head (stream info) and the tail (the error) of a possibly huge stderr."""

    def __init__(self) -> None:
        self.head = bytearray()
        self.tail = bytearray()

    def add(self, chunk: bytes) -> None:
        room = _STDERR_KEEP - len(self.head)
        if room > 0:
            self.head += chunk[:room]
            chunk = chunk[room:]
        if chunk:
            self.tail += chunk
            if len(self.tail) > _STDERR_KEEP:
                del self.tail[: len(self.tail) - _STDERR_KEEP]

    def text(self) -> str:
        joined = bytes(self.head) + (b"\n...\n" + bytes(self.tail) if self.tail else b"")
        return joined.decode("utf-8", "replace")


async def _drain(stream: asyncio.StreamReader | None, sink: _StderrBuffer | bytearray) -> None:
    if stream is None:
        return
    while chunk := await stream.read(65536):
        if isinstance(sink, _StderrBuffer):
            sink.add(chunk)
        else:
            sink += chunk


async def _feed(writer: asyncio.StreamWriter | None, chunks: AsyncIterator[bytes] | None) -> None:
    if writer is None or chunks is None:
        return
    try:
        async for chunk in chunks:
            writer.write(chunk)
            await writer.drain()
    except (BrokenPipeError, ConnectionResetError):
        # ffmpeg stopped reading (it failed or had enough); its exit code tells the story.
        return
    finally:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            writer.close()
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            await aclose()  # release the generator's open image now, not at garbage collection


async def run_ffmpeg(
    args: Sequence[str],
    *,
    what: str,
    timeout_s: float,
    ffmpeg: str | Path | None = None,
    stdin: AsyncIterator[bytes] | None = None,
    capture_stdout: bool = False,
    check: bool = True,
    user_message: str = "The video could not be processed.",
) -> RunResult:
    """Run `ffmpeg -hide_banner [-nostdin] *args`.

    `what` names the step in errors ("re-encode video"). A timeout, a missing binary and (with
    `check`) a non-zero exit raise `MediaError`; on timeout or cancellation the process is
    killed and reaped before returning.
    """
    exe = locate_ffmpeg(ffmpeg)
    argv = [str(exe), "-hide_banner", *([] if stdin is not None else ["-nostdin"]), *args]
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE if capture_stdout else asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
    except OSError as exc:
        raise MediaError(
            f"{what}: cannot start ffmpeg {exe}: {exc}",
            user_message="Video processing is not available on this server right now.",
        ) from exc

    err = _StderrBuffer()
    out = bytearray()
    tasks = [
        asyncio.create_task(_feed(proc.stdin, stdin)),
        asyncio.create_task(_drain(proc.stdout, out)),
        asyncio.create_task(_drain(proc.stderr, err)),
    ]
    try:
        async with asyncio.timeout(timeout_s):
            await asyncio.gather(*tasks)
            returncode = await proc.wait()
    except TimeoutError as exc:
        await _stop(proc, tasks)
        log.warning("ffmpeg timed out", step=what, timeout_s=timeout_s)
        raise MediaError(
            f"{what}: ffmpeg timed out after {timeout_s:.1f} s",
            user_message="Processing the video took too long.",
        ) from exc
    except BaseException:
        # Cancelled, or the frame feeder failed: no ffmpeg and no helper task may outlive us.
        await _stop(proc, tasks)
        raise
    result = RunResult(returncode=returncode, stdout=bytes(out), stderr=err.text())
    if check and returncode != 0:
        detail = stderr_tail(result.stderr)
        log.warning("ffmpeg failed", step=what, returncode=returncode, stderr=detail)
        raise MediaError(f"{what}: ffmpeg exited {returncode}: {detail}", user_message=user_message)
    return result


async def _stop(proc: asyncio.subprocess.Process, tasks: list[asyncio.Task[None]]) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
    for task in tasks:
        task.cancel()
    # Reap the process and the pipe tasks even while being cancelled: no zombie, no open pipe.
    with contextlib.suppress(Exception):
        await asyncio.shield(proc.wait())
    await asyncio.gather(*tasks, return_exceptions=True)
