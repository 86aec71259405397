"""Music edges: an iTunes that answers garbage, hangs, or streams an endless or empty preview;
a soundtrack whose source went away before the video was ready; a music file without sound.
Each ends in a defined error (and its sentence for the user), never a hang or a stray file."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Literal

import pytest
import pytest_asyncio
from aiohttp import web
from PIL import Image

from core.errors import InvalidInput, MediaError, MusicError
from core.media.runner import run_ffmpeg
from core.music.itunes import ITunesClient
from core.music.mix import UnusableAudio, mix_soundtrack
from core.music.service import (
    UPLOAD_MAX_BYTES,
    MusicService,
    SoundtrackChoice,
    SoundtrackUnavailable,
)
from core.settings import Settings

SearchMode = Literal["ok", "garbage", "500", "hang"]
PreviewMode = Literal["ok", "empty", "hang", "stall", "endless"]
PREVIEW = b"\x00\x00\x00\x18ftypM4A " + bytes(2000)
SHORT = 0.3  # seconds: the timeout given to the client when the server hangs
MIX_FAILED = "The soundtrack could not be added to the video."


class MisbehavingITunes:
    """An iTunes Search API over real HTTP whose answers are set per test."""

    def __init__(self) -> None:
        self.search: SearchMode = "ok"
        self.preview: PreviewMode = "ok"
        self.search_calls = 0
        self.preview_calls = 0
        self.release = asyncio.Event()  # set at close: hanging handlers end
        self.port = 0
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def preview_url(self, track_id: int) -> str:
        return f"{self.url}/previews/{track_id}.m4a"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/search", self._search)
        app.router.add_get("/previews/{name}", self._preview)
        self._runner = web.AppRunner(app, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def close(self) -> None:
        self.release.set()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _search(self, request: web.Request) -> web.StreamResponse:
        self.search_calls += 1
        if self.search == "hang":
            await self.release.wait()
        if self.search == "garbage":
            return web.Response(text="<html><body>Service Unavailable</body></html>")
        if self.search == "500":
            return web.Response(status=500, text="oops")
        song = {
            "wrapperType": "track",
            "kind": "song",
            "trackId": 42,
            "trackName": "Sakura Song",
            "artistName": "Hana",
            "previewUrl": self.preview_url(42),
            "trackViewUrl": "https://music.apple.com/us/album/x/42?i=42",
        }
        return web.json_response({"resultCount": 1, "results": [song]})

    async def _preview(self, request: web.Request) -> web.StreamResponse:
        self.preview_calls += 1
        if self.preview == "hang":
            await self.release.wait()
        if self.preview == "empty":
            return web.Response(body=b"", content_type="audio/x-m4a")
        if self.preview == "stall":  # a promised length, a first part, then nothing
            response = web.StreamResponse(headers={"Content-Length": str(len(PREVIEW))})
            await response.prepare(request)
            await response.write(PREVIEW[:100])
            await self.release.wait()
            return response
        if self.preview == "endless":  # no Content-Length: chunks until the client stops
            response = web.StreamResponse()
            response.enable_chunked_encoding()
            await response.prepare(request)
            try:
                for _ in range(2000):  # 128 MB at most; the client stops after 256 kB
                    if self.release.is_set():
                        break
                    await response.write(bytes(64 * 1024))
            except ConnectionError:
                pass
            return response
        return web.Response(body=PREVIEW, content_type="audio/x-m4a")


@pytest_asyncio.fixture
async def apple() -> AsyncIterator[MisbehavingITunes]:
    server = MisbehavingITunes()
    await server.start()
    try:
        yield server
    finally:
        await server.close()


@pytest_asyncio.fixture
async def client(apple: MisbehavingITunes) -> AsyncIterator[ITunesClient]:
    async with ITunesClient(
        apple.url, timeout=SHORT, preview_timeout=SHORT, preview_max_bytes=256 * 1024
    ) as itunes:
        yield itunes


def _settings(tmp_path: Path, music_dir: Path | None = None) -> Settings:
    return Settings(data_dir=tmp_path / "data", music_dir=music_dir, itunes_enabled=False)


def _files(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file())


# --------------------------------------------------------------------------- iTunes search


async def test_search_answer_that_is_not_json_is_an_error_and_not_cached(
    apple: MisbehavingITunes, client: ITunesClient
) -> None:
    apple.search = "garbage"
    for _ in range(2):
        with pytest.raises(MusicError) as caught:
            await client.search("sakura")
        assert str(caught.value) == "iTunes answer is not JSON"
        assert caught.value.user_message == "The music source is not available."
    assert apple.search_calls == 2
    apple.search = "ok"
    assert [t.title for t in await client.search("sakura")] == ["Sakura Song"]


async def test_search_that_hangs_times_out(apple: MisbehavingITunes, client: ITunesClient) -> None:
    apple.search = "hang"
    started = time.monotonic()
    with pytest.raises(MusicError) as caught:
        await client.search("sakura")
    assert time.monotonic() - started < SHORT + 1.5  # not the 10 s default
    assert str(caught.value).startswith("iTunes search failed: ")
    assert caught.value.user_message == "Music search is not reachable right now."
    assert apple.search_calls == 1


# --------------------------------------------------------------------------- iTunes previews


@pytest.mark.parametrize("mode", ["hang", "stall"])
async def test_preview_that_hangs_times_out_and_leaves_nothing(
    apple: MisbehavingITunes, client: ITunesClient, tmp_path: Path, mode: PreviewMode
) -> None:
    apple.preview = mode
    started = time.monotonic()
    with pytest.raises(MusicError) as caught:
        await client.download_preview(apple.preview_url(42), tmp_path / "itunes" / "42.m4a")
    assert time.monotonic() - started < SHORT + 1.5  # not the 30 s default
    assert str(caught.value).startswith("preview download failed: ")
    assert caught.value.user_message == "The song preview could not be downloaded."
    assert _files(tmp_path) == []


@pytest.mark.parametrize(
    ("mode", "error"),
    [
        # without a length and never ending: cut at the cap
        pytest.param("endless", f"preview is larger than {256 * 1024} bytes", id="endless"),
        pytest.param("empty", "preview download was empty", id="empty"),
    ],
)
async def test_preview_too_large_or_empty_is_an_error_and_leaves_nothing(
    apple: MisbehavingITunes, client: ITunesClient, tmp_path: Path, mode: PreviewMode, error: str
) -> None:
    apple.preview = mode
    with pytest.raises(MusicError) as caught:
        await client.download_preview(apple.preview_url(42), tmp_path / "42.m4a")
    assert str(caught.value) == error
    assert _files(tmp_path) == []


# --------------------------------------------------------------------------- the service


@pytest.mark.parametrize("mode", ["garbage", "500", "hang"])
async def test_local_matches_are_offered_when_itunes_fails(
    apple: MisbehavingITunes, client: ITunesClient, tmp_path: Path, mode: SearchMode
) -> None:
    music = tmp_path / "music"
    music.mkdir()
    (music / "Sakura Theme.mp3").write_bytes(b"ID3" + bytes(100))
    service = MusicService(_settings(tmp_path, music), itunes=client)
    apple.search = mode
    assert await service.search("sakura") == [
        SoundtrackChoice("local", "Sakura Theme.mp3", "Sakura Theme")
    ]
    with pytest.raises(MusicError):  # nothing local: the failure is the answer
        await service.search("ocean")
    assert apple.search_calls == 2


async def test_upload_over_the_limit_is_refused_before_it_is_written(tmp_path: Path) -> None:
    service = MusicService(_settings(tmp_path))
    with pytest.raises(InvalidInput) as caught:
        await service.store_upload(bytes(UPLOAD_MAX_BYTES + 1), "long mix.mp3")
    assert caught.value.user_message == "That audio file is too large (at most 20 MB)."
    assert not (tmp_path / "data").exists()


async def test_a_cached_preview_is_used_without_asking_itunes(
    apple: MisbehavingITunes, client: ITunesClient, tmp_path: Path
) -> None:
    service = MusicService(_settings(tmp_path), itunes=client)
    (choice,) = await service.search("sakura")
    first = await service.fetch(choice)
    assert first == tmp_path / "data" / "music" / "itunes" / "42.m4a"
    assert first.read_bytes() == PREVIEW
    apple.preview = "hang"  # would time out if it were asked again
    assert await service.fetch(choice) == first
    assert apple.preview_calls == 1


async def test_a_preview_that_cannot_be_downloaded_names_the_download(
    apple: MisbehavingITunes, client: ITunesClient, tmp_path: Path
) -> None:
    service = MusicService(_settings(tmp_path), itunes=client)
    (choice,) = await service.search("sakura")
    apple.preview = "empty"
    with pytest.raises(SoundtrackUnavailable) as caught:
        await service.fetch(choice)
    assert caught.value.reason == "download_failed"
    assert str(caught.value) == "preview download was empty"
    assert not (tmp_path / "data" / "music" / "itunes" / "42.m4a").exists()


@pytest.mark.parametrize(
    ("source", "key", "preview", "itunes", "message", "reason"),
    [
        ("local", "Sakura Theme.mp3", None, False, "MUSIC_DIR is not set any more", "source_off"),
        ("upload", "3f2a.mp3", None, False, "uploaded soundtrack 3f2a.mp3 is gone", "gone"),
        (
            "upload",
            "../secret.mp3",
            None,
            False,
            "uploaded soundtrack ../secret.mp3 is gone",
            "gone",
        ),
        (
            "itunes",
            "42",
            "https://audio.example/42.m4a",
            False,
            "iTunes previews are not enabled",
            "source_off",
        ),
        ("itunes", "43", None, True, "iTunes track 43 has no preview", "gone"),
    ],
    ids=["music-dir-unset", "upload-gone", "upload-outside", "itunes-disabled", "no-preview-url"],
)
async def test_fetch_of_a_source_that_went_away_is_a_music_error(
    tmp_path: Path,
    source: str,
    key: str,
    preview: str | None,
    itunes: bool,
    message: str,
    reason: str,
) -> None:
    """A job keeps its soundtrack choice while it waits for the GPU; meanwhile the operator may
    unset MUSIC_DIR or ITUNES_ENABLED, or the upload may be cleaned up. The error names why
    (the video is then sent without music, saying so)."""
    settings = _settings(tmp_path)
    (settings.data_dir / "music").mkdir(parents=True)
    (settings.data_dir / "music" / "secret.mp3").write_bytes(b"ID3")  # not an upload
    client = ITunesClient("http://127.0.0.1:9", timeout=SHORT) if itunes else None
    service = MusicService(settings, itunes=client)
    choice = SoundtrackChoice(source, key, "Song", preview_url=preview)  # type: ignore[arg-type]
    try:
        with pytest.raises(SoundtrackUnavailable) as caught:
            await service.fetch(choice)
    finally:
        await service.close()
    assert isinstance(caught.value, MusicError)
    assert str(caught.value) == message and caught.value.reason == reason
    assert caught.value.user_message == "The music source is not available."
    assert _files(settings.data_dir) == ["music/secret.mp3"]


async def test_fetch_of_a_local_file_deleted_since_it_was_chosen(tmp_path: Path) -> None:
    music = tmp_path / "music"
    music.mkdir()
    (music / "Sakura Theme.mp3").write_bytes(b"ID3" + bytes(100))
    service = MusicService(_settings(tmp_path, music))
    (choice,) = await service.search("sakura")
    (music / "Sakura Theme.mp3").unlink()
    with pytest.raises(SoundtrackUnavailable) as caught:
        await service.fetch(choice)
    assert caught.value.reason == "gone"
    assert caught.value.user_message == "That music file cannot be used."
    music.rmdir()  # the whole folder gone (unmounted)
    with pytest.raises(SoundtrackUnavailable) as caught:
        await service.fetch(choice)
    assert caught.value.reason == "gone"
    assert caught.value.user_message == "The local music folder is not available."


# --------------------------------------------------------------------------- mixing


async def _ffmpeg(*args: str) -> None:
    await run_ffmpeg(["-y", *args], what="make test input", timeout_s=30)


VIDEO = ["-f", "lavfi", "-i", "testsrc=s=64x48:r=10:d=0.5", "-c:v", "libx264"]
VIDEO += ["-preset", "ultrafast", "-pix_fmt", "yuv420p", "-an"]


async def _silent_video(path: Path) -> Path:
    """A short H.264 MP4 without any audio stream."""
    await _ffmpeg(*VIDEO, "-f", "mp4", str(path))
    return path


async def _live_stream(path: Path) -> Path:
    """A Matroska video written to a pipe, as a live stream is: no duration in its header."""
    result = await run_ffmpeg(
        [*VIDEO, "-f", "matroska", "pipe:1"],
        what="make test input",
        timeout_s=30,
        capture_stdout=True,
    )
    path.write_bytes(result.stdout)
    return path


async def _tone(path: Path) -> Path:
    await _ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:duration=0.5", str(path))
    return path


async def test_a_music_file_without_sound_is_explained_to_the_user(tmp_path: Path) -> None:
    """A video-only file named .m4a in MUSIC_DIR is offered (only its name is known) but
    cannot be mixed: the user is told the music has no sound, nothing is left behind."""
    music = tmp_path / "music"
    music.mkdir()
    await _silent_video(music / "Silent Theme.m4a")
    video = await _silent_video(tmp_path / "video.mp4")
    service = MusicService(_settings(tmp_path, music))
    (choice,) = await service.search("silent")
    audio = await service.fetch(choice)
    out = tmp_path / "out"
    with pytest.raises(UnusableAudio) as caught:
        await mix_soundtrack(video, audio, out / "video_music.mp4")
    assert str(caught.value) == "Silent Theme.m4a has no audio stream"
    assert caught.value.user_message == "The music file has no sound I can use."
    assert not caught.value.gone
    assert not out.exists()


async def test_a_music_file_gone_or_unreadable_at_the_mix_is_unusable_audio(
    tmp_path: Path,
) -> None:
    """The audio fails its probe (deleted after the fetch, or not audio at all): the audio is
    at fault, not the video or ffmpeg (`UnusableAudio`, `gone` when the file is missing)."""
    video = await _silent_video(tmp_path / "video.mp4")
    out = tmp_path / "out"
    with pytest.raises(UnusableAudio) as caught:
        await mix_soundtrack(video, tmp_path / "deleted.mp3", out / "video_music.mp4")
    assert caught.value.gone
    junk = tmp_path / "junk.mp3"
    junk.write_bytes(b"ID3" + bytes(500))
    with pytest.raises(UnusableAudio) as caught:
        await mix_soundtrack(video, junk, out / "video_music.mp4")
    assert not caught.value.gone
    assert caught.value.user_message == "The music file has no sound I can use."
    assert not out.exists()


@pytest.mark.parametrize(
    ("name", "message"),
    [("still.png", "still.png is not a video file"), ("live.mkv", "live.mkv: unknown duration")],
    ids=["still-image", "no-duration"],
)
async def test_mixing_into_something_that_is_no_timed_video_fails_cleanly(
    tmp_path: Path, name: str, message: str
) -> None:
    """Without the guard a still image got an ffmpeg failure and a stream without a duration
    a TypeError from the fade maths."""
    target = tmp_path / name
    if name.endswith(".png"):
        Image.new("RGB", (64, 48), "pink").save(target)
    else:
        await _live_stream(target)
    audio = await _tone(tmp_path / "tone.wav")
    out = tmp_path / "out"
    with pytest.raises(MediaError) as caught:
        await mix_soundtrack(target, audio, out / "mixed.mp4")
    assert str(caught.value) == message
    assert caught.value.user_message == MIX_FAILED
    assert not out.exists()
