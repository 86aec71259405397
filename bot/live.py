"""Live progress messages: core's job events become paced edits of each job's progress message.

Wiring (bot/app.py), once the Application is initialized, inside the running loop:

    live = start_live(app, runtime)       # -> LiveProgress; subscribes to runtime.events
    ...
    await live.stop()                     # before the Application shuts down

`live_for(runtime, bot)` returns the same object to whoever needs it (handlers posting a progress
message, `bot.delivery.TelegramDeliverer` taking the message over for the result); it lives in
`runtime.extras`, so the deliverer may be built before or after `start_live`.

One progress message per job: handlers `post()` it when the job is queued (its id is stored on
the job with `service.set_progress_message`); every event of the job updates its `JobProgress`
(bot.render) and the newest state is handed to `bot.progress.ProgressEditor`, which paces edits
per chat, coalesces, never sends identical content and honours 429s. Previews (JobEvent
`preview` bytes) become the message's photo at the editor's gentle pace. Telegram failing never
reaches the job: every event is handled under a catch-all (logged, then the next event).

Delivery takes a message over with `async with live.take_over(chat_id, message_id)`: no
progress edit is sent to it any more, and an edit in flight is waited for first. A job delivered
without its progress message (read before the message id was stored) has that message deleted.

Other handlers that cancel a job (e.g. /cancel) call `live_for(runtime, bot).cancelling(job_id)`
when `service.cancel` left it running, so its message shows "cancelling…" without a Cancel button.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any
from uuid import UUID

from telegram import Bot, InlineKeyboardMarkup, Message, ReplyParameters
from telegram.constants import ParseMode
from telegram.error import BadRequest, Forbidden, TelegramError

from bot.progress import PacingPolicy, ProgressContent, ProgressEditor, PtbEditSender
from bot.render import (
    JobProgress,
    Phase,
    apply_event,
    cancel_requested,
    phase_of_status,
    progress_markup,
    progress_text,
)
from bot.texts import pick_language
from core.events import JobEvent
from core.logs import get_logger
from core.models import Generation
from core.runtime import Runtime
from core.service import JobTicket
from core.states import JobState

log = get_logger(__name__)

EXTRAS_KEY = "bot.live"
_MEMORY = 5000  # finished jobs / taken-over messages remembered
_EARLY_EVENTS = 20  # events kept per job whose message is not posted yet
_BATCH = 500  # events folded in before their messages are submitted
_UNKNOWN_TTL = 10.0  # seconds a job without a progress message is not looked up again

MessageKey = tuple[int, int]


@dataclass
class Tracked:
    """A job whose progress message this process edits."""

    job_id: UUID
    chat_id: int
    message_id: int
    owner: int
    lang: str
    state: JobProgress
    preview_seq: int = 0
    preview: bytes | None = None

    @property
    def key(self) -> MessageKey:
        return (self.chat_id, self.message_id)


class _Bounded(OrderedDict[Any, Any]):
    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def remember(self, key: Any, value: Any = None) -> None:
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.size:
            self.popitem(last=False)


class LiveProgress:
    """Progress messages of one bot: posting, following events, handing over to delivery."""

    def __init__(
        self,
        bot: Bot,
        runtime: Runtime,
        *,
        editor: ProgressEditor | None = None,
        policy: PacingPolicy | None = None,
    ) -> None:
        self.bot = bot
        self.runtime = runtime
        self.service = runtime.service
        self._sender = PtbEditSender(bot, parse_mode=ParseMode.HTML)
        self.editor = editor or ProgressEditor(self._send, policy=policy)
        self._tracked: dict[UUID, Tracked] = {}
        self._expected: set[UUID] = set()  # a handler is posting the message right now
        self._early: _Bounded = _Bounded(_MEMORY)  # job id -> [events] before the message
        self._finished: _Bounded = _Bounded(_MEMORY)  # job ids
        self._unknown: _Bounded = _Bounded(_MEMORY)  # job id -> monotonic time looked up
        self._taken: _Bounded = _Bounded(_MEMORY)  # message keys owned by delivery
        self._locks: dict[MessageKey, asyncio.Lock] = {}
        self._message_jobs: _Bounded = _Bounded(_MEMORY)  # message key -> job id
        self._task: asyncio.Task[None] | None = None
        self._cleanups: set[asyncio.Task[None]] = set()
        self._subscribed = asyncio.Event()
        # While a batch of events is folded in: the messages to submit at its end.
        self._deferred: dict[UUID, Tracked] | None = None
        self.errors = 0  # events whose handling failed (logged)

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        if self._task is None or self._task.done():
            self._subscribed.clear()
            self._task = asyncio.get_running_loop().create_task(self._run(), name="live-progress")

    async def wait_subscribed(self) -> None:
        """Until the event subscription is in place (events before it are not seen)."""
        await self._subscribed.wait()

    async def stop(self, max_wait: float = 5.0) -> None:
        """Stop following events; send final states still queued (bounded), then stop."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for task in list(self._cleanups):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.editor.close(max_wait)

    async def _run(self) -> None:
        async with self.runtime.events.subscribe() as queue:
            self._subscribed.set()
            while True:
                batch = [await queue.get()]
                while not queue.empty() and len(batch) < _BATCH:
                    batch.append(queue.get_nowait())
                await self._handle_batch(batch)

    async def _handle_batch(self, batch: list[JobEvent]) -> None:
        """Fold every waiting event in, then submit each changed message once: a burst of a
        job's progress events costs one rendering of its text, not one per event (the editor
        would keep only the newest anyway). Final states are submitted at once, in order."""
        self._deferred = {}
        try:
            for event in batch:
                try:
                    await self.handle(event)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    self.errors += 1
                    log.exception(
                        "progress event failed", job_id=str(event.job_id), type=event.type
                    )
        finally:
            deferred, self._deferred = self._deferred, None
            for tracked in deferred.values():
                if self._tracked.get(tracked.job_id) is tracked:
                    self._submit(tracked)

    # -- posting -------------------------------------------------------------------------------
    def expect(self, job_id: UUID) -> None:
        """A handler is about to post this job's message: buffer its events until `post`."""
        self._expected.add(job_id)

    async def post(
        self,
        ticket: JobTicket,
        *,
        lang: str,
        reply_to: int | None = None,
        reuse_message_id: int | None = None,
    ) -> Message | None:
        """Post the progress message of a queued job (replying to `reply_to` in the job's chat
        and topic), store its id on the job and follow it. With `reuse_message_id` a message of
        the bot (the character picker) is edited into it instead. None when Telegram refused."""
        job = ticket.job
        self.expect(job.id)
        state = JobProgress(
            kind=job.kind,
            operation=job.operation,
            phase=Phase.QUEUED,
            scene=job.prompt_typed,
            position=ticket.position,
            eta_s=ticket.eta_s,
        )
        text = progress_text(state, lang)
        markup = progress_markup(state, job.id, job.requester_id, lang)
        reply = (
            ReplyParameters(reply_to, allow_sending_without_reply=True)
            if reply_to is not None
            else None
        )
        message: Message | None = None
        try:
            if reuse_message_id is not None:
                message = await self._reuse(job.chat_id, reuse_message_id, text, markup)
            if message is None:
                message = await self.bot.send_message(
                    job.chat_id,
                    text,
                    parse_mode=ParseMode.HTML,
                    reply_markup=markup,
                    message_thread_id=job.thread_id,
                    reply_parameters=reply,
                )
        except TelegramError as error:
            level = log.info if isinstance(error, Forbidden) else log.warning
            level("progress message not posted", job_id=str(job.id), error=str(error))
            self._expected.discard(job.id)
            self._early.pop(job.id, None)
            return None
        try:
            await self.service.set_progress_message(job.id, message.message_id)
        except Exception:  # the job goes on; delivery will send a new message
            log.exception("progress message id not stored", job_id=str(job.id))
        self.track(job, message.message_id, lang=lang, state=state, just_sent=True)
        return message

    async def _reuse(
        self, chat_id: int, message_id: int, text: str, markup: InlineKeyboardMarkup | None
    ) -> Message | None:
        try:
            edited = await self.bot.edit_message_text(
                text,
                chat_id=chat_id,
                message_id=message_id,
                parse_mode=ParseMode.HTML,
                reply_markup=markup,
            )
        except BadRequest as error:
            log.info("message not reusable for progress", error=error.message)
            return None
        return edited if isinstance(edited, Message) else None

    def track(
        self,
        job: Generation,
        message_id: int,
        *,
        lang: str,
        state: JobProgress | None = None,
        just_sent: bool = False,
    ) -> Tracked:
        """Follow `job`'s progress message (idempotent); buffered events are applied now."""
        self._expected.discard(job.id)
        existing = self._tracked.get(job.id)
        if existing is not None and existing.message_id == message_id:
            return existing
        if state is None:
            state = state_from_job(job)
        tracked = Tracked(job.id, job.chat_id, message_id, job.requester_id, lang, state)
        self._tracked[job.id] = tracked
        self._message_jobs.remember(tracked.key, job.id)
        self._unknown.pop(job.id, None)
        shown = self._content(tracked)
        if just_sent:
            self.editor.register(job.chat_id, message_id, shown)
        for event in self._early.pop(job.id, None) or []:
            self._apply(tracked, event)
        if not just_sent:
            self._submit(tracked)
        return tracked

    # -- events --------------------------------------------------------------------------------
    async def handle(self, event: JobEvent) -> None:
        """Fold one job event into its progress message."""
        if event.type == "library" or event.job_id in self._finished:
            return
        tracked = self._tracked.get(event.job_id)
        if tracked is None:
            tracked = await self._adopt(event)
            if tracked is None:
                return
        self._apply(tracked, event)

    def _apply(self, tracked: Tracked, event: JobEvent) -> None:
        if event.type == "preview":
            if event.preview and not tracked.state.phase.final:
                tracked.preview_seq += 1
                tracked.preview = event.preview
                if tracked.state.phase in (Phase.QUEUED, Phase.STARTING):
                    tracked.state = replace(tracked.state, phase=Phase.RUNNING, position=None)
                self._submit(tracked)
            return
        before = tracked.state
        tracked.state = apply_event(tracked.state, event)
        if tracked.state != before or tracked.state.phase.final:
            self._submit(tracked)

    async def _adopt(self, event: JobEvent) -> Tracked | None:
        """An event of a job this process did not post (restart, another process)."""
        job_id = event.job_id
        if job_id in self._expected:
            self._buffer(event)
            return None
        looked_up = self._unknown.get(job_id)
        if looked_up is not None and time.monotonic() - looked_up < _UNKNOWN_TTL:
            self._buffer(event)
            return None
        job = await self.service.job(job_id)
        if job_id in self._tracked:  # tracked by a handler meanwhile
            return self._tracked[job_id]
        if job.progress_message_id is None:
            self._unknown.remember(job_id, time.monotonic())
            self._buffer(event)
            return None
        lang = await self._language(job)
        if job_id in self._tracked:
            return self._tracked[job_id]
        return self.track(job, job.progress_message_id, lang=lang)

    def _buffer(self, event: JobEvent) -> None:
        events: list[JobEvent] = self._early.get(event.job_id) or []
        if event.type == "preview":
            events = [e for e in events if e.type != "preview"]
        events.append(event)
        self._early.remember(event.job_id, events[-_EARLY_EVENTS:])

    async def _language(self, job: Generation) -> str:
        try:
            user = await self.service.find_user(str(job.requester_id))
        except Exception:
            log.warning("requester language unknown", job_id=str(job.id))
            return pick_language(None)
        return pick_language(user.language_code if user else None)

    # -- cancel ----------------------------------------------------------------------------------
    def cancelling(self, job_id: UUID) -> None:
        """The requester asked to cancel a running job: show it and drop the Cancel button."""
        tracked = self._tracked.get(job_id)
        if tracked is None:
            return
        tracked.state = cancel_requested(tracked.state)
        self._submit(tracked)

    # -- submitting --------------------------------------------------------------------------------
    def _content(self, tracked: Tracked) -> ProgressContent:
        state = tracked.state
        markup = progress_markup(state, tracked.job_id, tracked.owner, tracked.lang)
        text = progress_text(state, tracked.lang)
        if tracked.preview is not None and not state.phase.final:
            return ProgressContent(
                text,
                markup,
                preview=tracked.preview,
                preview_key=f"{tracked.job_id}:{tracked.preview_seq}",
            )
        return ProgressContent(text, markup)

    def _submit(self, tracked: Tracked) -> None:
        final = tracked.state.phase.final
        if self._deferred is not None:
            if not final:
                self._deferred[tracked.job_id] = tracked
                return
            self._deferred.pop(tracked.job_id, None)  # superseded by the final state
        if final:
            self._tracked.pop(tracked.job_id, None)
            self._finished.remember(tracked.job_id)
        if tracked.key in self._taken:
            return
        if tracked.state.phase is Phase.DONE:
            # Delivered without this message (the job was read before its id was stored):
            # the result is elsewhere, so the progress message goes.
            task = asyncio.get_running_loop().create_task(self._tidy_up(tracked))
            self._cleanups.add(task)
            task.add_done_callback(self._cleanups.discard)
            return
        self.editor.submit(tracked.chat_id, tracked.message_id, self._content(tracked), final=final)

    async def _tidy_up(self, tracked: Tracked) -> None:
        where = {"job_id": str(tracked.job_id), "message_id": tracked.message_id}
        try:
            job = await self.service.job(tracked.job_id)
            if job.result_message_id in (None, tracked.message_id) or tracked.key in self._taken:
                return
            self._taken.remember(tracked.key)
            self.editor.forget(tracked.chat_id, tracked.message_id)
            async with self._lock(tracked.key):
                await self.bot.delete_message(tracked.chat_id, tracked.message_id)
            log.info("progress message of a job delivered elsewhere deleted", **where)
        except TelegramError as error:
            log.info("progress message not deleted", error=str(error), **where)
        except Exception:
            self.errors += 1
            log.exception("progress message clean-up failed", **where)

    # -- delivery hand-over ------------------------------------------------------------------
    def _lock(self, key: MessageKey) -> asyncio.Lock:
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        return lock

    async def _send(self, chat_id: int, message_id: int, content: ProgressContent) -> None:
        key = (chat_id, message_id)
        if key in self._taken:
            return
        async with self._lock(key):
            if key in self._taken or await self._in_delivery(key):
                return
            await self._sender(chat_id, message_id, content)

    async def _in_delivery(self, key: MessageKey) -> bool:
        """Is the message's job delivering or done? Then the message belongs to delivery, which
        may run in another bot process (take_over guards only this one): an edit now could
        land on the delivered result, so none is sent."""
        job_id = self._message_jobs.get(key)
        if job_id is None:
            return False
        try:
            state = await self.runtime.service.job_state(job_id)
        except Exception:
            log.warning("job status unknown before a progress edit", job_id=str(job_id))
            return False
        if state not in (JobState.DELIVERING, JobState.DONE):
            return False
        self.editor.forget(*key)
        return True

    @contextlib.asynccontextmanager
    async def take_over(self, chat_id: int, message_id: int) -> AsyncIterator[None]:
        """Own a progress message (for the result): no progress edit is sent to it from now on;
        an edit in flight is waited for before the body runs."""
        key = (chat_id, message_id)
        self._taken.remember(key)
        self.editor.forget(chat_id, message_id)
        try:
            async with self._lock(key):
                yield
        finally:
            self._locks.pop(key, None)
            self._sender.forget(chat_id, message_id)

    def note_message(self, chat_id: int) -> None:
        """A message was sent to the chat outside the editor (counts against its budget)."""
        self.editor.note_message(chat_id)

    def tracked(self, job_id: UUID) -> Tracked | None:
        return self._tracked.get(job_id)


def state_from_job(job: Generation) -> JobProgress:
    phase = phase_of_status(job.status.value)
    if job.cancel_requested and phase.cancellable:
        phase = Phase.CANCELLING
    return JobProgress(
        kind=job.kind,
        operation=job.operation,
        phase=phase,
        scene=job.prompt_typed,
        percent=job.progress * 100 if job.progress else None,
        reason=job.error if phase is Phase.FAILED else None,
        cancel_requested=job.cancel_requested,
    )


def live_for(runtime: Runtime, bot: Bot, *, policy: PacingPolicy | None = None) -> LiveProgress:
    """The LiveProgress of this runtime (created on first use, with `policy` if given)."""
    live = runtime.extras.get(EXTRAS_KEY)
    if not isinstance(live, LiveProgress):
        live = LiveProgress(bot, runtime, policy=policy)
        runtime.extras[EXTRAS_KEY] = live
    return live


def start_live(app: Any, runtime: Runtime) -> LiveProgress:
    """Start following job events for `app.bot` (call inside the running loop)."""
    live = live_for(runtime, app.bot)
    live.start()
    return live
