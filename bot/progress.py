"""Per-chat scheduler for progress-message edits.

One progress message per job is edited in place from "queued" to the finished picture. Telegram
punishes bots that edit too often (429 with `retry_after`, then longer bans) and rejects edits that
change nothing ("message is not modified"), so every edit goes through here:

* `EditScheduler` — pure policy, no I/O, time passed in as `now`:
  - pacing per chat: private chats at most one edit per `private_interval`; groups and supergroups
    one per `group_interval` *and* a budget of `group_budget` messages+edits per `group_window`
    shared by every job of the chat (other messages the bot sends there count via
    `note_message`); all chats together at most `global_budget` per `global_window`;
  - coalescing: only the newest state of a message is kept, an older pending state is replaced;
  - identical-content suppression: an edit equal (text, markup, image key) to what the message
    shows, or what is being sent, is never sent;
  - priorities: a final state (done / failed / cancelled) goes first, may use the part of the
    group budget reserved for finals, is retried after transient errors and requeued after a 429;
    intermediate states may be dropped; later intermediate states of a finished message are
    ignored;
  - `retry_after`: the chat is paused until then and the newest state is sent afterwards;
  - previews: a new image changes at most every `preview_interval` per message; in between the
    text alone is updated.
* `ProgressEditor` — the async runner around it: `submit()` never blocks, one task sends due edits
  through an injected `send(chat_id, message_id, content)` and maps PTB errors onto the policy.
* `PtbEditSender` — a `send` built on PTB's `edit_message_text` / `_caption` / `_media`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dtm
import enum
import time
import warnings
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Hashable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from telegram import Bot, InlineKeyboardMarkup, InputMediaPhoto
from telegram.error import BadRequest, Forbidden, NetworkError, RetryAfter, TelegramError
from telegram.warnings import PTBDeprecationWarning

from core.logs import get_logger

log = get_logger(__name__)

MessageKey = tuple[int, int]

# BadRequest descriptions meaning the message can never be edited again.
_GONE_MARKERS = (
    "message to edit not found",
    "message can't be edited",
    "message_id_invalid",
    "chat not found",
)
_NOT_MODIFIED_MARKER = "message is not modified"
_NO_TEXT_MARKER = "there is no text in the message to edit"


@dataclass(frozen=True)
class ProgressContent:
    """What a progress message should show.

    `reply_markup` is opaque to the scheduler (hashable, compared by equality); `preview` is an
    image shown with the message, identified by `preview_key` (equal keys = same image; the bytes
    are not compared). A content without preview keeps whatever image the message already shows.
    """

    text: str
    reply_markup: Hashable | None = None
    preview: bytes | None = field(default=None, repr=False, compare=False)
    preview_key: str | None = None

    def __post_init__(self) -> None:
        if not self.text.strip():
            raise ValueError("progress text must not be empty")
        if (self.preview is None) != (self.preview_key is None):
            raise ValueError("preview and preview_key go together")

    def without_preview(self) -> ProgressContent:
        if self.preview_key is None:
            return self
        return replace(self, preview=None, preview_key=None)


@dataclass(frozen=True)
class PacingPolicy:
    private_interval: float = 1.5
    group_interval: float = 3.0
    group_budget: int = 20
    group_window: float = 60.0
    final_reserve: int = 2  # group budget that intermediate states may not use
    global_budget: int = 25
    global_window: float = 1.0
    preview_interval: float = 5.0
    transient_retries: int = 3  # final states only
    transient_backoff: float = 2.0
    finished_memory: int = 10_000  # finished messages remembered to ignore late states

    def __post_init__(self) -> None:
        if self.group_budget <= self.final_reserve or self.global_budget < 1:
            raise ValueError("budgets must leave room for intermediate states")

    def scaled(self, factor: float) -> PacingPolicy:
        """The same budgets on a clock `factor` times faster: every pacing interval and window
        divided by `factor` (benchmarks against a time-scaled flood model; 1 = unchanged)."""
        if factor == 1:
            return self
        return replace(
            self,
            private_interval=self.private_interval / factor,
            group_interval=self.group_interval / factor,
            group_window=self.group_window / factor,
            global_window=self.global_window / factor,
            preview_interval=self.preview_interval / factor,
        )


class SubmitResult(enum.Enum):
    QUEUED = "queued"
    REPLACED = "replaced"  # coalesced: an older pending state was dropped
    SUPPRESSED = "suppressed"  # identical to what is shown or being sent
    IGNORED = "ignored"  # an intermediate state after a final one, or the editor is closed


@dataclass(frozen=True)
class Edit:
    """One edit to send. `content` carries a preview only when the image must change; `state` is
    the full state it comes from (they differ when only the text goes out before the image)."""

    chat_id: int
    message_id: int
    content: ProgressContent
    state: ProgressContent
    final: bool
    started_at: float

    @property
    def key(self) -> MessageKey:
        return (self.chat_id, self.message_id)

    @property
    def partial(self) -> bool:
        return self.content.preview_key != self.state.preview_key


@dataclass
class _Message:
    chat_id: int
    message_id: int
    shown: ProgressContent | None = None  # text + markup confirmed on Telegram (no bytes)
    preview_key: str | None = None  # image confirmed on Telegram
    preview_at: float | None = None
    pending: ProgressContent | None = None
    pending_final: bool = False
    pending_since: float = 0.0
    in_flight: Edit | None = None
    in_flight_final: bool = False  # a final state equal to the in-flight content arrived
    final_seen: bool = False
    attempts: int = 0
    not_before: float = 0.0


@dataclass
class _Chat:
    chat_id: int
    is_group: bool
    last_at: float | None = None
    paused_until: float = 0.0
    window: deque[float] = field(default_factory=deque)
    in_flight: Edit | None = None
    messages: set[int] = field(default_factory=set)


@dataclass
class SchedulerStats:
    submitted: int = 0
    coalesced: int = 0
    suppressed: int = 0
    ignored: int = 0
    sent: int = 0
    not_modified: int = 0
    retry_after: int = 0
    transient: int = 0
    failed: int = 0
    dropped: int = 0


@dataclass(frozen=True)
class _Finished:
    shown: ProgressContent | None
    preview_key: str | None


_Reference = tuple[str, Hashable | None, str | None]


class EditScheduler:
    """Pure edit-pacing policy. Every method takes `now` (seconds, monotonic)."""

    def __init__(self, policy: PacingPolicy | None = None) -> None:
        self.policy = policy or PacingPolicy()
        self.stats = SchedulerStats()
        self._messages: dict[MessageKey, _Message] = {}
        self._chats: dict[int, _Chat] = {}
        self._finished: OrderedDict[MessageKey, _Finished] = OrderedDict()
        self._global: deque[float] = deque()

    # -- inputs --------------------------------------------------------------------------------
    def register(
        self,
        chat_id: int,
        message_id: int,
        content: ProgressContent,
        *,
        now: float,
        just_sent: bool = True,
        is_group: bool | None = None,
    ) -> None:
        """The message exists and shows `content` (it was just sent, unless `just_sent=False`)."""
        self._finished.pop((chat_id, message_id), None)
        msg = self._message(chat_id, message_id, is_group)
        msg.shown = content.without_preview()
        msg.preview_key = content.preview_key
        if just_sent:
            if content.preview_key is not None:
                msg.preview_at = now
            self.note_message(chat_id, now=now)

    def note_message(self, chat_id: int, *, now: float) -> None:
        """Another message went to `chat_id` (a delivery, a reply): it uses the same budget."""
        chat = self._chat(chat_id, None)
        chat.last_at = now if chat.last_at is None else max(chat.last_at, now)
        chat.window.append(now)
        self._global.append(now)

    def submit(
        self,
        chat_id: int,
        message_id: int,
        content: ProgressContent,
        *,
        final: bool = False,
        now: float,
    ) -> SubmitResult:
        self.stats.submitted += 1
        key = (chat_id, message_id)
        msg = self._messages.get(key)
        if msg is None and key in self._finished:
            if not final:
                self.stats.ignored += 1
                return SubmitResult.IGNORED
            old = self._finished.pop(key)
            msg = self._message(chat_id, message_id, None)
            msg.shown, msg.preview_key = old.shown, old.preview_key
        msg = msg or self._message(chat_id, message_id, None)
        if msg.final_seen and not final:
            self.stats.ignored += 1
            return SubmitResult.IGNORED
        msg.final_seen = msg.final_seen or final
        if self._matches(content, self._reference(msg)):
            if msg.pending is not None:
                self.stats.coalesced += 1
                msg.pending, msg.pending_final = None, False
            if final and msg.in_flight is not None:
                msg.in_flight_final = True
            self.stats.suppressed += 1
            self._maybe_finish(msg)
            return SubmitResult.SUPPRESSED
        result = SubmitResult.QUEUED
        if msg.pending is not None:
            self.stats.coalesced += 1
            result = SubmitResult.REPLACED
        else:
            msg.pending_since = now
        msg.pending, msg.pending_final = content, final
        return result

    def forget(self, chat_id: int, message_id: int) -> None:
        """Stop tracking a message (deleted, or its job is gone)."""
        key = (chat_id, message_id)
        self._finished.pop(key, None)
        msg = self._messages.pop(key, None)
        if msg is not None:
            chat = self._chats.get(chat_id)
            if chat is not None:
                chat.messages.discard(message_id)
                if chat.in_flight is not None and chat.in_flight.key == key:
                    chat.in_flight = None

    def drop_intermediate(self) -> int:
        """Drop every pending intermediate state (shutdown); finals stay. Returns how many."""
        dropped = 0
        for msg in self._messages.values():
            if msg.pending is not None and not msg.pending_final:
                msg.pending = None
                dropped += 1
        self.stats.dropped += dropped
        return dropped

    # -- scheduling ------------------------------------------------------------------------------
    def pop_ready(self, now: float) -> Edit | None:
        """The edit to send now, if any; it is marked in flight until an `on_*` call."""
        if self._global_ready(now) > now:
            return None
        best: tuple[tuple[int, float, int], _Message, ProgressContent] | None = None
        for msg, ready_at, content in self._candidates(now):
            if ready_at > now:
                continue
            rank = (0 if msg.pending_final else 1, msg.pending_since, msg.message_id)
            if best is None or rank < best[0]:
                best = (rank, msg, content)
        if best is None:
            return None
        _, msg, content = best
        assert msg.pending is not None
        edit = Edit(msg.chat_id, msg.message_id, content, msg.pending, msg.pending_final, now)
        msg.in_flight, msg.in_flight_final = edit, False
        if not edit.partial:
            msg.pending, msg.pending_final = None, False
        chat = self._chats[msg.chat_id]
        chat.in_flight = edit
        chat.last_at = now
        chat.window.append(now)
        self._global.append(now)
        return edit

    def next_due(self, now: float) -> float | None:
        """When `pop_ready` may return something next; None when nothing waits (or all are in
        flight). May be <= now."""
        due: float | None = None
        for _, ready_at, _ in self._candidates(now):
            due = ready_at if due is None else min(due, ready_at)
        if due is None:
            return None
        return max(due, self._global_ready(now))

    @property
    def idle(self) -> bool:
        return not any(m.pending is not None or m.in_flight is not None for m in self._iter())

    @property
    def pending_count(self) -> int:
        return sum(1 for m in self._iter() if m.pending is not None)

    @property
    def in_flight_count(self) -> int:
        return sum(1 for m in self._iter() if m.in_flight is not None)

    # -- outcomes ----------------------------------------------------------------------------------
    def on_success(self, edit: Edit, now: float, *, not_modified: bool = False) -> None:
        """Telegram shows `edit.content` now ("message is not modified" counts as success)."""
        msg = self._settle(edit)
        if not_modified:
            self.stats.not_modified += 1
        else:
            self.stats.sent += 1
        if msg is None:
            return
        msg.attempts = 0
        msg.shown = edit.content.without_preview()
        if edit.content.preview_key is not None:
            msg.preview_key = edit.content.preview_key
            msg.preview_at = edit.started_at
        if msg.pending is not None and self._matches(msg.pending, self._reference(msg)):
            msg.pending, msg.pending_final = None, False
        self._maybe_finish(msg)

    def on_retry_after(self, edit: Edit, retry_after: float, now: float) -> None:
        """429: pause the chat; the newest state (this one unless a newer came) goes afterwards."""
        self.stats.retry_after += 1
        chat = self._chats.get(edit.chat_id)
        if chat is not None:
            chat.paused_until = max(chat.paused_until, now + retry_after)
        final = self._was_final(edit)
        msg = self._settle(edit)
        if msg is not None and msg.pending is None:
            msg.pending, msg.pending_final = edit.state, final
            msg.pending_since = edit.started_at

    def on_transient(self, edit: Edit, now: float) -> bool:
        """Timeout / network error: a final state is retried (with backoff), an intermediate one
        dropped. Returns whether the state will be sent again."""
        self.stats.transient += 1
        final = self._was_final(edit)
        msg = self._settle(edit)
        if msg is None:
            return False
        if msg.pending is not None:
            return True
        if final and msg.attempts < self.policy.transient_retries:
            msg.attempts += 1
            msg.pending, msg.pending_final = edit.state, True
            msg.pending_since = edit.started_at
            msg.not_before = now + self.policy.transient_backoff * msg.attempts
            return True
        self.stats.dropped += 1
        self._maybe_finish(msg)
        return False

    def on_failed(self, edit: Edit, now: float, *, gone: bool = False) -> None:
        """A permanent error: the state is dropped; with `gone` the message is forgotten too."""
        self.stats.failed += 1
        msg = self._settle(edit)
        if msg is None:
            return
        if gone:
            self.forget(edit.chat_id, edit.message_id)
            self._remember_finished(msg)
            return
        self._maybe_finish(msg)

    # -- internals ---------------------------------------------------------------------------------
    def _iter(self) -> Iterator[_Message]:
        return iter(self._messages.values())

    def _chat(self, chat_id: int, is_group: bool | None) -> _Chat:
        chat = self._chats.get(chat_id)
        if chat is None:
            chat = _Chat(chat_id, chat_id < 0 if is_group is None else is_group)
            self._chats[chat_id] = chat
        elif is_group is not None:
            chat.is_group = is_group
        return chat

    def _message(self, chat_id: int, message_id: int, is_group: bool | None) -> _Message:
        chat = self._chat(chat_id, is_group)
        key = (chat_id, message_id)
        msg = self._messages.get(key)
        if msg is None:
            msg = _Message(chat_id, message_id)
            self._messages[key] = msg
            chat.messages.add(message_id)
        return msg

    @staticmethod
    def _reference(msg: _Message) -> _Reference | None:
        """What the message will show once the in-flight edit lands (or shows now)."""
        if msg.in_flight is not None:
            c = msg.in_flight.content
            return (c.text, c.reply_markup, c.preview_key or msg.preview_key)
        if msg.shown is None:
            return None
        return (msg.shown.text, msg.shown.reply_markup, msg.preview_key)

    @staticmethod
    def _matches(content: ProgressContent, ref: _Reference | None) -> bool:
        if ref is None:
            return False
        text, markup, preview_key = ref
        return (
            content.text == text
            and content.reply_markup == markup
            and (content.preview_key is None or content.preview_key == preview_key)
        )

    def _was_final(self, edit: Edit) -> bool:
        msg = self._messages.get(edit.key)
        return edit.final or (msg is not None and msg.in_flight_final)

    def _settle(self, edit: Edit) -> _Message | None:
        chat = self._chats.get(edit.chat_id)
        if chat is not None and chat.in_flight is edit:
            chat.in_flight = None
        msg = self._messages.get(edit.key)
        if msg is None or msg.in_flight is not edit:
            return msg
        msg.in_flight, msg.in_flight_final = None, False
        return msg

    def _maybe_finish(self, msg: _Message) -> None:
        """A finished message with nothing left to send is forgotten, but remembered as finished."""
        if msg.final_seen and msg.pending is None and msg.in_flight is None:
            self.forget(msg.chat_id, msg.message_id)
            self._remember_finished(msg)

    def _remember_finished(self, msg: _Message) -> None:
        key = (msg.chat_id, msg.message_id)
        self._finished[key] = _Finished(msg.shown, msg.preview_key)
        self._finished.move_to_end(key)
        while len(self._finished) > self.policy.finished_memory:
            self._finished.popitem(last=False)

    @staticmethod
    def _prune(window: deque[float], now: float, span: float) -> None:
        while window and window[0] <= now - span:
            window.popleft()

    def _global_ready(self, now: float) -> float:
        p = self.policy
        self._prune(self._global, now, p.global_window)
        if len(self._global) >= p.global_budget:
            return self._global[len(self._global) - p.global_budget] + p.global_window
        return now

    def _chat_ready(self, chat: _Chat, final: bool, now: float) -> float:
        p = self.policy
        ready = chat.paused_until
        interval = p.group_interval if chat.is_group else p.private_interval
        if chat.last_at is not None:
            ready = max(ready, chat.last_at + interval)
        if chat.is_group:
            self._prune(chat.window, now, p.group_window)
            limit = p.group_budget if final else p.group_budget - p.final_reserve
            if len(chat.window) >= limit:
                ready = max(ready, chat.window[len(chat.window) - limit] + p.group_window)
        else:
            self._prune(chat.window, now, p.group_window)
        return ready

    def _candidates(self, now: float) -> list[tuple[_Message, float, ProgressContent]]:
        """Messages with a pending state and an idle chat: (message, ready time, what to send)."""
        out: list[tuple[_Message, float, ProgressContent]] = []
        for msg in list(self._messages.values()):
            if msg.pending is None or msg.in_flight is not None:
                continue
            chat = self._chats[msg.chat_id]
            if chat.in_flight is not None:
                continue
            plan = self._plan(msg, chat, now)
            if plan is not None:
                out.append((msg, plan[0], plan[1]))
        return out

    def _plan(self, msg: _Message, chat: _Chat, now: float) -> tuple[float, ProgressContent] | None:
        pending = msg.pending
        assert pending is not None
        ref = self._reference(msg)
        if self._matches(pending, ref):  # nothing to change any more
            msg.pending, msg.pending_final = None, False
            self.stats.suppressed += 1
            self._maybe_finish(msg)
            return None
        ready = max(self._chat_ready(chat, msg.pending_final, now), msg.not_before)
        new_image = pending.preview_key is not None and pending.preview_key != msg.preview_key
        if not new_image:
            return ready, pending.without_preview()
        image_due = ready
        if msg.preview_at is not None and not msg.pending_final:
            image_due = max(ready, msg.preview_at + self.policy.preview_interval)
        text_only = pending.without_preview()
        text_changes = not self._matches(text_only, ref)
        interval = self.policy.group_interval if chat.is_group else self.policy.private_interval
        if now >= image_due or not text_changes or image_due <= ready + interval:
            return image_due, pending
        return ready, text_only


# --- async runner -------------------------------------------------------------------------------
SendFn = Callable[[int, int, ProgressContent], Awaitable[object]]


def _retry_after_seconds(exc: RetryAfter) -> float:
    # PTB 22 warns that `retry_after` becomes a timedelta; accept both, without the warning.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PTBDeprecationWarning)
        value: float | dtm.timedelta = exc.retry_after
    return value.total_seconds() if isinstance(value, dtm.timedelta) else float(value)


class ProgressEditor:
    """Sends progress edits through `send`, paced by an `EditScheduler`.

    `submit` returns at once; a background task (started on first use, inside the running loop)
    sends due edits, at most one in flight per chat and `max_concurrency` overall. Errors never
    reach the caller: RetryAfter pauses the chat, "message is not modified" counts as success,
    timeouts retry final states, other Telegram errors drop the state (logged).
    """

    def __init__(
        self,
        send: SendFn,
        *,
        policy: PacingPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
        max_concurrency: int = 8,
    ) -> None:
        self._send = send
        self._clock = clock
        self._max_concurrency = max_concurrency
        self.scheduler = EditScheduler(policy)
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._runner: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    @property
    def stats(self) -> SchedulerStats:
        return self.scheduler.stats

    def register(
        self,
        chat_id: int,
        message_id: int,
        content: ProgressContent,
        *,
        just_sent: bool = True,
        is_group: bool | None = None,
    ) -> None:
        """Tell the editor what a (just sent) progress message shows."""
        self.scheduler.register(
            chat_id, message_id, content, now=self._clock(), just_sent=just_sent, is_group=is_group
        )

    def note_message(self, chat_id: int) -> None:
        """Count another message sent to `chat_id` against its budget."""
        self.scheduler.note_message(chat_id, now=self._clock())

    def submit(
        self, chat_id: int, message_id: int, content: ProgressContent, *, final: bool = False
    ) -> SubmitResult:
        """Queue the newest state of a message (never blocks; call from the event loop)."""
        if self._closed:
            log.warning("progress editor closed, state ignored", chat_id=chat_id)
            return SubmitResult.IGNORED
        result = self.scheduler.submit(chat_id, message_id, content, final=final, now=self._clock())
        if result in (SubmitResult.QUEUED, SubmitResult.REPLACED):
            self._idle.clear()
            self._ensure_runner()
            self._wake.set()
        return result

    def forget(self, chat_id: int, message_id: int) -> None:
        self.scheduler.forget(chat_id, message_id)
        self._refresh_idle()

    async def flush(self, max_wait: float | None = None) -> bool:
        """Wait until every queued state is sent (or dropped). False after `max_wait` seconds."""
        self._refresh_idle()
        if not self._idle.is_set():
            self._ensure_runner()
            self._wake.set()
        try:
            await asyncio.wait_for(self._idle.wait(), max_wait)
        except TimeoutError:
            return False
        return True

    async def close(self, max_wait: float = 10.0) -> bool:
        """Stop accepting states, drop intermediate ones, send the finals, stop the runner."""
        self._closed = True
        self.scheduler.drop_intermediate()
        done = await self.flush(max_wait)
        tasks = [*self._tasks, *([self._runner] if self._runner else [])]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._runner = None
        return done

    # -- internals ---------------------------------------------------------------------------------
    def _ensure_runner(self) -> None:
        if self._runner is None or self._runner.done():
            self._runner = asyncio.get_running_loop().create_task(
                self._run(), name="progress-editor"
            )

    def _refresh_idle(self) -> None:
        if self.scheduler.idle:
            self._idle.set()
        else:
            self._idle.clear()

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            now = self._clock()
            while len(self._tasks) < self._max_concurrency:
                edit = self.scheduler.pop_ready(now)
                if edit is None:
                    break
                task = asyncio.create_task(self._deliver(edit))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            self._refresh_idle()
            due = self.scheduler.next_due(now) if len(self._tasks) < self._max_concurrency else None
            timeout = None if due is None else max(due - now, 0.005)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    async def _deliver(self, edit: Edit) -> None:
        where = {"chat_id": edit.chat_id, "message_id": edit.message_id}
        try:
            await self._send(edit.chat_id, edit.message_id, edit.content)
        except RetryAfter as exc:
            seconds = _retry_after_seconds(exc)
            log.warning("progress edit hit flood control", retry_after=seconds, **where)
            self.scheduler.on_retry_after(edit, seconds, self._clock())
        except BadRequest as exc:
            text = exc.message.lower()
            if _NOT_MODIFIED_MARKER in text:
                self.scheduler.on_success(edit, self._clock(), not_modified=True)
            else:
                gone = any(marker in text for marker in _GONE_MARKERS)
                log.warning("progress edit rejected", error=exc.message, gone=gone, **where)
                self.scheduler.on_failed(edit, self._clock(), gone=gone)
        except NetworkError as exc:  # TimedOut included; BadRequest is handled above
            retry = self.scheduler.on_transient(edit, self._clock())
            log.warning("progress edit failed", error=str(exc), will_retry=retry, **where)
        except Forbidden as exc:
            log.info("progress message unreachable", error=exc.message, **where)
            self.scheduler.on_failed(edit, self._clock(), gone=True)
        except TelegramError as exc:
            log.warning("progress edit failed", error=str(exc), **where)
            self.scheduler.on_failed(edit, self._clock())
        except asyncio.CancelledError:
            self.scheduler.on_failed(edit, self._clock())
            raise
        except Exception:
            log.exception("progress edit crashed", **where)
            self.scheduler.on_failed(edit, self._clock())
        else:
            self.scheduler.on_success(edit, self._clock())
        finally:
            self._refresh_idle()
            self._wake.set()


# --- PTB sender ---------------------------------------------------------------------------------
def _inline_markup(markup: Hashable | None) -> InlineKeyboardMarkup | None:
    if markup is None or isinstance(markup, InlineKeyboardMarkup):
        return markup
    raise TypeError(f"reply_markup must be an InlineKeyboardMarkup, not {type(markup).__name__}")


class PtbEditSender:
    """`send` for `ProgressEditor` on a PTB `Bot`.

    A content with a preview becomes `edit_message_media` (a text message turns into a photo
    with the text as caption); later texts of such a message go through `edit_message_caption`.
    `markup` turns the opaque `reply_markup` into an InlineKeyboardMarkup (default: it already is).
    """

    def __init__(
        self,
        bot: Bot,
        *,
        parse_mode: str | None = None,
        markup: Callable[[Hashable | None], InlineKeyboardMarkup | None] = _inline_markup,
    ) -> None:
        self._bot = bot
        self._parse_mode = parse_mode
        self._markup = markup
        self._media: set[MessageKey] = set()

    def mark_media(self, chat_id: int, message_id: int) -> None:
        """The message was sent with media: its text is a caption."""
        self._media.add((chat_id, message_id))

    def forget(self, chat_id: int, message_id: int) -> None:
        self._media.discard((chat_id, message_id))

    async def __call__(self, chat_id: int, message_id: int, content: ProgressContent) -> None:
        key = (chat_id, message_id)
        markup = self._markup(content.reply_markup)
        # Passed only when set, so that the Application's Defaults(parse_mode=...) still apply.
        mode: dict[str, Any] = {} if self._parse_mode is None else {"parse_mode": self._parse_mode}
        if content.preview is not None:
            media = InputMediaPhoto(
                content.preview, caption=content.text, filename="preview.jpg", **mode
            )
            await self._bot.edit_message_media(
                media, chat_id=chat_id, message_id=message_id, reply_markup=markup
            )
            self._media.add(key)
            return
        if key not in self._media:
            try:
                await self._bot.edit_message_text(
                    content.text,
                    chat_id=chat_id,
                    message_id=message_id,
                    reply_markup=markup,
                    **mode,
                )
                return
            except BadRequest as exc:
                if _NO_TEXT_MARKER not in exc.message.lower():
                    raise
                self._media.add(key)
        await self._bot.edit_message_caption(
            chat_id=chat_id,
            message_id=message_id,
            caption=content.text,
            reply_markup=markup,
            **mode,
        )


__all__ = [
    "Edit",
    "EditScheduler",
    "PacingPolicy",
    "ProgressContent",
    "ProgressEditor",
    "PtbEditSender",
    "SchedulerStats",
    "SendFn",
    "SubmitResult",
]
