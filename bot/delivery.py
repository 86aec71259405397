"""Delivery of finished jobs to Telegram: core's `Deliverer` port, implemented with PTB.

Wiring (bot/app.py):

    await runtime.start_engine(deliverer=TelegramDeliverer(app.bot, runtime))

`TelegramDeliverer(bot: telegram.Bot, runtime: core.runtime.Runtime)`:
- `deliver(job, outputs) -> DeliveryReceipt`: images as a photo (the output's Telegram-ready
  `delivery_path` JPEG), videos as a streaming mp4 with its thumbnail, duration and size. The
  caption (scene, characters, seed, soundtrack credit, library link; <= 1024) and the result
  buttons come from `bot.render`. A video sent without its soundtrack (it could not be had any
  more when the video was made: the output's `without_music`) says so and why in place of the
  credit. An image replaces the job's progress message in place
  (editMessageMedia); a video, or an image whose progress message cannot be edited, is sent as
  a new message replying to the request in the same forum topic, and the progress message is
  deleted. With the chat's `send_original` setting the original file follows as a document,
  in the result's topic (the chat, when the job's topic was deleted and the result went there).
  A group upgraded to a supergroup (ChatMigrated): the chat's stored state moves to the new id
  first (`service.chat_migrated`: the job too, so its buttons work there), then the result is
  sent to the supergroup.
  403 (blocked, removed from the group) and requests Telegram rejects for good return a receipt
  with `message_id=None` and `error`; RetryAfter / NetworkError / TimedOut are raised so core
  retries later (the job stays `delivering`).
- `library_linked(job, output, link)`: adds the library link to the delivered caption (retries
  flood waits and network errors a few times itself; never raises).
- `prepare(job)` (core's `DeliveryPreparer`, called once the job's prompt is in ComfyUI): reads
  what the result's message needs from the database in the background (the requester's
  language, unless this process's progress message already knows it; the character names; the
  chat's `send_original` setting), so `deliver` reads none of it after ComfyUI finished. A
  delivery with nothing prepared (a retry, another process's job, a restart) reads it then.
  What changes in between (the user's language, a character's name, the chat's setting) may
  show as it was.
- `preload(job_id, files)` (core's `DeliveryPreparer`, right before a delivery core hands over
  from its runner): the contents of the files just written (path -> bytes); that delivery
  uploads them from memory instead of reading the files back. Taken by that delivery only.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

from telegram import (
    Bot,
    InlineKeyboardMarkup,
    InputFile,
    InputMediaPhoto,
    Message,
    ReplyParameters,
)
from telegram.constants import ChatAction, ParseMode
from telegram.error import (
    BadRequest,
    ChatMigrated,
    Forbidden,
    NetworkError,
    RetryAfter,
    TelegramError,
)

from bot.live import LiveProgress, live_for
from bot.render import (
    CaptionInfo,
    JobProgress,
    Phase,
    caption,
    progress_text,
    result_markup,
    soundtrack_credit,
)
from bot.texts import pick_language, t
from core.jobs.delivery import (
    DeliveredFile,
    DeliveryLedger,
    DeliveryReceipt,
    primary_output,
    report_sent,
    unsent_outputs,
)
from core.logs import get_logger
from core.models import Generation, JobKind, Output
from core.runtime import Runtime
from core.service import StudioService

log = get_logger(__name__)

PHOTO_MAX_BYTES = 10 * 1024 * 1024
UPLOAD_MAX_BYTES = 50 * 1024 * 1024
MEDIA_READ_TIMEOUT = 60.0
MEDIA_WRITE_TIMEOUT = 120.0
LINK_ATTEMPTS = 3
PREPARED_MAX = 5000  # jobs whose delivery data is kept (those never delivered here age out)
PRELOADED_MAX = 64  # jobs whose files are kept in memory until their delivery takes them
_THREAD_GONE = "message thread not found"
_NOT_MODIFIED = "message is not modified"


class Undeliverable(Exception):
    """Telegram will never accept this (a bad file, an unknown chat): not worth retrying.
    `too_big`: over what Telegram takes from a bot."""

    def __init__(self, message: str, *, too_big: bool = False) -> None:
        super().__init__(message)
        self.too_big = too_big


def _refused(error: BadRequest) -> Undeliverable:
    text = error.message.lower()
    return Undeliverable(
        f"telegram refused: {error.message}", too_big="too big" in text or "too large" in text
    )


# -- helpers shared with the result buttons ----------------------------------------------------


async def stored_language(service: StudioService, user_id: int) -> str:
    """The user's language as stored (raises when the store cannot be read)."""
    user = await service.find_user(str(user_id))
    return pick_language(user.language_code if user else None)


async def requester_language(service: StudioService, user_id: int) -> str:
    try:
        return await stored_language(service, user_id)
    except Exception:
        log.warning("language of user unknown", user_id=user_id)
        return pick_language(None)


async def character_names(service: StudioService, job: Generation) -> list[str]:
    return await service.character_names(job)


async def _value(value: Any) -> Any:
    return value


def has_original(output: Output) -> bool:
    """Is there more to the original than the media Telegram shows?"""
    if output.kind is JobKind.IMAGE:
        return True
    return bool(output.delivery_path) and output.delivery_path != output.file_path


async def read_file(path: str | None) -> bytes:
    if not path:
        raise Undeliverable("no file")
    try:
        return await asyncio.to_thread(Path(path).read_bytes)
    except OSError as error:
        raise Undeliverable(f"cannot read {Path(path).name}: {error.strerror}") from error


def file_id_of(message: Message) -> str | None:
    if message.photo:
        return message.photo[-1].file_id
    if message.video:
        return message.video.file_id
    if message.document:
        return message.document.file_id
    if message.animation:
        return message.animation.file_id
    return None


def _reply(message_id: int | None) -> ReplyParameters | None:
    if message_id is None:
        return None
    return ReplyParameters(message_id, allow_sending_without_reply=True)


async def send_original(
    bot: Bot,
    job: Generation,
    output: Output,
    lang: str,
    *,
    reply_to: int | None,
    thread_id: int | None,
    chat_id: int | None = None,
) -> Message:
    """The original file of `output` as a document, replying to `reply_to` in forum topic
    `thread_id`: the result's own (not the job's: the result fell back to the chat when the
    job's topic was deleted). A topic Telegram no longer knows sends it to the chat, as
    `_send_new` does. Raises Undeliverable when the file cannot be sent."""
    path = Path(output.file_path)
    try:
        size = (await asyncio.to_thread(path.stat)).st_size
    except OSError as error:
        raise Undeliverable("original gone") from error
    if size > UPLOAD_MAX_BYTES:
        raise Undeliverable("original too big")
    data = await read_file(output.file_path)
    if output.width and output.height:
        text = t("scenes.original_caption", lang, width=output.width, height=output.height)
    else:
        text = t("scenes.original_caption_plain", lang)
    target = chat_id if chat_id is not None else job.chat_id

    async def send(thread: int | None, reply: int | None) -> Message:
        return await bot.send_document(
            target,
            InputFile(data, filename=path.name),
            caption=text,
            parse_mode=ParseMode.HTML,
            message_thread_id=thread,
            reply_parameters=_reply(reply),
            disable_content_type_detection=True,
            read_timeout=MEDIA_READ_TIMEOUT,
            write_timeout=MEDIA_WRITE_TIMEOUT,
        )

    return await _in_topic_or_chat(
        send, thread_id, reply_to, job, event="forum topic gone; sending the original to the chat"
    )


async def _in_topic_or_chat(
    send: Callable[[int | None, int | None], Awaitable[Message]],
    thread: int | None,
    reply_to: int | None,
    job: Generation,
    *,
    event: str = "forum topic gone; sending to the chat",
) -> Message:
    """`send(thread, reply_to)`; when Telegram no longer knows forum topic `thread` (deleted),
    send to the chat itself instead (no topic, no reply: the replied message was in it)."""
    try:
        return await send(thread, reply_to)
    except BadRequest as error:
        if thread is None or _THREAD_GONE not in error.message.lower():
            raise
        log.info(event, job_id=str(job.id))
    return await send(None, None)


def topic_of(message: Message) -> int | None:
    """The forum topic `message` is in (None: not in a topic, e.g. a forum's General topic or
    a reply chain in a supergroup, whose `message_thread_id` names no topic)."""
    return message.message_thread_id if message.is_topic_message else None


# -- the deliverer ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Prepared:
    """What a job's delivery reads from the database, read ahead (None: could not be read)."""

    lang: str | None
    names: list[str] | None
    send_original: bool | None


class TelegramDeliverer:
    """core.jobs.delivery.Deliverer (and DeliveryPreparer) on a PTB Bot."""

    def __init__(self, bot: Bot, runtime: Runtime) -> None:
        self.bot = bot
        self.runtime = runtime
        self.service = runtime.service
        self._prepared: OrderedDict[UUID, asyncio.Task[Prepared]] = OrderedDict()
        self._preloaded: OrderedDict[UUID, Mapping[str, bytes]] = OrderedDict()

    @property
    def live(self) -> LiveProgress:
        return live_for(self.runtime, self.bot)

    # -- read ahead -------------------------------------------------------------------------

    def prepare(self, job: Generation) -> None:
        """Start reading what `job`'s delivery needs (once per job; never raises)."""
        if job.id in self._prepared:
            return
        task = asyncio.get_running_loop().create_task(
            self._read_ahead(job), name=f"prepare-{job.id}"
        )
        self._prepared[job.id] = task
        while len(self._prepared) > PREPARED_MAX:
            _job_id, old = self._prepared.popitem(last=False)
            old.cancel()

    async def _read_ahead(self, job: Generation) -> Prepared:
        tracked = self.live.tracked(job.id)  # its progress message is in the user's language
        lang = (
            _value(tracked.lang)
            if tracked is not None
            else self._quietly(stored_language(self.service, job.requester_id), job)
        )
        names = self._quietly(character_names(self.service, job), job)
        send_original = self._quietly(self._stored_send_original(job), job)
        return Prepared(*await asyncio.gather(lang, names, send_original))

    async def _quietly(self, reading: Awaitable[Any], job: Generation) -> Any:
        try:
            return await reading
        except Exception as error:  # read again at delivery
            log.info("delivery data not read ahead", job_id=str(job.id), error=str(error))
            return None

    async def _stored_send_original(self, job: Generation) -> bool:
        """The chat's `send_original` setting (raises when the store cannot be read)."""
        return (await self.service.chat_settings(job.chat_id)).send_original

    def preload(self, job_id: UUID, files: Mapping[str, bytes]) -> None:
        """Contents of `job_id`'s files (path -> bytes) for its next delivery to send."""
        self._preloaded[job_id] = files
        while len(self._preloaded) > PRELOADED_MAX:
            self._preloaded.popitem(last=False)

    async def _media(self, output: Output, path: str | None) -> bytes:
        """A file of `output` to send: preloaded for this delivery, else read."""
        data = self._preloaded.get(output.generation_id, {}).get(path) if path else None
        return data if data is not None else await read_file(path)

    async def _take_prepared(self, job: Generation) -> Prepared | None:
        """What `prepare` read for `job` (waiting for it if still reading); None when nothing
        was prepared. Taken once: a retried delivery reads it again."""
        task = self._prepared.pop(job.id, None)  # out of the dict: never evicted now
        return None if task is None else await task

    # -- delivery ---------------------------------------------------------------------------

    async def _caption(
        self,
        job: Generation,
        output: Output,
        lang: str,
        link: str | None,
        names: list[str] | None = None,
    ) -> str:
        if names is None:
            names = await character_names(self.service, job)
        info = CaptionInfo(
            scene=job.prompt_typed,
            characters=names,
            seed=job.seed,
            link=link,
            kind=output.kind,
            operation=job.operation,
            soundtrack=soundtrack_credit(job.soundtrack),
            no_music=output.without_music,
        )
        return caption(info, lang)

    async def deliver(
        self, job: Generation, outputs: list[Output], ledger: DeliveryLedger | None = None
    ) -> DeliveryReceipt:
        try:
            return await self._deliver(job, outputs, ledger)
        finally:
            self._preloaded.pop(job.id, None)  # this delivery's only

    async def _deliver(
        self, job: Generation, outputs: list[Output], ledger: DeliveryLedger | None
    ) -> DeliveryReceipt:
        where = {"job_id": str(job.id), "chat_id": job.chat_id}
        primary = primary_output(job, outputs)
        if primary is None:
            log.warning("nothing to deliver", **where)
            return DeliveryReceipt(message_id=None, error="the job has no outputs")
        prepared = await self._take_prepared(job)
        if job.result_message_id is not None:
            return await self._finish_interrupted(job, primary, outputs, ledger)
        if prepared is not None and prepared.lang is not None:
            lang = prepared.lang
        else:
            lang = await requester_language(self.service, job.requester_id)
        names = prepared.names if prepared is not None else None
        text = await self._caption(job, primary, lang, primary.jellyfin_link, names)
        markup = result_markup(
            job.id, job.requester_id, primary.kind, lang, has_original=has_original(primary)
        )
        chat_id = job.chat_id
        try:
            try:
                sent = await self._deliver_primary(job, primary, text, markup, ledger)
            except ChatMigrated as migrated:
                log.info("group became a supergroup", new_chat_id=migrated.new_chat_id, **where)
                chat_id = migrated.new_chat_id
                # The job (and the chat's settings, ...) follow first, so the result's buttons
                # and later edits find it there. A store failure: delivered on a retry.
                await self.service.chat_migrated(job.chat_id, chat_id)
                sending = self._send_new(job, primary, text, markup, chat_id=chat_id)
                sent = await self._reported(ledger, primary, sending)
        except Forbidden as error:
            log.info("result not delivered: no access to the chat", error=error.message, **where)
            return DeliveryReceipt(message_id=None, error=f"forbidden: {error.message}")
        except Undeliverable as error:
            log.warning("result not deliverable", error=str(error), **where)
            await self._tell_undeliverable(job, lang, error)
            return DeliveryReceipt(message_id=None, error=str(error))
        log.info("result delivered", message_id=sent.message_id, kind=primary.kind.value, **where)
        main = self._main_file(primary, sent)
        extras = await self._send_extras(job, primary, outputs, sent.message_id, ledger, chat_id)
        files = [main, *extras]
        send_original = prepared.send_original if prepared is not None else None
        if send_original is None and primary.kind is JobKind.IMAGE:
            send_original = await self._send_original_setting(job)
        if primary.kind is JobKind.IMAGE and send_original:
            await self._original_quietly(job, primary, lang, sent, chat_id)
        return DeliveryReceipt(message_id=sent.message_id, files=files)

    async def _tell_undeliverable(self, job: Generation, lang: str, error: Undeliverable) -> None:
        """Say in the chat why the result is not there: the progress message (its buttons gone)
        becomes the explanation; without one, a reply to the request. Never raises."""
        state = JobProgress(
            kind=job.kind, operation=job.operation, phase=Phase.DONE, scene=job.prompt_typed
        )
        why = "scenes.undeliverable_too_big" if error.too_big else "scenes.undeliverable"
        text = f"{progress_text(state, lang)}\n{t(why, lang)}"
        progress = job.progress_message_id
        try:
            if progress is None:
                await self.bot.send_message(
                    job.chat_id,
                    text,
                    parse_mode=ParseMode.HTML,
                    message_thread_id=job.thread_id,
                    reply_parameters=_reply(job.request_message_id),
                )
                return
            async with self.live.take_over(job.chat_id, progress):
                await self.bot.edit_message_text(
                    text,
                    chat_id=job.chat_id,
                    message_id=progress,
                    parse_mode=ParseMode.HTML,
                    reply_markup=None,
                )
        except TelegramError as reason:
            log.info(
                "could not say why the result is missing", job_id=str(job.id), error=str(reason)
            )

    async def _finish_interrupted(
        self,
        job: Generation,
        primary: Output,
        outputs: list[Output],
        ledger: DeliveryLedger | None,
    ) -> DeliveryReceipt:
        """A previous process sent the main result and stopped: never send it again; remove
        the progress message it may have left and send the further outputs still missing.
        (The original-file document is not repeated: the result's button still offers it.)"""
        main_id = job.result_message_id
        assert main_id is not None
        log.info("result already delivered; finishing", job_id=str(job.id), message_id=main_id)
        if job.progress_message_id not in (None, main_id):
            async with self.live.take_over(job.chat_id, job.progress_message_id):
                await self._delete_quietly(job.chat_id, job.progress_message_id)
        files = await self._send_extras(job, primary, outputs, main_id, ledger, job.chat_id)
        return DeliveryReceipt(message_id=main_id, files=files)

    async def _send_extras(
        self,
        job: Generation,
        primary: Output,
        outputs: list[Output],
        reply_to: int,
        ledger: DeliveryLedger | None,
        chat_id: int,
    ) -> list[DeliveredFile]:
        """The job's further outputs not sent yet, each recorded as soon as it is sent."""
        files: list[DeliveredFile] = []
        for extra in unsent_outputs(job, outputs):
            if extra.id == primary.id:  # sent just now, or before (job.result_message_id)
                continue
            delivered = await self._send_extra(job, extra, reply_to, chat_id)
            if delivered is not None:
                await report_sent(ledger, delivered, main=False)
                files.append(delivered)
        return files

    async def _send_original_setting(self, job: Generation) -> bool:
        try:
            return await self._stored_send_original(job)
        except Exception:
            log.warning("chat settings unknown", job_id=str(job.id), chat_id=job.chat_id)
            return False

    async def _deliver_primary(
        self,
        job: Generation,
        output: Output,
        text: str,
        markup: InlineKeyboardMarkup | None,
        ledger: DeliveryLedger | None,
    ) -> Message:
        """The main result, reported to `ledger` the moment Telegram has accepted it."""
        progress = job.progress_message_id
        if progress is None:
            return await self._reported(ledger, output, self._send_new(job, output, text, markup))
        async with self.live.take_over(job.chat_id, progress):
            if output.kind is JobKind.IMAGE:
                edited = await self._edit_into_photo(job, output, text, markup, progress)
                if edited is not None:
                    await report_sent(ledger, self._main_file(output, edited), main=True)
                    return edited
            sent = await self._reported(ledger, output, self._send_new(job, output, text, markup))
            await self._delete_quietly(job.chat_id, progress)
            return sent

    @staticmethod
    def _main_file(output: Output, message: Message) -> DeliveredFile:
        return DeliveredFile(output.id, message.message_id, file_id_of(message))

    async def _reported(
        self, ledger: DeliveryLedger | None, output: Output, sending: Awaitable[Message]
    ) -> Message:
        sent = await sending
        await report_sent(ledger, self._main_file(output, sent), main=True)
        return sent

    async def _edit_into_photo(
        self,
        job: Generation,
        output: Output,
        text: str,
        markup: InlineKeyboardMarkup | None,
        message_id: int,
    ) -> Message | None:
        """The progress message becomes the result photo; None when it cannot be edited."""
        path = output.delivery_path or output.file_path
        data = await self._media(output, path)
        if len(data) > PHOTO_MAX_BYTES:
            return None
        media = InputMediaPhoto(
            InputFile(data, filename=Path(path).name),
            caption=text,
            parse_mode=ParseMode.HTML,
        )
        try:
            result = await self.bot.edit_message_media(
                media,
                chat_id=job.chat_id,
                message_id=message_id,
                reply_markup=markup,
                read_timeout=MEDIA_READ_TIMEOUT,
                write_timeout=MEDIA_WRITE_TIMEOUT,
            )
        except BadRequest as error:
            log.info(
                "progress message not editable into the result; sending it",
                job_id=str(job.id),
                error=error.message,
            )
            return None
        self.live.note_message(job.chat_id)
        return result if isinstance(result, Message) else None

    async def _send_new(
        self,
        job: Generation,
        output: Output,
        text: str,
        markup: InlineKeyboardMarkup | None,
        *,
        chat_id: int | None = None,
        reply_to: int | None = None,
    ) -> Message:
        """Send `output` as a new message in the job's chat and topic."""
        target = chat_id if chat_id is not None else job.chat_id
        reply = reply_to
        if reply is None and target == job.chat_id:  # the request is in the job's chat only
            reply = job.request_message_id

        async def send(topic: int | None, reply_to: int | None) -> Message:
            return await self._send_media(target, topic, reply_to, output, text, markup)

        try:
            return await _in_topic_or_chat(send, job.thread_id, reply, job)
        except BadRequest as error:
            raise _refused(error) from error

    async def _send_media(
        self,
        chat_id: int,
        thread: int | None,
        reply_to: int | None,
        output: Output,
        text: str,
        markup: InlineKeyboardMarkup | None,
    ) -> Message:
        path = output.delivery_path or output.file_path
        data = await self._media(output, path)
        if len(data) > UPLOAD_MAX_BYTES:
            raise Undeliverable(f"{output.kind.value} over 50 MB", too_big=True)
        name = Path(path).name
        # What every upload of the result shares, whichever method sends it.
        common: dict[str, Any] = {
            "caption": text or None,  # PTB's defaults turn "" into "[]" (see context.toast)
            "parse_mode": ParseMode.HTML,
            "reply_markup": markup,
            "message_thread_id": thread,
            "reply_parameters": _reply(reply_to),
            "read_timeout": MEDIA_READ_TIMEOUT,
            "write_timeout": MEDIA_WRITE_TIMEOUT,
        }
        self.live.note_message(chat_id)
        if output.kind is JobKind.VIDEO:
            await self._action(chat_id, thread, ChatAction.UPLOAD_VIDEO)
            thumb = None
            if output.thumbnail_path:
                try:
                    thumb = InputFile(
                        await self._media(output, output.thumbnail_path),
                        filename="thumb.jpg",
                        attach=True,
                    )
                except Undeliverable:
                    log.info("video thumbnail missing", output=str(output.id))
            return await self.bot.send_video(
                chat_id,
                InputFile(data, filename=name),
                duration=round(output.duration_s) if output.duration_s else None,
                width=output.width,
                height=output.height,
                supports_streaming=True,
                thumbnail=thumb,
                **common,
            )
        if len(data) <= PHOTO_MAX_BYTES:
            try:
                return await self.bot.send_photo(chat_id, InputFile(data, filename=name), **common)
            except BadRequest as error:
                if _THREAD_GONE in error.message.lower():
                    raise
                log.info("photo refused; sending it as a file", error=error.message)
        return await self.bot.send_document(
            chat_id, InputFile(data, filename=name), disable_content_type_detection=True, **common
        )

    async def _action(self, chat_id: int, thread: int | None, action: str) -> None:
        try:
            await self.bot.send_chat_action(chat_id, action, message_thread_id=thread)
        except (BadRequest, NetworkError) as error:
            log.info("chat action failed", error=str(error))

    async def _delete_quietly(self, chat_id: int, message_id: int) -> None:
        try:
            await self.bot.delete_message(chat_id, message_id)
        except TelegramError as error:
            log.info("progress message not deleted", message_id=message_id, error=str(error))

    async def _send_extra(
        self, job: Generation, output: Output, reply_to: int, chat_id: int
    ) -> DeliveredFile | None:
        """A further output of the job (no buttons), replying to the main result. A flood wait
        or a network error is raised: the retry sends the outputs not recorded yet."""
        try:
            sent = await self._send_new(job, output, "", None, chat_id=chat_id, reply_to=reply_to)
        except (Undeliverable, BadRequest, Forbidden, ChatMigrated) as error:
            log.warning("extra output not delivered", output=str(output.id), error=str(error))
            return None
        return DeliveredFile(output.id, sent.message_id, file_id_of(sent))

    async def _original_quietly(
        self, job: Generation, output: Output, lang: str, result: Message, chat_id: int
    ) -> None:
        try:
            await send_original(
                self.bot,
                job,
                output,
                lang,
                reply_to=result.message_id,
                thread_id=topic_of(result),
                chat_id=chat_id,
            )
            self.live.note_message(chat_id)
        except (TelegramError, Undeliverable) as error:
            # The result itself is delivered: never make core deliver it twice for this.
            log.warning("original not sent", job_id=str(job.id), error=str(error))

    async def library_linked(self, job: Generation, output: Output, link: str) -> None:
        message_id = output.telegram_message_id or job.result_message_id
        where = {"job_id": str(job.id), "chat_id": job.chat_id, "message_id": message_id}
        if message_id is None:
            log.info("library link not shown: the result was not delivered", **where)
            return
        lang = await requester_language(self.service, job.requester_id)
        text = await self._caption(job, output, lang, link)
        primary = output.telegram_message_id is None or output.telegram_message_id == (
            job.result_message_id
        )
        markup = (
            result_markup(
                job.id, job.requester_id, output.kind, lang, has_original=has_original(output)
            )
            if primary
            else None
        )
        for attempt in range(1, LINK_ATTEMPTS + 1):
            try:
                await self.bot.edit_message_caption(
                    chat_id=job.chat_id,
                    message_id=message_id,
                    caption=text,
                    parse_mode=ParseMode.HTML,
                    reply_markup=markup,
                )
                self.live.note_message(job.chat_id)
                log.info("library link added to the result", **where)
                return
            except BadRequest as error:
                if _NOT_MODIFIED not in error.message.lower():
                    log.info("library link not shown", error=error.message, **where)
                return
            except Forbidden as error:
                log.info("library link not shown: no access", error=error.message, **where)
                return
            except RetryAfter as error:
                wait = error.retry_after
                seconds = wait if isinstance(wait, int | float) else wait.total_seconds()
                await asyncio.sleep(min(float(seconds), 30.0))
            except NetworkError as error:
                log.info("library link edit failed", attempt=attempt, error=str(error), **where)
                await asyncio.sleep(2.0 * attempt)
            except TelegramError as error:
                log.warning("library link edit failed", error=str(error), **where)
                return
        log.warning("library link not shown after retries", **where)
