"""Routes parsed ComfyUI events to per-prompt subscribers. Pure logic, no I/O.

* Events carry a `prompt_id`; type-1 previews do not, so they go to the prompt currently
  executing (learned from `execution_start` / `executing`).
* An event for a prompt nobody subscribed to yet is kept in a bounded buffer (age and count),
  because a fast job can finish before the `POST /prompt` reply reaches the caller.
* A subscriber's queue is unbounded for protocol events, but previews are dropped once it
  holds `max_queue` items, so a stalled consumer cannot eat the memory.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict, deque
from dataclasses import dataclass

from core.comfy.protocol import (
    Disconnected,
    Event,
    Executing,
    ExecutionError,
    ExecutionInterrupted,
    ExecutionStart,
    ExecutionSuccess,
    Preview,
    Progress,
    Reconnected,
    Status,
)


@dataclass(frozen=True, slots=True)
class RouterLimits:
    buffer_ttl_s: float = 120.0
    buffer_max_events: int = 512  # per unsubscribed prompt
    buffer_max_prompts: int = 256
    max_queue: int = 2048  # previews beyond this are dropped for a slow subscriber


class EventRouter:
    """`route(event, now)` delivers or buffers; `subscribe` drains the buffer first."""

    def __init__(self, limits: RouterLimits | None = None) -> None:
        self.limits = limits or RouterLimits()
        self._subscribers: dict[str, asyncio.Queue[Event]] = {}
        self._buffers: OrderedDict[str, deque[tuple[float, Event]]] = OrderedDict()
        self.current_prompt_id: str | None = None
        self.queue_remaining: int | None = None
        self.dropped_previews = 0

    # -- subscriptions -------------------------------------------------------------
    def subscribe(self, prompt_id: str, now: float) -> asyncio.Queue[Event]:
        queue = self._subscribers.get(prompt_id)
        if queue is None:
            queue = asyncio.Queue()
            self._subscribers[prompt_id] = queue
        self._expire(now)
        for _, event in self._buffers.pop(prompt_id, ()):
            queue.put_nowait(event)
        return queue

    def unsubscribe(self, prompt_id: str) -> None:
        self._subscribers.pop(prompt_id, None)
        self._buffers.pop(prompt_id, None)

    @property
    def subscribed(self) -> list[str]:
        return list(self._subscribers)

    def buffered(self, prompt_id: str) -> int:
        return len(self._buffers.get(prompt_id, ()))

    # -- routing -------------------------------------------------------------------
    def route(self, event: Event, now: float) -> str | None:
        """Deliver `event`; returns the prompt id it was attributed to (None: not routed)."""
        if isinstance(event, Status):
            self.queue_remaining = event.queue_remaining
            return None
        self._track_current(event)
        prompt_id = event.prompt_id
        if prompt_id is None and isinstance(event, Preview | Progress):
            prompt_id = self.current_prompt_id
            if prompt_id is not None and isinstance(event, Preview):
                event = Preview(
                    prompt_id=prompt_id, node_id=event.node_id, mime=event.mime, data=event.data
                )
        if prompt_id is None:
            return None
        queue = self._subscribers.get(prompt_id)
        if queue is not None:
            if isinstance(event, Preview) and queue.qsize() >= self.limits.max_queue:
                self.dropped_previews += 1
                return prompt_id
            queue.put_nowait(event)
            return prompt_id
        self._buffer(prompt_id, event, now)
        return prompt_id

    def notify_reconnected(self) -> list[str]:
        """Tell every subscriber that events may have been lost while the socket was down."""
        self.current_prompt_id = None
        for prompt_id, queue in self._subscribers.items():
            queue.put_nowait(Reconnected(prompt_id=prompt_id))
        return list(self._subscribers)

    def notify_disconnected(self) -> None:
        """Tell every subscriber that the socket is down (no events until it is back)."""
        self.current_prompt_id = None
        for prompt_id, queue in self._subscribers.items():
            queue.put_nowait(Disconnected(prompt_id=prompt_id))

    # -- internals -----------------------------------------------------------------
    def _track_current(self, event: Event) -> None:
        if isinstance(event, ExecutionStart) and event.prompt_id:
            self.current_prompt_id = event.prompt_id
        elif isinstance(event, Executing) and event.prompt_id:
            if event.node is None:
                if self.current_prompt_id == event.prompt_id:
                    self.current_prompt_id = None
            else:
                self.current_prompt_id = event.prompt_id
        elif (
            isinstance(event, ExecutionSuccess | ExecutionError | ExecutionInterrupted)
            and event.prompt_id == self.current_prompt_id
        ):
            # No more previews can belong to it; `executing{node:null}` follows.
            self.current_prompt_id = None

    def _buffer(self, prompt_id: str, event: Event, now: float) -> None:
        self._expire(now)
        buffer = self._buffers.get(prompt_id)
        if buffer is None:
            while len(self._buffers) >= self.limits.buffer_max_prompts:
                self._buffers.popitem(last=False)
            buffer = deque(maxlen=self.limits.buffer_max_events)
            self._buffers[prompt_id] = buffer
        if isinstance(event, Preview):
            # Only the latest preview of a prompt nobody listens to yet is worth its memory.
            for old in [item for item in buffer if isinstance(item[1], Preview)]:
                buffer.remove(old)
        buffer.append((now, event))

    def _expire(self, now: float) -> None:
        deadline = now - self.limits.buffer_ttl_s
        for prompt_id in list(self._buffers):
            buffer = self._buffers[prompt_id]
            while buffer and buffer[0][0] < deadline:
                buffer.popleft()
            if not buffer:
                del self._buffers[prompt_id]
