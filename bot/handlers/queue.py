"""/queue (your jobs: state, position, ETA), /cancel <job id prefix>, /history (paged), /status."""

from __future__ import annotations

import html
import math
import re
from typing import Any

from telegram import InlineKeyboardMarkup, Update
from telegram.ext import Application, CallbackQueryHandler, CommandHandler

from bot import keyboards as kb
from bot.context import (
    Context,
    Who,
    edit,
    paged_list,
    pressed,
    reply,
    report_error,
    runtime_of,
    service_of,
    toast,
    who,
)
from bot.live import live_for
from bot.texts import t, t_plain
from core.doctor import run_checks
from core.errors import AnimeBotError
from core.health import ComponentHealth
from core.logs import get_logger
from core.models import Generation
from core.service import JobTicket
from core.states import CANCELLABLE, JobState

log = get_logger(__name__)

ID_CHARS = 8  # how much of a job id is shown
HISTORY_PER_PAGE = 5
PROMPT_CHARS = 60
_PREFIX = re.compile(r"^[0-9a-f-]{1,36}$")
_URL = re.compile(r"https?://\S+")

CANCEL = kb.action("qc", kb.UUID_ARG)
HISTORY = kb.action("hp", kb.int_arg(100_000))


def short_id(job: Generation) -> str:
    return job.id.hex[:ID_CHARS]


def eta_text(seconds: float | None, lang: str) -> str:
    if seconds is None:
        return ""
    if seconds < 90:
        return t_plain("eta.seconds", lang, n=max(1, math.ceil(seconds)))
    return t_plain("eta.minutes", lang, n=math.ceil(seconds / 60))


def _prompt(job: Generation) -> str:
    text = " ".join(job.prompt_typed.split())
    return text if len(text) <= PROMPT_CHARS else text[: PROMPT_CHARS - 1] + "…"


def ticket_line(ticket: JobTicket, lang: str) -> str:
    job = ticket.job
    where = ""
    if job.status is JobState.QUEUED and ticket.position is not None:
        where = t_plain(
            "queue.position", lang, position=ticket.position, eta=eta_text(ticket.eta_s, lang)
        )
    elif job.status is JobState.RUNNING and job.progress > 0:
        where = t_plain("queue.progress", lang, percent=round(job.progress * 100))
    return t(
        "queue.line",
        lang,
        id=short_id(job),
        kind=t_plain(f"kind.{job.kind.value}", lang),
        state=t_plain(f"state.{job.status.value}", lang),
        where=where,
        prompt=_prompt(job),
    )


def queue_view(
    tickets: list[JobTicket], owner: int, lang: str
) -> tuple[str, InlineKeyboardMarkup | None]:
    if not tickets:
        return t("queue.empty", lang), None
    lines = [t("queue.title", lang), *(ticket_line(ticket, lang) for ticket in tickets)]
    cancellable = [ticket.job for ticket in tickets if ticket.job.status in CANCELLABLE]
    if cancellable:
        lines += ["", t("queue.cancel_hint", lang, example=short_id(cancellable[0])[:4])]
    buttons = [
        kb.button(
            t_plain("queue.cancel_button", lang, id=short_id(job)),
            CANCEL.data(job.id, owner=owner),
        )
        for job in cancellable
    ]
    return "\n".join(lines), InlineKeyboardMarkup(kb.rows(buttons, 2)) if buttons else None


async def show_queue(update: Update, context: Context) -> None:
    asker = await who(update, context)
    tickets = await service_of(context).my_queue(asker.actor)
    text, markup = queue_view(tickets, asker.user_id, asker.lang)
    await reply(update, text, markup=markup)


async def _cancel(context: Context, asker: Who, job: Generation) -> str:
    """Cancel the job; the text key saying what happened."""
    cancelled = await service_of(context).cancel(asker.actor, job.id)
    log.info("job cancel asked", job_id=str(job.id), status=cancelled.status.value)
    if cancelled.status is JobState.CANCELLED:
        return "queue.cancelled"
    live_for(runtime_of(context), context.bot).cancelling(job.id)  # the message says so now
    return "queue.cancelling"


async def cancel_command(update: Update, context: Context) -> None:
    asker = await who(update, context)
    args = context.args or []
    if not args:
        tickets = await service_of(context).my_queue(asker.actor)
        _, markup = queue_view(tickets, asker.user_id, asker.lang)
        await reply(update, t("queue.cancel_usage", asker.lang), markup=markup)
        return
    prefix = args[0].strip().lower()
    prefix = prefix.replace("-", "") if _PREFIX.match(prefix) else ""
    if len(args) != 1 or not prefix:
        await reply(update, t("queue.cancel_bad_id", asker.lang))
        return
    tickets = await service_of(context).my_queue(asker.actor)
    matches = [tk.job for tk in tickets if tk.job.id.hex.startswith(prefix)]
    if not matches:
        await reply(update, t("queue.cancel_not_found", asker.lang, id=prefix))
        return
    if len(matches) > 1:
        await reply(update, t("queue.cancel_ambiguous", asker.lang, id=prefix))
        return
    try:
        key = await _cancel(context, asker, matches[0])
    except AnimeBotError as error:
        await report_error(update, error, asker.lang)
        return
    await reply(update, t(key, asker.lang, id=short_id(matches[0])))


async def cancel_button(update: Update, context: Context) -> None:
    callback = await pressed(update, CANCEL)
    if callback is None:
        return
    asker = await who(update, context)
    service = service_of(context)
    try:
        job = await service.job(callback.uuid(0))
        key = await _cancel(context, asker, job)
    except AnimeBotError as error:
        await report_error(update, error, asker.lang)
        return
    await toast(update, t_plain(key, asker.lang, id=short_id(job)))
    tickets = await service.my_queue(asker.actor)
    view, markup = queue_view(tickets, asker.user_id, asker.lang)
    assert update.callback_query is not None
    await edit(update.callback_query, view, markup)


# -- /history ----------------------------------------------------------------------------------


async def history_view(
    context: Context, asker: Who, page: int
) -> tuple[str, InlineKeyboardMarkup | None]:
    service = service_of(context)
    jobs = await service.history(asker.actor, page=page, per_page=HISTORY_PER_PAGE)
    if not jobs and page > 0:
        page = 0
        jobs = await service.history(asker.actor, page=0, per_page=HISTORY_PER_PAGE)
    if not jobs:
        return t("history.empty", asker.lang), None
    has_next = bool(await service.history(asker.actor, page=page + 1, per_page=HISTORY_PER_PAGE))
    lines = [t("history.title", asker.lang, page=page + 1)]
    for job in jobs:
        when = job.finished_at or job.created_at
        lines.append(
            t(
                "history.line",
                asker.lang,
                id=short_id(job),
                date=when.strftime("%Y-%m-%d"),
                kind=t_plain(f"kind.{job.kind.value}", asker.lang),
                prompt=_prompt(job),
            )
        )
    owner = asker.user_id
    navigation = kb.nav_row(page, None, lambda p: HISTORY.data(p, owner=owner), has_next=has_next)
    return "\n".join(lines), InlineKeyboardMarkup([navigation]) if navigation else None


show_history, history_page = paged_list(HISTORY, history_view)


# -- /status -------------------------------------------------------------------------------------


def health_line(result: ComponentHealth, *, detailed: bool) -> str:
    """Admins see the full line; others the component and its state, without addresses."""
    if detailed:
        return result.line()
    return f"{_URL.sub('…', result.name)}: {result.state.value}"


async def status(update: Update, context: Context) -> None:
    asker = await who(update, context)
    message = await reply(update, t("status.checking", asker.lang))
    results = await run_checks(runtime_of(context).settings)
    stats = await service_of(context).stats()
    running = sum(count for state, count in stats.jobs_by_state.items() if state in _IN_PROGRESS)
    lines = [
        t("status.title", asker.lang),
        *(_html(health_line(r, detailed=asker.is_admin)) for r in results),
        "",
        t(
            "status.jobs",
            asker.lang,
            queued=stats.jobs_by_state.get(JobState.QUEUED.value, 0),
            running=running,
        ),
    ]
    await message.edit_text("\n".join(lines), parse_mode="HTML")


_IN_PROGRESS = frozenset(
    s.value
    for s in (JobState.SUBMITTED, JobState.RUNNING, JobState.POSTPROCESSING, JobState.DELIVERING)
)


def _html(text: str) -> str:
    return html.escape(text)


def register(app: Application[Any, Any, Any, Any, Any, Any]) -> None:
    app.add_handler(CommandHandler("queue", show_queue))
    app.add_handler(CommandHandler("cancel", cancel_command))
    app.add_handler(CommandHandler("history", show_history))
    app.add_handler(CommandHandler("status", status))
    app.add_handler(CallbackQueryHandler(cancel_button, pattern=CANCEL.pattern))
    app.add_handler(CallbackQueryHandler(history_page, pattern=HISTORY.pattern))
