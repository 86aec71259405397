"""ComfyClient + ComfySocket against the fake ComfyUI over real HTTP and WebSocket."""

from __future__ import annotations

import asyncio
import copy
import io
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import aiohttp
import imageio_ffmpeg
import pytest
from aiohttp import web
from PIL import Image

from core.comfy import protocol as p
from core.comfy.client import ComfyClient
from core.comfy.socket import ComfySocket
from core.errors import ComfyError, ComfyUnavailable, ComfyValidationError, InvalidInput
from tests.fakes.comfyui import FakeComfyUI
from tests.webhook import free_port

RECORDED = Path(__file__).resolve().parent.parent / "fixtures" / "comfyui" / "recorded.json"
MODELS = {"ckpt_name": ["corrupt.safetensors", "random_sd15_fp16.safetensors"]}


@cache
def recorded() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(RECORDED.read_text())
    return data


def workflow(job: str) -> dict[str, Any]:
    """The prompt that produced a recording (from its history entry)."""
    return copy.deepcopy(recorded()[job]["history_entry"]["prompt"][2])


def image_workflow(seed: int = 42, width: int = 256, height: int = 256) -> dict[str, Any]:
    prompt = workflow("job_image")
    prompt["1"]["inputs"].update(width=width, height=height)
    prompt["2"]["inputs"]["seed"] = seed
    return prompt


def sampler_workflow(seed: int, steps: int) -> dict[str, Any]:
    prompt = workflow("job_sd15_warm_metadata_previews")
    prompt["5"]["inputs"].update(seed=seed, steps=steps)
    return prompt


def names(events: list[p.Event]) -> list[str]:
    """Event names as in the recordings' ws_sequence (previews under one name)."""
    reverse = {
        p.ExecutionStart: "execution_start",
        p.ExecutionCached: "execution_cached",
        p.ProgressState: "progress_state",
        p.Executing: "executing",
        p.Progress: "progress",
        p.Executed: "executed",
        p.ExecutionSuccess: "execution_success",
        p.ExecutionError: "execution_error",
        p.ExecutionInterrupted: "execution_interrupted",
        p.Preview: "PREVIEW",
        p.Reconnected: "reconnected",
    }
    return [reverse.get(type(e), type(e).__name__) for e in events]


def recorded_sequence(job: str) -> list[str]:
    skip = {"status", "feature_flags"}
    return [
        "PREVIEW" if message["kind"] == "binary" else message["type"]
        for message in recorded()[job]["ws_messages"]
        if message.get("type") not in skip
    ]


async def collect(queue: asyncio.Queue[p.Event], timeout_s: float = 10) -> list[p.Event]:
    """Events until `executing{node:null}`."""
    events: list[p.Event] = []
    async with asyncio.timeout(timeout_s):
        while True:
            event = await queue.get()
            events.append(event)
            if isinstance(event, p.Executing) and event.finished:
                return events


async def wait_for(queue: asyncio.Queue[p.Event], kind: type, timeout_s: float = 10) -> p.Event:
    async with asyncio.timeout(timeout_s):
        while True:
            event = await queue.get()
            if isinstance(event, kind):
                return event


@dataclass
class Env:
    fake: FakeComfyUI
    client: ComfyClient
    socket: ComfySocket
    client_id: str

    async def run(self, prompt: dict[str, Any], timeout_s: float = 10) -> tuple[str, list[p.Event]]:
        prompt_id = str(uuid.uuid4())
        await self.client.submit(prompt, prompt_id=prompt_id, client_id=self.client_id)
        events = await collect(self.socket.subscribe(prompt_id), timeout_s)
        self.socket.unsubscribe(prompt_id)
        return prompt_id, events


def make_socket(base_url: str, client_id: str, **kwargs: Any) -> ComfySocket:
    options: dict[str, Any] = {"heartbeat_s": 5, "backoff_initial_s": 0.05, "backoff_max_s": 0.3}
    options.update(kwargs)
    return ComfySocket(base_url, client_id, **options)


@pytest.fixture
async def env(fake_comfy: FakeComfyUI) -> AsyncIterator[Env]:
    fake_comfy.models = dict(MODELS)
    client_id = uuid.uuid4().hex
    async with ComfyClient(fake_comfy.base_url, timeout_s=5) as client:
        sock = make_socket(fake_comfy.base_url, client_id)
        await sock.start()
        assert await sock.wait_connected(5)
        try:
            yield Env(fake_comfy, client, sock, client_id)
        finally:
            await sock.close()


# ------------------------------------------------------------------------------- jobs


async def test_image_job_events_match_the_recording_and_download(env: Env, tmp_path: Path) -> None:
    prompt_id, events = await env.run(image_workflow())
    assert names(events) == recorded_sequence("job_image")
    assert all(e.prompt_id == prompt_id for e in events)
    entry = await env.client.history(prompt_id)
    assert entry is not None and p.outcome_from_history(entry).succeeded
    (ref,) = p.outputs_from_history(entry)
    assert (ref.node_id, ref.filename, ref.subfolder, ref.type) == (
        "3",
        "image_00001_.png",
        "probe",
        "output",
    )
    path = await env.client.download(ref, tmp_path / "out", "job-1.png")
    assert path == tmp_path / "out" / "job-1.png"
    with Image.open(path) as image:
        assert image.size == (256, 256) and image.format == "PNG"
    assert [x.name for x in (tmp_path / "out").iterdir()] == ["job-1.png"]  # no temp files left
    posted = env.fake.prompt_posts[-1]
    assert posted["prompt_id"] == prompt_id and posted["client_id"] == env.client_id


async def test_sampler_job_previews_carry_prompt_id_like_the_recording(env: Env) -> None:
    await env.run(sampler_workflow(seed=1, steps=2))  # warms the cache of nodes 1-4
    prompt_id, events = await env.run(sampler_workflow(seed=124, steps=4))
    assert names(events) == recorded_sequence("job_sd15_warm_metadata_previews")
    cached = next(e for e in events if isinstance(e, p.ExecutionCached))
    assert cached.nodes == ("1", "2", "3", "4")
    previews = [e for e in events if isinstance(e, p.Preview)]
    assert len(previews) == 4
    assert {(e.prompt_id, e.node_id, e.mime) for e in previews} == {(prompt_id, "5", "image/jpeg")}
    assert all(e.data.startswith(b"\xff\xd8") for e in previews)
    progress = [(e.value, e.max) for e in events if isinstance(e, p.Progress)]
    assert progress == [(1, 4), (2, 4), (3, 4), (4, 4)]


async def test_type1_previews_are_attributed_to_the_running_prompt(fake_comfy: FakeComfyUI) -> None:
    client_id = uuid.uuid4().hex
    async with ComfyClient(fake_comfy.base_url) as client:
        sock = make_socket(fake_comfy.base_url, client_id, preview_metadata=False)
        await sock.start()
        try:
            assert await sock.wait_connected(5)
            prompt_id = str(uuid.uuid4())
            queue = sock.subscribe(prompt_id)
            await client.submit(sampler_workflow(7, 3), prompt_id=prompt_id, client_id=client_id)
            events = await collect(queue)
        finally:
            await sock.close()
    previews = [e for e in events if isinstance(e, p.Preview)]
    assert [(e.prompt_id, e.node_id) for e in previews] == [(prompt_id, None)] * 3
    sequence = names(events)
    first = sequence.index("progress")
    assert sequence[first : first + 2] == ["progress", "PREVIEW"]  # old format: after progress


async def test_identical_prompt_is_served_from_cache_with_old_files(env: Env) -> None:
    first_id, _ = await env.run(image_workflow(seed=5))
    second_id, events = await env.run(image_workflow(seed=5))
    assert names(events) == recorded_sequence("job_image_cached_repeat")
    first = await env.client.history(first_id)
    second = await env.client.history(second_id)
    assert first is not None and second is not None
    assert p.outputs_from_history(first) == p.outputs_from_history(second)


async def test_batch_and_preview_outputs(env: Env) -> None:
    prompt_id, events = await env.run(workflow("job_client_prompt_id"))
    assert names(events) == recorded_sequence("job_client_prompt_id")
    entry = await env.client.history(prompt_id)
    assert entry is not None
    refs = p.outputs_from_history(entry)
    assert [(r.node_id, r.type) for r in refs] == [("3", "output")] * 2 + [("4", "temp")] * 2
    assert [r.filename for r in refs[:2]] == ["batch_00001_.png", "batch_00002_.png"]


@pytest.mark.parametrize(
    ("job", "suffix", "frames"),
    [
        ("job_video_mp4", ".mp4", 24),
        ("job_video_webm", ".webm", 12),
        ("job_video_webp", ".webp", 12),
    ],
)
async def test_video_outputs_are_real_files(
    env: Env, tmp_path: Path, job: str, suffix: str, frames: int
) -> None:
    prompt_id, events = await env.run(workflow(job), timeout_s=30)
    assert isinstance(events[-2], p.ExecutionSuccess)
    entry = await env.client.history(prompt_id)
    assert entry is not None
    (ref,) = p.outputs_from_history(entry)
    recorded_ref = p.outputs_from_history(recorded()[job]["history_entry"])[0]
    assert (ref.filename, ref.subfolder, ref.animated) == (
        recorded_ref.filename,
        recorded_ref.subfolder,
        True,
    )
    path = await env.client.download(ref, tmp_path, f"clip{suffix}")
    if suffix == ".webp":
        with Image.open(path) as image:
            assert getattr(image, "n_frames", 1) == frames and image.size == (128, 128)
    else:
        counted, _ = await asyncio.to_thread(imageio_ffmpeg.count_frames_and_secs, str(path))
        assert counted == frames


async def test_odd_sized_h264_fails_like_comfyui(env: Env) -> None:
    prompt = workflow("job_video_mp4")
    prompt["1"]["inputs"].update(width=63, height=63, batch_size=4)
    _, events = await env.run(prompt)
    assert names(events)[-2:] == ["execution_error", "executing"]
    error = events[-2]
    assert isinstance(error, p.ExecutionError)
    assert (error.node_id, error.node_type, error.exception_type) == (
        "4",
        "SaveVideo",
        "av.error.ExternalError",
    )
    assert error.executed == ("1", "2", "3")


async def test_upload_then_load_image(env: Env, tmp_path: Path) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (40, 24), (200, 10, 10)).save(buffer, "PNG")
    source = tmp_path / "ref.png"
    source.write_bytes(buffer.getvalue())
    name = await env.client.upload_image(source, "probe_upload.png")
    assert name == "probe_upload.png"
    assert (
        await env.client.upload_image(buffer.getvalue(), "sub.png", subfolder="bot")
        == "bot/sub.png"
    )
    prompt = {  # the recorded upload_invert workflow
        "1": {"class_type": "LoadImage", "inputs": {"image": "bot/sub.png"}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {
            "class_type": "SaveImage",
            "inputs": {"images": ["2", 0], "filename_prefix": "probe/inverted"},
        },
    }
    prompt_id, events = await env.run(prompt)
    assert isinstance(events[-2], p.ExecutionSuccess)
    entry = await env.client.history(prompt_id)
    assert entry is not None
    (ref,) = p.outputs_from_history(entry)
    path = await env.client.download(ref, tmp_path, "inverted.png")
    with Image.open(path) as image:
        assert image.size == (40, 24)
    with pytest.raises(InvalidInput):
        await env.client.upload_image(b"x", "../evil.png")


# ---------------------------------------------------------------------------- failures


async def test_validation_error_has_a_readable_reason(env: Env) -> None:
    bad = recorded()["invalid_prompts"]["invalid_bad_combo_value"]["request_json"]["prompt"]
    with pytest.raises(ComfyValidationError) as caught:
        await env.client.submit(bad, prompt_id=str(uuid.uuid4()), client_id=env.client_id)
    assert caught.value.user_message == (
        "The workflow was rejected: CheckpointLoaderSimple (node 1): Value not in list "
        "(ckpt_name: 'no_such_model.safetensors' not in ['corrupt.safetensors', "
        "'random_sd15_fp16.safetensors']); 1 more node(s) invalid."
    )
    assert env.fake.history == {}


def _strip_tracebacks(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_tracebacks(v) for k, v in value.items() if k != "traceback"}
    if isinstance(value, list):
        return [_strip_tracebacks(v) for v in value]
    return value


def _normalized(body: Any) -> Any:
    body = _strip_tracebacks(body)
    for entry in body.get("node_errors", {}).values():
        entry["errors"] = sorted(entry["errors"], key=lambda e: json.dumps(e, sort_keys=True))
    return body


@pytest.mark.parametrize(
    "case",
    [
        "invalid_missing_class",
        "invalid_bad_inputs",
        "invalid_bad_combo_and_link",
        "invalid_no_output_node",
        "invalid_bad_combo_value",
        "invalid_missing_class_type_key",
        "no_prompt_key",
    ],
)
async def test_fake_rejects_prompts_with_the_recorded_bodies(env: Env, case: str) -> None:
    expected = recorded()["invalid_prompts"][case]
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{env.fake.base_url}/api/prompt", json=expected["request_json"]) as response,
    ):
        assert response.status == expected["status"] == 400
        assert response.content_type == "application/json"
        body = await response.json()
    assert _normalized(body) == _normalized(expected["body"])


async def test_malformed_json_is_a_500_and_maps_to_unavailable(env: Env) -> None:
    url = f"{env.fake.base_url}/prompt"
    async with aiohttp.ClientSession() as session, session.post(url, data=b"{nope") as response:
        assert response.status == 500
        assert await response.text() == recorded()["invalid_prompts"]["malformed_json_body"]["body"]


async def test_execution_error_ends_the_job(env: Env) -> None:
    env.fake.fail_next(
        node_id="2", message="CUDA out of memory", exception_type="torch.OutOfMemoryError"
    )
    prompt_id, events = await env.run(image_workflow(seed=99))
    assert names(events)[-2:] == ["execution_error", "executing"]
    error = events[-2]
    assert isinstance(error, p.ExecutionError)
    assert (error.node_id, error.node_type, error.executed) == ("2", "ImageAddNoise", ("1",))
    assert p.execution_reason(error) == (
        "Generation failed in ImageAddNoise (node 2): OutOfMemoryError: CUDA out of memory"
    )
    entry = await env.client.history(prompt_id)
    assert entry is not None
    outcome = p.outcome_from_history(entry)
    assert (outcome.status, outcome.completed) == ("error", False)
    assert (
        outcome.error is not None
        and outcome.error.exception_message.strip() == "CUDA out of memory"
    )
    _, next_events = await env.run(image_workflow(seed=100))  # only the next job failed
    assert isinstance(next_events[-2], p.ExecutionSuccess)


async def test_interrupt_only_the_named_prompt(env: Env) -> None:
    env.fake.step_delay_s = 0.02
    prompt_id = str(uuid.uuid4())
    queue = env.socket.subscribe(prompt_id)
    await env.client.submit(sampler_workflow(3, 200), prompt_id=prompt_id, client_id=env.client_id)
    await wait_for(queue, p.Progress)
    await env.client.interrupt("some-other-prompt")
    await wait_for(queue, p.Progress)  # still running
    started = time.monotonic()
    await env.client.interrupt(prompt_id)
    events = await collect(queue)
    assert time.monotonic() - started < 2
    assert names(events)[-2:] == ["execution_interrupted", "executing"]
    interrupted = events[-2]
    assert isinstance(interrupted, p.ExecutionInterrupted)
    assert (interrupted.node_id, interrupted.node_type) == ("5", "KSampler")
    entry = await env.client.history(prompt_id)
    assert entry is not None and p.outcome_from_history(entry).status == "interrupted"


async def test_queue_listing_and_delete(env: Env) -> None:
    env.fake.hold()
    ids = [str(uuid.uuid4()) for _ in range(3)]
    for index, prompt_id in enumerate(ids):
        result = await env.client.submit(
            image_workflow(seed=200 + index), prompt_id=prompt_id, client_id=env.client_id
        )
        assert result.prompt_id == prompt_id
    state = await env.client.queue()
    assert state.running_ids == () and state.pending_ids == tuple(ids)
    assert [state.client_of(prompt_id) for prompt_id in ids] == [env.client_id] * 3
    assert state.client_of("unknown-id") is None
    assert await env.client.history(ids[0]) is None
    await env.client.delete_from_queue([ids[1], "unknown-id"])
    assert (await env.client.queue()).pending_ids == (ids[0], ids[2])
    queues = {prompt_id: env.socket.subscribe(prompt_id) for prompt_id in ids}
    env.fake.release()
    for prompt_id in (ids[0], ids[2]):
        events = await collect(queues[prompt_id])
        assert isinstance(events[-2], p.ExecutionSuccess)
    assert await env.client.history(ids[1]) is None
    assert queues[ids[1]].empty()
    assert env.fake.count("POST", "/prompt") == 3
    assert env.fake.count("POST", "/queue") == 1


async def test_cancel_running_and_pending(env: Env) -> None:
    env.fake.step_delay_s = 0.02
    running, pending = str(uuid.uuid4()), str(uuid.uuid4())
    running_queue = env.socket.subscribe(running)
    await env.client.submit(sampler_workflow(11, 200), prompt_id=running, client_id=env.client_id)
    await env.client.submit(image_workflow(seed=12), prompt_id=pending, client_id=env.client_id)
    await wait_for(running_queue, p.Progress)
    assert (await env.client.queue()).position(pending) == 1
    await env.client.cancel(pending)
    await env.client.cancel(running)
    events = await collect(running_queue)
    assert isinstance(events[-2], p.ExecutionInterrupted)
    await env.fake.wait_idle()
    assert await env.client.history(pending) is None


async def test_fast_job_events_before_reply_are_not_lost(env: Env) -> None:
    env.fake.events_before_reply = True
    prompt_id = str(uuid.uuid4())
    await env.client.submit(image_workflow(seed=300), prompt_id=prompt_id, client_id=env.client_id)
    assert await env.client.history(prompt_id) is not None  # finished before the reply
    events = await collect(env.socket.subscribe(prompt_id), timeout_s=2)
    assert names(events) == recorded_sequence("job_image")


async def test_events_go_only_to_the_submitting_client(env: Env) -> None:
    frames: list[str] = []
    url = f"{env.fake.ws_url}?clientId=someone-else"
    async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
        await ws.receive_json(timeout=2)  # the initial status
        await env.run(sampler_workflow(21, 2))
        with pytest.raises(TimeoutError):
            while True:
                message = await ws.receive(timeout=0.2)
                assert message.type == aiohttp.WSMsgType.TEXT  # no binary previews
                frames.append(json.loads(message.data)["type"])
    assert frames and set(frames) == {"status"}


async def test_full_object_info_has_every_recorded_class(env: Env) -> None:
    info = await env.client.object_info()  # ~0.5 MB: read whole, not one chunk
    assert len(info) == 478
    ckpt = info["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0]
    assert ckpt == MODELS["ckpt_name"]


async def test_available_nodes_override(env: Env) -> None:
    env.fake.available_nodes = {"EmptyImage", "SaveImage"}
    info = await env.client.object_info()
    assert set(info) == {"EmptyImage", "SaveImage"}
    assert await env.client.object_info("ImageAddNoise") == {}
    with pytest.raises(ComfyValidationError) as caught:
        await env.client.submit(image_workflow(), prompt_id=str(uuid.uuid4()), client_id="x")
    assert "ImageAddNoise does not exist" in caught.value.user_message


async def test_info_routes_and_api_prefix(fake_comfy: FakeComfyUI) -> None:
    async with ComfyClient(fake_comfy.base_url + "/api/") as client:
        stats = await client.system_stats()
        assert stats["system"]["comfyui_version"] == "0.3.64"
        info = await client.object_info("SaveImage")
        assert info["SaveImage"]["output_node"] is True
        client_id = uuid.uuid4().hex
        sock = make_socket(fake_comfy.base_url + "/api", client_id)
        async with sock:
            assert await sock.wait_connected(5)
            prompt_id = str(uuid.uuid4())
            await client.submit(image_workflow(), prompt_id=prompt_id, client_id=client_id)
            events = await collect(sock.subscribe(prompt_id))
    assert isinstance(events[-2], p.ExecutionSuccess)
    assert fake_comfy.requests[0].path == "/api/system_stats"


# ------------------------------------------------------------------------- downloads


@pytest.mark.parametrize("name", ["../escape.png", "sub/x.png", "..", ".x", "a\\b.png"])
async def test_download_refuses_unsafe_names(env: Env, tmp_path: Path, name: str) -> None:
    _, _ = await env.run(image_workflow(seed=400))
    ref = p.OutputRef("3", "image_00001_.png", "probe", "output")
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(InvalidInput):
        await env.client.download(ref, dest, name)
    assert list(dest.iterdir()) == [] and not (tmp_path / "escape.png").exists()


async def test_untrusted_ref_only_travels_as_query_values(env: Env, tmp_path: Path) -> None:
    ref = p.OutputRef("3", "../../etc/passwd", "../..", "output")
    dest = tmp_path / "dest"
    with pytest.raises(ComfyError) as caught:
        await env.client.download(ref, dest, "result.png")
    assert not isinstance(caught.value, ComfyUnavailable)
    assert not dest.exists() or list(dest.iterdir()) == []
    request = env.fake.requests[-1]
    assert request.route == "/view" and request.query["filename"] == "../../etc/passwd"


async def test_download_size_guard_and_missing_file(env: Env, tmp_path: Path) -> None:
    prompt_id, _ = await env.run(image_workflow(seed=401))
    entry = await env.client.history(prompt_id)
    assert entry is not None
    (ref,) = p.outputs_from_history(entry)
    dest = tmp_path / "dest"
    async with ComfyClient(env.fake.base_url, max_download_bytes=100) as small:
        with pytest.raises(ComfyError) as caught:
            await small.download(ref, dest, "big.png")
    assert caught.value.user_message == "The result is too large."
    missing = p.OutputRef("3", "nope.png", "probe", "output")
    with pytest.raises(ComfyError) as caught_missing:
        await env.client.download(missing, dest, "nope.png")
    assert not isinstance(caught_missing.value, ComfyUnavailable)
    assert not dest.exists() or list(dest.iterdir()) == []  # no partial or temp file left


async def test_fetch_keeps_an_image_in_memory(env: Env, tmp_path: Path) -> None:
    prompt_id, _ = await env.run(image_workflow(seed=402))
    entry = await env.client.history(prompt_id)
    assert entry is not None
    (ref,) = p.outputs_from_history(entry)
    data = await env.client.fetch(ref)
    assert data == (await env.client.download(ref, tmp_path, "same.png")).read_bytes()
    with Image.open(io.BytesIO(data)) as image:
        assert image.size == (256, 256) and image.format == "PNG"
    async with ComfyClient(env.fake.base_url, max_download_bytes=100) as small:
        with pytest.raises(ComfyError) as caught:
            await small.fetch(ref)
    assert caught.value.user_message == "The result is too large."
    with pytest.raises(ComfyError) as caught_missing:
        await env.client.fetch(p.OutputRef("3", "nope.png", "probe", "output"))
    assert not isinstance(caught_missing.value, ComfyUnavailable)


async def _raw_server(answer: bytes, then_wait_s: float) -> tuple[asyncio.Server, str]:
    """A server that sends `answer` to every request, waits, then hangs up."""

    async def respond(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answer)
        await writer.drain()
        await asyncio.sleep(then_wait_s)
        writer.close()

    server = await asyncio.start_server(respond, "127.0.0.1", 0)
    return server, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"


@pytest.mark.parametrize(
    ("then_wait_s", "message"),
    [(0.0, "GET /view x.png: ClientPayloadError"), (5.0, "GET /view x.png: timed out")],
    ids=["cut short", "stalled"],
)
async def test_fetch_of_a_cut_or_stalled_answer_is_unavailable(
    then_wait_s: float, message: str
) -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: 1000\r\n\r\n"
    server, url = await _raw_server(head + b"\x89PNG" + b"\x00" * 10, then_wait_s)
    try:
        async with ComfyClient(url, timeout_s=0.3) as client:
            with pytest.raises(ComfyUnavailable, match=message):
                await client.fetch(p.OutputRef("3", "x.png", "", "output"))
    finally:
        server.close()


# --------------------------------------------------------------------- outages, socket


async def test_server_down_is_unavailable_quickly() -> None:
    nobody_listens = f"http://127.0.0.1:{free_port()}"
    async with ComfyClient(nobody_listens, timeout_s=2) as client:
        started = time.monotonic()
        with pytest.raises(ComfyUnavailable):
            await client.submit({}, prompt_id="x", client_id="y")
        with pytest.raises(ComfyUnavailable):
            await client.history("x")
        assert time.monotonic() - started < 1


async def test_silent_server_times_out_as_unavailable() -> None:
    server, url = await _raw_server(b"", then_wait_s=10)  # reads the request, never answers
    try:
        async with ComfyClient(url, timeout_s=0.3) as client:
            started = time.monotonic()
            with pytest.raises(ComfyUnavailable, match="timed out"):
                await client.queue()
            assert time.monotonic() - started < 1.5
    finally:
        server.close()


@pytest.mark.parametrize(("status", "error"), [(503, ComfyUnavailable), (404, ComfyError)])
async def test_http_status_mapping(status: int, error: type[ComfyError]) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(status=status, text="nope")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with ComfyClient(f"http://127.0.0.1:{port}") as client:
            with pytest.raises(error) as caught:
                await client.submit({}, prompt_id="x", client_id="y")
            assert type(caught.value) is error
    finally:
        await runner.cleanup()


async def test_socket_reconnects_after_restart_and_delivers_new_events(env: Env) -> None:
    reconnects: list[float] = []
    env.socket.add_reconnect_callback(lambda: reconnects.append(time.monotonic()))
    await env.fake.kill()
    async with asyncio.timeout(3):
        while env.socket.is_connected:
            await asyncio.sleep(0.01)
    with pytest.raises(ComfyUnavailable):
        await env.client.submit(image_workflow(), prompt_id="down", client_id=env.client_id)
    await asyncio.sleep(0.3)  # a few failed attempts with backoff
    await env.fake.start()
    assert await env.socket.wait_connected(5)
    assert env.socket.connections == 2
    async with asyncio.timeout(2):
        while not reconnects:
            await asyncio.sleep(0.01)
    _, events = await env.run(image_workflow(seed=500))
    assert names(events) == recorded_sequence("job_image")


async def test_restart_without_history(env: Env) -> None:
    done, _ = await env.run(image_workflow(seed=501))
    await env.fake.kill(keep_history=False)
    await env.fake.start()
    assert await env.client.history(done) is None
    assert (await env.client.queue()).pending_ids == ()


async def test_dropped_socket_mid_job_tells_subscriber_and_history_has_result(env: Env) -> None:
    env.fake.step_delay_s = 0.01
    called = asyncio.Event()

    async def on_reconnect() -> None:
        called.set()

    env.socket.on_reconnect.append(on_reconnect)
    prompt_id = str(uuid.uuid4())
    queue = env.socket.subscribe(prompt_id)
    await env.client.submit(sampler_workflow(31, 30), prompt_id=prompt_id, client_id=env.client_id)
    await wait_for(queue, p.Progress)
    await env.fake.drop_sockets()
    await wait_for(queue, p.Reconnected, timeout_s=5)
    await asyncio.wait_for(called.wait(), 2)
    await env.fake.wait_idle()
    entry = await env.client.history(prompt_id)
    assert entry is not None and p.outcome_from_history(entry).succeeded


async def test_heartbeat_detects_a_half_dead_connection(fake_comfy: FakeComfyUI) -> None:
    sock = make_socket(fake_comfy.base_url, uuid.uuid4().hex, heartbeat_s=0.2)
    async with sock:
        assert await sock.wait_connected(5)
        fake_comfy.hang_sockets()
        async with asyncio.timeout(5):
            while sock.connections < 2:
                await asyncio.sleep(0.02)
        assert await sock.wait_connected(2)


async def test_socket_keeps_retrying_while_server_is_absent() -> None:
    port = free_port()  # nobody listens yet
    sock = make_socket(f"http://127.0.0.1:{port}", "c", connect_timeout_s=0.5)
    async with sock:
        assert not await sock.wait_connected(0.4)
        fake = FakeComfyUI(port=port)
        await fake.start()
        try:
            assert await sock.wait_connected(3)
        finally:
            await fake.close()


async def test_partly_invalid_prompt_runs_the_valid_outputs(env: Env) -> None:
    prompt = image_workflow(seed=600)
    prompt["4"] = {"class_type": "EmptyImage", "inputs": {"width": 0, "height": 8, "color": 0}}
    prompt["5"] = {
        "class_type": "SaveImage",
        "inputs": {"images": ["4", 0], "filename_prefix": "x"},
    }
    prompt_id = str(uuid.uuid4())
    queue = env.socket.subscribe(prompt_id)
    result = await env.client.submit(prompt, prompt_id=prompt_id, client_id=env.client_id)
    assert result.node_errors is not None
    assert result.node_errors["4"]["dependent_outputs"] == ["5"]
    assert {e["type"] for e in result.node_errors["4"]["errors"]} == {
        "value_smaller_than_min",
        "required_input_missing",
    }
    events = await collect(queue)
    assert [e.node for e in events if isinstance(e, p.Executed)] == ["3"]


async def test_history_and_queue_entries_have_the_recorded_shape(env: Env) -> None:
    env.fake.hold()
    prompt_id = str(uuid.uuid4())
    await env.client.submit(
        image_workflow(seed=700),
        prompt_id=prompt_id,
        client_id=env.client_id,
        extra_data={"bot_chat_id": 1},
    )
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{env.fake.base_url}/queue") as response:
            queue = await response.json()
        (item,) = queue["queue_pending"]
        assert item[1:] == [
            prompt_id,
            image_workflow(seed=700),
            {"bot_chat_id": 1, "client_id": env.client_id},
            ["3"],
        ]
        env.fake.release()
        await env.fake.wait_idle()
        async with session.get(f"{env.fake.base_url}/history/{prompt_id}") as response:
            entry = (await response.json())[prompt_id]
    reference = recorded()["job_image"]["history_entry"]
    assert list(entry) == list(reference)
    assert list(entry["status"]) == list(reference["status"])
    assert [m[0] for m in entry["status"]["messages"]] == [
        m[0] for m in reference["status"]["messages"]
    ]
    assert [list(m[1]) for m in entry["status"]["messages"]] == [
        list(m[1]) for m in reference["status"]["messages"]
    ]
    assert entry["meta"] == reference["meta"]
