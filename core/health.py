"""Component checks shared by `animebot doctor`, the bot's /status and the status server.

Each check returns one honest line: OK, FAILED with the reason, or NOT CONFIGURED.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum

import aiohttp
import asyncpg

from core.db.migrate import pending_migrations
from core.db.pool import Database
from core.errors import AnimeBotError, describe
from core.logs import redact

CHECK_TIMEOUT_S = 10.0


class HealthState(StrEnum):
    OK = "OK"
    FAILED = "FAILED"
    NOT_CONFIGURED = "NOT CONFIGURED"


@dataclass(frozen=True)
class ComponentHealth:
    name: str
    state: HealthState
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.state is not HealthState.FAILED

    def line(self) -> str:
        text = f"{self.name}: {self.state.value}"
        return redact(f"{text} ({self.detail})" if self.detail else text)


def ok(name: str, detail: str = "") -> ComponentHealth:
    return ComponentHealth(name, HealthState.OK, detail)


def failed(name: str, detail: str) -> ComponentHealth:
    return ComponentHealth(name, HealthState.FAILED, detail)


def not_configured(name: str, detail: str = "") -> ComponentHealth:
    return ComponentHealth(name, HealthState.NOT_CONFIGURED, detail)


async def guarded(name: str, check: Callable[[], Awaitable[ComponentHealth]]) -> ComponentHealth:
    """Run one check with a timeout; any failure becomes a FAILED line, never an exception."""
    try:
        return await asyncio.wait_for(check(), CHECK_TIMEOUT_S)
    except TimeoutError:
        return failed(name, f"no answer within {CHECK_TIMEOUT_S:.0f} s")
    except AnimeBotError as error:
        return failed(name, str(error))
    except (aiohttp.ClientError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
        return failed(name, describe(error))


async def check_database(database: Database) -> ComponentHealth:
    async with database.pool.acquire() as conn:
        version = await conn.fetchval("SHOW server_version")
        pending = await pending_migrations(conn)  # type: ignore[arg-type]
    where = "embedded" if database.embedded is not None else "DATABASE_URL"
    if pending:
        return failed("database", f"PostgreSQL {version} ({where}), not migrated: {pending}")
    return ok("database", f"PostgreSQL {version} ({where}), schema up to date")


async def check_telegram(
    session: aiohttp.ClientSession, base_url: str, token: str | None
) -> ComponentHealth:
    if not token:
        return not_configured("telegram", "TELEGRAM_BOT_TOKEN is not set")
    async with session.get(f"{base_url}{token}/getMe") as response:
        try:
            body = await response.json(content_type=None)
        except ValueError:  # an HTML error page or another service: not the Bot API
            body = None
    # A success without the bot object is not the Bot API either (and would crash below).
    if not isinstance(body, dict) or (body.get("ok") and not isinstance(body.get("result"), dict)):
        return failed(
            "telegram", f"HTTP {response.status} from {base_url}: not a Telegram Bot API answer"
        )
    if response.status == 200 and body.get("ok"):
        return ok("telegram", f"token accepted, bot @{body['result'].get('username')}")
    description = body.get("description", f"HTTP {response.status}")
    return failed("telegram", f"token rejected: {description}")
