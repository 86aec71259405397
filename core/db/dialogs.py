"""Unfinished dialogs of the bot: one row per (chat, kind, key), state as json.

Rows past `expires_at` are invisible to every read and change; `sweep_expired` deletes them
and returns each to one caller only (`DELETE ... RETURNING` under SKIP LOCKED). A change is a
compare-and-set on `version` (`save`), or made under the row's lock (`get(for_update=True)` in
a transaction); `take` deletes and returns a row, so only one of several
concurrent callers gets it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from core.db.types import Executor
from core.models import Row


class DialogRow(Row):
    chat_id: int
    kind: str
    key: int
    user_id: int
    state: dict[str, Any]
    version: int
    expires_at: datetime
    attachment: bytes | None = None  # only read by `take`


class ExpiredRow(Row):
    chat_id: int
    kind: str
    key: int
    user_id: int
    notice: dict[str, Any] | None


_PUT = """
INSERT INTO dialogs (chat_id, kind, key, user_id, state, attachment, notice, expires_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, now() + make_interval(secs => $8))
ON CONFLICT (chat_id, kind, key) DO UPDATE SET
    user_id = EXCLUDED.user_id,
    state = EXCLUDED.state,
    attachment = EXCLUDED.attachment,
    notice = EXCLUDED.notice,
    expires_at = EXCLUDED.expires_at,
    version = dialogs.version + 1,
    created_at = now(),
    updated_at = now()
RETURNING chat_id, kind, key, user_id, state, version, expires_at
"""


async def put(
    db: Executor,
    chat_id: int,
    kind: str,
    key: int,
    *,
    user_id: int,
    state: dict[str, Any],
    ttl_s: float,
    attachment: bytes | None = None,
    notice: dict[str, Any] | None = None,
) -> DialogRow:
    """Start a dialog, replacing any (expired or not) with the same key."""
    row = await db.fetchrow(
        _PUT, chat_id, kind, key, user_id, state, attachment, notice, float(ttl_s)
    )
    return DialogRow.from_record(row)  # type: ignore[no-any-return]


_GET = """
SELECT chat_id, kind, key, user_id, state, version, expires_at FROM dialogs
WHERE chat_id = $1 AND kind = $2 AND key = $3 AND expires_at > now()
"""


async def get(
    db: Executor, chat_id: int, kind: str, key: int, *, for_update: bool = False
) -> DialogRow | None:
    """The live dialog; `for_update` locks its row until the transaction ends (changes of
    others wait)."""
    row = await db.fetchrow(_GET + (" FOR UPDATE" if for_update else ""), chat_id, kind, key)
    return None if row is None else DialogRow.from_record(row)


_OF_KEY = """
SELECT chat_id, kind, key, user_id, state, version, expires_at FROM dialogs
WHERE chat_id = $1 AND kind = ANY($2::text[]) AND key = $3 AND expires_at > now()
"""


async def of_key(db: Executor, chat_id: int, kinds: list[str], key: int) -> list[DialogRow]:
    """The live dialogs of several kinds under one key (a user's dialogs in a chat)."""
    rows = await db.fetch(_OF_KEY, chat_id, kinds, key)
    return [DialogRow.from_record(row) for row in rows]


_TOUCH = """
UPDATE dialogs SET
    expires_at = now() + make_interval(secs => $4),
    notice = coalesce($5, notice),
    updated_at = now()
WHERE chat_id = $1 AND kind = $2 AND key = $3 AND expires_at > now()
RETURNING chat_id, kind, key, user_id, state, version, expires_at
"""


async def touch(
    db: Executor,
    chat_id: int,
    kind: str,
    key: int,
    *,
    ttl_s: float,
    notice: dict[str, Any] | None = None,
) -> DialogRow | None:
    """Push the expiry of a live dialog (state and version unchanged); None when there is none.
    A given `notice` replaces the stored one."""
    row = await db.fetchrow(_TOUCH, chat_id, kind, key, float(ttl_s), notice)
    return None if row is None else DialogRow.from_record(row)


_SAVE = """
UPDATE dialogs SET
    state = $5,
    attachment = CASE WHEN $6 THEN $7 ELSE attachment END,
    version = version + 1,
    updated_at = now()
WHERE chat_id = $1 AND kind = $2 AND key = $3 AND expires_at > now() AND version = $4
RETURNING chat_id, kind, key, user_id, state, version, expires_at
"""


async def save(
    db: Executor,
    chat_id: int,
    kind: str,
    key: int,
    *,
    version: int,
    state: dict[str, Any],
    set_attachment: bool = False,
    attachment: bytes | None = None,
) -> DialogRow | None:
    """Compare-and-set: store `state` if the live row is still at `version`; None when it
    changed, ended or expired meanwhile. The attachment is replaced only with `set_attachment`."""
    row = await db.fetchrow(_SAVE, chat_id, kind, key, version, state, set_attachment, attachment)
    return None if row is None else DialogRow.from_record(row)


_TAKE = """
DELETE FROM dialogs
WHERE chat_id = $1 AND kind = $2 AND key = $3 AND expires_at > now()
  AND ($4::bigint IS NULL OR version = $4)
RETURNING chat_id, kind, key, user_id, state, version, expires_at, attachment
"""


async def take(
    db: Executor, chat_id: int, kind: str, key: int, *, version: int | None = None
) -> DialogRow | None:
    """Delete a live dialog (only at `version`, when given) and return it with its attachment."""
    row = await db.fetchrow(_TAKE, chat_id, kind, key, version)
    return None if row is None else DialogRow.from_record(row)


async def delete(db: Executor, chat_id: int, kind: str, key: int) -> bool:
    """Delete a dialog, live or expired; False when there was none."""
    status: str = await db.execute(
        "DELETE FROM dialogs WHERE chat_id = $1 AND kind = $2 AND key = $3", chat_id, kind, key
    )
    return status.endswith(" 1")


_SWEEP = """
DELETE FROM dialogs
WHERE (chat_id, kind, key) IN (
    SELECT chat_id, kind, key FROM dialogs
    WHERE expires_at <= now()
    ORDER BY expires_at
    LIMIT $1
    FOR UPDATE SKIP LOCKED
)
RETURNING chat_id, kind, key, user_id, notice
"""


async def sweep_expired(db: Executor, *, limit: int = 100) -> list[ExpiredRow]:
    """Delete up to `limit` expired dialogs and return them (each to exactly one caller)."""
    rows = await db.fetch(_SWEEP, limit)
    return [ExpiredRow.from_record(row) for row in rows]
