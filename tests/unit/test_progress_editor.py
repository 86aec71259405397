"""ProgressEditor's runner with a scripted `send` (no network): errors map onto the policy."""

from __future__ import annotations

import asyncio
import time

from telegram.error import BadRequest, Forbidden, RetryAfter, TimedOut

from bot.progress import PacingPolicy, ProgressContent, ProgressEditor, SubmitResult

FAST = PacingPolicy(private_interval=0.05, group_interval=0.05, transient_backoff=0.05)
CHAT = 77


class Recorder:
    """A `send` that records calls and raises the scripted errors first."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.calls: list[tuple[int, int, str, float]] = []
        self.delivered: list[str] = []
        self.gate: asyncio.Event | None = None

    async def __call__(self, chat_id: int, message_id: int, content: ProgressContent) -> None:
        self.calls.append((chat_id, message_id, content.text, time.monotonic()))
        if self.gate is not None:
            await self.gate.wait()
        if self.errors:
            raise self.errors.pop(0)
        self.delivered.append(content.text)


def state(text: str) -> ProgressContent:
    return ProgressContent(text)


async def test_retry_after_is_honoured_and_the_state_resent() -> None:
    send = Recorder(RetryAfter(1))
    editor = ProgressEditor(send, policy=FAST)
    editor.register(CHAT, 1, state("queued"), just_sent=False)
    editor.submit(CHAT, 1, state("done"), final=True)
    assert await editor.flush(5.0)
    assert send.delivered == ["done"]
    assert send.calls[1][3] - send.calls[0][3] >= 0.95
    assert editor.stats.retry_after == 1


async def test_not_modified_counts_as_success_and_other_errors_drop_the_state() -> None:
    send = Recorder(
        BadRequest("Message is not modified: specified new message content and reply markup"),
        BadRequest("Message is too long"),
        RuntimeError("bug in send"),
    )
    editor = ProgressEditor(send, policy=FAST)
    editor.register(CHAT, 1, state("queued"), just_sent=False)
    for text in ("a", "b", "c", "d"):
        editor.submit(CHAT, 1, state(text))
        assert await editor.flush(2.0)
    assert [c[2] for c in send.calls] == ["a", "b", "c", "d"]
    assert send.delivered == ["d"]
    assert editor.stats.not_modified == 1 and editor.stats.failed == 2
    # "a" was accepted as shown: submitting it again is no edit
    editor.submit(CHAT, 1, state("d"))
    assert editor.submit(CHAT, 1, state("d")) is SubmitResult.SUPPRESSED
    await editor.close()


async def test_timeouts_retry_finals_and_gone_messages_are_forgotten() -> None:
    send = Recorder(TimedOut(), TimedOut())
    editor = ProgressEditor(send, policy=FAST)
    editor.register(CHAT, 1, state("queued"), just_sent=False)
    editor.submit(CHAT, 1, state("done"), final=True)
    assert await editor.flush(3.0)
    assert send.delivered == ["done"] and len(send.calls) == 3
    send.errors = [Forbidden("Forbidden: bot was blocked by the user")]
    editor.register(CHAT, 2, state("queued"), just_sent=False)
    editor.submit(CHAT, 2, state("10%"))
    assert await editor.flush(3.0)
    assert editor.submit(CHAT, 2, state("20%")) is SubmitResult.IGNORED


async def test_submit_never_blocks_and_close_keeps_only_finals() -> None:
    send = Recorder()
    send.gate = asyncio.Event()
    editor = ProgressEditor(send, policy=FAST)
    editor.register(CHAT, 1, state("queued"), just_sent=False)
    editor.register(CHAT, 2, state("queued"), just_sent=False)
    started = time.monotonic()
    for i in range(200):
        editor.submit(CHAT, 1, state(f"{i}%"))
    editor.submit(CHAT, 2, state("done"), final=True)
    assert time.monotonic() - started < 0.5
    await asyncio.sleep(0.1)
    assert len(send.calls) == 1  # one edit in flight per chat, the sender is stuck
    assert not await editor.flush(0.2)
    send.gate.set()
    assert await editor.close(5.0)
    # the final went first and out; the pending intermediate state was dropped at close
    assert [(c[1], c[2]) for c in send.calls] == [(2, "done")]
    assert send.delivered == ["done"] and editor.stats.dropped == 1
    assert editor.submit(CHAT, 1, state("late")) is SubmitResult.IGNORED


async def test_chats_do_not_wait_for_each_other() -> None:
    send = Recorder()
    editor = ProgressEditor(send, policy=FAST)
    for chat in range(1, 6):
        editor.register(chat, 1, state("queued"), just_sent=False)
        editor.submit(chat, 1, state(f"chat {chat}"), final=True)
    assert await editor.flush(2.0)
    assert sorted(send.delivered) == [f"chat {c}" for c in range(1, 6)]
    await editor.close()
