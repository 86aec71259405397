"""Buttons under results and progress messages.

Under a result (bot.render.result_markup): Reroll (new seed), Variations, Upscale, Animate,
Use as reference (choose one of your characters; the buttons of the result turn into the list
and back), Original (the untouched file as a document). Each new job answers with its own
progress message replying to the result. Under a progress message: Cancel (bot.render.CANCEL).

Only the requester may press them (others get "this is not your request"); forged or outdated
data gets a toast; refusals from core show their user message; nothing raises into the chat.
A result of a group pressed in the supergroup it was upgraded to (or the other way round)
counts as one of this chat.
Original: the document replies to the result, in the result's topic (when the job's topic was
deleted, the result went to the chat, and so does the document). A file that is gone or too
big, and a document Telegram refuses for good (a closed forum topic, no right to send files,
no access: BadRequest / Forbidden) each get their own alert; a flood wait or a network error
after the rate limiter's retries reaches the global error handler (the "something went wrong"
alert, logged with a reference).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any
from uuid import UUID

from telegram import InlineKeyboardMarkup, Message, Update
from telegram.error import BadRequest, Forbidden
from telegram.ext import Application, CallbackQueryHandler

from bot import keyboards as kb
from bot.context import (
    Context,
    Who,
    check_owner,
    report_error,
    runtime_of,
    service_of,
    stale_button,
    toast,
    who,
)
from bot.delivery import Undeliverable, has_original, send_original, topic_of
from bot.live import live_for
from bot.render import (
    ANIMATE,
    CANCEL,
    ORIGINAL,
    REFERENCE,
    REFERENCE_BACK,
    REFERENCE_TO,
    REROLL,
    UPSCALE,
    VARIATIONS,
    reference_markup,
    result_markup,
)
from bot.texts import t_plain
from core.errors import AnimeBotError, NotFound
from core.jobs.delivery import primary_output
from core.logs import get_logger
from core.models import Generation, JobKind
from core.service import JobTicket
from core.states import JobState

log = get_logger(__name__)

Handler = Callable[[Update, Context], Coroutine[Any, Any, None]]


async def _pressed(update: Update, context: Context) -> tuple[kb.Callback, Who, Message] | None:
    """Decoded, owned and from a message of ours; otherwise answered and None."""
    query = update.callback_query
    callback = kb.decode(query.data if query else None)
    if query is None or callback is None or not isinstance(query.message, Message):
        await stale_button(update)
        return None
    if not await check_owner(update, callback):
        return None
    return callback, await who(update, context), query.message


def _guarded(
    handler: Callable[[Update, Context, kb.Callback, Who, Message], Awaitable[None]],
) -> Handler:
    async def run(update: Update, context: Context) -> None:
        pressed = await _pressed(update, context)
        if pressed is None:
            return
        callback, asker, message = pressed
        try:
            await handler(update, context, callback, asker, message)
        except AnimeBotError as error:
            log.info(
                "button refused",
                action=callback.name,
                reason=str(error),
                job_id=str(callback.args[0]) if callback.args else None,
            )
            await report_error(update, error, asker.lang)

    return run


async def _started(
    update: Update, context: Context, asker: Who, message: Message, ticket: JobTicket
) -> None:
    await toast(update, t_plain("scenes.started_toast", asker.lang))
    live = live_for(runtime_of(context), context.bot)
    await live.post(ticket, lang=asker.lang, reply_to=message.message_id)
    log.info(
        "job started from a result",
        job_id=str(ticket.job.id),
        parent=str(ticket.job.parent_id),
        operation=ticket.job.operation.value,
    )


# -- new jobs from a result -----------------------------------------------------------------------


async def reroll(
    update: Update, context: Context, cb: kb.Callback, asker: Who, message: Message
) -> None:
    ticket = await service_of(context).reroll(
        asker.actor,
        cb.uuid(0),
        variation=cb.action is VARIATIONS,
        request_message_id=message.message_id,
    )
    await _started(update, context, asker, message, ticket)


async def upscale(
    update: Update, context: Context, cb: kb.Callback, asker: Who, message: Message
) -> None:
    ticket = await service_of(context).upscale(
        asker.actor, cb.uuid(0), request_message_id=message.message_id
    )
    await _started(update, context, asker, message, ticket)


async def animate(
    update: Update, context: Context, cb: kb.Callback, asker: Who, message: Message
) -> None:
    ticket = await service_of(context).animate(
        asker.actor, cb.uuid(0), request_message_id=message.message_id
    )
    await _started(update, context, asker, message, ticket)


# -- reference ----------------------------------------------------------------------------------


async def _set_markup(update: Update, markup: InlineKeyboardMarkup) -> None:
    query = update.callback_query
    assert query is not None
    try:
        await query.edit_message_reply_markup(markup)
    except BadRequest as error:
        if "not modified" not in error.message.lower():  # gone, or too old to edit
            log.info("buttons not changed", error=error.message)


async def _job_of(context: Context, asker: Who, job_id: UUID) -> Generation:
    """The job of a result in this chat (or in the group this supergroup was upgraded from)."""
    service = service_of(context)
    job = await service.job(job_id)
    if not await service.same_chat(job.chat_id, asker.chat_id):
        raise NotFound(
            "job of another chat", user_message=t_plain("scenes.not_a_result", asker.lang)
        )
    return job


async def reference(
    update: Update, context: Context, cb: kb.Callback, asker: Who, message: Message
) -> None:
    """Show the user's characters in place of the result's buttons."""
    job = await _job_of(context, asker, cb.uuid(0))
    if job.kind is not JobKind.IMAGE:
        await toast(update, t_plain("scenes.no_image", asker.lang))
        return
    owned, _total = await service_of(context).list_characters(asker.user_id, per_page=48)
    if not owned:
        await toast(update, t_plain("scenes.ref_no_characters", asker.lang), alert=True)
        return
    await toast(update, t_plain("scenes.ref_pick", asker.lang))
    pairs = [(c.id, c.name) for c in owned]
    await _set_markup(update, reference_markup(job.id, asker.user_id, pairs, asker.lang))


async def reference_to(
    update: Update, context: Context, cb: kb.Callback, asker: Who, message: Message
) -> None:
    """Add the result's image as a reference of the chosen character."""
    service = service_of(context)
    job = await service.job_for_message(message.chat_id, message.message_id)
    if job is None:
        log.info("reference: message is no result", message_id=message.message_id)
        await toast(update, t_plain("scenes.not_a_result", asker.lang))
        return
    image = primary_output(job, await service.outputs(job.id))
    if image is None or image.kind is not JobKind.IMAGE:
        await toast(update, t_plain("scenes.no_image", asker.lang))
        return
    character = await service.get_character(asker.actor, cb.uuid(0))
    await service.add_reference(asker.actor, character.id, Path(image.file_path))
    log.info("result added as a reference", job_id=str(job.id), character_id=str(character.id))
    await toast(update, t_plain("scenes.ref_added", asker.lang, name=character.name))
    await _set_markup(
        update,
        result_markup(
            job.id, job.requester_id, image.kind, asker.lang, has_original=has_original(image)
        ),
    )


async def reference_back(
    update: Update, context: Context, cb: kb.Callback, asker: Who, message: Message
) -> None:
    job = await _job_of(context, asker, cb.uuid(0))
    outputs = await service_of(context).outputs(job.id)
    image = primary_output(job, outputs)
    await toast(update)
    await _set_markup(
        update,
        result_markup(
            job.id,
            job.requester_id,
            job.kind,
            asker.lang,
            has_original=image is None or has_original(image),
        ),
    )


# -- original -------------------------------------------------------------------------------------


async def original(
    update: Update, context: Context, cb: kb.Callback, asker: Who, message: Message
) -> None:
    job = await _job_of(context, asker, cb.uuid(0))
    output = primary_output(job, await service_of(context).outputs(job.id))
    if output is None:
        await toast(update, t_plain("scenes.original_gone", asker.lang))
        return
    try:
        await send_original(
            context.bot,
            job,
            output,
            asker.lang,
            reply_to=message.message_id,
            thread_id=topic_of(message),  # the result's topic: the job's may be gone
            chat_id=message.chat_id,
        )
    except Undeliverable as error:
        log.info("original not sent", job_id=str(job.id), reason=str(error))
        key = "scenes.original_too_big" if "big" in str(error) else "scenes.original_gone"
        await toast(update, t_plain(key, asker.lang), alert=True)
        return
    except (BadRequest, Forbidden) as error:  # for good (RetryAfter, NetworkError: not caught)
        log.warning(
            "original refused by telegram",
            job_id=str(job.id),
            chat_id=message.chat_id,
            error=error.message,
            kind=type(error).__name__,
        )
        await toast(update, t_plain("scenes.original_refused", asker.lang), alert=True)
        return
    live_for(runtime_of(context), context.bot).note_message(message.chat_id)
    await toast(update)


# -- cancel ---------------------------------------------------------------------------------------


async def cancel(
    update: Update, context: Context, cb: kb.Callback, asker: Who, message: Message
) -> None:
    job = await service_of(context).cancel(asker.actor, cb.uuid(0))
    live = live_for(runtime_of(context), context.bot)
    if job.status is JobState.CANCELLED:
        await toast(update, t_plain("scenes.cancel_toast", asker.lang))
    else:
        live.cancelling(job.id)
        await toast(update, t_plain("scenes.cancelling_toast", asker.lang))
    log.info("cancel pressed", job_id=str(job.id), status=job.status.value)


def register(app: Application[Any, Any, Any, Any, Any, Any]) -> None:
    for act, handler in (
        (REROLL, reroll),
        (VARIATIONS, reroll),
        (UPSCALE, upscale),
        (ANIMATE, animate),
        (REFERENCE, reference),
        (REFERENCE_TO, reference_to),
        (REFERENCE_BACK, reference_back),
        (ORIGINAL, original),
        (CANCEL, cancel),
    ):
        app.add_handler(CallbackQueryHandler(_guarded(handler), pattern=act.pattern))
