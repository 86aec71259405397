"""A real over-50-MB ComfyUI video becomes a Telegram-ready mp4 under the upload limit."""

from __future__ import annotations

from pathlib import Path

from core.media.limits import TELEGRAM_UPLOAD_MAX_BYTES
from core.media.probe import probe
from core.media.runner import run_ffmpeg
from core.media.video import prepare_video


async def test_over_50_mb_input_is_reencoded_under_the_limit(tmp_path: Path) -> None:
    source = tmp_path / "huge.mp4"
    await run_ffmpeg(
        [
            "-y",
            "-f",
            "lavfi",
            "-i",
            "nullsrc=s=640x360:r=24,geq=random(1)*255:128:128",
            "-t",
            "7",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-qp",
            "0",
            "-pix_fmt",
            "yuv420p",
            str(source),
        ],
        what="make a lossless noise video",
        timeout_s=120,
    )
    assert source.stat().st_size > TELEGRAM_UPLOAD_MAX_BYTES == 50 * 1024 * 1024

    result = await prepare_video(source, tmp_path / "out.mp4")

    assert not result.remuxed
    assert result.size_bytes == result.path.stat().st_size <= TELEGRAM_UPLOAD_MAX_BYTES
    info = await probe(result.path)
    assert info.video_codec == "h264" and info.pix_fmt == "yuv420p"
    assert info.audio_codec == "aac"
    assert abs((info.duration_s or 0) - 7.0) < 0.2
    assert result.thumbnail.is_file() and result.thumbnail.stat().st_size < 200_000
    assert source.is_file()  # the original is kept
