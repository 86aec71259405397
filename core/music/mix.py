"""Mix a soundtrack into a video: the music replaces any existing audio.

The audio is trimmed to the video length, faded out over the last seconds of what is heard
(`afade`), padded with silence when shorter (`apad`); the video stream is copied, the audio
encoded to AAC, and the MP4 written with `+faststart`. Input audio may be anything ffmpeg
reads (mp3, m4a, Telegram voice ogg/opus, wav). The filter maths is pure (`soundtrack_filter`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import ffmpeg as ffmpeg_lib

from core.errors import MediaError
from core.logs import get_logger
from core.media.probe import probe
from core.media.runner import SAFE_DEMUXERS, file_url, run_ffmpeg

log = get_logger(__name__)

FADE_OUT_S = 2.0
AUDIO_BITRATE = "160k"
_FAILED = "The soundtrack could not be added to the video."
_NO_SOUND = "The music file has no sound I can use."


class UnusableAudio(MediaError):
    """The soundtrack's file cannot be used: `gone` (deleted since it was fetched), unreadable,
    or without an audio stream. The video and the mix itself are not at fault."""

    def __init__(self, message: str, *, gone: bool = False) -> None:
        super().__init__(message, user_message=_NO_SOUND)
        self.gone = gone


@dataclass(frozen=True)
class MixResult:
    path: Path
    duration_s: float
    audio_duration_s: float  # of the source audio, before trimming/padding
    size_bytes: int


@dataclass(frozen=True)
class SoundtrackFilter:
    """`atrim -> asetpts -> afade -> apad` parameters (seconds)."""

    trim_s: float
    fade_start_s: float
    fade_s: float
    pad_to_s: float


def soundtrack_filter(
    video_s: float, audio_s: float | None, fade_s: float = FADE_OUT_S
) -> SoundtrackFilter:
    """Trim to the video, fade out the last `fade_s` of what is heard, pad to the video.

    Audio longer than the video fades over the video's last seconds; shorter audio fades over
    its own end (it is often a cut 30-second preview) and silence fills the rest.
    """
    if video_s <= 0:
        raise ValueError(f"video duration must be positive, got {video_s}")
    heard = video_s if audio_s is None or audio_s <= 0 else min(audio_s, video_s)
    fade = max(0.0, min(fade_s, heard))
    return SoundtrackFilter(
        trim_s=video_s, fade_start_s=max(0.0, heard - fade), fade_s=fade, pad_to_s=video_s
    )


def mix_args(
    video: Path, audio: Path, output: Path, plan: SoundtrackFilter, audio_bitrate: str
) -> list[str]:
    """ffmpeg arguments (without the binary) for the mix."""
    video_in = ffmpeg_lib.input(file_url(video), format_whitelist=SAFE_DEMUXERS)
    audio_in = ffmpeg_lib.input(file_url(audio), format_whitelist=SAFE_DEMUXERS)
    track = (
        audio_in["a:0"]
        .filter("atrim", start=0, end=f"{plan.trim_s:.3f}")
        .filter("asetpts", "PTS-STARTPTS")
    )
    if plan.fade_s > 0:
        track = track.filter(
            "afade", t="out", st=f"{plan.fade_start_s:.3f}", d=f"{plan.fade_s:.3f}"
        )
    track = track.filter("apad", whole_dur=f"{plan.pad_to_s:.3f}")
    stream = ffmpeg_lib.output(
        video_in["v:0"],
        track,
        file_url(output),
        vcodec="copy",
        acodec="aac",
        audio_bitrate=audio_bitrate,
        ac=2,
        t=f"{plan.pad_to_s:.3f}",
        movflags="+faststart",
        f="mp4",
    ).overwrite_output()
    args: list[str] = stream.compile(cmd="ffmpeg")[1:]
    return args


async def mix_soundtrack(
    video: Path,
    audio: Path,
    dest: Path,
    *,
    fade_s: float = FADE_OUT_S,
    audio_bitrate: str = AUDIO_BITRATE,
    timeout_s: float = 300.0,
    ffmpeg: str | Path | None = None,
) -> MixResult:
    """Write `dest`: `video`'s picture with `audio` as its only soundtrack (see module doc).
    `UnusableAudio` when the audio cannot be used; `MediaError` for any other failure (the
    video, ffmpeg)."""
    video, audio, dest = Path(video), Path(audio), Path(dest)
    video_info = await probe(video, ffmpeg=ffmpeg, timeout_s=timeout_s, count_frames=False)
    if video_info.kind != "video" or video_info.animated:
        raise MediaError(f"{video.name} is not a video file", user_message=_FAILED)
    if not video_info.duration_s:
        raise MediaError(f"{video.name}: unknown duration", user_message=_FAILED)
    try:
        audio_info = await probe(audio, ffmpeg=ffmpeg, timeout_s=timeout_s, count_frames=False)
    except MediaError as error:  # (ffmpeg itself works: it has just read the video)
        gone = not await asyncio.to_thread(audio.is_file)
        raise UnusableAudio(f"soundtrack {error}", gone=gone) from error
    if audio_info.audio_codec is None:
        raise UnusableAudio(f"{audio.name} has no audio stream")
    plan = soundtrack_filter(video_info.duration_s, audio_info.duration_s, fade_s)
    await asyncio.to_thread(dest.parent.mkdir, parents=True, exist_ok=True)
    part = dest.parent / f".{dest.stem}.{uuid.uuid4().hex[:8]}.part.mp4"
    try:
        await run_ffmpeg(
            mix_args(video, audio, part, plan, audio_bitrate),
            what="mix soundtrack",
            timeout_s=timeout_s,
            ffmpeg=ffmpeg,
            user_message=_FAILED,
        )
        size = (await asyncio.to_thread(part.stat)).st_size
        os.replace(part, dest)
    finally:
        with contextlib.suppress(OSError):
            part.unlink(missing_ok=True)
    log.info(
        "soundtrack mixed",
        video_s=video_info.duration_s,
        audio_s=audio_info.duration_s,
        fade_start_s=plan.fade_start_s,
    )
    return MixResult(
        path=dest,
        duration_s=video_info.duration_s,
        audio_duration_s=audio_info.duration_s or 0.0,
        size_bytes=size,
    )
