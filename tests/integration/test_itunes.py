"""iTunes client against the fake iTunes over HTTP; throttle and cache with a fake clock."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from core.errors import InvalidInput, MusicError
from core.music.itunes import (
    BUSY_MESSAGE,
    ITunesClient,
    SlidingWindowLimiter,
    Track,
    TTLCache,
    parse_search,
)
from tests.fakes.itunes import FakeITunes


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def songs(fake_itunes: FakeITunes) -> FakeITunes:
    fake_itunes.add(
        "sakura",
        fake_itunes.song(1, "Sakura Sakura", "Koto Ensemble"),
        fake_itunes.song(2, "No Preview", "Nobody", preview=False),
        fake_itunes.song(3, "Cherry Blossom", "Band & Co"),
    )
    return fake_itunes


@pytest_asyncio.fixture
async def itunes(fake_itunes: FakeITunes, clock: FakeClock) -> AsyncIterator[ITunesClient]:
    async with ITunesClient(
        fake_itunes.url, busy_penalty=0.0, timeout=2.0, clock=clock, sleep=clock.sleep
    ) as client:
        yield client


# --- pure parts ---------------------------------------------------------------------------------


def test_parse_skips_results_without_preview_or_not_songs() -> None:
    data = {
        "resultCount": 5,
        "results": [
            {
                "wrapperType": "track",
                "kind": "song",
                "trackId": 7,
                "trackName": "Song",
                "artistName": "Artist",
                "collectionName": "Album",
                "previewUrl": "https://audio.example/p.m4a",
                "trackViewUrl": "https://music.apple.com/t/7",
                "artworkUrl100": "https://img.example/100.jpg",
            },
            {"trackId": 8, "trackName": "No preview", "artistName": "A"},
            {
                "kind": "music-video",
                "trackId": 9,
                "trackName": "MV",
                "artistName": "A",
                "previewUrl": "https://x/p.m4v",
            },
            {"trackName": "missing id", "artistName": "A", "previewUrl": "https://x/p.m4a"},
            "garbage",
        ],
    }
    assert parse_search(data) == [
        Track(
            track_id=7,
            title="Song",
            artist="Artist",
            album="Album",
            preview_url="https://audio.example/p.m4a",
            store_url="https://music.apple.com/t/7",
            artwork_url="https://img.example/100.jpg",
        )
    ]
    assert parse_search({"resultCount": 0, "results": []}) == []
    with pytest.raises(MusicError):
        parse_search({"results": "nope"})


def test_credit() -> None:
    track = Track(
        track_id=1,
        title="Song",
        artist="Artist",
        preview_url="https://p",
        store_url="https://music.apple.com/t/1",
    )
    assert track.credit() == "♪ Song — Artist\nhttps://music.apple.com/t/1"
    assert track.model_copy(update={"store_url": None}).credit() == "♪ Song — Artist"


def test_sliding_window_limiter() -> None:
    limiter = SlidingWindowLimiter(calls=3, window=60.0)
    assert [limiter.try_acquire(t) for t in (0.0, 10.0, 20.0)] == [0.0, 0.0, 0.0]
    assert limiter.try_acquire(30.0) == pytest.approx(30.0)  # the call at 0 frees at 60
    assert limiter.try_acquire(59.9) == pytest.approx(0.1)
    assert limiter.try_acquire(60.0) == 0.0
    assert limiter.try_acquire(60.0) == pytest.approx(10.0)  # now 10, 20, 60 in the window
    limiter.block_until(200.0)
    assert limiter.delay(150.0) == pytest.approx(50.0)
    assert limiter.try_acquire(200.0) == 0.0
    with pytest.raises(ValueError):
        SlidingWindowLimiter(calls=0, window=1.0)


def test_ttl_cache_is_a_bounded_lru() -> None:
    cache: TTLCache[str, int] = TTLCache(maxsize=2, ttl=10.0)
    cache.put("a", 1, now=0.0)
    cache.put("b", 2, now=0.0)
    assert cache.get("a", now=1.0) == 1  # "a" is now the most recent
    cache.put("c", 3, now=1.0)
    assert cache.get("b", now=1.0) is None and len(cache) == 2
    assert cache.get("a", now=9.9) == 1
    assert cache.get("a", now=10.0) is None
    assert cache.get("c", now=10.9) == 3


# --- over HTTP ----------------------------------------------------------------------------------


async def test_search_parses_tracks_and_sends_the_documented_query(
    songs: FakeITunes, itunes: ITunesClient
) -> None:
    tracks = await itunes.search("  Sakura ")
    assert [t.title for t in tracks] == ["Sakura Sakura", "Cherry Blossom"]
    assert tracks[0].preview_url == songs.preview_url("1")
    assert tracks[0].store_url and tracks[0].artwork_url and tracks[0].album == "Fake Album"
    assert songs.last_query == {
        "term": "Sakura",
        "media": "music",
        "entity": "song",
        "limit": "10",
        "country": "US",
    }
    assert await itunes.search("zzz unknown") == []


async def test_answers_are_cached(
    songs: FakeITunes, itunes: ITunesClient, clock: FakeClock
) -> None:
    first = await itunes.search("sakura")
    assert await itunes.search("SAKURA  ") == first
    assert songs.search_calls == 1
    clock.now += 6 * 3600 + 1  # past the TTL
    await itunes.search("sakura")
    assert songs.search_calls == 2


@pytest.mark.parametrize("mode", ["403", "429"])
async def test_throttled_answers_are_a_polite_error_and_never_cached(
    songs: FakeITunes, itunes: ITunesClient, mode: str
) -> None:
    songs.mode = mode  # type: ignore[assignment]
    with pytest.raises(MusicError) as caught:
        await itunes.search("sakura")
    assert caught.value.user_message == BUSY_MESSAGE
    songs.mode = "ok"
    assert len(await itunes.search("sakura")) == 2
    assert songs.search_calls == 2


async def test_after_a_403_the_client_backs_off_without_calling(
    songs: FakeITunes, clock: FakeClock
) -> None:
    async with ITunesClient(
        songs.url, busy_penalty=30.0, max_wait=1.0, clock=clock, sleep=clock.sleep
    ) as client:
        songs.mode = "403"
        with pytest.raises(MusicError):
            await client.search("sakura")
        songs.mode = "ok"
        with pytest.raises(MusicError) as caught:
            await client.search("sakura")
        assert "30 s" in caught.value.user_message
        assert songs.search_calls == 1
        clock.now += 30
        assert await client.search("sakura")
        assert songs.search_calls == 2


async def test_throttle_raises_when_the_wait_is_long(songs: FakeITunes, clock: FakeClock) -> None:
    async with ITunesClient(
        songs.url, calls=2, window=60.0, max_wait=5.0, clock=clock, sleep=clock.sleep
    ) as client:
        await client.search("a")
        clock.now += 1
        await client.search("b")
        with pytest.raises(MusicError) as caught:
            await client.search("c")
        assert "try again in 59 s" in caught.value.user_message
        assert songs.search_calls == 2
        assert await client.search("a") == []  # cached answers are not throttled
        assert songs.search_calls == 2


async def test_throttle_waits_when_the_wait_is_short(songs: FakeITunes, clock: FakeClock) -> None:
    async with ITunesClient(
        songs.url, calls=2, window=10.0, max_wait=10.0, clock=clock, sleep=clock.sleep
    ) as client:
        for term in ("a", "b", "c"):
            await client.search(term)
        assert clock.sleeps == [pytest.approx(10.0)]
        assert songs.search_calls == 3


async def test_server_errors_and_unreachable(songs: FakeITunes, clock: FakeClock) -> None:
    async with ITunesClient(songs.url, clock=clock, sleep=clock.sleep) as client:
        songs.mode = "500"
        with pytest.raises(MusicError):
            await client.search("sakura")
        url = songs.url
        await songs.close()
        with pytest.raises(MusicError) as caught:
            await ITunesClient(url, timeout=1.0).search("sakura")
        assert "not reachable" in caught.value.user_message
        with pytest.raises(InvalidInput):
            await client.search("   ")


async def test_preview_download(songs: FakeITunes, itunes: ITunesClient, tmp_path: Path) -> None:
    (track, _) = await itunes.search("sakura")
    dest = await itunes.download_preview(track, tmp_path / "music" / "preview.m4a")
    data = dest.read_bytes()
    assert data == songs.preview and data[4:8] == b"ftyp"
    assert [p.name for p in dest.parent.iterdir()] == ["preview.m4a"]


async def test_preview_download_limits(songs: FakeITunes, clock: FakeClock, tmp_path: Path) -> None:
    async with ITunesClient(songs.url, preview_max_bytes=100, clock=clock) as client:
        with pytest.raises(MusicError):
            await client.download_preview(songs.preview_url("1"), tmp_path / "p.m4a")
        with pytest.raises(MusicError):
            await client.download_preview("file:///etc/passwd", tmp_path / "p.m4a")
        with pytest.raises(MusicError):
            await client.download_preview(f"{songs.url}/missing", tmp_path / "p.m4a")
    assert list(tmp_path.iterdir()) == []
