"""Pure parsing of `ffmpeg -i` stderr (no ffprobe needed).

Example lines this understands:

    Input #0, mov,mp4,m4a,3gp,3g2,mj2, from 'file:/x.mp4':
      Duration: 00:00:01.00, start: 0.000000, bitrate: 204 kb/s
      Stream #0:0[0x1](und): Video: h264 (High) (avc1 / 0x31637661), yuv420p(progressive),
        128x96 [SAR 1:1 DAR 4:3], 114 kb/s, 25 fps, 25 tbr, 12800 tbn (default)
      Stream #0:1[0x2](und): Audio: aac (LC) (mp4a / 0x6134706D), 44100 Hz, mono, fltp
          displaymatrix: rotation of -90.00 degrees
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_INPUT_RE = re.compile(r"^Input #0, (?P<format>.+?), from '", re.MULTILINE)
_DURATION_RE = re.compile(r"Duration: (?P<h>\d+):(?P<m>\d+):(?P<s>\d+(?:\.\d+)?)")
_STREAM_RE = re.compile(
    r"^\s*Stream #0:\d+\S*: (?P<type>Video|Audio|Subtitle|Data|Attachment): (?P<rest>.*)$"
)
_SIZE_RE = re.compile(r"^(?P<w>\d{1,6})x(?P<h>\d{1,6})\b")
_FPS_RE = re.compile(r"^(?P<v>\d+(?:\.\d+)?)(?P<k>k?) (?P<unit>fps|tbr)$")
_ROTATION_RE = re.compile(r"rotation of (?P<deg>-?\d+(?:\.\d+)?) degrees")
_FRAME_RE = re.compile(r"frame=\s*(?P<n>\d+)")
_TIME_RE = re.compile(r"time=\s*(?P<h>\d+):(?P<m>\d+):(?P<s>\d+(?:\.\d+)?)")


@dataclass(frozen=True)
class VideoStream:
    codec: str
    pix_fmt: str | None
    width: int
    height: int
    fps: float | None
    rotation: int = 0
    attached_pic: bool = False


@dataclass(frozen=True)
class AudioStream:
    codec: str


@dataclass(frozen=True)
class ParsedInput:
    format: str
    duration_s: float | None
    video: list[VideoStream] = field(default_factory=list)
    audio: list[AudioStream] = field(default_factory=list)


def split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside parentheses or brackets."""
    parts: list[str] = []
    depth = 0
    current: list[str] = []
    for char in text:
        if char in "([":
            depth += 1
        elif char in ")]" and depth:
            depth -= 1
        if char == "," and depth == 0:
            parts.append("".join(current).strip())
            current = []
        else:
            current.append(char)
    if current:
        parts.append("".join(current).strip())
    return parts


def _parse_video(rest: str) -> VideoStream | None:
    parts = split_top_level(rest)
    if not parts:
        return None
    codec = parts[0].split()[0] if parts[0].split() else ""
    pix_fmt: str | None = None
    width = height = 0
    fps: float | None = None
    tbr: float | None = None
    for index, part in enumerate(parts[1:], start=1):
        size = _SIZE_RE.match(part)
        if size and not width:
            width, height = int(size.group("w")), int(size.group("h"))
            continue
        rate = _FPS_RE.match(part)
        if rate:
            value = float(rate.group("v")) * (1000 if rate.group("k") else 1)
            if rate.group("unit") == "fps":
                fps = value
            else:
                tbr = value
            continue
        if index == 1 and pix_fmt is None and not width:
            pix_fmt = part.split("(")[0].strip() or None
    if not width:
        return None
    return VideoStream(
        codec=codec,
        pix_fmt=pix_fmt,
        width=width,
        height=height,
        fps=fps if fps is not None else tbr,
        attached_pic="(attached pic)" in rest,
    )


def parse_input_info(stderr: str) -> ParsedInput | None:
    """Streams and duration of input #0; `None` when ffmpeg could not read it at all."""
    head = _INPUT_RE.search(stderr)
    if head is None:
        return None
    body = stderr[head.end() :]
    # Stop at the output section or the error that follows the input description.
    for marker in ("\nOutput #0", "\nStream mapping:", "\nAt least one output"):
        cut = body.find(marker)
        if cut != -1:
            body = body[:cut]
    duration_s: float | None = None
    duration = _DURATION_RE.search(body)
    if duration:
        duration_s = (
            int(duration.group("h")) * 3600
            + int(duration.group("m")) * 60
            + float(duration.group("s"))
        )
    video: list[VideoStream] = []
    audio: list[AudioStream] = []
    last_video: int | None = None
    for line in body.splitlines():
        stream = _STREAM_RE.match(line)
        if stream:
            last_video = None
            if stream.group("type") == "Video":
                parsed = _parse_video(stream.group("rest"))
                if parsed is not None:
                    video.append(parsed)
                    last_video = len(video) - 1
            elif stream.group("type") == "Audio":
                words = stream.group("rest").split()
                audio.append(AudioStream(codec=words[0].rstrip(",") if words else ""))
            continue
        rotation = _ROTATION_RE.search(line)
        if rotation and last_video is not None:
            current = video[last_video]
            degrees = round(float(rotation.group("deg"))) % 360
            video[last_video] = VideoStream(
                codec=current.codec,
                pix_fmt=current.pix_fmt,
                width=current.width,
                height=current.height,
                fps=current.fps,
                rotation=degrees,
                attached_pic=current.attached_pic,
            )
    return ParsedInput(format=head.group("format"), duration_s=duration_s, video=video, audio=audio)


def parse_frame_count(stderr: str) -> int | None:
    """The frame count of the final progress line (`frame=   25 fps=...`)."""
    matches = _FRAME_RE.findall(stderr)
    return int(matches[-1]) if matches else None


def parse_progress_time(stderr: str) -> float | None:
    """Seconds of the final progress line (`time=00:00:01.92`): the last timestamp processed."""
    matches = list(_TIME_RE.finditer(stderr))
    if not matches:
        return None
    last = matches[-1]
    return int(last.group("h")) * 3600 + int(last.group("m")) * 60 + float(last.group("s"))
