"""The gate: what runs before every handler (group -2).

It drops updates from bots and commands addressed to other bots (a command sent on behalf of
a group or channel, as by an anonymous group admin, is told how to be seen), then reads three
things from PostgreSQL at once (three pooled connections: one round trip of latency, not three):
- the user's flood limit (`service.rate_limit`: one token bucket per user shared by every bot
  process), for commands and button presses only;
- the asker (`who`: records the user and chat, raises `AccessDenied` for banned users and chats
  outside ALLOWED_CHAT_IDS);
- the user's dialogs in this chat, for the updates a dialog can take (`bot.dialogs`).

Then it applies them in that order: a flooding user is slowed down politely, a refused user or
chat is told why, and when the store fails the user is told once; in each case no handler runs.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import NoReturn

from telegram import Message, MessageEntity, Update
from telegram.constants import ChatType
from telegram.error import TelegramError
from telegram.ext import ApplicationHandlerStop

from bot import dialogs
from bot.context import (
    Context,
    actor_of,
    language_of,
    on_error,
    reply,
    service_of,
    toast,
    who,
)
from bot.texts import core_text, t, t_plain
from core.db.rate_limits import RateVerdict
from core.dialogs import UserDialogs
from core.logs import bind_context, get_logger
from core.service import AccessDenied

log = get_logger(__name__)


def command_target(message: Message) -> str | None:
    """The `@bot` a leading command is addressed to (None when no @ or no command)."""
    entities: Sequence[MessageEntity] = message.entities or message.caption_entities or ()
    for entity in entities:
        if entity.type == MessageEntity.BOT_COMMAND and entity.offset == 0:
            command = (
                message.parse_entity(entity)
                if message.text
                else (message.parse_caption_entity(entity))
            )
            _, _, target = command.partition("@")
            return target or None
    return None


def is_command(message: Message) -> bool:
    return any(
        e.type == MessageEntity.BOT_COMMAND and e.offset == 0
        for e in (message.entities or message.caption_entities or ())
    )


async def _nothing() -> None:
    return None


async def gate(update: Update, context: Context) -> None:
    user, chat = update.effective_user, update.effective_chat
    if user is None or chat is None:
        raise ApplicationHandlerStop
    message = update.message
    if message is not None:
        target = command_target(message)
        if target is not None and target.lower() != (context.bot.username or "").lower():
            raise ApplicationHandlerStop  # `/cmd@OtherBot`
    if user.is_bot:
        if (
            message is not None
            and message.sender_chat is not None
            and is_command(message)
            and service_of(context).policy.chat_allowed(chat.id)
        ):
            await _anonymous(update, message)
        raise ApplicationHandlerStop
    counted = update.callback_query is not None or (message is not None and is_command(message))
    service = service_of(context)
    actor = actor_of(update)
    # Every log line written while handling this update carries the chat and the user (bound
    # here: `who` runs in a task of its own below, whose context changes stay there).
    bind_context(chat_id=actor.chat_id, user_id=actor.user_id)
    verdict, asker, user_dialogs = await asyncio.gather(
        service.rate_limit(user.id) if counted else _nothing(),
        who(update, context),
        dialogs.read(update, context),
        return_exceptions=True,
    )
    lang = language_of(update)
    if isinstance(verdict, BaseException):
        await _store_failed(update, context, verdict)
    if isinstance(verdict, RateVerdict) and not verdict.allowed:
        await _slow_down(update, verdict, lang)
    if isinstance(asker, AccessDenied):
        await _refuse(update, asker, lang)
    for outcome in (asker, user_dialogs):
        if isinstance(outcome, BaseException):
            await _store_failed(update, context, outcome)
    if isinstance(user_dialogs, UserDialogs):
        dialogs.cache_of(context.application).put(update, user_dialogs)


async def _anonymous(update: Update, message: Message) -> None:
    """A command sent on behalf of a chat (an anonymous group admin, or a channel): its sender
    cannot be told apart from anyone else, so nothing can run for them; say how to be seen."""
    sender = message.sender_chat
    log.info(
        "command from an anonymous sender",
        chat_id=message.chat_id,
        sender_chat_id=sender.id if sender else None,
    )
    with contextlib.suppress(TelegramError):
        await reply(update, t("common.anonymous_sender", language_of(update)))


async def _slow_down(update: Update, verdict: RateVerdict, lang: str) -> NoReturn:
    """A refused update: a toast for every button press, one reply for the whole flood."""
    user, chat = update.effective_user, update.effective_chat
    log.info(
        "rate limited",
        user_id=user.id if user else None,
        chat_id=chat.id if chat else None,
        warned=verdict.warn,
    )
    if update.callback_query is not None:
        await toast(update, t_plain("common.slow_down_toast", lang))
    elif verdict.warn and update.message is not None:
        with contextlib.suppress(TelegramError):
            await reply(update, t("common.slow_down", lang))
    raise ApplicationHandlerStop


async def _refuse(update: Update, error: AccessDenied, lang: str) -> NoReturn:
    user, chat, message = update.effective_user, update.effective_chat, update.message
    log.info(
        "access denied",
        user_id=user.id if user else None,
        chat_id=chat.id if chat else None,
        reason=str(error),
    )
    refusal = core_text(error.user_message, lang)
    if update.callback_query is not None:
        await toast(update, refusal)
    elif message is not None and (
        is_command(message) or (chat is not None and chat.type == ChatType.PRIVATE)
    ):
        with contextlib.suppress(TelegramError):
            await reply(update, t("common.failed", lang, message=refusal))
    raise ApplicationHandlerStop


async def _store_failed(update: Update, context: Context, error: BaseException) -> NoReturn:
    """The store is down, ...: report once (a reference for the log), skip the handlers."""
    if not isinstance(error, Exception):  # cancellation and the like: not ours to report
        raise error
    context.error = error
    await on_error(update, context)
    raise ApplicationHandlerStop from None
