"""Failure paths of library filing: Jellyfin answering errors, garbage or nothing at all, disk
errors while a result is written into the library, name collisions, a retry that gives up, and
the scheduler's library task failing.

Against the fake Jellyfin over real HTTP (with answers rigged per endpoint) and a real
PostgreSQL. A hang lasts until the test ends; the client's short timeout ends the call."""

from __future__ import annotations

import asyncio
import errno
import os
import stat
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import pytest_asyncio
from aiohttp import web

from core.db import generations as gens
from core.db import outputs as outs
from core.db import people
from core.db.pool import Database, create_pool
from core.errors import ConfigError, LibraryError
from core.library import filing
from core.library.filing import place_file
from core.library.jellyfin import (
    JellyfinClient,
    LibraryAuthError,
    LibraryRequestError,
    LibraryUnavailable,
)
from core.library.layout import MAX_COUNTER, numbered
from core.library.service import MAX_ATTEMPTS, LibraryFiler
from core.models import ChatType, Generation, JobKind, LibraryStatus, Output
from core.scheduler import Maintenance, run_exclusive
from core.settings import Settings
from core.states import JobState
from tests import log_capture
from tests.engine import TO_DELIVERING, RecordingDeliverer
from tests.fakes.jellyfin import API_KEY, FakeJellyfin
from tests.integration import test_jellyfin as jellyfin_tests
from tests.log_capture import Logs

LIBRARY = "Anime Studio"
USER = 1

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


# --- a fake Jellyfin whose answers can be replaced per endpoint -----------------------------


class RiggedJellyfin(FakeJellyfin):
    """`rig["GET /Items"] = handler` replaces that endpoint's answer (after the auth check);
    `hang` never answers until the server closes."""

    def __init__(self) -> None:
        super().__init__(scan_delay=0.05)
        self.rig: dict[str, Handler] = {}
        self._released = asyncio.Event()

    async def hang(self, request: web.Request) -> web.StreamResponse:
        await self._released.wait()
        return web.Response(status=503)

    async def close(self) -> None:
        self._released.set()
        await super().close()

    async def _answer(self, key: str, request: web.Request, default: Handler) -> Any:
        return await self.rig.get(key, default)(request)

    async def _public_info(self, request: web.Request) -> Any:
        return await self._answer("GET /System/Info/Public", request, super()._public_info)

    async def _folders_get(self, request: web.Request) -> Any:
        return await self._answer("GET /Library/VirtualFolders", request, super()._folders_get)

    async def _folders_post(self, request: web.Request) -> Any:
        return await self._answer("POST /Library/VirtualFolders", request, super()._folders_post)

    async def _media_updated(self, request: web.Request) -> Any:
        return await self._answer("POST /Library/Media/Updated", request, super()._media_updated)

    async def _items(self, request: web.Request) -> Any:
        return await self._answer("GET /Items", request, super()._items)


def answer(
    status: int = 200, *, json_body: Any = None, text: str | None = None, ctype: str | None = None
) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        if json_body is not None:
            return web.json_response(json_body, status=status)
        return web.Response(status=status, text=text, content_type=ctype or "text/plain")

    return handler


async def no_content(request: web.Request) -> web.StreamResponse:
    return web.Response(status=204)


# Fixtures shared with tests/integration/test_jellyfin.py: the library folder, a result to file.
library_root = jellyfin_tests.library_root
source = jellyfin_tests.source


@pytest_asyncio.fixture
async def jf(library_root: Path) -> AsyncIterator[RiggedJellyfin]:
    server = RiggedJellyfin()
    await server.start()
    server.add_folder(LIBRARY, [str(library_root)])
    try:
        yield server
    finally:
        await server.close()


@pytest_asyncio.fixture
async def client(jf: RiggedJellyfin) -> AsyncIterator[JellyfinClient]:
    async with JellyfinClient(jf.url, jf.api_key, timeout=0.3) as c:
        yield c


logs = log_capture.logs  # the fixture (JSON lines at INFO while the test runs)


def media_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix != ".nfo")


def all_entries(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if not p.is_dir())


# --- the database side: delivered jobs whose outputs wait to be filed -----------------------


def settings_for(tmp_path: Path, library_root: Path, jf_url: str | None, **extra: Any) -> Settings:
    values: dict[str, Any] = {
        "comfyui_urls": ["http://127.0.0.1:9"],
        "data_dir": tmp_path / "data",
        "jellyfin_library_dir": library_root,
        "jellyfin_timeout_s": 0.3,
        "jellyfin_scan_attempts": 20,
        "jellyfin_scan_interval_s": 0.05,
        "library_retry_s": 60.0,
    }
    if jf_url is not None:
        values |= {"jellyfin_url": jf_url, "jellyfin_api_key": API_KEY}
    values.update(extra)
    return Settings(_env_file=None, **values)


@dataclass
class Desk:
    db: Database
    tmp_path: Path
    library_root: Path
    deliverer: RecordingDeliverer

    @property
    def pool(self) -> asyncpg.Pool:
        return self.db.pool

    def filer(self, jf_url: str | None, **extra: Any) -> LibraryFiler:
        settings = settings_for(self.tmp_path, self.library_root, jf_url, **extra)
        return LibraryFiler(settings, self.pool, self.deliverer)

    async def done_job(
        self,
        *,
        chat_id: int = -100,
        chat_title: str = "Anime Club",
        title: str = "Sakura at the beach",
        kind: JobKind = JobKind.IMAGE,
        data: bytes | None = None,
        delivery: bytes | None = None,
    ) -> tuple[Generation, Output]:
        """A delivered job with one output on disk, pending for the library."""
        await people.upsert_chat(self.pool, chat_id, ChatType.GROUP, title=chat_title)
        job, _alone = await gens.create_queued(
            self.pool,
            id=uuid.uuid4(),
            requester_id=USER,
            chat_id=chat_id,
            kind=kind,
            prompt_typed=title,
            workflow="txt2img" if kind is JobKind.IMAGE else "txt2video",
        )
        folder = self.tmp_path / "data" / "outputs" / str(job.id)
        folder.mkdir(parents=True)
        ext = ".png" if kind is JobKind.IMAGE else ".webm"
        source = folder / f"00_original{ext}"
        source.write_bytes(data if data is not None else os.urandom(3000))
        delivery_path = None
        if delivery is not None:
            delivery_path = folder / "00_delivery.mp4"
            delivery_path.write_bytes(delivery)
        output = await outs.save_output(
            self.pool,
            generation_id=job.id,
            position=0,
            kind=kind,
            file_path=str(source),
            delivery_path=str(delivery_path) if delivery_path else None,
            mime="image/png" if kind is JobKind.IMAGE else "video/webm",
            size_bytes=source.stat().st_size,
            sha256="a" * 64,
        )
        for state in TO_DELIVERING:
            await gens.transition(self.pool, job.id, state)
        await gens.record_delivery(self.pool, job.id, result_message_id=1)
        job = await gens.transition(self.pool, job.id, JobState.DONE)
        return job, output

    async def output(self, output_id: uuid.UUID) -> Output:
        found = await outs.get_output(self.pool, output_id)
        assert found is not None
        return found

    async def make_due(self, output_id: uuid.UUID) -> None:
        await self.pool.execute(
            "UPDATE outputs SET library_next_at = now() - interval '1 second' WHERE id = $1",
            output_id,
        )


@pytest_asyncio.fixture
async def desk(db: Database, tmp_path: Path, library_root: Path) -> Desk:
    await people.upsert_user(db.pool, USER, first_name="U")
    return Desk(db, tmp_path, library_root, RecordingDeliverer())


def assert_retry_scheduled(output: Output, status: LibraryStatus, attempts: int = 1) -> None:
    assert output.library_status is status
    assert output.library_attempts == attempts
    assert output.library_next_at is not None and output.library_next_at > datetime.now(UTC)
    assert output.jellyfin_link is None and output.jellyfin_item_id is None


async def assert_linked_on_retry(
    desk: Desk, jf: RiggedJellyfin, filer: LibraryFiler, output_id: uuid.UUID, filed: Path
) -> None:
    """Jellyfin answers again: the due retry links the one copy already filed, no second one."""
    jf.rig.clear()
    await desk.make_due(output_id)
    assert await filer.file_due() == 1
    linked = await desk.output(output_id)
    assert linked.library_status is LibraryStatus.LINKED
    assert linked.library_path == str(filed) and media_files(desk.library_root) == [filed]


# === the client: what Jellyfin answers =======================================================


@pytest.mark.parametrize(
    ("endpoint", "handler", "expected"),
    [
        (
            "GET /Library/VirtualFolders",
            answer(json_body={"Name": "not a list"}),
            "unexpected Jellyfin answer for virtual folders",
        ),
        (
            "GET /Items",
            answer(text="<html>Sign in to continue</html>", ctype="text/html"),
            "GET /Items: answer is not JSON",
        ),
        (
            "GET /Items",
            answer(json_body={"Items": [{"Name": "no id", "Path": "/x.png"}]}),
            "unexpected Jellyfin answer for items",
        ),
        (
            "GET /System/Info/Public",
            answer(json_body={"Id": "", "Version": "10.11.0"}),
            "unexpected Jellyfin answer for info",
        ),
    ],
    ids=["folders-not-a-list", "items-html", "items-without-id", "info-empty-id"],
)
async def test_garbage_answers_are_request_errors(
    jf: RiggedJellyfin,
    client: JellyfinClient,
    library_root: Path,
    endpoint: str,
    handler: Handler,
    expected: str,
) -> None:
    jf.rig[endpoint] = handler
    calls: dict[str, Callable[[], Awaitable[object]]] = {
        "GET /Library/VirtualFolders": lambda: client.ensure_library(
            LIBRARY, str(library_root), create=False
        ),
        "GET /Items": lambda: client.find_item_by_path("/x.png", "x"),
        "GET /System/Info/Public": lambda: client.link_for("item1"),
    }
    with pytest.raises(LibraryRequestError) as caught:
        await calls[endpoint]()
    assert not isinstance(caught.value, LibraryUnavailable)  # not mistaken for "down"
    assert expected in str(caught.value)
    assert caught.value.retryable is False


async def test_a_4xx_answer_is_a_request_error_with_a_bounded_body(
    jf: RiggedJellyfin, client: JellyfinClient, library_root: Path
) -> None:
    jf.rig["GET /Library/VirtualFolders"] = answer(404, text="x" * 1000)
    with pytest.raises(LibraryRequestError) as caught:
        await client.ensure_library(LIBRARY, str(library_root), create=False)
    assert caught.value.status == 404
    message = str(caught.value)
    assert message.startswith("Jellyfin GET /Library/VirtualFolders: 404 'xxx")
    assert "x" * 200 in message and "x" * 201 not in message


@pytest.mark.parametrize(
    ("failure", "outcome"),
    [("400", "refresh"), ("403", LibraryAuthError), ("hang", LibraryUnavailable)],
)
async def test_notify_falls_back_to_a_scan_only_when_that_can_help(
    jf: RiggedJellyfin, client: JellyfinClient, failure: str, outcome: Any
) -> None:
    """A refused update (4xx) asks for a full scan; a key without admin rights (403) or a
    server that does not answer at all would fail the scan too, so the error is raised."""
    jf.rig["POST /Library/Media/Updated"] = (
        jf.hang if failure == "hang" else answer(int(failure), text="no")
    )
    started = time.monotonic()
    if isinstance(outcome, str):
        assert await client.notify_created(["/lib/x.mp4"]) == outcome
        assert len(jf.requests_to("/Library/Refresh", "POST")) == 1
        return
    with pytest.raises(outcome) as caught:
        await client.notify_created(["/lib/x.mp4"])
    assert time.monotonic() - started < 1.0
    assert caught.value.status == (403 if failure == "403" else None)
    assert not jf.requests_to("/Library/Refresh")


def test_a_key_that_cannot_be_sent_is_refused_without_being_echoed() -> None:
    key = 'abc"def-0123456789'
    with pytest.raises(ConfigError) as caught:
        JellyfinClient("http://127.0.0.1:9", key)
    assert "JELLYFIN_API_KEY" in str(caught.value)
    assert key not in str(caught.value) and "def-0123456789" not in str(caught.value)


async def test_a_created_library_that_is_not_listed_is_an_error(
    jf: RiggedJellyfin, library_root: Path
) -> None:
    jf.folders.clear()
    jf.rig["POST /Library/VirtualFolders"] = no_content  # "created", but never listed
    async with JellyfinClient(jf.url, jf.api_key, timeout=0.3) as c:
        with pytest.raises(LibraryRequestError, match="did not list library 'Anime Studio'"):
            await c.ensure_library(LIBRARY, str(library_root), create=True)
    assert len(jf.requests_to("/Library/VirtualFolders", "POST")) == 1
    assert len(jf.requests_to("/Library/VirtualFolders", "GET")) == 2


async def test_a_library_that_does_not_index_photos_is_used_with_a_warning(
    jf: RiggedJellyfin, client: JellyfinClient, library_root: Path, logs: Logs
) -> None:
    jf.folders[0].collection_type = "movies"
    folder = await client.ensure_library(LIBRARY, str(library_root), create=False)
    assert folder.item_id == jf.folders[0].item_id
    (warning,) = logs.lines("jellyfin library does not index photos")
    assert warning["level"] == "warning"
    assert (warning["library"], warning["collection_type"]) == (LIBRARY, "movies")


# === placement on disk =======================================================================


@pytest.fixture
def dest(library_root: Path) -> Path:
    folder = library_root / "Sakura"
    folder.mkdir()
    return folder / "X.mp4"


def test_a_name_holding_other_bytes_of_the_same_size_is_a_collision(
    source: Path, dest: Path
) -> None:
    other = bytearray(source.read_bytes())
    other[-1] ^= 0xFF
    dest.write_bytes(bytes(other))
    placed = place_file(source, dest)
    assert placed.name == "X (2).mp4"
    assert placed.read_bytes() == source.read_bytes()
    assert dest.read_bytes() == bytes(other)  # not adopted, not overwritten


def test_a_dangling_symlink_at_the_name_is_skipped_not_followed(
    source: Path, dest: Path, tmp_path: Path
) -> None:
    target = tmp_path / "elsewhere" / "victim.mp4"
    dest.symlink_to(target)
    placed = place_file(source, dest)
    assert placed.name == "X (2).mp4" and placed.read_bytes() == source.read_bytes()
    assert dest.is_symlink() and not target.exists() and not target.parent.exists()


def test_a_dangling_symlink_at_the_sidecar_name_is_skipped(
    source: Path, dest: Path, tmp_path: Path
) -> None:
    target = tmp_path / "elsewhere" / "victim.nfo"
    (dest.parent / "X.nfo").symlink_to(target)
    placed = place_file(source, dest, sidecar=b"<movie/>")
    assert placed.name == "X (2).mp4" and placed.read_bytes() == source.read_bytes()
    assert (dest.parent / "X (2).nfo").read_bytes() == b"<movie/>"
    assert not dest.exists() and not target.exists()
    assert (dest.parent / "X.nfo").is_symlink()


def test_a_name_taken_between_check_and_link_moves_on_and_takes_its_sidecar_back(
    source: Path, dest: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process files a result under the same name at the same moment: ours goes to
    the next name, and the .nfo we had written for the lost name is removed (it would describe
    the other file)."""
    real_link = os.link

    def racing_link(src: Any, dst: Any) -> None:
        if Path(dst) == dest and not dest.exists():
            dest.write_bytes(b"the other process's video")
        real_link(src, dst)

    monkeypatch.setattr(os, "link", racing_link)
    placed = place_file(source, dest, sidecar=b"<movie>ours</movie>")
    assert placed.name == "X (2).mp4" and placed.read_bytes() == source.read_bytes()
    assert (dest.parent / "X (2).nfo").read_bytes() == b"<movie>ours</movie>"
    assert dest.read_bytes() == b"the other process's video"
    assert sorted(p.name for p in dest.parent.iterdir()) == ["X (2).mp4", "X (2).nfo", "X.mp4"]


def test_no_free_name_is_an_error_and_leaves_nothing_behind(
    source: Path, dest: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(filing, "MAX_COUNTER", 5)  # the real 999 names, only faster
    taken = [dest.with_name(numbered(dest.name, counter)) for counter in range(1, 6)]
    for path in taken:
        path.write_bytes(b"taken")
    with pytest.raises(LibraryError, match=r"no free name for .*X\.mp4 after 5 tries"):
        place_file(source, dest, sidecar=b"<movie/>")
    assert sorted(dest.parent.iterdir()) == sorted(taken)  # no temp file, no lone sidecar
    assert all(path.read_bytes() == b"taken" for path in taken)
    assert MAX_COUNTER == 999


@pytest.mark.parametrize("refused", ["open", "fsync"])
def test_a_folder_that_cannot_be_synced_does_not_fail_filing(
    source: Path, dest: Path, monkeypatch: pytest.MonkeyPatch, refused: str
) -> None:
    """Some network and FUSE mounts refuse to open or fsync a directory: the file itself is
    still written and synced."""
    real_open, real_fsync = os.open, os.fsync
    refusals: list[str] = []

    def open_(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if refused == "open" and os.path.isdir(path):
            refusals.append("open")
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, flags, *args, **kwargs)

    def fsync(fd: int) -> None:
        if refused == "fsync" and stat.S_ISDIR(os.fstat(fd).st_mode):
            refusals.append("fsync")
            raise OSError(errno.EINVAL, "Invalid argument")
        real_fsync(fd)

    monkeypatch.setattr(os, "open", open_)
    monkeypatch.setattr(os, "fsync", fsync)
    placed = place_file(source, dest, sidecar=b"<movie/>")
    assert placed == dest and dest.read_bytes() == source.read_bytes()
    assert dest.with_suffix(".nfo").read_bytes() == b"<movie/>"
    assert refusals == [refused, refused]  # the sidecar's folder sync, then the video's


# === the filer: stored state after each failure ==============================================


def disk_error(kind: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Make the next disk write fail like a full or broken disk; returns the error text."""
    if kind == "link":

        def link(src: Any, dst: Any) -> None:
            raise OSError(errno.EIO, "Input/output error")

        monkeypatch.setattr(os, "link", link)
        return "Input/output error"
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        if stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return "No space left on device"


@pytest.mark.parametrize(
    ("kind", "fails"),
    [(JobKind.IMAGE, "copy"), (JobKind.VIDEO, "sidecar"), (JobKind.IMAGE, "link")],
)
async def test_a_disk_error_keeps_the_output_pending_and_a_retry_files_it(
    desk: Desk,
    jf: RiggedJellyfin,
    logs: Logs,
    monkeypatch: pytest.MonkeyPatch,
    kind: JobKind,
    fails: str,
) -> None:
    """Disk full (or an I/O error) while the result is written into the library: nothing
    half-written is left there, the attempt is recorded with a next try, and once the disk is
    fine again the retry files and links it."""
    job, output = await desk.done_job(kind=kind)
    filer = desk.filer(jf.url)
    with monkeypatch.context() as patch:
        reason = disk_error(fails, patch)
        saved = await filer.file_output(job, output)
    assert saved is not None
    assert_retry_scheduled(saved, LibraryStatus.PENDING)
    assert saved.library_path is None
    assert all_entries(desk.library_root) == []  # no temp file, no sidecar, no half file
    (retry,) = logs.lines("library filing will be retried")
    assert retry["reason"].startswith("cannot write 00_original")
    assert reason in retry["reason"] and retry["gave_up"] is False

    await desk.make_due(output.id)
    assert await filer.file_due() == 1
    linked = await desk.output(output.id)
    assert linked.library_status is LibraryStatus.LINKED
    (filed,) = media_files(desk.library_root)
    assert str(filed) == linked.library_path
    assert filed.read_bytes() == Path(output.file_path).read_bytes()
    assert desk.deliverer.links == [(output.id, linked.jellyfin_link)]


async def test_one_output_that_cannot_be_written_does_not_block_the_others(
    desk: Desk, jf: RiggedJellyfin
) -> None:
    """The scheduler files due outputs one after the other: a result whose folder cannot be
    made (a file named like the folder is in the way) is retried later, the next is filed."""
    (desk.library_root / "Alpha").write_bytes(b"not a folder")
    _job_a, blocked = await desk.done_job(chat_id=-1, chat_title="Alpha")
    _job_b, fine = await desk.done_job(chat_id=-2, chat_title="Beta")
    filer = desk.filer(jf.url)

    assert await filer.file_due() == 2

    assert_retry_scheduled(await desk.output(blocked.id), LibraryStatus.PENDING)
    linked = await desk.output(fine.id)
    assert linked.library_status is LibraryStatus.LINKED
    assert Path(linked.library_path or "").parent == desk.library_root / "Beta"
    assert desk.deliverer.links == [(fine.id, linked.jellyfin_link)]
    assert (desk.library_root / "Alpha").read_bytes() == b"not a folder"
    # The library was looked up once and remembered for the second output.
    assert len(jf.requests_to("/Library/VirtualFolders", "GET")) == 1


async def test_jellyfin_hanging_leaves_the_file_filed_for_a_retry(
    desk: Desk, jf: RiggedJellyfin
) -> None:
    job, output = await desk.done_job()
    filer = desk.filer(jf.url)
    jf.rig["GET /Items"] = jf.hang
    started = time.monotonic()
    saved = await filer.file_output(job, output)
    assert time.monotonic() - started < 1.5  # bounded by JELLYFIN_TIMEOUT_S=0.3
    assert saved is not None
    assert_retry_scheduled(saved, LibraryStatus.FILED)
    (filed,) = media_files(desk.library_root)
    assert saved.library_path == str(filed)
    assert filed.read_bytes() == Path(output.file_path).read_bytes()
    assert not desk.deliverer.links

    await assert_linked_on_retry(desk, jf, filer, output.id, filed)


async def test_garbage_from_jellyfin_is_retried_without_a_second_copy(
    desk: Desk, jf: RiggedJellyfin, logs: Logs
) -> None:
    job, output = await desk.done_job()
    filer = desk.filer(jf.url)
    jf.rig["GET /Items"] = answer(text="<html>Sign in</html>", ctype="text/html")
    saved = await filer.file_output(job, output)
    assert saved is not None
    assert_retry_scheduled(saved, LibraryStatus.FILED)  # written: in the folder already
    (retry,) = logs.lines("library filing will be retried")
    assert "GET /Items: answer is not JSON" in retry["reason"]
    (filed,) = media_files(desk.library_root)
    assert saved.library_path == str(filed)

    await assert_linked_on_retry(desk, jf, filer, output.id, filed)


@pytest.mark.parametrize(
    ("endpoint", "status"),
    [
        ("GET /Library/VirtualFolders", 401),  # refused before the file is written: written
        ("GET /Items", 401),
        ("GET /Items", 400),
        ("POST /Library/Media/Updated", 403),
    ],
)
async def test_jellyfin_refusing_a_written_result_keeps_its_path_also_when_filing_gives_up(
    desk: Desk, jf: RiggedJellyfin, logs: Logs, endpoint: str, status: int
) -> None:
    """The file is written into the library folder, then Jellyfin refuses the calls about it
    (a revoked key, a 400): the output is `filed` with the file's path while filing is
    retried, and when it gives up it is `failed` for the Jellyfin part only: the path stays,
    so whoever looks at the output finds the file, and nothing is copied twice."""
    jf.rig[endpoint] = answer(status, text="refused")
    job, output = await desk.done_job()
    filer = desk.filer(jf.url)
    saved = await filer.file_output(job, output)
    assert saved is not None
    assert_retry_scheduled(saved, LibraryStatus.FILED)
    (filed,) = media_files(desk.library_root)
    assert saved.library_path == str(filed)
    assert filed.read_bytes() == Path(output.file_path).read_bytes()

    await desk.pool.execute(
        "UPDATE outputs SET library_attempts = $2, library_next_at = now() - interval '1 second'"
        " WHERE id = $1",
        output.id,
        MAX_ATTEMPTS - 1,
    )
    assert await filer.file_due() == 1  # the last attempt, refused again
    gave_up = await desk.output(output.id)
    assert gave_up.library_status is LibraryStatus.FAILED
    assert gave_up.library_attempts == MAX_ATTEMPTS and gave_up.library_next_at is None
    assert gave_up.library_path == str(filed)
    assert gave_up.jellyfin_link is None and gave_up.jellyfin_item_id is None
    assert media_files(desk.library_root) == [filed]  # resumed from the path: no second copy
    assert not desk.deliverer.links
    first, last = logs.lines("library filing will be retried")
    assert (first["gave_up"], last["gave_up"]) == (False, True)
    assert f"{endpoint}: {status}" in last["reason"]
    assert last["library_path"] == str(filed)
    assert await outs.due_for_library(desk.pool, datetime.now(UTC) + timedelta(days=30)) == []


async def test_a_result_refused_on_every_attempt_keeps_its_path_when_filing_gives_up(
    desk: Desk, jf: RiggedJellyfin
) -> None:
    """The give-up itself, with no path stored before (every earlier attempt was refused
    before it could record one): the failed output still says where the file is."""
    jf.rig["GET /Items"] = answer(401, text="no")
    job, output = await desk.done_job()
    await desk.pool.execute(
        "UPDATE outputs SET library_attempts = $2 WHERE id = $1", output.id, MAX_ATTEMPTS - 1
    )
    output = await desk.output(output.id)
    assert output.library_path is None
    saved = await desk.filer(jf.url).file_output(job, output)
    assert saved is not None and saved.library_status is LibraryStatus.FAILED
    (filed,) = media_files(desk.library_root)
    assert saved.library_path == str(filed)


async def test_the_api_key_echoed_in_an_error_body_never_reaches_the_logs(
    desk: Desk, jf: RiggedJellyfin, logs: Logs
) -> None:
    async def echo(request: web.Request) -> web.StreamResponse:
        text = f"bad request, Authorization: {request.headers['Authorization']}"
        return web.Response(status=400, text=text)

    jf.rig["GET /Library/VirtualFolders"] = echo
    job, output = await desk.done_job()
    saved = await desk.filer(jf.url).file_output(job, output)
    assert saved is not None
    # No library to index it yet: the file is kept and linked on a later attempt.
    assert_retry_scheduled(saved, LibraryStatus.FILED)
    assert Path(saved.library_path or "").is_file()
    (missing,) = logs.lines("jellyfin library not reachable or missing")
    assert "GET /Library/VirtualFolders: 400" in missing["reason"]
    assert 'MediaBrowser Token="***"' in missing["reason"]
    assert API_KEY not in logs.text


async def test_an_item_never_indexed_stays_filed_with_its_path(
    desk: Desk, jf: RiggedJellyfin, logs: Logs
) -> None:
    jf.rig["POST /Library/Media/Updated"] = no_content  # accepted, never scanned
    job, output = await desk.done_job()
    filer = desk.filer(jf.url, jellyfin_scan_attempts=2)
    saved = await filer.file_output(job, output)
    assert saved is not None
    assert_retry_scheduled(saved, LibraryStatus.FILED)
    (filed,) = media_files(desk.library_root)
    assert saved.library_path == str(filed)
    (retry,) = logs.lines("library filing will be retried")
    assert retry["reason"] == "not indexed yet"
    assert not desk.deliverer.links


async def test_without_jellyfin_the_result_is_only_written(desk: Desk) -> None:
    """A library folder and no Jellyfin API (JELLYFIN_URL/API key unset): the file written is
    the end of it, not a retry "not indexed yet" every few hours until it is marked failed."""
    job, output = await desk.done_job()
    filer = desk.filer(None)
    saved = await filer.file_output(job, output)
    assert saved is not None
    assert saved.library_status is LibraryStatus.FILED
    assert saved.library_attempts == 1 and saved.library_next_at is None
    (filed,) = media_files(desk.library_root)
    assert saved.library_path == str(filed)
    assert filed.parent == desk.library_root / "Anime Club"
    assert await filer.file_due() == 0  # nothing left to do
    assert await outs.due_for_library(desk.pool, datetime.now(UTC) + timedelta(days=30)) == []


async def test_a_video_is_filed_from_its_h264_copy(desk: Desk, jf: RiggedJellyfin) -> None:
    h264 = b"\x00\x00\x00\x18ftypmp42" + os.urandom(1000)
    job, output = await desk.done_job(kind=JobKind.VIDEO, delivery=h264)
    saved = await desk.filer(jf.url).file_output(job, output)
    assert saved is not None and saved.library_status is LibraryStatus.LINKED
    (filed,) = media_files(desk.library_root)
    assert filed.suffix == ".mp4" and filed.read_bytes() == h264
    assert filed.with_suffix(".nfo").is_file()
    item = jf.item_at(str(filed))
    assert item is not None and item.type == "Video" and saved.jellyfin_item_id == item.id


async def test_a_filed_result_removed_from_the_library_is_placed_again(
    desk: Desk, jf: RiggedJellyfin
) -> None:
    jf.rig["GET /Items"] = jf.hang
    job, output = await desk.done_job()
    filer = desk.filer(jf.url)
    first = await filer.file_output(job, output)
    assert first is not None and first.library_status is LibraryStatus.FILED
    stored = Path(first.library_path or "")
    stored.unlink()  # someone cleaned the library folder meanwhile

    jf.rig.clear()
    await desk.make_due(output.id)
    assert await filer.file_due() == 1
    linked = await desk.output(output.id)
    assert linked.library_status is LibraryStatus.LINKED
    assert linked.library_path == str(stored)
    assert stored.read_bytes() == Path(output.file_path).read_bytes()
    assert media_files(desk.library_root) == [stored]


async def test_filing_gives_up_after_the_last_attempt_and_keeps_the_file(
    desk: Desk, jf: RiggedJellyfin, logs: Logs
) -> None:
    job, output = await desk.done_job()
    await desk.pool.execute(
        "UPDATE outputs SET library_attempts = $2 WHERE id = $1", output.id, MAX_ATTEMPTS - 1
    )
    output = await desk.output(output.id)
    await jf.stop()  # connection refused
    saved = await desk.filer(jf.url).file_output(job, output)
    assert saved is not None
    assert saved.library_status is LibraryStatus.FAILED
    assert saved.library_attempts == MAX_ATTEMPTS and saved.library_next_at is None
    (filed,) = media_files(desk.library_root)
    assert saved.library_path == str(filed)  # the operator can still find it
    (retry,) = logs.lines("library filing will be retried")
    assert retry["gave_up"] is True and retry["attempts"] == MAX_ATTEMPTS
    assert await outs.due_for_library(desk.pool, datetime.now(UTC)) == []


@pytest.mark.parametrize(
    ("base_s", "attempts", "delay_s"),
    [
        (300.0, 0, 300.0),  # the first retry waits the base
        (300.0, 1, 600.0),  # doubled
        (300.0, 6, 19_200.0),  # doubled six times: 64x the base, 5.3 h with the default 300 s
        (300.0, 7, 19_200.0),  # and no more
        (2_000.0, 6, 24 * 3600.0),  # 128,000 s: at most 24 h
        (100_000.0, 0, 24 * 3600.0),  # also when the base alone is longer
    ],
    ids=["first", "doubled", "64x", "no-more", "capped", "base-capped"],
)
async def test_the_retry_delay_doubles_six_times_up_to_24_hours(
    desk: Desk, jf: RiggedJellyfin, base_s: float, attempts: int, delay_s: float
) -> None:
    """The backoff is LIBRARY_RETRY_S x 2^min(attempts, 6), at most 24 h (README, Resilience;
    .env.example): here Jellyfin refuses connections after `attempts` failed attempts."""
    job, output = await desk.done_job()
    await desk.pool.execute(
        "UPDATE outputs SET library_attempts = $2 WHERE id = $1", output.id, attempts
    )
    output = await desk.output(output.id)
    await jf.stop()  # connection refused
    before = datetime.now(UTC)
    saved = await desk.filer(jf.url, library_retry_s=base_s).file_output(job, output)
    after = datetime.now(UTC)
    assert saved is not None and saved.library_attempts == attempts + 1
    assert saved.library_next_at is not None
    delay = timedelta(seconds=delay_s)
    assert before + delay <= saved.library_next_at <= after + delay


# === the scheduler's library task ============================================================


async def test_the_library_tick_files_what_is_due(
    desk: Desk, jf: RiggedJellyfin, logs: Logs
) -> None:
    _job, output = await desk.done_job()
    maintenance = Maintenance(desk.pool, desk.tmp_path, desk.filer(jf.url), rate_limit=(1.0, 5))
    await maintenance._tick(1, maintenance.library)  # as the scheduler runs it
    assert (await desk.output(output.id)).library_status is LibraryStatus.LINKED
    (line,) = logs.lines("library filing retried")
    assert line["outputs"] == 1
    await maintenance._tick(1, maintenance.library)  # nothing due: nothing said
    assert len(logs.lines("library filing retried")) == 1


async def test_a_failing_library_tick_is_logged_and_frees_its_lock(
    desk: Desk, jf: RiggedJellyfin, logs: Logs, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A library task that fails (here: a bug) is logged, raises nothing into the scheduler,
    and the next tick, in any process, can run. (A key Jellyfin cannot be sent, which used to
    fail it this way, is now refused when the settings load.)"""
    _job, output = await desk.done_job()
    filer = desk.filer(jf.url)

    async def broken() -> int:
        raise RuntimeError("the library task broke")

    monkeypatch.setattr(filer, "file_due", broken)
    maintenance = Maintenance(desk.pool, desk.tmp_path, filer, rate_limit=(1.0, 5))
    await maintenance._tick(1, maintenance.library)
    (failed,) = logs.lines("maintenance task failed")
    assert failed["level"] == "error" and failed["task"] == "library"
    assert "RuntimeError: the library task broke" in failed["exception"]
    assert API_KEY not in logs.text
    assert (await desk.output(output.id)).library_attempts == 0  # nothing recorded against it
    other = await create_pool(desk.db.dsn, max_size=1)  # another process
    try:
        assert await run_exclusive(other, 1, lambda: asyncio.sleep(0)) is True
    finally:
        await other.close()


async def test_the_filing_after_delivery_and_the_schedulers_never_run_at_once(
    desk: Desk, jf: RiggedJellyfin
) -> None:
    """The scheduler's tick can find a just-delivered output due while the delivery's own
    filing of it runs (in this process or another). Each attempt first takes the output: one
    attempt, one copy; the other finds it taken and leaves it."""
    job, output = await desk.done_job()
    filer, other = desk.filer(jf.url), desk.filer(jf.url)

    await asyncio.gather(filer.file_job(job), other.file_due())

    filed = await desk.output(output.id)
    assert filed.library_status is LibraryStatus.LINKED and filed.library_attempts == 1
    assert len(media_files(desk.library_root)) == 1
    assert len(desk.deliverer.links) == 1  # one link, one caption edit


async def test_an_attempt_cut_short_by_a_dead_process_is_retried_after_its_lease(
    desk: Desk, jf: RiggedJellyfin
) -> None:
    _job, output = await desk.done_job()
    now = datetime.now(UTC)
    lease = now + timedelta(minutes=5)
    assert await outs.claim_for_library(desk.pool, output.id, now, lease)
    # the process dies here: nothing is due until the lease ends
    assert not await outs.claim_for_library(desk.pool, output.id, now, lease)
    assert await desk.filer(jf.url).file_due() == 0
    assert await outs.claim_for_library(desk.pool, output.id, lease, lease + timedelta(minutes=5))
