"""Counting the SQL statements this process sends (the benchmarks and the tests that guard
how many round trips a path costs)."""

from __future__ import annotations

from collections import Counter
from typing import Any


class DbStatements:
    """Counts the SQL statements this process sends (asyncpg round trips), by statement."""

    def __init__(self) -> None:
        self.by_sql: Counter[str] = Counter()
        self._saved: list[tuple[str, Any]] = []

    @property
    def total(self) -> int:
        return sum(self.by_sql.values())

    def __enter__(self) -> DbStatements:
        import asyncpg.connection

        conn_cls = asyncpg.connection.Connection
        counter = self.by_sql
        execute, do_execute = conn_cls.execute, conn_cls._do_execute

        async def counted_execute(self: Any, query: str, *args: Any, **kwargs: Any) -> Any:
            if not args:
                counter[" ".join(query.split())[:70]] += 1
            return await execute(self, query, *args, **kwargs)

        async def counted_do_execute(self: Any, query: str, *args: Any, **kwargs: Any) -> Any:
            counter[" ".join(query.split())[:70]] += 1
            return await do_execute(self, query, *args, **kwargs)

        self._saved = [("execute", execute), ("_do_execute", do_execute)]
        conn_cls.execute = counted_execute  # type: ignore[method-assign]
        conn_cls._do_execute = counted_do_execute  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        import asyncpg.connection

        for name, original in self._saved:
            setattr(asyncpg.connection.Connection, name, original)
