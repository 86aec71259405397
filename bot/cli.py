"""The `animebot` console script: run | worker | migrate | doctor."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar

from core.errors import AnimeBotError, ConfigError
from core.logs import configure_logging, get_logger, redact
from core.settings import Settings, load_settings

log = get_logger("animebot")

DESCRIPTION = "Anime Studio Bot: consistent anime characters and scenes from Telegram."

T = TypeVar("T")


def run_async(main: Coroutine[Any, Any, T]) -> T:
    """Run `main` on uvloop (libuv's event loop: less CPU per network event than asyncio's own
    loop; see README, Performance) where it is installed, else on asyncio's loop."""
    try:
        import uvloop
    except ImportError:  # not on Windows
        return asyncio.run(main)
    return uvloop.run(main)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="animebot", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    sub.add_parser(
        "run",
        help="run everything in one process: bot, workers, scheduler, status server",
        description="Run the Telegram bot, the orchestration workers, the scheduler and the "
        "status HTTP server in one process. Migrates the database on start. "
        "Stops cleanly on SIGINT/SIGTERM.",
    )
    sub.add_parser(
        "worker",
        help="run orchestration workers and the scheduler only (no Telegram polling)",
        description="Run the job orchestrator and the scheduler only, for one more GPU host "
        "sharing the same PostgreSQL. Stops cleanly on SIGINT/SIGTERM.",
    )
    sub.add_parser(
        "migrate",
        help="apply pending database migrations and print what was applied",
        description="Apply pending migrations from sql/ (each once, in order) and print them.",
    )
    sub.add_parser(
        "doctor",
        help="check every component and print one line each",
        description="Check the database, each ComfyUI server and workflow, Jellyfin, the "
        "Telegram token, ffmpeg and the music sources. Exit code 0 only when every configured "
        "component is OK.",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings()
    except ConfigError as error:
        print(f"animebot: {error}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format)
    try:
        return run_async(_dispatch(args.command, settings))
    except KeyboardInterrupt:
        return 130
    except ConfigError as error:  # e.g. no or a rejected token: restarting will not help
        log.error("stopped: configuration", reason=str(error))
        print(f"animebot: {redact(str(error))}", file=sys.stderr)
        return 2
    except AnimeBotError as error:
        log.error("stopped", reason=str(error))
        print(f"animebot: {redact(str(error))}", file=sys.stderr)
        return 1


async def _dispatch(command: str, settings: Settings) -> int:
    if command == "migrate":
        from bot.commands import migrate_command

        return await migrate_command(settings)
    if command == "doctor":
        from bot.commands import doctor_command

        return await doctor_command(settings)
    if command == "worker":
        from bot.commands import worker_command

        return await worker_command(settings)
    from bot.commands import run_command

    return await run_command(settings)


if __name__ == "__main__":
    sys.exit(main())
