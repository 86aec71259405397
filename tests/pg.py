"""Real PostgreSQL for the tests: the embedded server (or DATABASE_URL), a fresh database per test.

The embedded server starts once per test session (per pytest-xdist worker: `.ci/run` runs two)
in a temporary folder. A migrated template database is built once; each test that asks for `db`
gets its own copy (CREATE DATABASE ... TEMPLATE), so tests never see each other's rows.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from core.db.migrate import migrate
from core.db.pool import Database, connect, create_pool, start_embedded_server

# One template per pytest-xdist worker: with DATABASE_URL, the workers share one server.
TEMPLATE = "animebot_test_template_" + os.environ.get("PYTEST_XDIST_WORKER", "main")


def dsn_for(base: str, database: str) -> str:
    parts = urlsplit(base)
    return urlunsplit(parts._replace(path="/" + database))


@pytest.fixture(scope="session")
def pg_admin_dsn() -> Iterator[str]:
    """DSN of a database we may CREATE DATABASE from (embedded server unless DATABASE_URL)."""
    given = os.environ.get("DATABASE_URL")
    if given:
        yield given
        return
    root = Path(tempfile.mkdtemp(prefix="animebot-test-pg-"))
    server = start_embedded_server(root / "pgdata")
    try:
        yield server.get_uri()
    finally:  # stopped, and its ~60 MB of data files removed: nothing left behind per run
        server.cleanup()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
async def pg_template(pg_admin_dsn: str) -> str:
    conn = await connect(pg_admin_dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{TEMPLATE}"')
        await conn.execute(f'CREATE DATABASE "{TEMPLATE}"')
    finally:
        await conn.close()
    tconn = await connect(dsn_for(pg_admin_dsn, TEMPLATE))
    try:
        await migrate(tconn)
    finally:
        await tconn.close()
    return TEMPLATE


async def _create_database(admin_dsn: str, template: str | None) -> str:
    name = "t_" + uuid.uuid4().hex[:16]
    conn = await connect(admin_dsn)
    try:
        suffix = f' TEMPLATE "{template}"' if template else ""
        await conn.execute(f'CREATE DATABASE "{name}"{suffix}')
    finally:
        await conn.close()
    return name


async def _drop_database(admin_dsn: str, name: str) -> None:
    conn = await connect(admin_dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture
async def empty_dsn(pg_admin_dsn: str) -> AsyncIterator[str]:
    """A brand-new, empty database (for migration tests)."""
    name = await _create_database(pg_admin_dsn, None)
    yield dsn_for(pg_admin_dsn, name)
    await _drop_database(pg_admin_dsn, name)


@pytest.fixture
async def pg_dsn(pg_admin_dsn: str, pg_template: str) -> AsyncIterator[str]:
    """A fresh, fully migrated database of its own."""
    name = await _create_database(pg_admin_dsn, pg_template)
    yield dsn_for(pg_admin_dsn, name)
    await _drop_database(pg_admin_dsn, name)


@pytest.fixture
async def db(pg_dsn: str) -> AsyncIterator[Database]:
    pool = await create_pool(pg_dsn, max_size=10)
    database = Database(pool=pool, dsn=pg_dsn)
    yield database
    await pool.close()


@pytest.fixture
async def conn(pg_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await connect(pg_dsn)
    yield connection
    await connection.close()
