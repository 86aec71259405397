"""6. Video post-processing time per second of 720p video: remux vs re-encode.

Test clips are made with the ffmpeg that the bot uses (`testsrc2`, 1280x720, 24 fps), in the
formats ComfyUI's video nodes write: H.264 yuv420p mp4 (SaveVideo: already Telegram-ready, so
`prepare_video` remuxes it), VP9 webm (SaveWEBM: re-encoded to H.264) and animated WebP
(SaveAnimatedWEBP: decoded by Pillow, piped as raw frames, re-encoded). Each is run through
`core.media.video.prepare_video` (probe, remux or encode, probe, thumbnail) `RUNS` times; the
median wall time is divided by the clip's duration.
"""

from __future__ import annotations

import time
from pathlib import Path

from core.media.runner import run_ffmpeg
from core.media.video import prepare_video
from tests.perf.common import BenchResult, Fakes, Postgres, pct

RUNS = 3
CLIPS = {
    # name: (seconds, fps, file suffix, encoder arguments)
    "h264 mp4 (remux)": (
        10,
        24,
        "mp4",
        ["-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-crf", "23"],
    ),
    "vp9 webm (re-encode)": (
        5,
        24,
        "webm",
        ["-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-b:v", "2M"],
    ),
    "animated webp (re-encode)": (
        3,
        16,
        "webp",
        ["-c:v", "libwebp_anim", "-loop", "0", "-quality", "70"],
    ),
}


async def _make_clip(path: Path, seconds: int, fps: int, args: list[str]) -> None:
    if path.exists():
        return
    source = f"testsrc2=size=1280x720:rate={fps}:duration={seconds}"
    await run_ffmpeg(
        ["-y", "-f", "lavfi", "-i", source, *args, str(path)],
        what=f"make {path.name}",
        timeout_s=600,
    )


async def run(pg: Postgres, fakes: Fakes, work: Path) -> BenchResult:
    result = BenchResult("6. video post-processing")
    folder = work / "video"
    folder.mkdir(exist_ok=True)
    for name, (seconds, fps, suffix, args) in CLIPS.items():
        clip = folder / f"{name.split()[0]}_{seconds}s.{suffix}"
        t0 = time.monotonic()
        await _make_clip(clip, seconds, fps, args)
        made = time.monotonic() - t0
        times = []
        remuxed = None
        for attempt in range(RUNS):
            t0 = time.perf_counter()
            out = await prepare_video(clip, folder / f"out_{attempt}_{clip.stem}.mp4")
            times.append(time.perf_counter() - t0)
            remuxed = out.remuxed
        per_second = pct(times, 50) / seconds
        result.note(
            f"{name}: {seconds} s 720p clip ({clip.stat().st_size // 1024} KB, made in"
            f" {made:.1f} s): prepare_video median {pct(times, 50):.2f} s"
            f" (runs {', '.join(f'{t:.2f}' for t in times)}), remuxed={remuxed},"
            f" {out.width}x{out.height}, {out.size_bytes // 1024} KB"
        )
        result.add(
            f"video 720p {name}",
            f"{per_second * 1000:.0f} ms per s of video ({seconds / pct(times, 50):.1f}x realtime)",
        )
    return result
