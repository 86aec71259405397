"""Bot admin commands (ADMIN_USER_IDS or role admin): /stats, /quota, /ban, /unban."""

from __future__ import annotations

from typing import Any

from telegram import Update
from telegram.ext import Application, CommandHandler

from bot.context import Context, Who, reply, report_error, service_of, who
from bot.texts import t, t_plain
from core.errors import AnimeBotError
from core.logs import get_logger
from core.models import User
from core.service import Stats

log = get_logger(__name__)

MAX_QUOTA = 100_000


async def _admin(update: Update, context: Context) -> Who | None:
    asker = await who(update, context)
    if asker.is_admin:
        return asker
    log.info("admin command refused", user_id=asker.user_id)
    await reply(update, t("admin.only", asker.lang))
    return None


def _describe(user: User) -> str:
    return f"@{user.username} ({user.id})" if user.username else f"{user.first_name} ({user.id})"


async def _find(update: Update, context: Context, asker: Who, reference: str) -> User | None:
    ref = reference.strip().removeprefix("@")
    user = await service_of(context).find_user(ref) if ref else None
    if user is None:
        await reply(update, t("admin.unknown_user", asker.lang, ref=reference))
    return user


def _library(stats: Stats, lang: str, none: str) -> str:
    """The library line of /stats: how delivered results are filed, the zero parts left out."""
    counts = stats.library
    if counts is None:
        return t_plain("admin.library_off", lang)
    waiting = (
        t_plain(
            "admin.library_waiting_unreachable",
            lang,
            count=counts.waiting,
            unreachable=counts.unreachable,
        )
        if counts.unreachable
        else t_plain("admin.library_waiting", lang, count=counts.waiting)
    )
    parts = [
        (counts.linked, t_plain("admin.library_linked", lang, count=counts.linked)),
        (counts.filed, t_plain("admin.library_filed", lang, count=counts.filed)),
        (counts.waiting, waiting),
        (counts.failed, t_plain("admin.library_failed", lang, count=counts.failed)),
    ]
    return ", ".join(text for count, text in parts if count) or none


async def stats(update: Update, context: Context) -> None:
    asker = await _admin(update, context)
    if asker is None:
        return
    result = await service_of(context).stats()
    none = t_plain("admin.none", asker.lang)
    jobs = ", ".join(
        f"{t_plain(f'state.{state}', asker.lang)} {count}"
        for state, count in sorted(result.jobs_by_state.items())
    )
    backends = ", ".join(f"{url}: {count}" for url, count in sorted(result.backends.items()))
    await reply(
        update,
        t(
            "admin.stats",
            asker.lang,
            users=result.users,
            jobs=jobs or none,
            backends=backends or none,
            library=_library(result, asker.lang, none),
        ),
    )


async def quota(update: Update, context: Context) -> None:
    asker = await _admin(update, context)
    if asker is None:
        return
    args = context.args or []
    if len(args) != 2:
        await reply(update, t("admin.quota_usage", asker.lang))
        return
    amount: int | None
    if args[1].lower() == "default":
        amount = None
    elif args[1].isdigit() and int(args[1]) <= MAX_QUOTA:
        amount = int(args[1])
    else:
        await reply(update, t("admin.quota_bad_number", asker.lang))
        return
    user = await _find(update, context, asker, args[0])
    if user is None:
        return
    try:
        user = await service_of(context).set_quota(user.id, amount)
    except AnimeBotError as error:
        await report_error(update, error, asker.lang)
        return
    log.info("quota set", user_id=user.id, quota=amount, by=asker.user_id)
    settings = service_of(context).settings
    shown = (
        str(amount)
        if amount is not None
        else t_plain("admin.quota_default", asker.lang, quota=settings.daily_quota)
    )
    await reply(update, t("admin.quota_set", asker.lang, user=_describe(user), quota=shown))


async def _set_banned(update: Update, context: Context, banned: bool) -> None:
    asker = await _admin(update, context)
    if asker is None:
        return
    args = context.args or []
    if len(args) != 1:
        command = "ban" if banned else "unban"
        await reply(update, t("admin.ban_usage", asker.lang, command=command))
        return
    user = await _find(update, context, asker, args[0])
    if user is None:
        return
    try:
        user = await service_of(context).set_banned(user.id, banned)
    except AnimeBotError as error:
        await report_error(update, error, asker.lang)
        return
    log.info("ban changed", user_id=user.id, banned=banned, by=asker.user_id)
    key = "admin.banned" if banned else "admin.unbanned"
    await reply(update, t(key, asker.lang, user=_describe(user)))


async def ban(update: Update, context: Context) -> None:
    await _set_banned(update, context, True)


async def unban(update: Update, context: Context) -> None:
    await _set_banned(update, context, False)


def register(app: Application[Any, Any, Any, Any, Any, Any]) -> None:
    app.add_handler(CommandHandler("stats", stats))
    app.add_handler(CommandHandler("quota", quota))
    app.add_handler(CommandHandler("ban", ban))
    app.add_handler(CommandHandler("unban", unban))
