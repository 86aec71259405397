"""Applies the numbered plain-SQL files in `sql/` exactly once, in order.

Each file runs in its own transaction, under a PostgreSQL advisory lock so that two processes
starting at once are safe; applied files are recorded in `schema_migrations` with a SHA-256
checksum, and a file edited after it was applied stops start-up.
"""

from __future__ import annotations

import hashlib
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from core.errors import MigrationError
from core.logs import get_logger

log = get_logger(__name__)

MIGRATIONS_LOCK_KEY = 4_242_001
_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


def _find_sql_dir() -> Path:
    """The source tree's sql/ (development, editable installs), else the copy a wheel
    installs under <prefix>/share/animebot/sql."""
    in_tree = Path(__file__).resolve().parents[2] / "sql"
    if in_tree.is_dir():
        return in_tree
    return Path(sys.prefix) / "share" / "animebot" / "sql"


DEFAULT_SQL_DIR = _find_sql_dir()

_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version     integer PRIMARY KEY,
    name        text NOT NULL,
    checksum    text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
)
"""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations(sql_dir: Path = DEFAULT_SQL_DIR) -> list[Migration]:
    if not sql_dir.is_dir():
        raise MigrationError(f"migrations folder {sql_dir} not found")
    found: dict[int, Migration] = {}
    for path in sorted(sql_dir.glob("*.sql")):
        match = _NAME.match(path.name)
        if match is None:
            raise MigrationError(f"{path.name}: migration files are named NNNN_words.sql")
        version = int(match.group(1))
        if version in found:
            raise MigrationError(f"two migrations share number {version:04d}")
        found[version] = Migration(version, path.name, path.read_text(encoding="utf-8"))
    return [found[v] for v in sorted(found)]


async def applied_migrations(conn: asyncpg.Connection) -> dict[int, tuple[str, str]]:
    exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    if not exists:
        return {}
    rows = await conn.fetch("SELECT version, name, checksum FROM schema_migrations")
    return {row["version"]: (row["name"], row["checksum"]) for row in rows}


def _check_history(
    migrations: list[Migration], applied: dict[int, tuple[str, str]]
) -> list[Migration]:
    by_version = {m.version: m for m in migrations}
    for version, (name, checksum) in sorted(applied.items()):
        current = by_version.get(version)
        if current is None:
            raise MigrationError(f"migration {name} was applied but its file is gone")
        if current.checksum != checksum:
            raise MigrationError(
                f"migration {name} was edited after it was applied (checksum differs); "
                "add a new numbered file instead of editing an applied one"
            )
    return [m for m in migrations if m.version not in applied]


async def migrate(conn: asyncpg.Connection, sql_dir: Path = DEFAULT_SQL_DIR) -> list[str]:
    """Apply pending migrations; return the names applied (empty when up to date)."""
    migrations = load_migrations(sql_dir)
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATIONS_LOCK_KEY)
    try:
        await conn.execute(_CREATE_TABLE)
        pending = _check_history(migrations, await applied_migrations(conn))
        done: list[str] = []
        for migration in pending:
            try:
                async with conn.transaction():
                    await conn.execute(migration.sql)
                    await conn.execute(
                        "INSERT INTO schema_migrations (version, name, checksum)"
                        " VALUES ($1, $2, $3)",
                        migration.version,
                        migration.name,
                        migration.checksum,
                    )
            except asyncpg.PostgresError as error:
                raise MigrationError(f"migration {migration.name} failed: {error}") from error
            log.info("migration applied", migration=migration.name)
            done.append(migration.name)
        return done
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATIONS_LOCK_KEY)


async def pending_migrations(
    conn: asyncpg.Connection, sql_dir: Path = DEFAULT_SQL_DIR
) -> list[str]:
    """Names not yet applied; raises MigrationError when history and files disagree."""
    return [
        m.name for m in _check_history(load_migrations(sql_dir), await applied_migrations(conn))
    ]
