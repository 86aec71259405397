"""What each `animebot` subcommand does."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

from core.db.migrate import migrate
from core.db.pool import open_database
from core.doctor import run_checks
from core.errors import AnimeBotError, ConfigError
from core.logs import get_logger
from core.runtime import Runtime
from core.settings import Settings
from core.status_server import StatusServer

log = get_logger("animebot")


def _stop_event() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    return stop


@asynccontextmanager
async def _status_server(runtime: Runtime, settings: Settings) -> AsyncIterator[None]:
    """/healthz, /readyz, /metrics, /ws and the live page, for as long as the process serves."""
    server = StatusServer(runtime, settings, host=settings.status_host, port=settings.status_port)
    await server.start()
    log.info("status server listening", url=server.url)
    try:
        yield
    finally:
        await server.stop()


async def migrate_command(settings: Settings) -> int:
    database = await open_database(
        settings.database_url.get_secret_value() if settings.database_url else None,
        settings.data_dir,
    )
    try:
        async with database.pool.acquire() as conn:
            applied = await migrate(conn)  # type: ignore[arg-type]
    finally:
        await database.close()
    if applied:
        for name in applied:
            print(f"applied {name}")
    else:
        print("database is up to date, nothing to apply")
    return 0


async def doctor_command(settings: Settings) -> int:
    results = await run_checks(settings)
    for result in results:
        print(result.line())
    return 0 if all(result.ok for result in results) else 1


async def run_command(settings: Settings) -> int:
    log.info("bot starting")
    settings.token()  # a clear ConfigError when TELEGRAM_BOT_TOKEN is missing
    from telegram.error import InvalidToken, TelegramError

    from bot.app import run_bot

    stop = _stop_event()
    runtime = await Runtime.start(settings, role="run")
    try:
        async with _status_server(runtime, settings):
            await run_bot(settings, runtime, stop)
    except InvalidToken:  # its message contains the token: never print or log it
        raise ConfigError(
            "TELEGRAM_BOT_TOKEN was rejected by Telegram: copy the token again from @BotFather"
        ) from None
    except TelegramError as error:
        raise AnimeBotError(
            f"cannot reach the Telegram Bot API at {settings.telegram_api_base_url}: {error}"
        ) from None
    finally:
        await runtime.stop()
    log.info("bot stopped")
    return 0


async def worker_command(settings: Settings) -> int:
    if settings.database_url is None:  # its own embedded database would never see a job
        raise ConfigError(
            "animebot worker needs DATABASE_URL: the PostgreSQL the bot uses, where the jobs are"
        )
    log.info("worker starting")
    stop = _stop_event()
    runtime = await Runtime.start(settings, role="worker")
    try:
        await runtime.start_engine(deliverer=None)
        async with _status_server(runtime, settings):
            await stop.wait()
    finally:
        await runtime.stop()
    log.info("worker stopped")
    return 0
