"""Delivered results in every library filing state, for the tests of /stats and /metrics."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from core.db import generations as gens
from core.db import outputs as outs
from core.db import people
from core.db.outputs import LibraryCounts
from core.db.tx import transaction
from core.db.types import Executor
from core.models import ChatType, JobKind, LibraryStatus
from core.states import JobState

REQUESTER = 424242
CHAT = -1004242
# What `seed_library_states` leaves: each figure different, so a count in the wrong place shows.
SEEDED = LibraryCounts(linked=3, filed=1, waiting=4, unreachable=2, failed=5, off=6)
_TO_DONE = [
    JobState.SUBMITTED,
    JobState.RUNNING,
    JobState.POSTPROCESSING,
    JobState.DELIVERING,
]


async def seed_library_states(db: Executor) -> None:
    """One delivered job (of its own user and chat) whose outputs stand as `SEEDED` says, in
    one transaction: an engine running meanwhile never sees the job queued. None is due for a
    filing attempt (each waiting one's next attempt is an hour away), so a library filer
    running meanwhile leaves them as they are."""
    later = datetime.now(UTC) + timedelta(hours=1)
    # Each output's filing outcome, as `outs.record_library` takes it (None: library off).
    outcomes: list[dict[str, Any] | None] = [
        *[
            {
                "status": LibraryStatus.LINKED,
                "library_path": f"/library/linked{n}.png",
                "item_id": f"item{n}",
                "link": f"https://jellyfin.example/web/#/details?id=item{n}",
            }
            for n in range(SEEDED.linked)
        ],
        {"status": LibraryStatus.FILED, "library_path": "/library/filed.png"},  # no next try
        # waiting: nothing written, Jellyfin refused; written, not indexed yet; both of those
        # with Jellyfin not reachable at all
        {"status": LibraryStatus.PENDING, "next_attempt_at": later},
        {"status": LibraryStatus.FILED, "library_path": "/library/b.png", "next_attempt_at": later},
        {"status": LibraryStatus.PENDING, "next_attempt_at": later, "unreachable": True},
        {
            "status": LibraryStatus.FILED,
            "library_path": "/library/d.png",
            "next_attempt_at": later,
            "unreachable": True,
        },
        *[{"status": LibraryStatus.FAILED} for _ in range(SEEDED.failed)],
        *[None] * SEEDED.off,
    ]
    async with transaction(db) as conn:
        await people.upsert_user(conn, REQUESTER, first_name="Requester")
        await people.upsert_chat(conn, CHAT, ChatType.GROUP, title="Library club")
        job, _alone = await gens.create_queued(
            conn,
            id=uuid.uuid4(),
            requester_id=REQUESTER,
            chat_id=CHAT,
            kind=JobKind.IMAGE,
            prompt_typed="a girl at the library",
            workflow="txt2img_sd15",
        )
        for state in _TO_DONE:
            await gens.transition(conn, job.id, state)
        await gens.record_delivery(conn, job.id, result_message_id=1)
        await gens.transition(conn, job.id, JobState.DONE)
        for position, outcome in enumerate(outcomes):
            output = await outs.save_output(
                conn,
                generation_id=job.id,
                position=position,
                kind=JobKind.IMAGE,
                file_path=f"outputs/{job.id}/{position:02d}_original.png",
                mime="image/png",
                size_bytes=1000,
                sha256="c" * 64,
                library_enabled=outcome is not None,
            )
            if outcome is not None:
                await outs.record_library(conn, output.id, **outcome)
