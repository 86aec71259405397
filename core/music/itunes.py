"""iTunes Search API client: song search with previews, throttled and cached.

Apple allows about 20 search calls a minute and answers 403 (sometimes 429) with an empty body
beyond that. This client therefore:

- caches answers per (term, country) for `cache_ttl` seconds in a bounded LRU (errors are never
  cached);
- throttles calls with a sliding window (`calls` per `window` seconds). Throttle policy: when the
  window is full the call *waits* if the next free slot is at most `max_wait` seconds away,
  otherwise it raises `MusicError` ("try again in N s") at once, so a Telegram handler never
  hangs for a minute;
- after a 403/429 treats the window as full for `busy_penalty` seconds, so it stops knocking.

Previews (AAC in .m4a, ~30 s) are downloaded with a size cap and a timeout.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Hashable
from pathlib import Path
from types import TracebackType
from typing import Any, Generic, Self, TypeVar
from urllib.parse import urlsplit

import aiohttp
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from core.errors import InvalidInput, MusicError, describe
from core.logs import get_logger

log = get_logger(__name__)

DEFAULT_BASE_URL = "https://itunes.apple.com"
MAX_TERM_CHARS = 100
MAX_ANSWER_BYTES = 2 * 1024 * 1024
PREVIEW_MAX_BYTES = 5 * 1024 * 1024
BUSY_MESSAGE = "Music search is busy right now, please try again in a minute."

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Track(BaseModel):
    """A song with a playable preview."""

    model_config = ConfigDict(frozen=True)

    track_id: int
    title: str
    artist: str
    album: str | None = None
    preview_url: str
    store_url: str | None = None
    artwork_url: str | None = None

    def credit(self) -> str:
        """Caption credit: ``♪ Title — Artist`` and, on the next line, the store link."""
        line = f"♪ {self.title} — {self.artist}"
        return f"{line}\n{self.store_url}" if self.store_url else line


class _Result(BaseModel):
    model_config = ConfigDict(extra="ignore")

    wrapper_type: str | None = Field(default=None, alias="wrapperType")
    kind: str | None = None
    track_id: int = Field(alias="trackId")
    track_name: str = Field(alias="trackName", min_length=1)
    artist_name: str = Field(alias="artistName", min_length=1)
    collection_name: str | None = Field(default=None, alias="collectionName")
    preview_url: str | None = Field(default=None, alias="previewUrl")
    track_view_url: str | None = Field(default=None, alias="trackViewUrl")
    artwork_url100: str | None = Field(default=None, alias="artworkUrl100")


class _Answer(BaseModel):
    model_config = ConfigDict(extra="ignore")

    result_count: int = Field(default=0, alias="resultCount")
    results: list[Any] = Field(default_factory=list)


def parse_search(data: Any) -> list[Track]:
    """Tracks of a search answer; results without `previewUrl` or not songs are skipped."""
    try:
        answer = _Answer.model_validate(data)
    except ValidationError as error:
        raise MusicError(f"unexpected iTunes answer: {error}") from None
    tracks: list[Track] = []
    for raw in answer.results:
        try:
            result = _Result.model_validate(raw)
        except ValidationError:
            continue
        if not result.preview_url:
            continue
        if result.wrapper_type not in (None, "track") or result.kind not in (None, "song"):
            continue
        tracks.append(
            Track(
                track_id=result.track_id,
                title=result.track_name,
                artist=result.artist_name,
                album=result.collection_name,
                preview_url=result.preview_url,
                store_url=result.track_view_url,
                artwork_url=result.artwork_url100,
            )
        )
    return tracks


def normalize_term(term: str) -> str:
    """One line, single spaces, capped; empty -> InvalidInput."""
    cleaned = " ".join(term.split())[:MAX_TERM_CHARS].strip()
    if not cleaned:
        raise InvalidInput("empty music search", user_message="Type a song or an artist to search.")
    return cleaned


# --- pure throttle and cache ------------------------------------------------------------------


class SlidingWindowLimiter:
    """At most `calls` calls in any `window` seconds. Pure: the time is passed in."""

    def __init__(self, calls: int, window: float) -> None:
        if calls < 1 or window <= 0:
            raise ValueError("a limiter needs calls >= 1 and window > 0")
        self.calls = calls
        self.window = window
        self._stamps: deque[float] = deque()
        self._blocked_until = 0.0

    def _prune(self, now: float) -> None:
        while self._stamps and self._stamps[0] <= now - self.window:
            self._stamps.popleft()

    def delay(self, now: float) -> float:
        """Seconds until a call is allowed (0.0: now)."""
        self._prune(now)
        wait = max(0.0, self._blocked_until - now)
        if len(self._stamps) >= self.calls:
            wait = max(wait, self._stamps[len(self._stamps) - self.calls] + self.window - now)
        return wait

    def try_acquire(self, now: float) -> float:
        """Record a call and return 0.0 when allowed; otherwise record nothing and return the
        seconds to wait."""
        wait = self.delay(now)
        if wait <= 0:
            self._stamps.append(now)
            return 0.0
        return wait

    def block_until(self, until: float) -> None:
        """Refuse every call until `until` (the server said "too many")."""
        self._blocked_until = max(self._blocked_until, until)


class TTLCache(Generic[K, V]):
    """Bounded LRU whose entries expire `ttl` seconds after they were stored. Pure."""

    def __init__(self, maxsize: int, ttl: float) -> None:
        self.maxsize = maxsize
        self.ttl = ttl
        self._data: OrderedDict[K, tuple[float, V]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: K, now: float) -> V | None:
        entry = self._data.get(key)
        if entry is None:
            return None
        expires, value = entry
        if now >= expires:
            del self._data[key]
            return None
        self._data.move_to_end(key)
        return value

    def put(self, key: K, value: V, now: float) -> None:
        if self.maxsize <= 0 or self.ttl <= 0:
            return
        self._data[key] = (now + self.ttl, value)
        self._data.move_to_end(key)
        while len(self._data) > self.maxsize:
            self._data.popitem(last=False)


# --- client -----------------------------------------------------------------------------------


async def _read_capped(response: aiohttp.ClientResponse, limit: int, what: str) -> bytes:
    if response.content_length is not None and response.content_length > limit:
        raise MusicError(f"{what} is {response.content_length} bytes (limit {limit})")
    data = bytearray()
    async for chunk in response.content.iter_chunked(64 * 1024):
        data.extend(chunk)
        if len(data) > limit:
            raise MusicError(f"{what} is larger than {limit} bytes")
    return bytes(data)


def _write_atomic(dest: Path, data: bytes) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex}.part")
    try:
        with tmp.open("xb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


class ITunesClient:
    """Search songs and download previews. `base_url` points tests at a fake server."""

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        *,
        country: str = "US",
        limit: int = 10,
        calls: int = 20,
        window: float = 60.0,
        max_wait: float = 3.0,
        busy_penalty: float = 60.0,
        cache_ttl: float = 6 * 3600.0,
        cache_size: int = 256,
        timeout: float = 10.0,
        preview_timeout: float = 30.0,
        preview_max_bytes: int = PREVIEW_MAX_BYTES,
        session: aiohttp.ClientSession | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.country = country
        self.limit = limit
        self.max_wait = max_wait
        self.busy_penalty = busy_penalty
        self.preview_max_bytes = preview_max_bytes
        self.limiter = SlidingWindowLimiter(calls, window)
        self.cache: TTLCache[tuple[str, str, int], tuple[Track, ...]] = TTLCache(
            cache_size, cache_ttl
        )
        self._timeout = aiohttp.ClientTimeout(total=timeout, connect=min(timeout, 5.0))
        self._preview_timeout = aiohttp.ClientTimeout(
            total=preview_timeout, connect=min(preview_timeout, 5.0)
        )
        self._session = session
        self._own_session = session is None
        self._clock = clock
        self._sleep = sleep
        self._lock = asyncio.Lock()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._own_session and self._session is not None:
            await self._session.close()
        self._session = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout, headers={"User-Agent": "AnimeStudioBot/0.1"}
            )
            self._own_session = True
        return self._session

    async def _throttle(self) -> None:
        async with self._lock:
            while True:
                wait = self.limiter.try_acquire(self._clock())
                if wait <= 0:
                    return
                if wait > self.max_wait:
                    seconds = math.ceil(wait)
                    raise MusicError(
                        f"iTunes throttle: next call in {wait:.1f} s",
                        user_message=f"Music search is busy, try again in {seconds} s.",
                    )
                await self._sleep(wait)

    async def search(self, term: str) -> list[Track]:
        """Songs with previews for `term` (possibly empty). Cached; throttled."""
        query = normalize_term(term)
        key = (query.casefold(), self.country, self.limit)
        cached = self.cache.get(key, self._clock())
        if cached is not None:
            return list(cached)
        await self._throttle()
        params = {
            "term": query,
            "media": "music",
            "entity": "song",
            "limit": str(self.limit),
            "country": self.country,
        }
        try:
            async with self._http().get(
                f"{self.base_url}/search", params=params, timeout=self._timeout
            ) as response:
                if response.status in (403, 429):
                    self.limiter.block_until(self._clock() + self.busy_penalty)
                    log.warning("itunes throttled us", status=response.status)
                    raise MusicError(
                        f"iTunes search answered {response.status}", user_message=BUSY_MESSAGE
                    )
                if response.status != 200:
                    raise MusicError(f"iTunes search answered {response.status}")
                body = await _read_capped(response, MAX_ANSWER_BYTES, "iTunes answer")
        except (aiohttp.ClientError, TimeoutError) as error:
            raise MusicError(
                f"iTunes search failed: {describe(error)}",
                user_message="Music search is not reachable right now.",
            ) from error
        try:
            data = json.loads(body)
        except ValueError:
            raise MusicError("iTunes answer is not JSON") from None
        tracks = parse_search(data)
        self.cache.put(key, tuple(tracks), self._clock())
        log.info("itunes search", results=len(tracks))
        return tracks

    async def download_preview(self, track: Track | str, dest: Path) -> Path:
        """Stream the preview into `dest` (replaced atomically); size-capped, timed out."""
        url = track.preview_url if isinstance(track, Track) else track
        if urlsplit(url).scheme not in ("http", "https"):
            raise MusicError(f"preview URL {url!r} is not http(s)")
        try:
            async with self._http().get(url, timeout=self._preview_timeout) as response:
                if response.status != 200:
                    raise MusicError(f"preview download answered {response.status}")
                data = await _read_capped(response, self.preview_max_bytes, "preview")
        except (aiohttp.ClientError, TimeoutError) as error:
            raise MusicError(
                f"preview download failed: {describe(error)}",
                user_message="The song preview could not be downloaded.",
            ) from error
        if not data:
            raise MusicError("preview download was empty")
        await asyncio.to_thread(_write_atomic, dest, data)
        return dest
