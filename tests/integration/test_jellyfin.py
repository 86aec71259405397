"""Jellyfin client and filing against the fake Jellyfin over HTTP, plus atomic placement."""

from __future__ import annotations

import errno
import os
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

import aiohttp
import pytest
import pytest_asyncio

from core.errors import LibraryError
from core.library.filing import (
    FilingPending,
    FilingRefused,
    ScanWait,
    file_output,
    place_file,
)
from core.library.jellyfin import (
    JellyfinClient,
    LibraryAuthError,
    LibraryRequestError,
    LibraryUnavailable,
)
from core.library.layout import FilingMetadata, LayoutSettings, PathMapping, build_nfo
from core.models import JobKind
from tests.fakes.jellyfin import FakeJellyfin

JF_ROOT = "/media/anime"
PUBLIC = "https://jf.example.org"
FAST = ScanWait(attempts=40, interval=0.05)


def meta(kind: JobKind = JobKind.VIDEO, title: str = "Sakura at the beach") -> FilingMetadata:
    return FilingMetadata(
        title=title,
        prompt="1girl, sakura, beach <best quality> & sunset",
        characters=("Sakura", "Hinata"),
        chat_title="Anime Club",
        job_id="abcd1234-5678-90ab-cdef-1234567890ab",
        created_at=datetime(2026, 11, 25, 14, 32, tzinfo=UTC),
        kind=kind,
    )


@pytest.fixture
def library_root(tmp_path: Path) -> Path:
    root = tmp_path / "library"
    root.mkdir()
    return root


@pytest.fixture
def layout(library_root: Path) -> LayoutSettings:
    return LayoutSettings(
        root=library_root,
        mode="character",
        path_map=(PathMapping(PurePosixPath(str(library_root)), JF_ROOT),),
    )


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "out" / "result.mp4"
    path.parent.mkdir()
    path.write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(4096))
    return path


@pytest.fixture
def image_source(tmp_path: Path) -> Path:
    path = tmp_path / "out" / "result.png"
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(2048))
    return path


@pytest.fixture
def jf(fake_jellyfin: FakeJellyfin, library_root: Path) -> FakeJellyfin:
    fake_jellyfin.disk_map[JF_ROOT] = library_root
    fake_jellyfin.add_folder("Anime Studio", [JF_ROOT])
    fake_jellyfin.scan_delay = 0.2
    return fake_jellyfin


@pytest_asyncio.fixture
async def client(jf: FakeJellyfin) -> AsyncIterator[JellyfinClient]:
    async with JellyfinClient(jf.url, jf.api_key, public_url=PUBLIC, timeout=2.0) as c:
        yield c


def media_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix != ".nfo")


# --- client -----------------------------------------------------------------------------------


async def test_public_info_is_anonymous_and_check_key_sends_only_the_token(
    jf: FakeJellyfin, client: JellyfinClient
) -> None:
    info = await client.public_info()
    assert (info.id, info.version, info.server_name) == (jf.server_id, "10.11.0", "fake-jellyfin")
    assert "Authorization" not in jf.requests_to("/System/Info/Public")[0].headers
    assert (await client.check_key()).id == jf.server_id
    headers = jf.requests_to("/System/Info")[0].headers
    assert headers["Authorization"] == f'MediaBrowser Token="{jf.api_key}"'
    assert not {"X-Emby-Token", "X-MediaBrowser-Token", "X-Emby-Authorization"} & set(headers)


async def test_bad_key_is_rejected(jf: FakeJellyfin) -> None:
    async with JellyfinClient(jf.url, "wrong-key-123456", timeout=2.0) as bad:
        await bad.public_info()  # anonymous: still fine
        with pytest.raises(LibraryAuthError) as caught:
            await bad.check_key()
    assert isinstance(caught.value, LibraryError)
    assert not isinstance(caught.value, LibraryUnavailable)
    assert caught.value.status == 401
    assert "API key rejected" in str(caught.value)
    assert "wrong-key-123456" not in str(caught.value)


async def test_fake_rejects_the_legacy_header(jf: FakeJellyfin) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(
            f"{jf.url}/System/Info", headers={"X-Emby-Token": jf.api_key}
        ) as response:
            assert response.status == 401
        async with http.get(f"{jf.url}/System/Info", params={"api_key": jf.api_key}) as response:
            assert response.status == 401


async def test_unreachable_and_slow_servers_are_retryable(jf: FakeJellyfin) -> None:
    jf.response_delay = 1.0
    async with JellyfinClient(jf.url, jf.api_key, timeout=0.2) as slow:
        started = time.monotonic()
        with pytest.raises(LibraryUnavailable):
            await slow.check_key()
        assert time.monotonic() - started < 0.9
    jf.response_delay = 0.0
    await jf.stop()
    async with JellyfinClient(jf.url, jf.api_key, timeout=2.0) as down:
        with pytest.raises(LibraryUnavailable) as caught:
            await down.public_info()
    assert caught.value.retryable and caught.value.status is None


async def test_ensure_library_finds_by_location_or_name(
    jf: FakeJellyfin, client: JellyfinClient
) -> None:
    folder = await client.ensure_library("Other name", f"{JF_ROOT}/", create=False)
    assert folder.name == "Anime Studio" and folder.collection_type == "homevideos"
    assert (await client.ensure_library("Other", f"{JF_ROOT}/Sakura", create=False)).item_id
    # Same name, another folder: filing there would be invisible.
    with pytest.raises(LibraryRequestError):
        await client.ensure_library("anime studio", "/somewhere/else", create=True)
    assert not jf.requests_to("/Library/VirtualFolders", "POST")


async def test_ensure_library_creates_only_when_allowed(
    fake_jellyfin: FakeJellyfin,
) -> None:
    jf = fake_jellyfin
    async with JellyfinClient(jf.url, jf.api_key, timeout=2.0) as client:
        with pytest.raises(LibraryError) as caught:
            await client.ensure_library("Anime Studio", JF_ROOT, create=False)
        assert "JELLYFIN_CREATE_LIBRARY" in str(caught.value)
        assert not jf.requests_to("/Library/VirtualFolders", "POST")
        folder = await client.ensure_library("Anime Studio", JF_ROOT, create=True)
    assert folder.name == "Anime Studio" and folder.locations == (JF_ROOT,)
    (post,) = jf.requests_to("/Library/VirtualFolders", "POST")
    assert dict(post.query) == {
        "name": "Anime Studio",
        "collectionType": "homevideos",
        "paths": JF_ROOT,
        "refreshLibrary": "true",
    }


async def test_notify_falls_back_to_a_refresh(jf: FakeJellyfin, client: JellyfinClient) -> None:
    jf.media_updated_status = 500
    assert await client.notify_created([f"{JF_ROOT}/x.mp4"]) == "refresh"
    assert len(jf.requests_to("/Library/Refresh", "POST")) == 1
    jf.media_updated_status = None
    assert await client.notify_created([f"{JF_ROOT}/x.mp4"]) == "updated"
    assert len(jf.requests_to("/Library/Refresh", "POST")) == 1


async def test_find_item_matches_the_path_exactly(jf: FakeJellyfin, client: JellyfinClient) -> None:
    jf.add_item("Sakura beach", f"{JF_ROOT}/Sakura/beach.mp4.old")
    jf.add_item("Sakura beach", f"{JF_ROOT}/Other/beach.mp4")
    assert await client.find_item_by_path(f"{JF_ROOT}/Sakura/beach.mp4", "Sakura") is None
    wanted = jf.add_item("Sakura beach", f"{JF_ROOT}/Sakura/beach.mp4")
    found = await client.find_item_by_path(f"{JF_ROOT}/Sakura/beach.mp4", "sakura")
    assert found is not None and found.id == wanted.id
    query = dict(jf.requests_to("/Items")[-1].query)
    assert query["recursive"] == "true" and query["fields"] == "Path"
    assert query["includeItemTypes"] == "Video,Photo" and query["searchTerm"] == "sakura"
    # A name Jellyfin does not match: the newest items of the library are scanned instead.
    library = jf.folders[0].item_id
    found = await client.find_item_by_path(
        f"{JF_ROOT}/Sakura/beach.mp4", "nomatch", parent_id=library
    )
    assert found is not None and found.id == wanted.id


async def test_wait_for_item_is_bounded(client: JellyfinClient) -> None:
    started = time.monotonic()
    assert (
        await client.wait_for_item(f"{JF_ROOT}/none.mp4", "none", attempts=3, interval=0.05) is None
    )
    assert time.monotonic() - started < 1.0


# --- filing end to end ------------------------------------------------------------------------


async def test_filing_a_video_end_to_end(
    jf: FakeJellyfin,
    client: JellyfinClient,
    layout: LayoutSettings,
    library_root: Path,
    source: Path,
) -> None:
    result = await file_output(client, layout, source, meta(), wait=FAST)
    name = "2026-11-25 1432 Sakura at the beach [abcd1234]"
    assert result.library_path == library_root / "Sakura" / f"{name}.mp4"
    assert result.library_path.read_bytes() == source.read_bytes()
    nfo = result.library_path.with_name(f"{name}.nfo")
    assert nfo.read_bytes() == build_nfo(meta())
    assert result.jellyfin_path == f"{JF_ROOT}/Sakura/{name}.mp4"
    (notify,) = jf.requests_to("/Library/Media/Updated", "POST")
    assert notify.json == {"Updates": [{"Path": result.jellyfin_path, "UpdateType": "Created"}]}
    item = jf.item_at(result.jellyfin_path)
    assert item is not None and item.type == "Video" and item.name == "Sakura at the beach"
    assert result.item_id == item.id
    assert result.link == f"{PUBLIC}/web/#/details?id={item.id}&serverId={jf.server_id}"
    assert not [p for p in library_root.rglob(".*")]  # no temp files left


async def test_filing_an_image_makes_a_photo(
    jf: FakeJellyfin,
    client: JellyfinClient,
    layout: LayoutSettings,
    library_root: Path,
    image_source: Path,
) -> None:
    result = await file_output(client, layout, image_source, meta(JobKind.IMAGE), wait=FAST)
    assert result.library_path.name == "2026-11-25 1432 Sakura at the beach [abcd1234-p1].png"
    assert not result.library_path.with_suffix(".nfo").exists()
    item = jf.item_at(result.jellyfin_path)
    assert item is not None and item.type == "Photo"
    assert result.item_id == item.id and result.link is not None


async def test_not_indexed_yet_returns_no_link_then_a_retry_links_it(
    jf: FakeJellyfin,
    client: JellyfinClient,
    layout: LayoutSettings,
    library_root: Path,
    source: Path,
) -> None:
    jf.scan_delay = 0.5
    first = await file_output(
        client, layout, source, meta(), wait=ScanWait(attempts=2, interval=0.05)
    )
    assert first.item_id is None and first.link is None
    assert first.library_path.is_file()
    second = await file_output(
        client, layout, source, meta(), library_path=first.library_path, wait=FAST
    )
    assert second.library_path == first.library_path
    assert second.item_id is not None and second.link is not None
    assert media_files(library_root) == [first.library_path]


async def test_jellyfin_down_keeps_the_file_and_a_retry_is_idempotent(
    jf: FakeJellyfin,
    client: JellyfinClient,
    layout: LayoutSettings,
    library_root: Path,
    source: Path,
) -> None:
    await jf.stop()
    started = time.monotonic()
    with pytest.raises(FilingPending) as caught:
        await file_output(client, layout, source, meta(), wait=FAST)
    assert time.monotonic() - started < 2.0
    pending = caught.value
    assert isinstance(pending, LibraryUnavailable) and pending.retryable
    assert pending.result.library_path.read_bytes() == source.read_bytes()
    assert pending.result.library_path.with_suffix(".nfo").is_file()

    await jf.start()
    resumed = await file_output(
        client, layout, source, meta(), library_path=pending.result.library_path, wait=FAST
    )
    assert resumed.library_path == pending.result.library_path
    assert resumed.item_id is not None and resumed.link is not None
    # Same inputs without the stored path: same file, no second copy, no second notify.
    again = await file_output(client, layout, source, meta(), wait=FAST)
    assert again == resumed
    assert media_files(library_root) == [resumed.library_path]
    assert len(jf.requests_to("/Library/Media/Updated", "POST")) == 1


async def test_a_bad_key_fails_filing_but_the_file_is_written(
    jf: FakeJellyfin, layout: LayoutSettings, library_root: Path, source: Path
) -> None:
    async with JellyfinClient(jf.url, "wrong-key-123456", timeout=2.0) as bad:
        with pytest.raises(FilingRefused) as caught:
            await file_output(bad, layout, source, meta(), wait=FAST)
    refused = caught.value
    assert isinstance(refused.cause, LibraryAuthError) and refused.status == 401
    assert refused.retryable is False
    assert refused.user_message == "The media library rejected the bot's API key."
    # The error says where the written file is, so it can be recorded and resumed from.
    assert media_files(library_root) == [refused.result.library_path]
    assert refused.result.library_path.read_bytes() == source.read_bytes()


async def test_filing_without_jellyfin_only_writes(
    layout: LayoutSettings, library_root: Path, source: Path
) -> None:
    result = await file_output(None, layout, source, meta(), wait=FAST)
    assert result.item_id is None and result.link is None
    assert result.jellyfin_path.startswith(f"{JF_ROOT}/Sakura/")


async def test_a_different_result_with_the_same_name_gets_a_counter(
    jf: FakeJellyfin,
    client: JellyfinClient,
    layout: LayoutSettings,
    source: Path,
    tmp_path: Path,
) -> None:
    first = await file_output(client, layout, source, meta(), wait=FAST)
    other = tmp_path / "other.mp4"
    other.write_bytes(b"different bytes")
    second = await file_output(client, layout, other, meta(), wait=FAST)
    assert second.library_path.name == "2026-11-25 1432 Sakura at the beach [abcd1234] (2).mp4"
    assert second.library_path.with_name(
        "2026-11-25 1432 Sakura at the beach [abcd1234] (2).nfo"
    ).is_file()
    assert first.library_path.read_bytes() == source.read_bytes()
    assert second.item_id is not None and second.item_id != first.item_id


async def test_a_stored_path_outside_the_library_is_refused(
    layout: LayoutSettings, source: Path
) -> None:
    with pytest.raises(LibraryError):
        await file_output(None, layout, source, meta(), library_path=source)


# --- atomic placement -------------------------------------------------------------------------


def test_place_file_never_overwrites(tmp_path: Path, source: Path) -> None:
    dest = tmp_path / "lib" / "X.mp4"
    dest.parent.mkdir()
    dest.write_bytes(b"someone else's file")
    placed = place_file(source, dest)
    assert placed.name == "X (2).mp4"
    assert dest.read_bytes() == b"someone else's file"
    assert placed.read_bytes() == source.read_bytes()
    assert place_file(source, dest) == placed  # same bytes: reused, not copied again
    assert sorted(p.name for p in dest.parent.iterdir()) == ["X (2).mp4", "X.mp4"]


def test_place_file_skips_a_foreign_sidecar(tmp_path: Path, source: Path) -> None:
    dest = tmp_path / "lib" / "X.mp4"
    dest.parent.mkdir()
    (dest.parent / "X.nfo").write_text("<movie><title>other</title></movie>")
    placed = place_file(source, dest, sidecar=b"<movie/>")
    assert placed.name == "X (2).mp4"
    assert (dest.parent / "X (2).nfo").read_bytes() == b"<movie/>"
    assert (dest.parent / "X.nfo").read_text().startswith("<movie><title>other")
    # Our own sidecar left by a crash before the video was linked is adopted.
    lone = tmp_path / "lib" / "Y.mp4"
    (dest.parent / "Y.nfo").write_bytes(b"<movie/>")
    assert place_file(source, lone, sidecar=b"<movie/>") == lone


def test_place_file_without_hard_links(
    tmp_path: Path, source: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_link(src: object, dst: object) -> None:
        raise OSError(errno.EPERM, "hard links not supported")

    monkeypatch.setattr(os, "link", no_link)
    dest = tmp_path / "lib" / "X.mp4"
    dest.parent.mkdir()
    dest.write_bytes(b"taken")
    placed = place_file(source, dest)
    assert placed.name == "X (2).mp4" and dest.read_bytes() == b"taken"
    assert placed.read_bytes() == source.read_bytes()
    assert sorted(p.name for p in dest.parent.iterdir()) == ["X (2).mp4", "X.mp4"]


def test_place_file_missing_source(tmp_path: Path) -> None:
    with pytest.raises(LibraryError):
        place_file(tmp_path / "nope.mp4", tmp_path / "lib" / "X.mp4")
