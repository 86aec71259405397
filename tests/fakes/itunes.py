"""A fake iTunes Search API over real HTTP (aiohttp on 127.0.0.1, ephemeral port).

- ``GET /search?term=..&media=music&entity=song&limit=..&country=..`` answers canned results
  per term (`results[term.casefold()]`, else none) as ``text/javascript`` like Apple does;
- ``GET /previews/{name}.m4a`` serves a real small AAC file made with ffmpeg;
- `mode` = "ok" | "403" | "429" | "500": 403/429 answer with an empty body, like Apple;
- `search_calls` / `preview_calls` count the calls.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Literal

import imageio_ffmpeg
import pytest
import pytest_asyncio
from aiohttp import web

Mode = Literal["ok", "403", "429", "500"]


def make_preview_m4a(path: Path, seconds: float = 1.0) -> Path:
    """A real AAC .m4a (sine tone), like an iTunes preview but short."""
    subprocess.run(
        [
            imageio_ffmpeg.get_ffmpeg_exe(),
            "-hide_banner",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            f"sine=frequency=440:duration={seconds}",
            "-c:a",
            "aac",
            "-b:a",
            "64k",
            str(path),
        ],
        check=True,
        timeout=60,
    )
    return path


class FakeITunes:
    def __init__(self, preview: bytes) -> None:
        self.preview = preview
        self.results: dict[str, list[dict[str, Any]]] = {}
        self.mode: Mode = "ok"
        self.search_calls = 0
        self.preview_calls = 0
        self.last_query: dict[str, str] = {}
        self.port = 0
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def preview_url(self, name: str) -> str:
        return f"{self.url}/previews/{name}.m4a"

    def song(
        self,
        track_id: int,
        title: str,
        artist: str,
        *,
        preview: bool = True,
        album: str = "Fake Album",
    ) -> dict[str, Any]:
        """One result as Apple writes it."""
        result: dict[str, Any] = {
            "wrapperType": "track",
            "kind": "song",
            "trackId": track_id,
            "artistName": artist,
            "collectionName": album,
            "trackName": title,
            "trackViewUrl": f"https://music.apple.com/us/album/x/{track_id}?i={track_id}",
            "artworkUrl100": f"https://is1-ssl.mzstatic.com/image/{track_id}/100x100bb.jpg",
            "trackTimeMillis": 201000,
            "country": "USA",
            "currency": "USD",
        }
        if preview:
            result["previewUrl"] = self.preview_url(str(track_id))
        return result

    def add(self, term: str, *songs: dict[str, Any]) -> None:
        self.results.setdefault(term.casefold(), []).extend(songs)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/search", self._search)
        app.router.add_get("/previews/{name}", self._preview)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _search(self, request: web.Request) -> web.Response:
        self.search_calls += 1
        self.last_query = dict(request.query)
        if self.mode in ("403", "429"):
            return web.Response(status=int(self.mode))
        if self.mode == "500":
            return web.Response(status=500, text="oops")
        results = self.results.get(request.query.get("term", "").casefold(), [])
        limit = int(request.query.get("limit", "50"))
        body = {"resultCount": len(results[:limit]), "results": results[:limit]}
        return web.Response(
            text="\n\n\n" + json.dumps(body), content_type="text/javascript", charset="utf-8"
        )

    async def _preview(self, request: web.Request) -> web.Response:
        self.preview_calls += 1
        return web.Response(body=self.preview, content_type="audio/x-m4a")


@pytest.fixture(scope="session")
def itunes_preview_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("itunes") / "preview.m4a"
    return make_preview_m4a(path).read_bytes()


@pytest_asyncio.fixture
async def fake_itunes(itunes_preview_bytes: bytes) -> AsyncIterator[FakeITunes]:
    server = FakeITunes(itunes_preview_bytes)
    await server.start()
    try:
        yield server
    finally:
        await server.close()
