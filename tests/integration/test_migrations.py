"""Migrations against a real PostgreSQL: empty database, re-run, concurrency, edited files."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from core.db.migrate import DEFAULT_SQL_DIR, load_migrations, migrate, pending_migrations
from core.db.pool import connect
from core.errors import MigrationError

EXPECTED_TABLES = {
    "users",
    "chats",
    "characters",
    "character_references",
    "generations",
    "generation_events",
    "outputs",
    "workers",
    "backends",
    "dialogs",
    "rate_buckets",
    "schema_migrations",
}


async def _tables(dsn: str) -> set[str]:
    conn = await connect(dsn)
    try:
        rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        return {row["tablename"] for row in rows}
    finally:
        await conn.close()


async def test_migrate_creates_schema_on_empty_database(empty_dsn: str) -> None:
    conn = await connect(empty_dsn)
    try:
        applied = await migrate(conn)
        assert applied == [m.name for m in load_migrations()]
        assert applied[0] == "0001_init.sql"
        assert await pending_migrations(conn) == []
        count = await conn.fetchval("SELECT count(*) FROM schema_migrations")
        assert count == len(applied)
    finally:
        await conn.close()
    assert await _tables(empty_dsn) >= EXPECTED_TABLES


async def test_rerun_applies_nothing(empty_dsn: str) -> None:
    conn = await connect(empty_dsn)
    try:
        first = await migrate(conn)
        second = await migrate(conn)
    finally:
        await conn.close()
    assert first and second == []


async def test_concurrent_runners_apply_each_file_once(empty_dsn: str) -> None:
    conns = [await connect(empty_dsn) for _ in range(4)]
    try:
        results = await asyncio.gather(*(migrate(c) for c in conns))
        applied = [name for result in results for name in result]
        assert sorted(applied) == sorted(m.name for m in load_migrations())
        rows = await conns[0].fetch("SELECT version FROM schema_migrations")
        assert len(rows) == len(load_migrations())
    finally:
        for c in conns:
            await c.close()


async def test_edited_file_is_refused(empty_dsn: str, tmp_path: Path) -> None:
    sql_dir = tmp_path / "sql"
    shutil.copytree(DEFAULT_SQL_DIR, sql_dir)
    conn = await connect(empty_dsn)
    try:
        await migrate(conn, sql_dir)
        first = sorted(sql_dir.glob("*.sql"))[0]
        first.write_text(first.read_text() + "\n-- edited\n")
        with pytest.raises(MigrationError, match="edited after it was applied"):
            await migrate(conn, sql_dir)
        with pytest.raises(MigrationError, match="edited after it was applied"):
            await pending_migrations(conn, sql_dir)
    finally:
        await conn.close()


async def test_new_file_is_applied_later_and_failure_rolls_back(
    empty_dsn: str, tmp_path: Path
) -> None:
    sql_dir = tmp_path / "sql"
    shutil.copytree(DEFAULT_SQL_DIR, sql_dir)
    conn = await connect(empty_dsn)
    try:
        await migrate(conn, sql_dir)
        (sql_dir / "9998_extra.sql").write_text("CREATE TABLE extra_ok (id int);")
        (sql_dir / "9999_broken.sql").write_text(
            "CREATE TABLE extra_broken (id int); SELECT no_such_function();"
        )
        with pytest.raises(MigrationError, match=r"9999_broken\.sql failed"):
            await migrate(conn, sql_dir)
        tables = await _tables(empty_dsn)
        assert "extra_ok" in tables
        assert "extra_broken" not in tables  # its transaction rolled back
        assert await pending_migrations(conn, sql_dir) == ["9999_broken.sql"]
    finally:
        await conn.close()


async def test_badly_named_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "init.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match=r"NNNN_words\.sql"):
        load_migrations(tmp_path)
