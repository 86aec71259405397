"""Parsing `ffmpeg -i` stderr, the version banner and the pure command builders."""

from pathlib import Path

import pytest

from core.errors import MediaError
from core.media.ffmpeg_bin import locate_ffmpeg, parse_version
from core.media.ffmpeg_parse import (
    parse_frame_count,
    parse_input_info,
    parse_progress_time,
    split_top_level,
)
from core.media.probe import MediaInfo
from core.media.runner import file_url, stderr_tail
from core.media.video import remux_args, remux_blocker

MP4 = """ffmpeg version 6.1
Input #0, mov,mp4,m4a,3gp,3g2,mj2, from 'file:/tmp/x.mp4':
  Metadata:
    major_brand     : isom
  Duration: 00:01:02.50, start: 0.000000, bitrate: 204 kb/s
  Stream #0:0[0x1](und): Video: h264 (High) (avc1 / 0x31637661), yuv420p(tv, bt709, progressive), 1280x720 [SAR 1:1 DAR 16:9], 114 kb/s, 23.98 fps, 23.98 tbr, 12800 tbn (default)
    Metadata:
      handler_name    : VideoHandler
    Side data:
      displaymatrix: rotation of -90.00 degrees
  Stream #0:1[0x2](und): Audio: aac (LC) (mp4a / 0x6134706D), 44100 Hz, stereo, fltp, 70 kb/s (default)
At least one output file must be specified
"""  # noqa: E501

WEBM = """Input #0, matroska,webm, from 'file:/tmp/v.webm':
  Duration: N/A, start: 0.000000, bitrate: N/A
  Stream #0:0: Video: vp9 (Profile 0), yuv420p(tv, progressive), 127x95, SAR 1:1 DAR 127:95, 1k tbr, 1k tbn
"""  # noqa: E501

MP3_WITH_COVER = """Input #0, mp3, from 'file:/tmp/a.mp3':
  Duration: 00:03:00.05, start: 0.025057, bitrate: 128 kb/s
  Stream #0:0: Audio: mp3 (mp3float), 44100 Hz, stereo, fltp, 128 kb/s
  Stream #0:1: Video: mjpeg (Baseline), yuvj420p(pc, bt470bg/unknown/unknown), 500x500 [SAR 1:1 DAR 1:1], 90k tbr, 90k tbn (attached pic)
"""  # noqa: E501


def test_parse_mp4_with_rotation() -> None:
    info = parse_input_info(MP4)
    assert info is not None
    assert info.format == "mov,mp4,m4a,3gp,3g2,mj2"
    assert info.duration_s == pytest.approx(62.5)
    (video,) = info.video
    assert (video.codec, video.pix_fmt, video.width, video.height) == ("h264", "yuv420p", 1280, 720)
    assert video.fps == pytest.approx(23.98)
    assert video.rotation == 270
    assert [a.codec for a in info.audio] == ["aac"]


def test_parse_webm_without_duration_uses_tbr() -> None:
    info = parse_input_info(WEBM)
    assert info is not None
    assert info.duration_s is None
    assert info.video[0].fps == 1000
    assert (info.video[0].width, info.video[0].height) == (127, 95)
    assert info.audio == []


def test_parse_cover_art_is_marked_attached_pic() -> None:
    info = parse_input_info(MP3_WITH_COVER)
    assert info is not None
    assert info.video[0].attached_pic
    assert info.audio[0].codec == "mp3"


def test_parse_unreadable_input() -> None:
    assert parse_input_info("file.bin: Invalid data found when processing input\n") is None


def test_split_top_level_respects_brackets() -> None:
    assert split_top_level("h264 (High), yuv420p(tv, bt709), 2x2 [SAR 1:1, x]") == [
        "h264 (High)",
        "yuv420p(tv, bt709)",
        "2x2 [SAR 1:1, x]",
    ]


def test_frame_count_takes_the_last_progress_line() -> None:
    stderr = "frame=   10 fps=0.0\rframe=   25 fps=0.0 q=-1.0 Lsize=N/A\n"
    assert parse_frame_count(stderr) == 25
    assert parse_frame_count("nothing") is None


def test_progress_time_takes_the_last_line() -> None:
    stderr = "time=00:00:00.50 bitrate=N/A\rframe= 25 time=00:01:00.92 bitrate=N/A\n"
    assert parse_progress_time(stderr) == pytest.approx(60.92)
    assert parse_progress_time("no progress") is None


def test_version_banner() -> None:
    assert parse_version("ffmpeg version 6.1.1-3ubuntu5 Copyright (c) 2000") == "6.1.1-3ubuntu5"
    assert parse_version("garbage") == "unknown"


def test_stderr_tail_drops_progress() -> None:
    text = "a\nframe= 1 fps=1\rsize= 1k\nError opening output\nConversion failed!\n"
    assert stderr_tail(text) == "a | Error opening output | Conversion failed!"


def test_file_url_is_absolute_and_never_an_option(tmp_path: Path) -> None:
    url = file_url(Path("-y"))
    assert url.startswith("file:/")
    assert url.endswith("/-y")


def test_locator_rejects_a_missing_binary(tmp_path: Path) -> None:
    with pytest.raises(MediaError) as caught:
        locate_ffmpeg(tmp_path / "no-such-ffmpeg")
    assert "not available" in caught.value.user_message
    not_executable = tmp_path / "ffmpeg"
    not_executable.write_text("#!/bin/sh\n")
    with pytest.raises(MediaError, match="not executable"):
        locate_ffmpeg(not_executable)


def _info(**overrides: object) -> MediaInfo:
    base: dict[str, object] = dict(
        kind="video",
        format="mov,mp4,m4a,3gp,3g2,mj2",
        width=128,
        height=96,
        duration_s=2.0,
        video_codec="h264",
        pix_fmt="yuv420p",
        audio_codec="aac",
        fps=25.0,
        frames=50,
        size_bytes=1000,
    )
    base.update(overrides)
    return MediaInfo(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({}, None),
        ({"audio_codec": None}, None),
        ({"format": "matroska,webm"}, None),
        ({"video_codec": "vp9"}, "video codec vp9"),
        ({"pix_fmt": "yuv444p"}, "pixel format yuv444p"),
        ({"width": 127}, "odd size 127x96"),
        ({"audio_codec": "opus"}, "audio codec opus"),
        ({"format": "avi"}, "container avi"),
        ({"size_bytes": 2000}, "size 2000 over 1500"),
        ({"format": "webp", "video_codec": "webp"}, "not a regular video file"),
    ],
)
def test_remux_blocker(overrides: dict[str, object], reason: str | None) -> None:
    assert remux_blocker(_info(**overrides), 1500) == reason


def test_remux_args_copy_and_faststart(tmp_path: Path) -> None:
    args = remux_args(tmp_path / "in.mp4", tmp_path / "out.mp4", has_audio=False)
    assert args[args.index("-c") + 1] == "copy"
    assert "+faststart" in args
    assert "0:a:0" not in args
    assert args[args.index("-format_whitelist") + 2] == "-i"
