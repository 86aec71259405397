"""What query functions accept: a pool or a connection (inside a transaction)."""

from __future__ import annotations

import asyncpg

Executor = asyncpg.Pool | asyncpg.Connection
