"""In-process publish/subscribe of job events, bridged across processes by LISTEN/NOTIFY.

Core publishes what happens to jobs (state changes, progress, previews, library links); the bot
subscribes and turns them into message edits. Throttling for Telegram is the bot's job: the bus
delivers every event to every subscriber, dropping the oldest progress events of a subscriber that
falls behind (never a state change). Other processes get every state change at once and, of the
progress and queue events, the newest of each job at most `LATEST_ONLY_DELAY_S` later.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field, fields
from typing import Any
from uuid import UUID

import asyncpg

from core.logs import get_logger

log = get_logger(__name__)

NOTIFY_CHANNEL = "animebot_events"
_QUEUE_SIZE = 1000
# One NOTIFY per payload, in array order (PostgreSQL delivers a transaction's notifications in
# the order they were sent).
_NOTIFY_MANY = "SELECT pg_notify($1, payload) FROM unnest($2::text[]) AS payload"
# Broadcast as the newest per job only, after at most this delay (states go at once).
_LATEST_ONLY = ("progress", "queue")
# What a subscriber that falls behind may lose (the oldest first); never a state change.
_DROPPABLE = ("progress", "preview", "queue")
LATEST_ONLY_DELAY_S = 0.1


@dataclass(frozen=True)
class JobEvent:
    """One thing that happened to a job. `type` is one of:

    state (status changed), queue (position/ETA while queued), progress (node, step, percent,
    ETA), preview (latest preview image), library (Jellyfin link known), delivered.
    """

    job_id: UUID
    type: str
    status: str
    chat_id: int
    percent: float | None = None
    node: str | None = None
    step: int | None = None
    steps: int | None = None
    eta_s: float | None = None
    position: int | None = None
    message: str | None = None
    link: str | None = None
    preview: bytes | None = field(default=None, repr=False)
    preview_mime: str | None = None
    origin: int = 0  # worker key of the publishing process (0 = this process)

    @property
    def final(self) -> bool:
        return self.status in ("done", "failed", "cancelled")

    def to_json(self, *, origin: int | None = None) -> str:
        """The wire form (no preview bytes); `origin` overrides the event's own."""
        # Field by field: dataclasses.asdict deep-copies every value, 5x slower.
        data = {name: getattr(self, name) for name in _WIRE_FIELDS}
        data["job_id"] = str(self.job_id)
        if origin is not None:
            data["origin"] = origin
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str) -> JobEvent:
        data: dict[str, Any] = json.loads(text)
        data["job_id"] = UUID(data["job_id"])
        return cls(**data)


_WIRE_FIELDS = tuple(f.name for f in fields(JobEvent) if f.name != "preview")
assert _WIRE_FIELDS[-1] == "origin"  # `_origin_suffix` relies on it


def _origin_suffix(origin: int) -> str:
    """How the wire form of an event published by `origin` ends."""
    return json.dumps({"origin": origin})[1:]


class _Subscription:
    def __init__(self, job_id: UUID | None) -> None:
        self.job_id = job_id
        # Unbounded: `offer` keeps it at _QUEUE_SIZE by dropping progress, never a state change.
        self.queue: asyncio.Queue[JobEvent] = asyncio.Queue()

    def offer(self, event: JobEvent) -> None:
        if self.job_id is not None and event.job_id != self.job_id:
            return
        if (
            self.queue.qsize() >= _QUEUE_SIZE
            and not self._drop_oldest_droppable()
            and event.type in _DROPPABLE
        ):
            return  # behind on state changes only: the new progress is the one dropped
        self.queue.put_nowait(event)

    def _drop_oldest_droppable(self) -> bool:
        """Remove the oldest progress/preview/queue event, the others staying in order."""
        pending = [self.queue.get_nowait() for _ in range(self.queue.qsize())]
        index = next((i for i, e in enumerate(pending) if e.type in _DROPPABLE), None)
        if index is not None:
            del pending[index]
        for kept in pending:
            self.queue.put_nowait(kept)
        return index is not None


class EventBus:
    """Fan-out of JobEvents to in-process subscribers, and to other processes via NOTIFY."""

    def __init__(self) -> None:
        self._subs: set[_Subscription] = set()
        self._pool: asyncpg.Pool | None = None
        self._listen_conn: asyncpg.Connection | None = None
        self._outbox: list[JobEvent] = []
        self._latest: dict[tuple[UUID, str], JobEvent] = {}  # newest progress/queue per job
        self._urgent = asyncio.Event()
        self._sender: asyncio.Task[None] | None = None
        self.origin = 0
        self._own_suffix = _origin_suffix(0)

    def publish(self, event: JobEvent, *, broadcast: bool = True) -> None:
        for sub in list(self._subs):
            sub.offer(event)
        if broadcast and self._pool is not None and event.type != "preview":
            if event.type in _LATEST_ONLY:
                self._latest[(event.job_id, event.type)] = event
            else:
                # Keep the job's order: its pending progress goes out before this event.
                for kind in _LATEST_ONLY:
                    if (pending := self._latest.pop((event.job_id, kind), None)) is not None:
                        self._outbox.append(pending)
                self._outbox.append(event)
                self._urgent.set()
            if self._sender is None or self._sender.done():
                self._sender = asyncio.get_running_loop().create_task(self._send_outbox())
                self._sender.add_done_callback(_log_failure)

    async def _send_outbox(self) -> None:
        """NOTIFY everything published so far in one statement, in order; events published
        meanwhile go in the next one (a burst costs one round trip, not one per event).
        Progress and queue events wait up to `LATEST_ONLY_DELAY_S` and only the newest of each
        job is sent: other processes see the same progress, for a fraction of the NOTIFYs."""
        while self._pool is not None and (self._outbox or self._latest):
            if not self._outbox:
                self._urgent.clear()
                with suppress(TimeoutError):
                    async with asyncio.timeout(LATEST_ONLY_DELAY_S):
                        await self._urgent.wait()
            batch = [*self._outbox, *self._latest.values()]
            self._outbox, self._latest = [], {}
            payloads = [event.to_json(origin=self.origin) for event in batch]
            if self._pool is not None and payloads:
                await self._pool.execute(_NOTIFY_MANY, NOTIFY_CHANNEL, payloads)

    @asynccontextmanager
    async def subscribe(self, job_id: UUID | None = None) -> AsyncIterator[asyncio.Queue[JobEvent]]:
        sub = _Subscription(job_id)
        self._subs.add(sub)
        try:
            yield sub.queue
        finally:
            self._subs.discard(sub)

    async def bridge(
        self, pool: asyncpg.Pool, listen_conn: asyncpg.Connection, origin: int
    ) -> None:
        """Start sending events to, and receiving them from, other processes."""
        self._pool = pool
        self.origin = origin
        self._own_suffix = _origin_suffix(origin)
        self._listen_conn = listen_conn
        await listen_conn.add_listener(NOTIFY_CHANNEL, self._on_notify)

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, payload: object) -> None:
        text = str(payload)
        if text.endswith(self._own_suffix):
            return  # our own (origin is the last key of the wire form): not even parsed
        try:
            event = JobEvent.from_json(text)
        except (ValueError, TypeError, KeyError, AttributeError) as error:
            log.warning("bad event payload", error=str(error))
            return
        if event.origin == self.origin:
            return  # our own, already delivered in-process
        self.publish(event, broadcast=False)

    async def close(self) -> None:
        if self._sender is not None and not self._sender.done():
            with suppress(Exception):  # logged by its done callback
                await asyncio.wait_for(asyncio.shield(self._sender), 2.0)
        if self._listen_conn is not None:
            with suppress(asyncpg.PostgresError, OSError, asyncpg.InterfaceError):
                await self._listen_conn.remove_listener(NOTIFY_CHANNEL, self._on_notify)
        self._pool = None


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("event broadcast failed", error=str(task.exception()))
