"""Jellyfin HTTP client: identity, key check, libraries, "new file" notification, item lookup.

Authentication is only ``Authorization: MediaBrowser Token="<key>"`` (the legacy
``X-Emby-Token`` header is switched off by Jellyfin 12). Every call has a timeout.

Failures:
- network error, timeout, 5xx -> `LibraryUnavailable` (retryable: the server may come back);
- 401 (key rejected) and 403 (key without admin rights) -> `LibraryAuthError`;
- any other 4xx, or an answer that is not what the API documents -> `LibraryRequestError`.
"""

from __future__ import annotations

import asyncio
import unicodedata
from collections.abc import Sequence
from types import TracebackType
from typing import Any, Literal, Self, TypeVar

import aiohttp
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from core.errors import ConfigError, LibraryError, describe
from core.library.layout import item_link
from core.logs import get_logger, register_secret
from core.settings import sendable_api_key

log = get_logger(__name__)

HOMEVIDEOS = "homevideos"
# Library types that index photos as well as videos.
_PHOTO_CAPABLE = frozenset({HOMEVIDEOS, "mixed"})
_RECENT_LIMIT = 100

_M = TypeVar("_M", bound=BaseModel)


class LibraryUnavailable(LibraryError):
    """Jellyfin did not answer, timed out or failed (5xx): try again later."""

    retryable = True
    default_user_message = "The media library is not reachable right now; it will be retried."

    def __init__(
        self, message: str, *, status: int | None = None, user_message: str | None = None
    ) -> None:
        super().__init__(message, user_message=user_message)
        self.status = status


class LibraryAuthError(LibraryError):
    """The API key was rejected (401) or lacks admin rights (403): retrying will not help."""

    retryable = False

    def __init__(self, message: str, *, status: int, user_message: str | None = None) -> None:
        super().__init__(message, user_message=user_message)
        self.status = status


class LibraryRequestError(LibraryError):
    """Jellyfin refused the request (4xx) or answered something unexpected."""

    retryable = False

    def __init__(
        self, message: str, *, status: int | None = None, user_message: str | None = None
    ) -> None:
        super().__init__(message, user_message=user_message)
        self.status = status


# --- payloads --------------------------------------------------------------------------------


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True, frozen=True)


class SystemInfo(_Model):
    """`/System/Info/Public` (and the same fields of `/System/Info`)."""

    id: str = Field(alias="Id", min_length=1)
    version: str | None = Field(default=None, alias="Version")
    server_name: str | None = Field(default=None, alias="ServerName")


class VirtualFolder(_Model):
    """One library from `/Library/VirtualFolders`."""

    name: str = Field(alias="Name")
    locations: tuple[str, ...] = Field(default=(), alias="Locations")
    collection_type: str | None = Field(default=None, alias="CollectionType")
    item_id: str | None = Field(default=None, alias="ItemId")

    @field_validator("locations", mode="before")
    @classmethod
    def _none_is_empty(cls, value: object) -> object:
        return () if value is None else value


class Item(_Model):
    """One item of `/Items` (with ``fields=Path``)."""

    id: str = Field(alias="Id", min_length=1)
    name: str | None = Field(default=None, alias="Name")
    path: str | None = Field(default=None, alias="Path")
    type: str | None = Field(default=None, alias="Type")


class ItemsPage(_Model):
    items: tuple[Item, ...] = Field(default=(), alias="Items")
    total_record_count: int = Field(default=0, alias="TotalRecordCount")


class MediaUpdate(_Model):
    path: str = Field(alias="Path")
    update_type: Literal["Created", "Modified", "Deleted"] = Field(alias="UpdateType")


class MediaUpdates(_Model):
    updates: tuple[MediaUpdate, ...] = Field(alias="Updates")


# --- helpers ---------------------------------------------------------------------------------


def _norm_location(path: str) -> str:
    stripped = path.rstrip("/\\")
    return stripped or path


def _is_under(path: str, location: str) -> bool:
    path, location = _norm_location(path), _norm_location(location)
    if path == location:
        return True
    return any(path.startswith(location + sep) for sep in ("/", "\\"))


def _same_path(a: str, b: str) -> bool:
    return unicodedata.normalize("NFC", a) == unicodedata.normalize("NFC", b)


def auth_header(api_key: str) -> str:
    """The exact Authorization value Jellyfin 10.x-12.x accept for an API key."""
    if not sendable_api_key(api_key):
        raise ConfigError("JELLYFIN_API_KEY contains characters that cannot be sent")
    return f'MediaBrowser Token="{api_key}"'


class JellyfinClient:
    """One Jellyfin server. Use as ``async with JellyfinClient(...) as jf:`` or call `close()`.

    `url` is how the bot reaches the server; `public_url` (optional) is what people open in
    links. `timeout` bounds every request (seconds).
    """

    def __init__(
        self,
        url: str,
        api_key: str,
        *,
        public_url: str | None = None,
        timeout: float = 10.0,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        register_secret(api_key)
        self._auth = auth_header(api_key)
        self.url = url.rstrip("/")
        self.public_url = (public_url or url).rstrip("/")
        self._timeout = aiohttp.ClientTimeout(total=timeout, connect=min(timeout, 5.0))
        self._session = session
        self._own_session = session is None
        self._server_id: str | None = None

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
            self._session = aiohttp.ClientSession(timeout=self._timeout)
            self._own_session = True
        return self._session

    async def _request(
        self,
        method: str,
        path: str,
        *,
        params: Sequence[tuple[str, str]] | None = None,
        json_body: Any = None,
        auth: bool = True,
        want_json: bool = True,
    ) -> Any:
        headers = {"Accept": "application/json"}
        if auth:
            headers["Authorization"] = self._auth
        try:
            async with self._http().request(
                method,
                self.url + path,
                params=list(params) if params else None,
                json=json_body,
                headers=headers,
                timeout=self._timeout,
            ) as response:
                status = response.status
                if status in (401, 403):
                    what = "API key rejected" if status == 401 else "API key lacks admin rights"
                    raise LibraryAuthError(
                        f"Jellyfin {method} {path}: {status} ({what})",
                        status=status,
                        user_message="The media library rejected the bot's API key.",
                    )
                if status >= 500:
                    raise LibraryUnavailable(f"Jellyfin {method} {path}: {status}", status=status)
                if status >= 400:
                    text = (await response.text(errors="replace"))[:200]
                    raise LibraryRequestError(
                        f"Jellyfin {method} {path}: {status} {text!r}", status=status
                    )
                if not want_json:
                    return None
                try:
                    return await response.json(content_type=None)
                except ValueError as error:
                    raise LibraryRequestError(
                        f"Jellyfin {method} {path}: answer is not JSON", status=status
                    ) from error
        except (aiohttp.ClientError, TimeoutError) as error:
            raise LibraryUnavailable(f"Jellyfin {method} {path}: {describe(error)}") from error

    @staticmethod
    def _parse(model: type[_M], data: Any, what: str) -> _M:
        try:
            return model.model_validate(data)
        except ValidationError as error:
            raise LibraryRequestError(f"unexpected Jellyfin answer for {what}: {error}") from None

    # --- identity ----------------------------------------------------------------------------

    async def public_info(self) -> SystemInfo:
        """`GET /System/Info/Public` (anonymous): server id, version, name."""
        info = self._parse(
            SystemInfo, await self._request("GET", "/System/Info/Public", auth=False), "info"
        )
        self._server_id = info.id
        return info

    async def check_key(self) -> SystemInfo:
        """An authenticated call (`GET /System/Info`); a rejected key raises LibraryAuthError."""
        info = self._parse(SystemInfo, await self._request("GET", "/System/Info"), "info")
        self._server_id = info.id
        return info

    async def server_id(self) -> str:
        if self._server_id is None:
            await self.public_info()
        assert self._server_id is not None
        return self._server_id

    async def link_for(self, item_id: str) -> str:
        """`{public_url}/web/#/details?id=<item>&serverId=<server>`."""
        return item_link(self.public_url, item_id, await self.server_id())

    # --- libraries ---------------------------------------------------------------------------

    async def virtual_folders(self) -> list[VirtualFolder]:
        data = await self._request("GET", "/Library/VirtualFolders")
        if not isinstance(data, list):
            raise LibraryRequestError("unexpected Jellyfin answer for virtual folders")
        return [self._parse(VirtualFolder, entry, "virtual folder") for entry in data]

    @staticmethod
    def _match_library(
        folders: Sequence[VirtualFolder], name: str, path: str
    ) -> VirtualFolder | None:
        for folder in folders:
            if any(_is_under(path, location) for location in folder.locations):
                return folder
        for folder in folders:
            if folder.name.casefold() == name.casefold():
                raise LibraryRequestError(
                    f"Jellyfin library {name!r} exists but does not contain {path!r} "
                    f"(locations: {list(folder.locations)})",
                    user_message="The media library is set up with another folder.",
                )
        return None

    async def ensure_library(self, name: str, path: str, *, create: bool) -> VirtualFolder:
        """The library that holds `path` (as Jellyfin sees it): found by location, else by name;
        created as a "homevideos" library only when `create` is true."""
        folder = self._match_library(await self.virtual_folders(), name, path)
        if folder is None:
            if not create:
                raise LibraryRequestError(
                    f"no Jellyfin library named {name!r} or containing {path!r}; create it in "
                    "Jellyfin (type Home videos and photos) or set JELLYFIN_CREATE_LIBRARY=true",
                    user_message="The media library is not set up.",
                )
            await self._request(
                "POST",
                "/Library/VirtualFolders",
                params=[
                    ("name", name),
                    ("collectionType", HOMEVIDEOS),
                    ("paths", path),
                    ("refreshLibrary", "true"),
                ],
                want_json=False,
            )
            log.info("jellyfin library created", library=name, path=path)
            folder = self._match_library(await self.virtual_folders(), name, path)
            if folder is None:
                raise LibraryRequestError(f"Jellyfin did not list library {name!r} once created")
        if folder.collection_type not in _PHOTO_CAPABLE:
            log.warning(
                "jellyfin library does not index photos",
                library=folder.name,
                collection_type=folder.collection_type,
            )
        return folder

    # --- new files ---------------------------------------------------------------------------

    async def notify_created(self, paths: Sequence[str]) -> Literal["updated", "refresh"]:
        """Tell Jellyfin about new files (`POST /Library/Media/Updated`); when it refuses or
        fails, queue a full scan (`POST /Library/Refresh`). Returns which one worked."""
        body = MediaUpdates(
            updates=tuple(MediaUpdate(path=path, update_type="Created") for path in paths)
        ).model_dump(mode="json", by_alias=True)
        try:
            await self._request("POST", "/Library/Media/Updated", json_body=body, want_json=False)
            return "updated"
        except LibraryAuthError:
            raise
        except (LibraryRequestError, LibraryUnavailable) as error:
            if isinstance(error, LibraryUnavailable) and error.status is None:
                raise  # not reachable at all: a refresh would fail the same way
            log.warning("jellyfin media update refused, asking for a scan", error=str(error))
        await self._request("POST", "/Library/Refresh", want_json=False)
        return "refresh"

    async def find_item_by_path(
        self, path: str, name: str, *, parent_id: str | None = None
    ) -> Item | None:
        """The Video/Photo item whose `Path` is exactly `path`. Searches by `name` (Jellyfin
        has no filter by path), then, when a library id is given, among its newest items."""
        base = [
            ("recursive", "true"),
            ("fields", "Path"),
            ("includeItemTypes", "Video,Photo"),
        ]
        if parent_id:
            base.append(("parentId", parent_id))
        queries = [[*base, ("searchTerm", name)]]
        if parent_id:
            queries.append(
                [
                    *base,
                    ("sortBy", "DateCreated"),
                    ("sortOrder", "Descending"),
                    ("limit", str(_RECENT_LIMIT)),
                ]
            )
        for params in queries:
            page = self._parse(
                ItemsPage, await self._request("GET", "/Items", params=params), "items"
            )
            for item in page.items:
                if item.path is not None and _same_path(item.path, path):
                    return item
        return None

    async def wait_for_item(
        self,
        path: str,
        name: str,
        *,
        attempts: int,
        interval: float,
        parent_id: str | None = None,
    ) -> Item | None:
        """Look for the item up to `attempts` times, `interval` seconds apart (Jellyfin
        debounces new files by its library-monitor delay). None when it never appeared."""
        for attempt in range(max(attempts, 1)):
            item = await self.find_item_by_path(path, name, parent_id=parent_id)
            if item is not None:
                return item
            if attempt + 1 < attempts:
                await asyncio.sleep(interval)
        return None
