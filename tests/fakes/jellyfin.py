"""A fake Jellyfin server over real HTTP (aiohttp on 127.0.0.1, ephemeral port).

What it does like Jellyfin:
- auth only by ``Authorization: MediaBrowser Token="<key>"`` (exact); a wrong key, the legacy
  ``X-Emby-Token``/``X-MediaBrowser-Token`` headers and ``?api_key=`` get 401;
- ``GET /System/Info/Public`` is anonymous, ``GET /System/Info`` needs the key;
- ``GET/POST /Library/VirtualFolders`` (POST: name, collectionType, paths, refreshLibrary; 204);
- ``POST /Library/Media/Updated`` -> 204; after `scan_delay` seconds it "scans" each path: the
  file (mapped to disk through `disk_map`) becomes an item (Video/Photo by extension, Name from
  the .nfo ``<title>`` beside a video, else the file stem) when it exists;
- ``POST /Library/Refresh`` -> 204 and, after `scan_delay`, a scan of every library location;
- ``GET /Items`` with recursive, searchTerm (substring of Name, any case), fields (Path only
  when asked), includeItemTypes, parentId, sortBy=DateCreated, sortOrder, limit.

Controls: `stop()` (connections refused) / `start()` (same port), `media_updated_status` to
make that endpoint fail, `response_delay` (slow answers), `requests` (a log of every request),
`add_folder()`, `add_item()`, `disk_map` (Jellyfin path prefix -> local directory).
"""

from __future__ import annotations

import asyncio
import uuid
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest_asyncio
from aiohttp import web

API_KEY = "jf-test-key-0123456789abcdef"
VIDEO_EXT = {".mp4", ".mkv", ".webm", ".mov", ".m4v"}
PHOTO_EXT = {".png", ".jpg", ".jpeg", ".webp", ".gif"}
COLLECTION_TYPES = {
    "movies",
    "tvshows",
    "music",
    "musicvideos",
    "homevideos",
    "boxsets",
    "books",
    "mixed",
}


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: list[tuple[str, str]]
    headers: dict[str, str]
    json: Any = None


@dataclass
class FakeItem:
    id: str
    name: str
    path: str
    type: str
    library_id: str | None
    created: int


@dataclass
class FakeFolder:
    name: str
    locations: list[str]
    collection_type: str | None
    item_id: str = field(default_factory=lambda: uuid.uuid4().hex)


class FakeJellyfin:
    def __init__(self, *, api_key: str = API_KEY, scan_delay: float = 0.2) -> None:
        self.api_key = api_key
        self.scan_delay = scan_delay
        self.server_id = uuid.uuid4().hex
        self.server_name = "fake-jellyfin"
        self.version = "10.11.0"
        self.folders: list[FakeFolder] = []
        self.items: list[FakeItem] = []
        self.requests: list[RecordedRequest] = []
        # Jellyfin path prefix -> directory on this disk (identity when empty).
        self.disk_map: dict[str, Path] = {}
        # When set, POST /Library/Media/Updated answers this status instead of 204.
        self.media_updated_status: int | None = None
        # Seconds every answer is held back (to test client timeouts).
        self.response_delay = 0.0
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._counter = 0

    # --- control ----------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def auth_value(self) -> str:
        return f'MediaBrowser Token="{self.api_key}"'

    async def start(self) -> None:
        app = web.Application(middlewares=[self._record])
        app.router.add_get("/System/Info/Public", self._public_info)
        app.router.add_get("/System/Info", self._info)
        app.router.add_get("/Library/VirtualFolders", self._folders_get)
        app.router.add_post("/Library/VirtualFolders", self._folders_post)
        app.router.add_post("/Library/Media/Updated", self._media_updated)
        app.router.add_post("/Library/Refresh", self._refresh)
        app.router.add_get("/Items", self._items)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
        await site.start()
        if not self.port:
            self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        """Go down: the port refuses connections until `start()`."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def close(self) -> None:
        await self.stop()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def add_folder(
        self, name: str, locations: list[str], collection_type: str | None = "homevideos"
    ) -> FakeFolder:
        folder = FakeFolder(name, list(locations), collection_type)
        self.folders.append(folder)
        return folder

    def add_item(self, name: str, path: str, type_: str = "Video") -> FakeItem:
        self._counter += 1
        item = FakeItem(uuid.uuid4().hex, name, path, type_, self._library_of(path), self._counter)
        self.items.append(item)
        return item

    def requests_to(self, path: str, method: str | None = None) -> list[RecordedRequest]:
        return [
            r for r in self.requests if r.path == path and (method is None or r.method == method)
        ]

    def item_at(self, path: str) -> FakeItem | None:
        return next((item for item in self.items if item.path == path), None)

    # --- scanning ---------------------------------------------------------------------------

    def _disk_path(self, jellyfin_path: str) -> Path:
        for prefix, directory in sorted(self.disk_map.items(), key=lambda kv: -len(kv[0])):
            if jellyfin_path == prefix or jellyfin_path.startswith(prefix.rstrip("/") + "/"):
                rest = jellyfin_path[len(prefix.rstrip("/")) :].lstrip("/")
                return directory / rest if rest else directory
        return Path(jellyfin_path)

    def _library_of(self, path: str) -> str | None:
        for folder in self.folders:
            for location in folder.locations:
                if path == location or path.startswith(location.rstrip("/") + "/"):
                    return folder.item_id
        return None

    def _scan_file(self, jellyfin_path: str) -> None:
        disk = self._disk_path(jellyfin_path)
        ext = disk.suffix.lower()
        if not disk.is_file() or disk.name.startswith(".") or self.item_at(jellyfin_path):
            return
        if ext in VIDEO_EXT:
            name, type_ = disk.stem, "Video"
            nfo = disk.with_suffix(".nfo")
            if nfo.is_file():
                title = ET.parse(nfo).getroot().findtext("title")
                name = title or name
        elif ext in PHOTO_EXT:
            name, type_ = disk.stem, "Photo"
        else:
            return
        self.add_item(name, jellyfin_path, type_)

    def _scan_later(self, jellyfin_paths: list[str]) -> None:
        async def scan() -> None:
            await asyncio.sleep(self.scan_delay)
            for path in jellyfin_paths:
                self._scan_file(path)

        task = asyncio.get_running_loop().create_task(scan())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _all_files(self) -> list[str]:
        found: list[str] = []
        for folder in self.folders:
            for location in folder.locations:
                disk = self._disk_path(location)
                if disk.is_dir():
                    for file in sorted(disk.rglob("*")):
                        rel = file.relative_to(disk).as_posix()
                        found.append(location.rstrip("/") + "/" + rel)
        return found

    # --- HTTP -------------------------------------------------------------------------------

    @web.middleware
    async def _record(self, request: web.Request, handler: Any) -> web.StreamResponse:
        body: Any = None
        if request.can_read_body:
            raw = await request.read()
            try:
                body = await request.json() if raw else None
            except ValueError:
                body = raw.decode(errors="replace")
        self.requests.append(
            RecordedRequest(
                request.method,
                request.path,
                list(request.query.items()),
                dict(request.headers),
                body,
            )
        )
        if self.response_delay:
            await asyncio.sleep(self.response_delay)
        if request.path != "/System/Info/Public" and not self._authorized(request):
            return web.Response(status=401)
        return await handler(request)

    def _authorized(self, request: web.Request) -> bool:
        if "api_key" in request.query or "ApiKey" in request.query:
            return False
        return request.headers.get("Authorization") == self.auth_value

    def _info_body(self) -> dict[str, Any]:
        return {"Id": self.server_id, "Version": self.version, "ServerName": self.server_name}

    async def _public_info(self, request: web.Request) -> web.Response:
        return web.json_response({**self._info_body(), "LocalAddress": self.url})

    async def _info(self, request: web.Request) -> web.Response:
        return web.json_response({**self._info_body(), "OperatingSystem": "Linux"})

    async def _folders_get(self, request: web.Request) -> web.Response:
        return web.json_response(
            [
                {
                    "Name": f.name,
                    "Locations": f.locations,
                    "CollectionType": f.collection_type,
                    "ItemId": f.item_id,
                    "LibraryOptions": {},
                    "RefreshStatus": "Idle",
                }
                for f in self.folders
            ]
        )

    async def _folders_post(self, request: web.Request) -> web.Response:
        name = request.query.get("name", "")
        collection_type = request.query.get("collectionType")
        paths = request.query.getall("paths", [])
        if not name or (collection_type is not None and collection_type not in COLLECTION_TYPES):
            return web.Response(status=400, text="bad library")
        if any(f.name.casefold() == name.casefold() for f in self.folders):
            return web.Response(status=400, text="There is already a media library with the name")
        self.add_folder(name, paths, collection_type)
        if request.query.get("refreshLibrary", "").lower() == "true":
            self._scan_later(self._all_files())
        return web.Response(status=204)

    async def _media_updated(self, request: web.Request) -> web.Response:
        if self.media_updated_status is not None:
            return web.Response(status=self.media_updated_status)
        body = await request.json()
        paths = [u["Path"] for u in body.get("Updates", []) if u.get("UpdateType") == "Created"]
        self._scan_later(paths)
        return web.Response(status=204)

    async def _refresh(self, request: web.Request) -> web.Response:
        self._scan_later(self._all_files())
        return web.Response(status=204)

    async def _items(self, request: web.Request) -> web.Response:
        query = request.query
        items = list(self.items)
        if types := query.get("includeItemTypes"):
            wanted = {t.strip() for t in types.split(",")}
            items = [i for i in items if i.type in wanted]
        if term := query.get("searchTerm"):
            items = [i for i in items if term.casefold() in i.name.casefold()]
        if parent := query.get("parentId"):
            items = [i for i in items if i.library_id == parent]
        if query.get("sortBy") == "DateCreated":
            items.sort(key=lambda i: i.created, reverse=query.get("sortOrder") == "Descending")
        total = len(items)
        if limit := query.get("limit"):
            items = items[: int(limit)]
        fields = {f.strip() for f in query.get("fields", "").split(",")}
        out = []
        for item in items:
            entry: dict[str, Any] = {
                "Id": item.id,
                "Name": item.name,
                "Type": item.type,
                "ServerId": self.server_id,
            }
            if "Path" in fields:
                entry["Path"] = item.path
            out.append(entry)
        return web.json_response({"Items": out, "TotalRecordCount": total, "StartIndex": 0})


@pytest_asyncio.fixture
async def fake_jellyfin() -> AsyncIterator[FakeJellyfin]:
    server = FakeJellyfin()
    await server.start()
    try:
        yield server
    finally:
        await server.close()
