"""Listening to the store's NOTIFY channels (`animebot_queue`, `animebot_cancel`) in tests."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import asyncpg


class Notices:
    """The payloads heard on one channel, in order."""

    def __init__(self, channel: str) -> None:
        self.channel = channel
        self.heard: list[str] = []
        self._new = asyncio.Event()

    def hear(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        self.heard.append(payload)
        self._new.set()

    async def _until(self, done: Callable[[], bool], timeout: float) -> None:
        async with asyncio.timeout(timeout):
            while not done():
                self._new.clear()
                await self._new.wait()

    async def wait_for(self, payload: str, timeout: float = 5.0) -> list[str]:
        """Every payload heard up to and including `payload`."""
        await self._until(lambda: payload in self.heard, timeout)
        return self.heard[: self.heard.index(payload) + 1]

    async def first(self, count: int, timeout: float = 5.0) -> list[str]:
        """The first `count` payloads."""
        await self._until(lambda: len(self.heard) >= count, timeout)
        return self.heard[:count]

    async def settle(self, db: asyncpg.Pool | asyncpg.Connection) -> list[str]:
        """Everything committed so far has been heard: PostgreSQL delivers a listener's
        notifications in commit order, so a marker sent now comes after all of them. Returns
        the payloads heard before the marker (the marker itself is not kept)."""
        marker = f"settled {uuid.uuid4()}"
        await db.execute("SELECT pg_notify($1, $2)", self.channel, marker)
        heard = await self.wait_for(marker)
        self.heard.remove(marker)
        return heard[:-1]


async def hear(conn: asyncpg.Connection, channel: str = "animebot_queue") -> Notices:
    """Hear `channel` on `conn` until it is closed."""
    notices = Notices(channel)
    await conn.add_listener(channel, notices.hear)
    return notices


@asynccontextmanager
async def listening(pool: asyncpg.Pool, channel: str = "animebot_queue") -> AsyncIterator[Notices]:
    """Hear `channel` on a connection of `pool`; the listener is removed and the connection
    given back on exit."""
    conn = await pool.acquire()
    try:
        notices = await hear(conn, channel)
        try:
            yield notices
        finally:
            await conn.remove_listener(channel, notices.hear)
    finally:
        await pool.release(conn)
