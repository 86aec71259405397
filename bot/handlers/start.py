"""/start and /help."""

from __future__ import annotations

from typing import Any

from telegram import Update
from telegram.ext import Application, CommandHandler

from bot.context import Context, reply, who
from bot.handlers import ADMIN_COMMANDS, COMMANDS
from bot.texts import t, t_plain


async def start(update: Update, context: Context) -> None:
    asker = await who(update, context)
    name = update.effective_user.first_name if update.effective_user else ""
    await reply(update, t("start.welcome", asker.lang, name=name))


def help_text(lang: str, bot_username: str, *, admin: bool) -> str:
    lines = [t("help.title", lang)]
    lines += [
        t("help.line", lang, command=command, description=t_plain(key, lang))
        for command, key in COMMANDS
    ]
    if admin:
        lines += ["", t("help.admin_title", lang)]
        lines += [
            t("help.line", lang, command=command, description=t_plain(key, lang))
            for command, key in ADMIN_COMMANDS
        ]
    lines += ["", t("help.examples", lang, bot=bot_username)]
    return "\n".join(lines)


async def help_command(update: Update, context: Context) -> None:
    asker = await who(update, context)
    await reply(update, help_text(asker.lang, context.bot.username, admin=asker.is_admin))


def register(app: Application[Any, Any, Any, Any, Any, Any]) -> None:
    app.add_handler(CommandHandler("start", start))
    app.add_handler(CommandHandler("help", help_command))
