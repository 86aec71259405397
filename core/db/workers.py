"""Process liveness (a session advisory lock per process) and backend health shared by all."""

from __future__ import annotations

import os
import socket
from datetime import datetime

import asyncpg

from core.db.types import Executor
from core.models import Backend

WORKER_LOCK_CLASS = 4242


async def register_worker(conn: asyncpg.Connection, role: str) -> int:
    """Register this process; `conn` must stay open for as long as the process lives.

    The session advisory lock (WORKER_LOCK_CLASS, key) taken here is released by PostgreSQL the
    moment the connection drops, even on kill -9, which is how others see a dead process.
    """
    key: int = await conn.fetchval("SELECT nextval('workers_key_seq')::int")
    await conn.execute("SELECT pg_advisory_lock($1, $2)", WORKER_LOCK_CLASS, key)
    await _save_worker(conn, key, role)
    return key


async def register_again(conn: asyncpg.Connection, key: int, role: str) -> bool:
    """Register this process again under its key on a new connection (the old one was lost,
    e.g. PostgreSQL restarted). False while the old session still holds the lock."""
    if not await conn.fetchval("SELECT pg_try_advisory_lock($1, $2)", WORKER_LOCK_CLASS, key):
        return False
    await _save_worker(conn, key, role)
    return True


async def _save_worker(conn: asyncpg.Connection, key: int, role: str) -> None:
    await conn.execute(
        "INSERT INTO workers (key, role, hostname, pid) VALUES ($1, $2, $3, $4)"
        " ON CONFLICT (key) DO UPDATE SET role = EXCLUDED.role, hostname = EXCLUDED.hostname,"
        " pid = EXCLUDED.pid, started_at = now(), heartbeat_at = now()",
        key,
        role,
        socket.gethostname(),
        os.getpid(),
    )


async def live_workers(db: Executor) -> list[int]:
    rows = await db.fetch(
        "SELECT objid::int AS key FROM pg_locks WHERE locktype = 'advisory'"
        " AND classid = $1 AND objsubid = 2 AND granted",
        WORKER_LOCK_CLASS,
    )
    return [row["key"] for row in rows]


async def heartbeat(db: Executor, key: int) -> None:
    await db.execute("UPDATE workers SET heartbeat_at = now() WHERE key = $1", key)


async def forget_dead_workers(db: Executor, live: list[int]) -> int:
    status: str = await db.execute("DELETE FROM workers WHERE key <> ALL($1::int[])", live)
    return int(status.split()[-1])


async def save_backend(
    db: Executor,
    url: str,
    *,
    healthy: bool,
    version: str | None,
    last_error: str | None,
    missing_workflows: list[str],
    checked_at: datetime,
) -> None:
    await db.execute(
        "INSERT INTO backends (url, healthy, version, last_error, missing_workflows, checked_at)"
        " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (url) DO UPDATE SET"
        " healthy = EXCLUDED.healthy, version = coalesce(EXCLUDED.version, backends.version),"
        " last_error = EXCLUDED.last_error, missing_workflows = EXCLUDED.missing_workflows,"
        " checked_at = EXCLUDED.checked_at",
        url,
        healthy,
        version,
        last_error,
        missing_workflows,
        checked_at,
    )


async def list_backends(db: Executor) -> list[Backend]:
    rows = await db.fetch("SELECT * FROM backends ORDER BY url")
    return [Backend.from_record(row) for row in rows]
