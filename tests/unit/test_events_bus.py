"""The event bus drops its own NOTIFY echoes without parsing them, and keeps the others'."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from core.events import EventBus, JobEvent, _origin_suffix


def _event(**extra: Any) -> JobEvent:
    return JobEvent(job_id=uuid.uuid4(), type="state", status="running", chat_id=5, **extra)


async def test_own_echo_is_dropped_unparsed_and_other_origins_are_published(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bus = EventBus()
    bus.origin = 7
    bus._own_suffix = _origin_suffix(7)  # as bridge() sets it
    parsed: list[str] = []
    real = JobEvent.from_json

    def counting(text: str) -> JobEvent:
        parsed.append(text)
        return real(text)

    monkeypatch.setattr(JobEvent, "from_json", staticmethod(counting))
    async with bus.subscribe() as queue:
        own, other, other_17 = _event(), _event(), _event()
        bus._on_notify(None, 0, "animebot_events", own.to_json(origin=7))
        assert parsed == [] and queue.empty()
        bus._on_notify(None, 0, "animebot_events", other.to_json(origin=3))
        bus._on_notify(None, 0, "animebot_events", other_17.to_json(origin=17))
        got = [queue.get_nowait(), queue.get_nowait()]
    assert [(e.job_id, e.origin) for e in got] == [(other.job_id, 3), (other_17.job_id, 17)]
    assert len(parsed) == 2
