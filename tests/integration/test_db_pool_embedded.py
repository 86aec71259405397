"""The embedded PostgreSQL, started as `animebot run` starts it (no DATABASE_URL):
`core.db.pool.open_database` on a DATA_DIR of its own.

README / deploy/README: it runs in `DATA_DIR/pgdata` and listens on a unix socket only, in
`DATA_DIR/pgdata` (line 5 of `postmaster.pid` names the socket's directory).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import psutil
import pytest

from core.db.pool import EMBEDDED_DATABASE, Database, open_database

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
async def embedded() -> AsyncIterator[tuple[Database, Path]]:
    """A DATA_DIR outside pytest's basetemp (see `embedded_cli` in test_cli.py: as root the
    server runs as another user, and a pytest session starting meanwhile would close the
    folders above pgdata to it), and the embedded server on it, stopped and removed after."""
    data_dir = Path(tempfile.mkdtemp(prefix="animebot-pool-")).resolve() / "data"
    database = await open_database(None, data_dir, max_size=1)
    try:
        yield database, data_dir
    finally:
        await database.close()
        database.embedded.cleanup()
        shutil.rmtree(data_dir.parent, ignore_errors=True)


async def test_embedded_server_listens_on_a_unix_socket_in_pgdata_only(
    embedded: tuple[Database, Path],
) -> None:
    database, data_dir = embedded
    pgdata = data_dir / "pgdata"
    assert database.embedded is not None
    assert (pgdata / "PG_VERSION").is_file()
    async with database.pool.acquire() as conn:
        listen_addresses = await conn.fetchval("SHOW listen_addresses")
        socket_directories = await conn.fetchval("SHOW unix_socket_directories")
        port = int(await conn.fetchval("SHOW port"))
        assert await conn.fetchval("SELECT inet_server_addr()") is None  # not over TCP
        assert await conn.fetchval("SELECT current_database()") == EMBEDDED_DATABASE
    assert listen_addresses == ""  # no TCP/IP address at all
    assert socket_directories == str(pgdata)
    assert (pgdata / f".s.PGSQL.{port}").is_socket()

    # the pool's DSN: the socket directory as host, no TCP host or port
    dsn = urlsplit(database.dsn)
    assert dsn.hostname is None
    assert dsn.path == f"/{EMBEDDED_DATABASE}"
    assert parse_qs(dsn.query)["host"] == [str(pgdata)]

    # postmaster.pid: line 5 the socket directory, line 6 the first TCP address (none)
    pid_file = (pgdata / "postmaster.pid").read_text().splitlines()
    assert pid_file[4] == str(pgdata)
    assert pid_file[5].strip() == ""

    # and the server process has no TCP socket open, listening or not
    postmaster = psutil.Process(int(pid_file[0]))
    assert Path(postmaster.cwd()) == pgdata
    assert postmaster.net_connections(kind="inet") == []
    unix = [conn.laddr for conn in postmaster.net_connections(kind="unix")]
    assert str(pgdata / f".s.PGSQL.{port}") in unix
