"""Protocol parsing against frames recorded from a real ComfyUI 0.3.64, plus the pure router."""

from __future__ import annotations

import json
import random
import struct
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from core.comfy import protocol as p
from core.comfy.client import QueueState, safe_file_name
from core.comfy.routing import EventRouter, RouterLimits
from core.comfy.socket import backoff_delay, ws_url
from core.errors import InvalidInput

RECORDED = Path(__file__).resolve().parent.parent / "fixtures" / "comfyui" / "recorded.json"

EVENT_NAMES = {
    "status": p.Status,
    "feature_flags": p.FeatureFlags,
    "execution_start": p.ExecutionStart,
    "execution_cached": p.ExecutionCached,
    "executing": p.Executing,
    "progress": p.Progress,
    "progress_state": p.ProgressState,
    "executed": p.Executed,
    "execution_success": p.ExecutionSuccess,
    "execution_error": p.ExecutionError,
    "execution_interrupted": p.ExecutionInterrupted,
}
JOBS = [
    "job_image",
    "job_sd15_warm_metadata_previews",
    "job_runtime_fail_corrupt_ckpt",
    "job_runtime_fail_odd_size_h264",
    "job_image_cached_repeat",
    "job_client_prompt_id",
    "queue_ops",
]


@cache
def recorded() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(RECORDED.read_text())
    return data


def text_frame(message: dict[str, Any]) -> str:
    return json.dumps({"type": message["type"], "data": message["data"]})


def binary_frame(message: dict[str, Any], payload: bytes = b"\xff\xd8\xff\xe0JPEGDATA") -> bytes:
    """Rebuild a recorded binary frame: its header, then an image payload."""
    if message["event_type"] == 4:
        frame = p.encode_preview_with_metadata(payload, message["metadata"])
        assert frame[:16].hex() == message["first16_hex"]  # same bytes as the real server
        return frame
    header = bytes.fromhex(message["first16_hex"])
    return header + payload


# ------------------------------------------------------------------- recorded text frames


@pytest.mark.parametrize("job", JOBS)
def test_every_recorded_text_frame_parses_to_its_type(job: str) -> None:
    for message in recorded()[job]["ws_messages"]:
        if message["kind"] != "text":
            continue
        event = p.parse_text(text_frame(message))
        assert isinstance(event, EVENT_NAMES[message["type"]]), (message["type"], event)
        if "prompt_id" in message["data"]:
            assert event.prompt_id == message["data"]["prompt_id"]


def test_job_image_sequence_and_fields() -> None:
    job = recorded()["job_image"]
    pid = job["post_body"]["prompt_id"]
    events = [p.parse_text(text_frame(m)) for m in job["ws_messages"]]
    first = events[0]
    assert isinstance(first, p.Status)
    assert first.queue_remaining == 0 and first.sid == job["client_id"]
    executing = [e.node for e in events if isinstance(e, p.Executing)]
    assert executing == ["1", "2", "3", None]
    assert p.is_terminal(events[-1]) and events[-1].prompt_id == pid
    state = [e for e in events if isinstance(e, p.ProgressState)][-1]
    assert {k: (v.state, v.value, v.max) for k, v in state.nodes.items()} == {
        "1": ("finished", 1.0, 1.0),
        "2": ("finished", 1.0, 1.0),
        "3": ("finished", 1.0, 1.0),
    }
    (executed,) = [e for e in events if isinstance(e, p.Executed)]
    assert p.outputs_from_node_output(executed.node, executed.output) == p.outputs_from_history(
        job["history_entry"]
    )
    assert sum(isinstance(e, p.ExecutionSuccess) for e in events) == 1


def test_cached_repeat_lists_cached_nodes_and_old_files() -> None:
    job = recorded()["job_image_cached_repeat"]
    events = [p.parse_text(text_frame(m)) for m in job["ws_messages"]]
    (cached,) = [e for e in events if isinstance(e, p.ExecutionCached)]
    assert cached.nodes == ("1", "2", "3")
    (executed,) = [e for e in events if isinstance(e, p.Executed)]
    assert executed.output["images"][0]["filename"] == "image_00001_.png"


def test_sampler_progress_values() -> None:
    job = recorded()["job_sd15_warm_metadata_previews"]
    progress = [
        p.parse_text(text_frame(m))
        for m in job["ws_messages"]
        if m["kind"] == "text" and m["type"] == "progress"
    ]
    assert [(e.value, e.max, e.node) for e in progress if isinstance(e, p.Progress)] == [
        (1, 4, "5"),
        (2, 4, "5"),
        (3, 4, "5"),
        (4, 4, "5"),
    ]


def test_execution_error_fields_and_reason() -> None:
    job = recorded()["job_runtime_fail_corrupt_ckpt"]
    (message,) = [m for m in job["ws_messages"] if m.get("type") == "execution_error"]
    event = p.parse_text(text_frame(message))
    assert isinstance(event, p.ExecutionError)
    assert (event.node_id, event.node_type) == ("1", "CheckpointLoaderSimple")
    assert event.exception_type == "safetensors._safetensors_rust.SafetensorError"
    assert event.traceback and event.executed == ()
    reason = p.execution_reason(event)
    assert reason == (
        "Generation failed in CheckpointLoaderSimple (node 1): "
        "SafetensorError: Error while deserializing header: header too large"
    )


def test_execution_reason_of_odd_size_video() -> None:
    job = recorded()["job_runtime_fail_odd_size_h264"]
    (message,) = [m for m in job["ws_messages"] if m.get("type") == "execution_error"]
    event = p.parse_text(text_frame(message))
    assert isinstance(event, p.ExecutionError)
    assert event.executed == ("2", "1")
    reason = p.execution_reason(event)
    assert reason.startswith("Generation failed in SaveVideo (node 3): ExternalError: ")
    assert "\n" not in reason


def test_execution_reason_hides_paths_and_is_short() -> None:
    event = p.ExecutionError(
        prompt_id="x",
        node_id="4",
        node_type="LoraLoader",
        exception_type="FileNotFoundError",
        exception_message="No such file: /srv/ComfyUI/models/loras/secret.safetensors " + "x" * 600,
    )
    reason = p.execution_reason(event)
    assert "/srv" not in reason and "<path>" in reason
    assert len(reason) <= 300


def test_interrupted_frame() -> None:
    (message,) = [
        m
        for m in recorded()["queue_ops"]["ws_messages"]
        if m.get("type") == "execution_interrupted"
    ]
    event = p.parse_text(text_frame(message))
    assert isinstance(event, p.ExecutionInterrupted)
    assert (event.node_id, event.node_type) == ("5", "KSampler")
    assert p.is_terminal(event)


# ------------------------------------------------------------------------- binary frames


def test_recorded_type4_previews_carry_prompt_and_node() -> None:
    job = recorded()["job_sd15_warm_metadata_previews"]
    pid = job["post_body"]["prompt_id"]
    binaries = [m for m in job["ws_messages"] if m["kind"] == "binary"]
    assert len(binaries) == 4
    for message in binaries:
        payload = b"\xff\xd8" + bytes(range(50))
        event = p.parse_binary(binary_frame(message, payload))
        assert event == p.Preview(prompt_id=pid, node_id="5", mime="image/jpeg", data=payload)


def test_recorded_type1_previews_have_no_ids() -> None:
    binaries = [m for m in recorded()["queue_ops"]["ws_messages"] if m["kind"] == "binary"]
    assert binaries and all(m["event_type"] == 1 for m in binaries)
    for message in binaries:
        event = p.parse_binary(binary_frame(message))
        assert isinstance(event, p.Preview)
        assert event.prompt_id is None and event.node_id is None
        assert event.mime == "image/jpeg" and event.data.startswith(b"\xff\xd8\xff\xe0")


def test_png_type1_preview() -> None:
    event = p.parse_binary(p.encode_preview(b"\x89PNG", mime="image/png"))
    assert isinstance(event, p.Preview) and event.mime == "image/png" and event.data == b"\x89PNG"


@pytest.mark.parametrize(
    "frame",
    [
        b"",
        b"\x00\x00",
        struct.pack(">I", 1),
        struct.pack(">I", 3) + struct.pack(">I", 1) + b"5hello",
        struct.pack(">I", 4) + struct.pack(">I", 999) + b"{}",
        struct.pack(">II", 4, 2) + b"[]" + b"img",
        struct.pack(">II", 4, 3) + b"{x}" + b"img",
        struct.pack(">I", 77) + b"whatever",
    ],
)
def test_odd_binary_frames_become_unknown(frame: bytes) -> None:
    assert isinstance(p.parse_binary(frame), p.Unknown)


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "[1, 2]",
        '{"type": 5, "data": {}}',
        '{"type": "executing", "data": "x"}',
        '{"type": "progress", "data": {"value": "a", "max": 3, "prompt_id": "p"}}',
        '{"type": "progress_state", "data": {"prompt_id": "p", "nodes": [1]}}',
        '{"type": "executed", "data": {"prompt_id": "p", "output": {}}}',
        '{"type": "status", "data": {"status": {"exec_info": {"queue_remaining": null}}}}',
        '{"type": "crystools.monitor", "data": {"cpu": 3}}',
    ],
)
def test_odd_text_frames_become_unknown(text: str) -> None:
    event = p.parse_text(text)
    assert isinstance(event, p.Unknown)


def test_unknown_keeps_prompt_id_for_routing() -> None:
    event = p.parse_text('{"type": "new_thing", "data": {"prompt_id": "abc"}}')
    assert event == p.Unknown(type="new_thing", data={"prompt_id": "abc"}, prompt_id="abc")


def test_parsers_never_raise_on_garbage() -> None:
    rng = random.Random(7)
    for _ in range(500):
        blob = bytes(rng.randrange(256) for _ in range(rng.randrange(40)))
        p.parse_binary(struct.pack(">I", rng.choice([1, 4, 9])) + blob)
        p.parse_text(blob)
        p.parse_text(json.dumps({"type": rng.choice(list(EVENT_NAMES)), "data": {"x": blob.hex()}}))


# ------------------------------------------------------------------------------ reasons


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        (
            "invalid_missing_class",
            "The workflow was rejected: Cannot execute because node NoSuchNodeXYZ does not "
            "exist (Node ID '#2').",
        ),
        (
            "invalid_bad_inputs",
            "The workflow was rejected: EmptyImage (node 1): Failed to convert an input value to "
            "a INT value (width, not-a-number, invalid literal for int() with base 10: "
            "'not-a-number') and 2 more problem(s).",
        ),
        (
            "invalid_bad_combo_value",
            "The workflow was rejected: CheckpointLoaderSimple (node 1): Value not in list "
            "(ckpt_name: 'no_such_model.safetensors' not in ['corrupt.safetensors', "
            "'random_sd15_fp16.safetensors']); 1 more node(s) invalid.",
        ),
        (
            "invalid_bad_combo_and_link",
            "The workflow was rejected: SaveImage (node 2): Exception when validating node ('99'); "
            "1 more node(s) invalid.",
        ),
        ("invalid_no_output_node", "The workflow was rejected: Prompt has no outputs."),
        (
            "invalid_missing_class_type_key",
            "The workflow was rejected: Cannot execute because a node is missing the class_type "
            "property (Node ID '#1').",
        ),
        ("no_prompt_key", "The workflow was rejected: No prompt provided."),
        ("malformed_json_body", "The GPU server rejected the workflow."),
    ],
)
def test_validation_reason_of_recorded_bodies(case: str, expected: str) -> None:
    body = recorded()["invalid_prompts"][case]["body"]
    assert p.validation_reason(body) == expected


def test_validation_reason_is_bounded() -> None:
    body = {"error": {"message": "x" * 5000}, "node_errors": {}}
    assert len(p.validation_reason(body)) <= 300
    assert p.validation_reason(None) == "The GPU server rejected the workflow."


# ------------------------------------------------------------------------------ outputs


def test_outputs_of_batch_and_preview() -> None:
    entry = recorded()["job_client_prompt_id"]["history_entry"]
    refs = p.outputs_from_history(entry)
    assert [(r.node_id, r.filename, r.subfolder, r.type) for r in refs] == [
        ("3", "batch_00001_.png", "probe", "output"),
        ("3", "batch_00002_.png", "probe", "output"),
        ("4", "ComfyUI_temp_qcdrr_00001_.png", "", "temp"),
        ("4", "ComfyUI_temp_qcdrr_00002_.png", "", "temp"),
    ]
    assert [r.filename for r in p.kept_outputs(refs)] == [
        "batch_00001_.png",
        "batch_00002_.png",
    ]
    assert all(r.kind == "image" and not r.animated for r in refs)


@pytest.mark.parametrize(
    ("job", "filename", "subfolder", "kind"),
    [
        ("job_video_mp4", "probe_video_00001_.mp4", "video", "video"),
        ("job_video_webm", "webm_00001_.webm", "probe", "video"),
        ("job_video_webp", "anim_00001_.webp", "probe", "animation"),
    ],
)
def test_video_outputs_are_images_marked_animated(
    job: str, filename: str, subfolder: str, kind: str
) -> None:
    (ref,) = p.outputs_from_history(recorded()[job]["history_entry"])
    assert (ref.filename, ref.subfolder, ref.type, ref.animated) == (
        filename,
        subfolder,
        "output",
        True,
    )
    assert ref.kind == kind
    (executed,) = recorded()[job]["executed"]
    event = p.parse_text(text_frame(executed))
    assert isinstance(event, p.Executed)
    assert p.outputs_from_node_output(event.node, event.output) == [ref]


def test_outputs_of_other_keys_and_junk() -> None:
    entry = {
        "outputs": {
            "9": {
                "gifs": [{"filename": "clip_00001.mp4", "subfolder": "", "type": "output"}],
                "audio": [{"filename": "song.flac", "subfolder": "a", "type": "output"}],
                "text": ["hello"],
                "images": [{"no_filename": True}, "junk"],
            },
            "10": "junk",
        }
    }
    refs = p.outputs_from_history(entry)
    assert [(r.filename, r.animated, r.kind) for r in refs] == [
        ("clip_00001.mp4", True, "video"),
        ("song.flac", False, "audio"),
    ]
    assert p.outputs_from_history({}) == []
    assert p.outputs_from_history({"outputs": []}) == []


def test_outcome_from_history() -> None:
    ok = p.outcome_from_history(recorded()["job_image"]["history_entry"])
    assert ok.succeeded and ok.completed and ok.error is None
    failed = p.outcome_from_history(recorded()["job_runtime_fail_corrupt_ckpt"]["history_entry"])
    assert (failed.status, failed.completed) == ("error", False)
    assert failed.error is not None and failed.error.node_type == "CheckpointLoaderSimple"
    interrupted = p.outcome_from_history(
        recorded()["queue_ops"]["history_interrupted"][
            next(iter(recorded()["queue_ops"]["history_interrupted"]))
        ]
    )
    assert (interrupted.status, interrupted.error) == ("interrupted", None)
    assert p.outcome_from_history({}).status == "unknown"


# ------------------------------------------------------------------------------- router


def _executing(pid: str, node: str | None) -> p.Executing:
    return p.Executing(prompt_id=pid, node=node)


async def test_router_buffers_until_subscribed_then_delivers_in_order() -> None:
    router = EventRouter()
    events: list[p.Event] = [
        p.ExecutionStart(prompt_id="a"),
        _executing("a", "1"),
        p.ExecutionSuccess(prompt_id="a"),
        _executing("a", None),
    ]
    for event in events:
        assert router.route(event, now=0.0) == "a"
    assert router.buffered("a") == 4
    queue = router.subscribe("a", now=1.0)
    assert [queue.get_nowait() for _ in range(queue.qsize())] == events
    assert router.buffered("a") == 0
    router.route(p.Progress(prompt_id="a", node="3", value=1, max=2), now=2.0)
    assert queue.qsize() == 1
    router.unsubscribe("a")
    router.route(p.Progress(prompt_id="a", node="3", value=2, max=2), now=2.0)
    assert queue.qsize() == 1


async def test_router_buffer_keeps_the_newest_events() -> None:
    router = EventRouter(RouterLimits(buffer_max_events=3))
    for index in range(5):
        router.route(p.Progress(prompt_id="b", node="1", value=index, max=5), now=0.0)
    queue = router.subscribe("b", now=1.0)
    values = [queue.get_nowait() for _ in range(queue.qsize())]
    assert [e.value for e in values if isinstance(e, p.Progress)] == [2, 3, 4]


async def test_router_buffer_expires_and_is_bounded() -> None:
    router = EventRouter(RouterLimits(buffer_ttl_s=10, buffer_max_prompts=2))
    router.route(p.ExecutionStart(prompt_id="old"), now=0.0)
    router.route(p.ExecutionStart(prompt_id="b"), now=5.0)
    router.route(p.ExecutionStart(prompt_id="c"), now=11.0)  # "old" expired meanwhile
    assert (router.buffered("old"), router.buffered("b"), router.buffered("c")) == (0, 1, 1)
    router.route(p.ExecutionStart(prompt_id="d"), now=12.0)  # evicts the oldest prompt "b"
    assert (router.buffered("b"), router.buffered("c"), router.buffered("d")) == (0, 1, 1)
    assert router.subscribe("b", now=13.0).empty()
    assert router.subscribe("c", now=30.0).empty()  # older than the TTL by then


async def test_router_keeps_only_latest_unclaimed_preview() -> None:
    router = EventRouter()
    for index in range(3):
        router.route(
            p.Preview(prompt_id="a", node_id="5", mime="image/jpeg", data=bytes([index])), 0
        )
    assert router.buffered("a") == 1
    queue = router.subscribe("a", now=0)
    preview = queue.get_nowait()
    assert isinstance(preview, p.Preview) and preview.data == b"\x02"


async def test_router_attributes_type1_previews_to_the_running_prompt() -> None:
    router = EventRouter()
    queue = router.subscribe("a", now=0)
    anonymous = p.Preview(prompt_id=None, node_id=None, mime="image/jpeg", data=b"x")
    assert router.route(anonymous, now=0) is None  # nothing running yet: dropped
    router.route(p.ExecutionStart(prompt_id="a"), now=0)
    router.route(_executing("a", "5"), now=0)
    assert router.route(anonymous, now=0) == "a"
    router.route(_executing("a", None), now=0)
    assert router.route(anonymous, now=0) is None
    delivered = [queue.get_nowait() for _ in range(queue.qsize())]
    previews = [e for e in delivered if isinstance(e, p.Preview)]
    assert previews == [p.Preview(prompt_id="a", node_id=None, mime="image/jpeg", data=b"x")]


async def test_router_drops_previews_for_a_stalled_subscriber_but_not_events() -> None:
    router = EventRouter(RouterLimits(max_queue=2))
    queue = router.subscribe("a", now=0)
    for _ in range(5):
        router.route(p.Preview(prompt_id="a", node_id="5", mime="image/jpeg", data=b"x"), 0)
    router.route(p.ExecutionSuccess(prompt_id="a"), 0)
    assert queue.qsize() == 3 and router.dropped_previews == 3


async def test_router_status_and_reconnect_notice() -> None:
    router = EventRouter()
    assert router.route(p.Status(queue_remaining=4), 0) is None
    assert router.queue_remaining == 4
    queue = router.subscribe("a", 0)
    assert router.notify_reconnected() == ["a"]
    assert queue.get_nowait() == p.Reconnected(prompt_id="a")


# --------------------------------------------------------------------- small pure helpers


def test_backoff_is_capped_exponential_with_jitter() -> None:
    rng = random.Random(1)
    delays = [backoff_delay(attempt, 0.5, 8, rng) for attempt in range(12)]
    for attempt, delay in enumerate(delays):
        step = min(8, 0.5 * 2**attempt)
        assert step / 2 <= delay <= step
    assert max(delays) <= 8
    assert backoff_delay(10_000, 0.5, 30, rng) <= 30


def test_ws_url() -> None:
    assert ws_url("http://h:8188/", "abc") == "ws://h:8188/ws?clientId=abc"
    assert ws_url("https://h/api", "abc") == "wss://h/api/ws?clientId=abc"


@pytest.mark.parametrize(
    "name", ["../x.png", "a/b.png", "a\\b.png", "..", ".", "", " ", ".hidden", "x..png", "a\x00b"]
)
def test_safe_file_name_refuses(name: str) -> None:
    with pytest.raises(InvalidInput):
        safe_file_name(name)


def test_safe_file_name_accepts_plain_names() -> None:
    assert safe_file_name(" job-12_0.png ") == "job-12_0.png"


def test_queue_state_position() -> None:
    state = QueueState(running_ids=("r",), pending_ids=("a", "b"))
    assert [state.position(x) for x in ("r", "a", "b", "z")] == [0, 1, 2, None]
    assert "b" in state and "z" not in state
