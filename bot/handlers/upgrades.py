"""A group upgraded to a supergroup: Telegram gives it a new chat id, and its stored state follows.

Telegram says so with two service messages, `migrate_to_chat_id` in the old group and
`migrate_from_chat_id` in the new supergroup; they may come in either order, concurrently, or
only one of them. Each has core move the chat (`service.chat_migrated`: its settings, the jobs
not delivered yet, characters and per-user dialogs, in one transaction; idempotent). A delivery
refused with ChatMigrated does the same (bot/delivery.py).

The handler runs before the gate (group -3) and stops the update there: the gate would first
record the supergroup with the default settings, and refuse it when ALLOWED_CHAT_IDS lists only
the group's id (a supergroup upgraded from a listed group is allowed from then on; a warning
asks the operator to add its id). Nothing is said in the chat. The bot keeps nothing in PTB's
`chat_data` (its state is in PostgreSQL), so `Application.migrate_chat_data` has nothing to
move.
"""

from __future__ import annotations

from typing import Any

from telegram import Update
from telegram.ext import Application, ApplicationHandlerStop, MessageHandler, filters

from bot.context import Context, service_of
from core.logs import get_logger

log = get_logger(__name__)

GROUP = -3  # before the gate (-2)


async def chat_migrated(update: Update, context: Context) -> None:
    message = update.message
    if message is None:
        return
    if message.migrate_to_chat_id is not None:  # in the old group
        old, new, title = message.chat_id, message.migrate_to_chat_id, None
    elif message.migrate_from_chat_id is not None:  # in the new supergroup
        old, new, title = message.migrate_from_chat_id, message.chat_id, message.chat.title
    else:
        return
    try:
        await service_of(context).chat_migrated(old, new, title=title)
    except Exception:  # the other service message, or a delivery, may move it later
        log.exception("group upgrade not recorded", old_chat_id=old, new_chat_id=new)
    raise ApplicationHandlerStop


def register(app: Application[Any, Any, Any, Any, Any, Any]) -> None:
    app.add_handler(MessageHandler(filters.StatusUpdate.MIGRATE, chat_migrated), group=GROUP)
