"""Edges of the event bus: per-job subscriptions, a subscriber that falls behind (its queue
overflows), and NOTIFY payloads that are not ours to trust."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from structlog.testing import capture_logs

from core.events import _QUEUE_SIZE, NOTIFY_CHANNEL, EventBus, JobEvent, _origin_suffix


def state(job_id: uuid.UUID, status: str) -> JobEvent:
    return JobEvent(job_id=job_id, type="state", status=status, chat_id=5)


def progress(job_id: uuid.UUID, step: int) -> JobEvent:
    return JobEvent(job_id=job_id, type="progress", status="running", chat_id=5, step=step)


def drain(queue: Any) -> list[JobEvent]:
    return [queue.get_nowait() for _ in range(queue.qsize())]


def key(event: JobEvent) -> tuple[str, str, int | None]:
    return (event.type, event.status, event.step)


async def test_a_job_subscription_sees_only_that_job() -> None:
    bus = EventBus()
    mine, other = uuid.uuid4(), uuid.uuid4()
    async with bus.subscribe(mine) as queue, bus.subscribe() as everything:
        bus.publish(state(other, "running"))
        bus.publish(state(mine, "running"))
        bus.publish(progress(other, 1))
        bus.publish(progress(mine, 1))
        bus.publish(state(mine, "done"))
        assert [(e.job_id, *key(e)) for e in drain(queue)] == [
            (mine, "state", "running", None),
            (mine, "progress", "running", 1),
            (mine, "state", "done", None),
        ]
        assert everything.qsize() == 5


async def test_overflow_drops_the_oldest_progress_and_keeps_every_state_in_order() -> None:
    """A subscriber that stopped reading: its queue stays bounded by dropping the oldest
    progress events, and its state changes keep their order (never `done` before `running`)."""
    bus = EventBus()
    job = uuid.uuid4()
    async with bus.subscribe() as queue:
        bus.publish(state(job, "running"))
        for step in range(1, _QUEUE_SIZE - 1):  # steps 1 .. QUEUE_SIZE-2: the queue is full
            bus.publish(progress(job, step))
        bus.publish(state(job, "postprocessing"))
        assert queue.qsize() == _QUEUE_SIZE
        late = range(_QUEUE_SIZE - 1, _QUEUE_SIZE + 4)  # 5 more progress events
        for step in late:
            bus.publish(progress(job, step))
        bus.publish(state(job, "done"))
        got = [key(e) for e in drain(queue)]
    expected = [
        ("state", "running", None),
        *[("progress", "running", s) for s in range(7, _QUEUE_SIZE - 1)],  # 1..6 dropped
        ("state", "postprocessing", None),
        *[("progress", "running", s) for s in late],
        ("state", "done", None),
    ]
    assert got == expected


@pytest.mark.timeout(10)  # the bug this guards against spins forever inside publish()
async def test_overflow_of_state_changes_neither_spins_nor_drops_one() -> None:
    """A subscriber behind on state changes only: publish() returns at once, no state change
    is lost or reordered, and a progress event is the one dropped."""
    bus = EventBus()
    jobs = [uuid.uuid4() for _ in range(_QUEUE_SIZE + 5)]
    async with bus.subscribe() as queue:
        for job in jobs:
            bus.publish(state(job, "queued"))
        bus.publish(progress(jobs[0], 1))
        bus.publish(state(jobs[0], "cancelled"))
        got = drain(queue)
    assert [(e.job_id, e.status) for e in got] == [
        *[(job, "queued") for job in jobs],
        (jobs[0], "cancelled"),
    ]


async def test_bad_notify_payloads_are_logged_and_skipped() -> None:
    """What another process (or anyone with access to the channel) sends: nothing malformed
    reaches the subscribers, nothing raises in the listener callback, and good events pass."""
    bus = EventBus()
    bus.origin = 7
    bus._own_suffix = _origin_suffix(7)  # as bridge() sets it
    job = uuid.uuid4()
    good = state(job, "running")
    wire = json.loads(good.to_json(origin=3))
    bad = [
        "not json at all",
        "null",
        "[]",
        "42",
        json.dumps({**wire, "job_id": "not-a-uuid"}),
        json.dumps({**wire, "job_id": 123}),
        json.dumps({k: v for k, v in wire.items() if k != "job_id"}),
        json.dumps({**wire, "from_a_newer_version": True}),
    ]
    # Our own event, formatted differently (the suffix check misses it): still not redelivered.
    own = json.dumps({"origin": 7, **{k: v for k, v in wire.items() if k != "origin"}})
    async with bus.subscribe() as queue:
        with capture_logs() as logs:
            for payload in [*bad, own, good.to_json(origin=3)]:
                bus._on_notify(None, 0, NOTIFY_CHANNEL, payload)
        got = drain(queue)
    assert [(e.job_id, e.status, e.origin) for e in got] == [(job, "running", 3)]
    warnings = [entry for entry in logs if entry["event"] == "bad event payload"]
    assert len(warnings) == len(bad)
    assert all(entry["log_level"] == "warning" for entry in warnings)
