"""The pure edit-pacing policy of bot.progress, driven by a fake clock."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest

from bot.progress import Edit, EditScheduler, PacingPolicy, ProgressContent, SubmitResult

PRIVATE = 501
GROUP = -1001234567890


def text(value: str, markup: object = None) -> ProgressContent:
    return ProgressContent(value, reply_markup=markup)  # type: ignore[arg-type]


def image(value: str, key: str) -> ProgressContent:
    return ProgressContent(value, preview=key.encode(), preview_key=key)


def drive(
    s: EditScheduler,
    start: float,
    end: float,
    *,
    tick: Callable[[float], None] | None = None,
    step: float = 0.05,
) -> list[tuple[float, Edit]]:
    """Advance the clock in steps; every due edit succeeds at once. Returns (time, edit)."""
    sent: list[tuple[float, Edit]] = []
    steps = round((end - start) / step)
    for i in range(steps + 1):
        now = start + i * step
        if tick is not None:
            tick(now)
        while (edit := s.pop_ready(now)) is not None:
            sent.append((now, edit))
            s.on_success(edit, now)
    return sent


def test_content_validation() -> None:
    with pytest.raises(ValueError):
        ProgressContent("   ")
    with pytest.raises(ValueError):
        ProgressContent("x", preview=b"img")
    assert image("a", "k1") == ProgressContent("a", preview=b"other", preview_key="k1")


def test_private_chat_is_paced_and_keeps_only_the_newest_state() -> None:
    s = EditScheduler()
    s.register(PRIVATE, 1, text("queued"), now=0.0)
    results = [s.submit(PRIVATE, 1, text(f"step {i}"), now=0.1 * i) for i in range(10)]
    assert results[0] is SubmitResult.QUEUED
    assert set(results[1:]) == {SubmitResult.REPLACED}
    assert s.pop_ready(1.0) is None  # the message itself was sent at 0.0
    assert s.next_due(1.0) == pytest.approx(1.5)
    edit = s.pop_ready(1.5)
    assert edit is not None and edit.content.text == "step 9"
    s.submit(PRIVATE, 1, text("step 10"), now=1.6)
    assert s.pop_ready(1.7) is None  # one edit in flight per chat
    s.on_success(edit, 1.8)
    assert s.pop_ready(2.9) is None
    nxt = s.pop_ready(3.0)
    assert nxt is not None and nxt.content.text == "step 10"
    assert s.stats.coalesced == 9


def test_identical_content_is_never_sent() -> None:
    s = EditScheduler()
    s.register(PRIVATE, 1, text("50%", ("stop",)), now=0.0)
    assert s.submit(PRIVATE, 1, text("50%", ("stop",)), now=0.1) is SubmitResult.SUPPRESSED
    assert s.next_due(0.1) is None
    # a different keyboard is a change; going back to what is shown cancels it
    assert s.submit(PRIVATE, 1, text("50%"), now=0.2) is SubmitResult.QUEUED
    assert s.submit(PRIVATE, 1, text("50%", ("stop",)), now=0.3) is SubmitResult.SUPPRESSED
    assert s.idle and s.pop_ready(10.0) is None
    # equal to what is in flight: suppressed too
    s.submit(PRIVATE, 1, text("60%", ("stop",)), now=11.0)
    edit = s.pop_ready(11.0)
    assert edit is not None
    assert s.submit(PRIVATE, 1, text("60%", ("stop",)), now=11.1) is SubmitResult.SUPPRESSED
    s.on_success(edit, 11.2)
    assert s.idle
    # same image key + same text: nothing to do
    s.register(PRIVATE, 2, image("70%", "p1"), now=20.0)
    assert s.submit(PRIVATE, 2, image("70%", "p1"), now=21.0) is SubmitResult.SUPPRESSED
    # a state without preview keeps the image: only text and markup compare
    assert s.submit(PRIVATE, 2, text("70%"), now=21.0) is SubmitResult.SUPPRESSED


def test_group_budget_is_shared_by_all_jobs_of_the_chat() -> None:
    policy = PacingPolicy()
    s = EditScheduler(policy)
    for job in (1, 2, 3):
        s.register(GROUP, job, text(f"job {job} queued"), now=0.0)
    counter = {"n": 0}

    def progress(now: float) -> None:  # every job reports twice a second
        if round(now * 20) % 10 == 0:
            counter["n"] += 1
            for job in (1, 2, 3):
                s.submit(GROUP, job, text(f"job {job}: {counter['n']}"), now=now)

    sent = drive(s, 0.0, 180.0, tick=progress)
    times = [t for t, _ in sent]
    assert all(b - a >= policy.group_interval - 1e-9 for a, b in itertools.pairwise(times))
    # messages counted: the 3 progress messages at t=0 plus the edits
    every = [0.0, 0.0, 0.0, *times]
    for i, start in enumerate(every):
        in_window = [t for t in every[i:] if t < start + policy.group_window]
        assert len(in_window) <= policy.group_budget
    per_job = {job: sum(1 for _, e in sent if e.message_id == job) for job in (1, 2, 3)}
    assert min(per_job.values()) >= 15
    assert max(per_job.values()) - min(per_job.values()) <= 1  # round-robin between jobs

    for job in (1, 2, 3):
        s.submit(GROUP, job, text(f"job {job} done"), final=True, now=180.0)
    finals = drive(s, 180.0, 200.0)
    assert sorted(e.content.text for _, e in finals) == [f"job {j} done" for j in (1, 2, 3)]
    assert all(e.final for _, e in finals)
    assert s.idle


def test_final_state_may_use_the_reserved_group_budget() -> None:
    policy = PacingPolicy()
    s = EditScheduler(policy)
    s.register(GROUP, 1, text("queued"), now=0.0)
    s.register(GROUP, 2, text("queued"), now=0.0)
    for i in range(policy.group_budget - policy.final_reserve - 2):
        s.note_message(GROUP, now=0.1 * (i + 1))  # deliveries of other jobs
    s.submit(GROUP, 1, text("40%"), now=5.0)
    assert s.pop_ready(5.0) is None  # intermediates may not use the last 2 slots
    s.submit(GROUP, 2, text("done"), final=True, now=5.0)
    edit = s.pop_ready(5.0)
    assert edit is not None and edit.message_id == 2 and edit.final
    s.on_success(edit, 5.1)
    due = s.next_due(5.1)
    assert due is not None and due == pytest.approx(60.0 + 0.0)  # first entry leaves the window


def test_final_first_then_late_intermediate_states_are_ignored() -> None:
    s = EditScheduler()
    s.register(PRIVATE, 1, text("queued"), now=0.0)
    s.register(PRIVATE, 2, text("queued"), now=0.0)
    s.submit(PRIVATE, 1, text("10%"), now=0.5)
    s.submit(PRIVATE, 2, text("failed"), final=True, now=1.0)
    first = s.pop_ready(2.0)
    assert first is not None and first.message_id == 2  # finals go first
    s.on_success(first, 2.0)
    assert s.submit(PRIVATE, 2, text("90%"), now=2.5) is SubmitResult.IGNORED
    # a newer final (e.g. the caption gains a link) is still accepted
    assert s.submit(PRIVATE, 2, text("failed, see log"), final=True, now=2.5) is (
        SubmitResult.QUEUED
    )


def test_retry_after_pauses_the_chat_and_sends_the_newest_state() -> None:
    s = EditScheduler()
    s.register(PRIVATE, 1, text("queued"), now=0.0)
    s.submit(PRIVATE, 1, text("10%"), now=1.0)
    edit = s.pop_ready(2.0)
    assert edit is not None
    s.submit(PRIVATE, 1, text("20%"), now=2.1)
    s.on_retry_after(edit, 7.0, now=2.2)
    assert s.pop_ready(9.0) is None
    assert s.next_due(9.0) == pytest.approx(9.2)
    again = s.pop_ready(9.2)
    assert again is not None and again.content.text == "20%"
    # without a newer state the same one is sent again after the pause
    s.on_retry_after(again, 3.0, now=9.3)
    third = s.pop_ready(12.3)
    assert third is not None and third.content.text == "20%"
    assert s.stats.retry_after == 2


def test_final_state_is_never_lost_behind_429s() -> None:
    s = EditScheduler()
    s.register(PRIVATE, 1, text("running"), now=0.0)
    s.submit(PRIVATE, 1, text("done"), final=True, now=1.0)
    now = 2.0
    for _ in range(5):
        edit = s.pop_ready(now)
        assert edit is not None and edit.content.text == "done"
        s.on_retry_after(edit, 30.0, now=now)
        assert s.submit(PRIVATE, 1, text("99%"), now=now) is SubmitResult.IGNORED
        now += 30.0
    edit = s.pop_ready(now)
    assert edit is not None
    s.on_success(edit, now)
    assert s.idle


def test_transient_errors_retry_finals_and_drop_intermediates() -> None:
    policy = PacingPolicy(transient_retries=2, transient_backoff=1.0)
    s = EditScheduler(policy)
    s.register(PRIVATE, 1, text("queued"), now=0.0)
    s.submit(PRIVATE, 1, text("10%"), now=1.0)
    edit = s.pop_ready(2.0)
    assert edit is not None
    assert s.on_transient(edit, 2.5) is False
    assert s.idle

    s.submit(PRIVATE, 1, text("done"), final=True, now=3.0)
    now, attempts = 4.0, 0
    while (edit := s.pop_ready(now)) is not None or s.next_due(now) is not None:
        if edit is None:
            now = max(now, s.next_due(now) or now)
            continue
        attempts += 1
        s.on_transient(edit, now)
    assert attempts == 1 + policy.transient_retries
    assert s.stats.dropped == 2


def test_failed_edit_drops_the_state_and_gone_forgets_the_message() -> None:
    s = EditScheduler()
    s.register(PRIVATE, 1, text("queued"), now=0.0)
    s.submit(PRIVATE, 1, text("x" * 10), now=1.0)
    edit = s.pop_ready(2.0)
    assert edit is not None
    s.on_failed(edit, 2.1)
    assert s.idle
    s.submit(PRIVATE, 1, text("11%"), now=3.0)
    edit = s.pop_ready(4.0)
    assert edit is not None
    s.on_failed(edit, 4.1, gone=True)  # the user deleted the message
    assert s.submit(PRIVATE, 1, text("12%"), now=5.0) is SubmitResult.IGNORED


def test_previews_change_at_a_gentler_pace_than_text() -> None:
    policy = PacingPolicy()
    s = EditScheduler(policy)
    s.register(PRIVATE, 1, text("queued"), now=0.0)

    def progress(now: float) -> None:  # a new preview every 0.5 s
        if round(now * 20) % 10 == 0 and now < 20.0:
            step = round(now * 2)
            s.submit(PRIVATE, 1, image(f"step {step}", f"p{step}"), now=now)

    sent = drive(s, 0.0, 20.0, tick=progress)
    image_times = [t for t, e in sent if e.content.preview is not None]
    text_times = [t for t, e in sent if e.content.preview is None]
    assert len(image_times) >= 3
    assert all(b - a >= policy.preview_interval for a, b in itertools.pairwise(image_times))
    assert text_times  # text moved on between images
    times = [t for t, _ in sent]
    assert all(b - a >= policy.private_interval - 1e-9 for a, b in itertools.pairwise(times))


def test_final_image_is_not_held_back_by_the_preview_pace() -> None:
    s = EditScheduler()
    s.register(PRIVATE, 1, text("queued"), now=0.0)
    s.submit(PRIVATE, 1, image("step 1", "p1"), now=0.0)
    first = s.pop_ready(1.5)
    assert first is not None and first.content.preview_key == "p1"
    s.on_success(first, 1.6)
    # an intermediate image 1.5 s later: only its text goes now, the image waits
    s.submit(PRIVATE, 1, image("step 2", "p2"), now=2.0)
    partial = s.pop_ready(3.0)
    assert partial is not None and partial.content.preview is None
    assert partial.content.text == "step 2"
    s.on_success(partial, 3.1)
    assert s.next_due(3.1) == pytest.approx(6.5)
    # the final picture replaces it and goes at the chat's pace
    s.submit(PRIVATE, 1, image("done", "final"), final=True, now=3.2)
    assert s.next_due(3.2) == pytest.approx(4.5)
    edit = s.pop_ready(4.5)
    assert edit is not None and edit.content.preview_key == "final" and edit.final


def test_global_budget_across_chats() -> None:
    policy = PacingPolicy()
    s = EditScheduler(policy)
    chats = range(1, 41)
    for chat in chats:
        s.register(chat, 1, text("queued"), now=-10.0)
        s.submit(chat, 1, text("started"), now=0.0)
    first = []
    while (edit := s.pop_ready(0.0)) is not None:
        first.append(edit)
    assert len(first) == policy.global_budget
    for edit in first:
        s.on_success(edit, 0.1)
    assert s.pop_ready(0.5) is None
    rest = []
    while (edit := s.pop_ready(1.0)) is not None:
        rest.append(edit)
    assert len(first) + len(rest) == len(chats)


def test_forget_and_drop_intermediate() -> None:
    s = EditScheduler()
    s.register(PRIVATE, 1, text("queued"), now=0.0)
    s.register(PRIVATE, 2, text("queued"), now=0.0)
    s.submit(PRIVATE, 1, text("1%"), now=0.1)
    s.submit(PRIVATE, 2, text("done"), final=True, now=0.1)
    assert s.drop_intermediate() == 1
    assert s.pending_count == 1
    s.forget(PRIVATE, 2)
    assert s.idle
