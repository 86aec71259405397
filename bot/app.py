"""The Telegram application: built, wired to core, served until the stop event.

`run_bot(settings, runtime, stop)` builds the PTB Application (Bot API base URLs from settings,
HTTP timeouts, AIORateLimiter), registers every handler module, publishes the command list,
starts the job engine with the Telegram deliverer, the live progress publisher and the sweeper of
expired dialogs (bot/dialogs.py), then serves updates by long polling, or by webhook when
TELEGRAM_WEBHOOK_URL is set, until `stop` is set.
Handlers find `runtime` and `service` in `app.bot_data`.
"""

from __future__ import annotations

import asyncio
import secrets
from typing import Any
from urllib.parse import urlsplit

from telegram import BotCommand, BotCommandScopeChat, Update
from telegram.error import TelegramError
from telegram.ext import (
    AIORateLimiter,
    Application,
    ApplicationBuilder,
    CallbackQueryHandler,
    Defaults,
    TypeHandler,
)

from bot import context as ctx
from bot import dialogs, gate
from bot.delivery import TelegramDeliverer
from bot.handlers import (
    ADMIN_COMMANDS,
    COMMANDS,
    admin,
    characters,
    queue,
    results,
    scenes,
    start,
    upgrades,
)
from bot.handlers import (
    settings as settings_handlers,
)
from bot.live import live_for, start_live
from bot.progress import PacingPolicy
from bot.request import CountingRequest
from bot.texts import DEFAULT_LANGUAGE, LANGUAGES, t_plain
from core.errors import ConfigError
from core.logs import get_logger
from core.runtime import Runtime
from core.settings import Settings

log = get_logger(__name__)

App = Application[Any, Any, Any, Any, Any, Any]

ALLOWED_UPDATES = [Update.MESSAGE, Update.CALLBACK_QUERY, Update.MY_CHAT_MEMBER]
POLL_TIMEOUT_S = 10
BOOTSTRAP_RETRIES = 5
CONCURRENT_UPDATES = 64
RATE_MARGIN = 1.05  # rate-limit periods are this much longer than Telegram's
HANDLER_MODULES = (start, characters, settings_handlers, admin, queue, scenes, results, upgrades)
TRANSPORTS_KEY = "_animebot_transports"


def build_application(settings: Settings, runtime: Runtime, *, time_scale: float = 1.0) -> App:
    """`time_scale` > 1 runs Telegram's rate limits on a faster clock (benchmarks only)."""
    request = CountingRequest(
        connection_pool_size=CONCURRENT_UPDATES,
        connect_timeout=10.0,
        read_timeout=30.0,
        write_timeout=30.0,
        pool_timeout=10.0,
        media_write_timeout=120.0,
    )
    updates_request = CountingRequest(
        connection_pool_size=2, connect_timeout=10.0, read_timeout=10.0, pool_timeout=10.0
    )
    # Telegram's limits (30 messages/s overall, 20/min per group) with a 5% margin: sending
    # exactly at the limit, a request that arrives a few ms early is the 21st of its minute
    # (429; the flood benchmark in tests/perf saw it).
    rate_limiter = AIORateLimiter(
        overall_max_rate=30,
        overall_time_period=RATE_MARGIN / time_scale,
        group_max_rate=20,
        group_time_period=60 * RATE_MARGIN / time_scale,
        max_retries=2,
    )
    app: App = (
        ApplicationBuilder()
        .token(settings.token())
        .base_url(settings.telegram_api_base_url)
        .base_file_url(settings.telegram_file_base_url)
        .request(request)
        .get_updates_request(updates_request)
        .rate_limiter(rate_limiter)
        .concurrent_updates(CONCURRENT_UPDATES)
        .defaults(Defaults(allow_sending_without_reply=True))
        .build()
    )
    ctx.install(app, runtime)
    app.bot_data[TRANSPORTS_KEY] = (request, updates_request)
    register_handlers(app)
    return app


async def close_transports(app: App) -> None:
    """Close the HTTP sessions of the Bot API transports. PTB closes them in `shutdown`, but
    not when its start-up failed (Telegram unreachable, token refused): then nobody else
    does (idempotent)."""
    for request in app.bot_data.get(TRANSPORTS_KEY, ()):
        await request.shutdown()


def register_handlers(app: App) -> None:
    """The gate first (group -2: flood limit, access, the user's dialogs read from the
    database), every feature module, the fallback for stray buttons, then the dialogs
    forgotten (group 1)."""
    app.add_handler(TypeHandler(Update, gate.gate), group=-2)
    for module in HANDLER_MODULES:
        module.register(app)
    app.add_handler(CallbackQueryHandler(ctx.any_button))  # last of group 0: nobody took it
    app.add_handler(TypeHandler(Update, dialogs.forget), group=1)
    app.add_error_handler(ctx.on_error)


def command_list(lang: str, *, admin_commands: bool = False) -> list[BotCommand]:
    pairs = COMMANDS + (ADMIN_COMMANDS if admin_commands else ())
    return [BotCommand(command, t_plain(key, lang)) for command, key in pairs]


async def publish_commands(app: App, settings: Settings) -> None:
    """setMyCommands per language, plus the admin commands in each admin's private chat (per
    language too: a list for a chat wins over the language's list for everyone)."""
    try:
        await app.bot.set_my_commands(command_list(DEFAULT_LANGUAGE))
        for lang in LANGUAGES:
            if lang != DEFAULT_LANGUAGE:
                await app.bot.set_my_commands(command_list(lang), language_code=lang)
    except TelegramError as error:
        log.warning("could not publish the command list", error=str(error))
    for admin_id in settings.admin_user_ids:
        try:
            scope = BotCommandScopeChat(admin_id)
            await app.bot.set_my_commands(
                command_list(DEFAULT_LANGUAGE, admin_commands=True), scope=scope
            )
            for lang in LANGUAGES:
                if lang != DEFAULT_LANGUAGE:
                    await app.bot.set_my_commands(
                        command_list(lang, admin_commands=True), scope=scope, language_code=lang
                    )
        except TelegramError as error:  # the admin never opened a chat with the bot
            log.info("admin commands not published", admin_id=admin_id, error=str(error))


def webhook_path(url: str) -> str:
    path = urlsplit(url).path.strip("/")
    if not path:
        raise ConfigError(
            "TELEGRAM_WEBHOOK_URL needs a path (like https://bot.example.com/telegram), so the "
            "webhook endpoint is not guessable from the host name alone"
        )
    return path


def _polling_error(error: TelegramError) -> None:
    log.warning("getUpdates failed, retrying", error=str(error))


async def serve(app: App, settings: Settings) -> None:
    updater = app.updater
    assert updater is not None
    if settings.telegram_webhook_url:
        secret = (
            settings.telegram_webhook_secret.get_secret_value()
            if settings.telegram_webhook_secret
            else secrets.token_urlsafe(32)
        )
        await updater.start_webhook(
            listen=settings.telegram_webhook_listen,
            port=settings.telegram_webhook_port,
            url_path=webhook_path(settings.telegram_webhook_url),
            webhook_url=settings.telegram_webhook_url,
            secret_token=secret,
            allowed_updates=ALLOWED_UPDATES,
            bootstrap_retries=BOOTSTRAP_RETRIES,
        )
        log.info(
            "receiving updates by webhook",
            listen=settings.telegram_webhook_listen,
            port=settings.telegram_webhook_port,
        )
    else:
        await updater.start_polling(
            poll_interval=0.0,
            timeout=POLL_TIMEOUT_S,
            bootstrap_retries=BOOTSTRAP_RETRIES,
            allowed_updates=ALLOWED_UPDATES,
            error_callback=_polling_error,
        )
        log.info("receiving updates by long polling")


async def run_bot(
    settings: Settings, runtime: Runtime, stop: asyncio.Event, *, time_scale: float = 1.0
) -> None:
    """Serve the bot until `stop` is set, then shut everything down in reverse order.

    `time_scale` (benchmarks against a time-scaled fake Bot API; 1 in production) divides every
    rate-limit period: the AIORateLimiter's and the progress editor's `PacingPolicy`."""
    app = build_application(settings, runtime, time_scale=time_scale)
    try:
        await _serve_until_stopped(app, settings, runtime, stop, time_scale)
    finally:
        await close_transports(app)
    log.info("bot shut down")


async def _serve_until_stopped(
    app: App, settings: Settings, runtime: Runtime, stop: asyncio.Event, time_scale: float
) -> None:
    async with app:  # initialize() ... shutdown()
        log.info("bot connected", username=app.bot.username)
        await publish_commands(app, settings)
        live_for(runtime, app.bot, policy=PacingPolicy().scaled(time_scale))  # before deliveries
        await runtime.start_engine(deliverer=TelegramDeliverer(app.bot, runtime))
        live = start_live(app, runtime)
        sweeper = dialogs.Sweeper(app).start()  # expired dialogs and their timeout messages
        try:
            await app.start()
            try:
                await serve(app, settings)
                await stop.wait()
            finally:
                if app.updater is not None and app.updater.running:
                    await app.updater.stop()
                await app.stop()
        finally:
            await sweeper.stop()
            await runtime.stop_engine()  # no delivery may run on a closed bot
            await live.stop()
