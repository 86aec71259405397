"""core.metrics without a database: stage durations, counters, gauges, the background tasks."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import prometheus_client
from prometheus_client.parser import text_string_to_metric_families

from core import metrics as metrics_mod
from core.events import EventBus, JobEvent
from core.metrics import (
    JobEventRecorder,
    LoopLagMonitor,
    Metrics,
    record_telegram_call,
    stage_durations,
    telegram_method_label,
)
from core.models import Generation, JobKind, Operation
from core.states import JobState

T0 = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)

DOCUMENTED = {
    "animebot_jobs",
    "animebot_queue_length",
    "animebot_backend_in_flight",
    "animebot_backend_healthy",
    "animebot_database_up",
    "animebot_library_outputs",
    "animebot_job_stage_duration_seconds",
    "animebot_jobs_finished",
    "animebot_telegram_api_calls",
    "animebot_telegram_api_rate_limited",
    "animebot_event_loop_lag_last_seconds",
    "animebot_event_loop_lag_seconds",
}


def generation(status: JobState = JobState.DONE, **times: datetime | None) -> Generation:
    values: dict[str, Any] = {
        "id": uuid4(),
        "requester_id": 1,
        "chat_id": 1,
        "thread_id": None,
        "request_message_id": None,
        "progress_message_id": None,
        "result_message_id": None,
        "delivery_error": None,
        "kind": JobKind.IMAGE,
        "operation": Operation.GENERATE,
        "parent_id": None,
        "prompt_typed": "a cat",
        "prompt_positive": "",
        "prompt_negative": "",
        "character_ids": [],
        "workflow": "txt2img_sd15",
        "params": {},
        "seed": 1,
        "backend": "http://127.0.0.1:8188",
        "attempts": 1,
        "status": status,
        "progress": 1.0,
        "error": None,
        "cancel_requested": False,
        "lease_owner": None,
        "created_at": T0,
        "submitted_at": T0 + timedelta(seconds=2),
        "running_at": T0 + timedelta(seconds=3),
        "postprocessing_at": T0 + timedelta(seconds=12),
        "delivering_at": T0 + timedelta(seconds=13.5),
        "finished_at": T0 + timedelta(seconds=14),
        "updated_at": T0 + timedelta(seconds=14),
    }
    values.update(times)
    return Generation.model_validate(values)


def samples(metrics: Metrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = prometheus_client.generate_latest(metrics.registry).decode()
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def value(metrics: Metrics, name: str, **labels: str) -> float:
    return samples(metrics)[(name, frozenset(labels.items()))]


def test_stage_durations_of_a_done_job() -> None:
    assert stage_durations(generation()) == {
        "queue_wait": 2.0,
        "comfyui": 10.0,
        "postprocessing": 1.5,
        "delivery": 0.5,
    }


def test_stage_durations_of_a_job_that_failed_in_comfyui() -> None:
    failed = generation(JobState.FAILED, postprocessing_at=None, delivering_at=None, finished_at=T0)
    assert stage_durations(failed) == {"queue_wait": 2.0}


def test_observe_job_fills_the_histogram_and_the_finished_counter() -> None:
    metrics = Metrics()
    metrics.observe_job(generation())
    metrics.observe_job(generation(JobState.CANCELLED))
    labels = {"kind": "image", "status": "done"}
    assert (
        value(metrics, "animebot_job_stage_duration_seconds_count", stage="comfyui", **labels) == 1
    )
    assert (
        value(metrics, "animebot_job_stage_duration_seconds_sum", stage="comfyui", **labels) == 10
    )
    bucket = "animebot_job_stage_duration_seconds_bucket"
    assert value(metrics, bucket, stage="comfyui", le="5.0", **labels) == 0
    assert value(metrics, bucket, stage="comfyui", le="10.0", **labels) == 1
    assert value(metrics, "animebot_jobs_finished_total", kind="image", status="done") == 1
    assert value(metrics, "animebot_jobs_finished_total", kind="image", status="cancelled") == 1
    # A cancelled job has no stage durations.
    assert not any(
        name == "animebot_job_stage_duration_seconds_count" and ("status", "cancelled") in labels_
        for name, labels_ in samples(metrics)
    )


def test_telegram_calls_and_429s() -> None:
    metrics = Metrics()
    metrics.record_telegram_call("sendMessage", 200)
    metrics.record_telegram_call("sendMessage", "429")
    metrics.record_telegram_call("sendMessage", 429)
    metrics.record_telegram_call("getUpdates", "timeout")
    assert (
        value(metrics, "animebot_telegram_api_calls_total", method="sendMessage", status="200") == 1
    )
    assert (
        value(metrics, "animebot_telegram_api_calls_total", method="sendMessage", status="429") == 2
    )
    assert value(metrics, "animebot_telegram_api_rate_limited_total", method="sendMessage") == 2
    assert (
        value(metrics, "animebot_telegram_api_calls_total", method="getUpdates", status="timeout")
        == 1
    )


def test_module_function_feeds_the_process_metrics_and_never_labels_a_url() -> None:
    def calls(method: str) -> float:
        return samples(metrics_mod.METRICS).get(
            (
                "animebot_telegram_api_calls_total",
                frozenset({("method", method), ("status", "400")}),
            ),
            0.0,
        )

    before_edit, before_other = calls("editMessageText"), calls("other")
    record_telegram_call("editMessageText", 400)
    record_telegram_call("https://api.telegram.org/bot123456:SECRET-token/sendPhoto", 400)
    assert calls("editMessageText") == before_edit + 1
    assert calls("other") == before_other + 1
    text = prometheus_client.generate_latest(metrics_mod.METRICS.registry).decode()
    assert "SECRET-token" not in text
    assert telegram_method_label("sendMessage") == "sendMessage"
    assert telegram_method_label("send Message") == "other"
    assert telegram_method_label("x" * 80) == "other"


def test_own_registry_never_the_global_one() -> None:
    first, second = Metrics(), Metrics()  # a second set would clash in a shared registry
    assert first.registry is not second.registry
    global_names = {m.name for m in prometheus_client.REGISTRY.collect()}
    assert not global_names & DOCUMENTED
    names = {family.name for family in first.registry.collect()}
    assert names == DOCUMENTED


def test_job_counts_are_zero_filled_and_stale_labels_dropped() -> None:
    metrics = Metrics()
    metrics.set_job_counts(
        {("queued", "image"): 3, ("running", "video"): 1, ("done", "image"): 7},
        {"http://a:8188": 1, "http://b:8188": 2},
    )
    assert value(metrics, "animebot_jobs", state="queued", kind="image") == 3
    assert value(metrics, "animebot_jobs", state="queued", kind="video") == 0
    assert value(metrics, "animebot_jobs", state="cancelled", kind="image") == 0
    assert value(metrics, "animebot_queue_length") == 3
    assert value(metrics, "animebot_backend_in_flight", backend="http://b:8188") == 2
    metrics.set_job_counts({}, {"http://a:8188": 1})
    found = samples(metrics)
    assert ("animebot_backend_in_flight", frozenset({("backend", "http://b:8188")})) not in found
    assert value(metrics, "animebot_queue_length") == 0
    assert len([k for k in found if k[0] == "animebot_jobs"]) == len(JobState) * len(JobKind)

    metrics.set_backend_health({"http://a:8188": True, "http://b:8188": False})
    assert value(metrics, "animebot_backend_healthy", backend="http://a:8188") == 1
    assert value(metrics, "animebot_backend_healthy", backend="http://b:8188") == 0
    metrics.set_backend_health({"http://a:8188": False})
    assert ("animebot_backend_healthy", frozenset({("backend", "http://b:8188")})) not in samples(
        metrics
    )


async def test_loop_lag_monitor_sees_a_blocked_loop() -> None:
    metrics = Metrics()
    monitor = LoopLagMonitor(metrics, interval_s=0.05)
    monitor.start()
    try:
        await asyncio.sleep(0.01)
        time.sleep(0.3)  # block the event loop on purpose
        await asyncio.sleep(0.1)
    finally:
        await monitor.stop()
    assert value(metrics, "animebot_event_loop_lag_seconds_count") >= 1
    assert value(metrics, "animebot_event_loop_lag_seconds_bucket", le="0.1") < value(
        metrics, "animebot_event_loop_lag_seconds_count"
    )
    lags = samples(metrics)
    assert lags[("animebot_event_loop_lag_seconds_sum", frozenset())] >= 0.2


async def test_recorder_counts_this_process_final_events_once() -> None:
    bus = EventBus()
    metrics = Metrics()
    rows: dict[UUID, Generation] = {}
    loads: list[UUID] = []

    async def load(job_id: UUID) -> Generation:
        loads.append(job_id)
        if job_id not in rows:
            raise LookupError("no such job")
        return rows[job_id]

    done = generation()
    failed = generation(JobState.FAILED, delivering_at=None, finished_at=T0 + timedelta(seconds=12))
    bridged = generation()  # finished by another process: that process counts it
    rows[done.id], rows[failed.id], rows[bridged.id] = done, failed, bridged
    recorder = JobEventRecorder(metrics, bus, load)
    await recorder.start()
    try:

        def state(job_id: UUID, status: str, origin: int = 0) -> JobEvent:
            return JobEvent(job_id=job_id, type="state", status=status, chat_id=1, origin=origin)

        bus.publish(state(uuid4(), "done"))  # unknown row: logged, the watcher goes on
        bus.publish(state(done.id, "running"))
        bus.publish(JobEvent(job_id=done.id, type="progress", status="running", chat_id=1))
        bus.publish(state(bridged.id, "done", origin=7))  # bridged from another process
        bus.publish(state(done.id, "done"))
        bus.publish(state(done.id, "done"))  # published twice: counted once
        bus.publish(state(failed.id, "failed"))

        async def settled() -> None:
            while len(loads) < 3:
                await asyncio.sleep(0.01)

        await asyncio.wait_for(settled(), 5)
        await asyncio.sleep(0.05)
    finally:
        await recorder.stop()
    assert loads[1:] == [done.id, failed.id]
    assert value(metrics, "animebot_jobs_finished_total", kind="image", status="done") == 1
    assert value(metrics, "animebot_jobs_finished_total", kind="image", status="failed") == 1
    failed_labels = {"kind": "image", "status": "failed"}
    found = samples(metrics)
    post = frozenset({("stage", "postprocessing"), *failed_labels.items()})
    assert ("animebot_job_stage_duration_seconds_count", post) not in found  # never got there
    comfy = frozenset({("stage", "comfyui"), *failed_labels.items()})
    assert found[("animebot_job_stage_duration_seconds_sum", comfy)] == 10
