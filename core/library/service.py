"""Filing delivered results into the Jellyfin library, with retries that survive restarts.

After a job is done each output is written under JELLYFIN_LIBRARY_DIR, Jellyfin is told, and
when its item appears the link is recorded and handed to the deliverer (which adds it to the
message caption). Jellyfin being down, slow or refusing never delays delivery: the output
stays `pending` (nothing written yet) or `filed` (in the folder, `library_path` set) with a
next attempt time, and the scheduler calls `file_due()`. After `MAX_ATTEMPTS` it is `failed`;
a file already in the folder keeps its `library_path`.

The backoff doubles up to hours, so after a long outage the waiting outputs would be filed
hours after Jellyfin is back. Instead each `file_due()` asks Jellyfin (one authenticated call)
whether it answers again while outputs wait because it could not be reached, and makes those
due at once when it does (`resume_if_back`).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg

from core.db import characters as char_db
from core.db import generations as gen_db
from core.db import outputs as out_db
from core.db import people
from core.errors import LibraryError
from core.jobs.delivery import Deliverer
from core.library.filing import FiledResult, FilingPending, FilingRefused, ScanWait, file_output
from core.library.jellyfin import JellyfinClient, LibraryUnavailable
from core.library.layout import FilingMetadata, LayoutSettings, map_path, parse_path_map
from core.logs import bind_context, clear_context, get_logger
from core.models import Generation, LibraryStatus, Output
from core.settings import Settings

log = get_logger(__name__)
MAX_ATTEMPTS = 50


class LibraryFiler:
    def __init__(self, settings: Settings, db: asyncpg.Pool, deliverer: Deliverer | None) -> None:
        self.settings = settings
        self.db = db
        self.deliverer = deliverer
        self.enabled = settings.library_enabled
        self.layout = LayoutSettings(
            root=settings.jellyfin_library_dir or Path("."),
            mode=settings.jellyfin_layout,
            path_map=parse_path_map(settings.jellyfin_path_map or ""),
        )
        self.wait = ScanWait(settings.jellyfin_scan_attempts, settings.jellyfin_scan_interval_s)
        self.library_id: str | None = None  # the library's ItemId, once found (or created)

    def _client(self) -> JellyfinClient | None:
        if not self.settings.jellyfin_configured:
            return None
        assert self.settings.jellyfin_url and self.settings.jellyfin_api_key
        return JellyfinClient(
            self.settings.jellyfin_url,
            self.settings.jellyfin_api_key.get_secret_value(),
            public_url=self.settings.jellyfin_public_url,
            timeout=self.settings.jellyfin_timeout_s,
        )

    async def file_job(self, job: Generation) -> None:
        if not self.enabled:
            return
        for output in await out_db.list_outputs(self.db, job.id):
            if await self._claim(output):
                await self.file_output(job, output)

    async def file_due(self) -> int:
        """File every output whose next attempt is due; returns how many were tried."""
        if not self.enabled:
            return 0
        await self.resume_if_back()
        due = await out_db.due_for_library(self.db, datetime.now(UTC))
        tried = 0
        for output in due:
            job = await gen_db.get_generation(self.db, output.generation_id)
            if job is not None and await self._claim(output):
                await self.file_output(job, output)
                tried += 1
        return tried

    async def _claim(self, output: Output) -> bool:
        """Take a due output for one attempt, so that the filing right after a delivery and
        the scheduler's (in any process) never write the same file twice at once."""
        now = datetime.now(UTC)
        return await out_db.claim_for_library(
            self.db, output.id, now, now + timedelta(seconds=self._attempt_bound_s())
        )

    def _attempt_bound_s(self) -> float:
        """The longest one attempt can take: the library lookup and notification, the wait
        for the item to be indexed (each lookup with its timeout), and the copy."""
        s = self.settings
        per_lookup = s.jellyfin_scan_interval_s + s.jellyfin_timeout_s
        return 4 * s.jellyfin_timeout_s + s.jellyfin_scan_attempts * per_lookup + 60

    async def resume_if_back(self) -> int:
        """When outputs wait because Jellyfin could not be reached and it answers again (any
        HTTP answer, even a refused key), make them due now. Returns how many were woken."""
        now = datetime.now(UTC)
        if not await out_db.waiting_for_jellyfin(self.db, now):
            return 0
        client = self._client()
        if client is None:  # (no Jellyfin API: no output ever waits for it)
            return 0
        try:
            await client.check_key()
        except LibraryUnavailable:
            return 0  # still down: the outputs keep their next attempt
        except LibraryError:
            pass  # it answers (refusing the key): their next attempt will say why
        finally:
            await client.close()
        woken = await out_db.wake_unreachable(self.db, now)
        if woken:
            log.info("jellyfin answers again; library filing resumed", outputs=woken)
        return woken

    async def _metadata(self, job: Generation, output: Output) -> FilingMetadata:
        characters = await char_db.get_characters(self.db, job.character_ids)
        chat = await people.get_chat(self.db, job.chat_id)
        return FilingMetadata(
            title=job.prompt_typed,
            prompt=job.prompt_positive,
            characters=tuple(c.name for c in characters),
            chat_title=(chat.title if chat else None),
            job_id=str(job.id),
            created_at=job.created_at,
            kind=output.kind,
            position=output.position,
        )

    async def file_output(self, job: Generation, output: Output) -> Output | None:
        bind_context(job_id=str(job.id))
        meta = await self._metadata(job, output)
        previous = Path(output.library_path) if output.library_path else None
        client = self._client()
        try:
            missing = None if client is None else await self._ensure_library(client)
            if missing is not None:
                # No library to index it yet: keep the file, link it on a later attempt.
                filed = await self._file(None, output, meta, previous)
                return await self._retry_later(
                    output, filed, f"Jellyfin library not available: {missing}", missing
                )
            result = await self._file(client, output, meta, previous)
        except (FilingPending, FilingRefused) as kept:  # the file is in the folder either way
            return await self._retry_later(output, kept.result, str(kept), kept)
        except LibraryError as error:
            return await self._retry_later(output, None, str(error), error)
        finally:
            if client is not None:
                await client.close()
            clear_context(["job_id"])
        if client is None:  # no Jellyfin API to link it: written into the folder is all
            return await self._written_only(output, result)
        if result.link is None:
            return await self._retry_later(output, result, "not indexed yet", None)
        saved = await out_db.record_library(
            self.db,
            output.id,
            status=LibraryStatus.LINKED,
            library_path=str(result.library_path),
            item_id=result.item_id,
            link=result.link,
        )
        log.info("filed in library", output=str(output.id), link=result.link)
        if saved is not None and self.deliverer is not None:
            await self.deliverer.library_linked(job, saved, result.link)
        return saved

    async def _ensure_library(self, client: JellyfinClient) -> LibraryError | None:
        """Find the library (or create it when JELLYFIN_CREATE_LIBRARY allows) once. The error
        when Jellyfin is down, refuses the key or has no such library (then the file is kept,
        linked later)."""
        if self.library_id is not None:
            return None
        seen_as = map_path(str(self.layout.root), self.layout.path_map)
        try:
            folder = await client.ensure_library(
                self.settings.jellyfin_library_name,
                seen_as,
                create=self.settings.jellyfin_create_library,
            )
        except LibraryError as error:  # down, the key refused, no such library
            log.warning("jellyfin library not reachable or missing", reason=str(error))
            return error
        self.library_id = folder.item_id
        log.info("jellyfin library ready", library=folder.name, path=seen_as)
        return None

    async def _file(
        self,
        client: JellyfinClient | None,
        output: Output,
        meta: FilingMetadata,
        previous: Path | None,
    ) -> FiledResult:
        source = Path(output.file_path)
        if output.kind.value == "video" and output.delivery_path:
            source = Path(output.delivery_path)  # the H.264 mp4 plays everywhere
        return await file_output(
            client,
            self.layout,
            source,
            meta,
            library_path=previous,
            wait=self.wait,
            library_id=self.library_id,
        )

    async def _written_only(self, output: Output, result: FiledResult) -> Output | None:
        """The result is in JELLYFIN_LIBRARY_DIR and no JELLYFIN_URL/API key is set: a Jellyfin
        watching the folder (or any other player) finds it there; nothing is retried."""
        log.info("filed in library folder", output=str(output.id), path=str(result.library_path))
        return await out_db.record_library(
            self.db, output.id, status=LibraryStatus.FILED, library_path=str(result.library_path)
        )

    async def _retry_later(
        self,
        output: Output,
        result: FiledResult | None,
        reason: str,
        error: LibraryError | None,
    ) -> Output | None:
        """Record a failed attempt and when to try again. `result` is the file written into
        the library folder (None when nothing was written): the output is `filed` with its
        path meanwhile. After `MAX_ATTEMPTS` it is `failed`, for the Jellyfin part only: the
        path of a file already in the folder is kept, so it can still be found there.
        `error` is what went wrong, if anything did (a Jellyfin that could not be reached is
        asked again at every tick: `resume_if_back`)."""
        failed = output.library_attempts + 1 >= MAX_ATTEMPTS
        status = (
            LibraryStatus.FAILED
            if failed
            else (LibraryStatus.FILED if result is not None else LibraryStatus.PENDING)
        )
        delay = min(
            self.settings.library_retry_s * (2 ** min(output.library_attempts, 6)), 24 * 3600
        )
        log.warning(
            "library filing will be retried",
            output=str(output.id),
            reason=reason,
            attempts=output.library_attempts + 1,
            gave_up=failed,
            library_path=str(result.library_path) if result else output.library_path,
        )
        return await out_db.record_library(
            self.db,
            output.id,
            status=status,
            library_path=str(result.library_path) if result else None,
            next_attempt_at=None if failed else datetime.now(UTC) + timedelta(seconds=delay),
            unreachable=isinstance(error, LibraryUnavailable),
        )
