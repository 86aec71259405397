"""A fake ComfyUI server for tests: a real aiohttp server on 127.0.0.1 (ephemeral port).

It reproduces the shapes recorded from ComfyUI 0.3.64 (see `tests/fixtures/comfyui/`): the
`POST /prompt` validation (same error bodies, same algorithm), one worker executing the queue in
ComfyUI's node order, the WebSocket event sequence (`execution_start`, `execution_cached`,
`progress_state`, `executing`, `progress` + binary previews for samplers, `executed`,
`execution_success` / `execution_error` / `execution_interrupted`, `status`,
`executing{node:null}`), node-level caching, and real output files (PNG via Pillow, mp4/webm/
animated webp/apng via the ffmpeg of imageio-ffmpeg). Every route also answers under `/api/`.

Test controls (attributes and methods):
  step_delay_s, node_delay_s       slow jobs down (per sampler step / per node)
  fail_next(node_id, message, ...) the next job ends with `execution_error`
  events_before_reply              POST /prompt answers only after the job's last WS event
  available_nodes                  restrict the node classes (None = all of object_info)
  models                           combo values per input name, e.g. {"ckpt_name": [...]}
  hold() / release()               stop/resume taking jobs from the queue
  requests / prompt_posts / count  what the server received
  stop() / kill(keep_history) / start()   die and come back on the same port
  drop_sockets() / hang_sockets()  break WebSockets (abruptly / half-dead, no pongs)
  wait_idle()                      until nothing is running or pending
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import heapq
import io
import itertools
import json
import mimetypes
import os
import random
import shutil
import socket
import string
import sys
import tempfile
import time
import traceback
import uuid
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import imageio_ffmpeg
import pytest
from aiohttp import WSMsgType, web
from PIL import Image, PngImagePlugin

from core.comfy.protocol import encode_preview, encode_preview_with_metadata

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "comfyui"
OBJECT_INFO_PATH = FIXTURES / "object_info.json"

COMFYUI_VERSION = "0.3.64"
SAMPLER_CLASSES = frozenset(
    {"KSampler", "KSamplerAdvanced", "SamplerCustom", "SamplerCustomAdvanced"}
)
_LOAD_IMAGE_CLASSES = frozenset({"LoadImage", "LoadImageMask"})
_SERVER_FEATURES = {"supports_preview_metadata": True, "max_upload_size": 104857600}
_MEDIA_CACHE = Path(tempfile.gettempdir()) / "animebot-fake-comfy-media"


@cache
def load_object_info() -> dict[str, Any]:
    """The recorded `/object_info` (478 classes). Treat as read-only."""
    data: dict[str, Any] = json.loads(OBJECT_INFO_PATH.read_text())
    return data


def _is_link(value: Any) -> bool:
    return (
        isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], str | int)
        and isinstance(value[1], int)
    )


def _full_type_name(exc: BaseException) -> str:
    cls = type(exc)
    module = cls.__module__
    return cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"


def _now_ms() -> int:
    return int(time.time() * 1000)


# ============================================================================ validation
# A port of ComfyUI's execution.validate_prompt / validate_inputs (0.3.64), same bodies.


def _input_spec(class_info: dict[str, Any], name: str) -> tuple[Any, str, dict[str, Any]]:
    for category in ("required", "optional"):
        spec = class_info["input"].get(category, {}).get(name)
        if spec is not None:
            type_input = spec[0]
            extra = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
            return type_input, category, extra
    raise KeyError(name)


def _input_names(class_info: dict[str, Any]) -> list[str]:
    names: list[str] = []
    for category in ("required", "optional"):
        names.extend(class_info["input"].get(category, {}))
    return names


def _types_match(received: Any, expected: Any) -> bool:
    if not isinstance(expected, str) or expected in ("*", "COMBO"):
        return True
    if not isinstance(received, str) or received == "*":
        return True
    if received == expected:
        return True
    return bool(set(received.split(",")) & set(expected.split(",")))


class _Validator:
    def __init__(
        self,
        prompt: dict[str, Any],
        info: dict[str, Any],
        input_file_exists: Callable[[str], bool],
    ) -> None:
        self.prompt = prompt
        self.info = info
        self.input_file_exists = input_file_exists
        self.validated: dict[str, tuple[bool, list[dict[str, Any]], str]] = {}

    def validate_inputs(self, unique_id: str) -> tuple[bool, list[dict[str, Any]], str]:
        if unique_id in self.validated:
            return self.validated[unique_id]
        node = self.prompt[unique_id]
        inputs = node["inputs"]
        class_type = node["class_type"]
        class_info = self.info[class_type]
        errors: list[dict[str, Any]] = []
        valid = True
        for name in _input_names(class_info):
            type_input, category, extra = _input_spec(class_info, name)
            if name not in inputs:
                if category == "required":
                    errors.append(
                        {
                            "type": "required_input_missing",
                            "message": "Required input is missing",
                            "details": f"{name}",
                            "extra_info": {"input_name": name},
                        }
                    )
                continue
            val = inputs[name]
            info = [type_input, extra]
            if isinstance(val, list):
                if len(val) != 2:
                    errors.append(
                        {
                            "type": "bad_linked_input",
                            "message": "Bad linked input, must be a length-2 list of "
                            "[node_id, slot_index]",
                            "details": f"{name}",
                            "extra_info": {
                                "input_name": name,
                                "input_config": info,
                                "received_value": val,
                            },
                        }
                    )
                    continue
                o_id = str(val[0])
                o_class_type = self.prompt[o_id]["class_type"]  # KeyError like ComfyUI
                received_type = self.info[o_class_type]["output"][val[1]]
                if not _types_match(received_type, type_input):
                    errors.append(
                        {
                            "type": "return_type_mismatch",
                            "message": "Return type mismatch between linked nodes",
                            "details": f"{name}, received_type({received_type}) "
                            f"mismatch input_type({type_input})",
                            "extra_info": {
                                "input_name": name,
                                "input_config": info,
                                "received_type": received_type,
                                "linked_node": val,
                            },
                        }
                    )
                    continue
                try:
                    result = self.validate_inputs(o_id)
                    if result[0] is False:
                        valid = False
                        continue
                except Exception as ex:
                    valid = False
                    self.validated[o_id] = (
                        False,
                        [
                            {
                                "type": "exception_during_inner_validation",
                                "message": "Exception when validating inner node",
                                "details": str(ex),
                                "extra_info": {
                                    "input_name": name,
                                    "input_config": info,
                                    "exception_message": str(ex),
                                    "exception_type": _full_type_name(ex),
                                    "traceback": traceback.format_tb(ex.__traceback__),
                                    "linked_node": val,
                                },
                            }
                        ],
                        o_id,
                    )
                    continue
                continue
            try:
                if type_input == "INT":
                    val = int(val)
                elif type_input == "FLOAT":
                    val = float(val)
                elif type_input == "STRING":
                    val = str(val)
                elif type_input == "BOOLEAN":
                    val = bool(val)
            except Exception as ex:
                errors.append(
                    {
                        "type": "invalid_input_type",
                        "message": f"Failed to convert an input value to a {type_input} value",
                        "details": f"{name}, {val}, {ex}",
                        "extra_info": {
                            "input_name": name,
                            "input_config": info,
                            "received_value": val,
                            "exception_message": str(ex),
                        },
                    }
                )
                continue
            if class_type in _LOAD_IMAGE_CLASSES and name == "image":
                if not self.input_file_exists(str(val)):
                    errors.append(
                        {
                            "type": "custom_validation_failed",
                            "message": "Custom validation failed for node",
                            "details": f"image - Invalid image file: {val}",
                            "extra_info": {"input_name": "image"},
                        }
                    )
                continue
            if "min" in extra and isinstance(val, int | float) and val < extra["min"]:
                errors.append(
                    {
                        "type": "value_smaller_than_min",
                        "message": "Value {} smaller than min of {}".format(val, extra["min"]),
                        "details": f"{name}",
                        "extra_info": {
                            "input_name": name,
                            "input_config": info,
                            "received_value": val,
                        },
                    }
                )
                continue
            if "max" in extra and isinstance(val, int | float) and val > extra["max"]:
                errors.append(
                    {
                        "type": "value_bigger_than_max",
                        "message": "Value {} bigger than max of {}".format(val, extra["max"]),
                        "details": f"{name}",
                        "extra_info": {
                            "input_name": name,
                            "input_config": info,
                            "received_value": val,
                        },
                    }
                )
                continue
            options: list[Any] | None = None
            if isinstance(type_input, list):
                options = type_input
            elif type_input == "COMBO":
                options = list(extra.get("options", []))
            # An empty list is a model folder that the recording did not have: accept anything.
            if options and val not in options:
                input_config: Any = info
                if len(options) > 20:
                    list_info = f"(list of length {len(options)})"
                    input_config = None
                else:
                    list_info = str(options)
                errors.append(
                    {
                        "type": "value_not_in_list",
                        "message": "Value not in list",
                        "details": f"{name}: '{val}' not in {list_info}",
                        "extra_info": {
                            "input_name": name,
                            "input_config": input_config,
                            "received_value": val,
                        },
                    }
                )
                continue
        result = (False, errors, unique_id) if errors or not valid else (True, [], unique_id)
        self.validated[unique_id] = result
        return result


def validate_prompt(
    prompt: dict[str, Any],
    info: dict[str, Any],
    input_file_exists: Callable[[str], bool],
) -> tuple[bool, dict[str, Any] | None, list[str], dict[str, Any]]:
    """(valid, error, good_outputs, node_errors) exactly like ComfyUI."""
    outputs: list[str] = []
    for node_id, node in prompt.items():
        if not isinstance(node, dict) or "class_type" not in node:
            return (
                False,
                {
                    "type": "invalid_prompt",
                    "message": "Cannot execute because a node is missing the class_type property.",
                    "details": f"Node ID '#{node_id}'",
                    "extra_info": {},
                },
                [],
                {},
            )
        class_type = node["class_type"]
        if class_type not in info:
            return (
                False,
                {
                    "type": "invalid_prompt",
                    "message": f"Cannot execute because node {class_type} does not exist.",
                    "details": f"Node ID '#{node_id}'",
                    "extra_info": {},
                },
                [],
                {},
            )
        if info[class_type].get("output_node"):
            outputs.append(str(node_id))
    if not outputs:
        return (
            False,
            {
                "type": "prompt_no_outputs",
                "message": "Prompt has no outputs",
                "details": "",
                "extra_info": {},
            },
            [],
            {},
        )
    validator = _Validator(prompt, info, input_file_exists)
    good_outputs: list[str] = []
    errors: list[tuple[str, list[dict[str, Any]]]] = []
    node_errors: dict[str, Any] = {}
    for output in outputs:
        valid = False
        reasons: list[dict[str, Any]] = []
        try:
            result = validator.validate_inputs(output)
            valid, reasons = result[0], result[1]
        except Exception as ex:
            valid = False
            reasons = [
                {
                    "type": "exception_during_validation",
                    "message": "Exception when validating node",
                    "details": str(ex),
                    "extra_info": {
                        "exception_type": _full_type_name(ex),
                        "traceback": traceback.format_tb(ex.__traceback__),
                    },
                }
            ]
            validator.validated[output] = (False, reasons, output)
        if valid is True:
            good_outputs.append(output)
            continue
        if reasons:
            errors.append((output, reasons))
        for node_id, (node_valid, node_reasons, _) in validator.validated.items():
            if node_valid is not True and node_reasons:
                if node_id not in node_errors:
                    node_errors[node_id] = {
                        "errors": node_reasons,
                        "dependent_outputs": [],
                        "class_type": prompt[node_id]["class_type"],
                    }
                node_errors[node_id]["dependent_outputs"].append(output)
    if not good_outputs:
        details = "\n".join(
            f"{error['message']}: {error['details']}" for _, reasons in errors for error in reasons
        )
        return (
            False,
            {
                "type": "prompt_outputs_failed_validation",
                "message": "Prompt outputs failed validation",
                "details": details,
                "extra_info": {},
            },
            [],
            node_errors,
        )
    return True, None, good_outputs, node_errors


# ======================================================================= execution order


class ExecutionList:
    """ComfyUI's ExecutionList: which node runs next (outputs and their feeders first)."""

    def __init__(self, prompt: dict[str, Any], info: dict[str, Any], cached: set[str]) -> None:
        self.prompt = prompt
        self.info = info
        self.cached = cached
        self.pending: dict[str, None] = {}
        self.block_count: dict[str, int] = {}
        self.blocking: dict[str, dict[str, None]] = {}

    def add_node(self, node_id: str) -> None:
        stack = [node_id]
        links: list[tuple[str, str]] = []
        while stack:
            unique_id = stack.pop()
            if unique_id in self.pending:
                continue
            self.pending[unique_id] = None
            self.block_count[unique_id] = 0
            self.blocking[unique_id] = {}
            for value in self.prompt[unique_id]["inputs"].values():
                if _is_link(value):
                    source = str(value[0])
                    if source not in self.cached:
                        stack.append(source)
                    links.append((source, unique_id))
        for source, target in links:
            if source not in self.cached and target not in self.blocking[source]:
                self.blocking[source][target] = None
                self.block_count[target] += 1

    def is_empty(self) -> bool:
        return not self.pending

    def _is_output(self, node_id: str) -> bool:
        return bool(self.info[self.prompt[node_id]["class_type"]].get("output_node"))

    def next_node(self) -> str:
        available = [n for n in self.pending if self.block_count[n] == 0]
        if not available:
            raise RuntimeError("Dependency cycle detected")
        for node_id in available:
            if self._is_output(node_id):
                return node_id
        for node_id in available:
            if any(self._is_output(b) for b in self.blocking[node_id]):
                return node_id
        for node_id in available:
            for blocked in self.blocking[node_id]:
                if any(self._is_output(b) for b in self.blocking.get(blocked, {})):
                    return node_id
        return available[0]

    def complete(self, node_id: str) -> None:
        self.pending.pop(node_id, None)
        for blocked in self.blocking.pop(node_id, {}):
            self.block_count[blocked] -= 1


# ================================================================================ media


@dataclass(frozen=True)
class MediaSpec:
    width: int = 512
    height: int = 512
    frames: int = 1
    fps: float = 8.0


def _upstream(prompt: dict[str, Any], start: str) -> list[str]:
    """`start` and every node feeding it, breadth first."""
    seen = [start]
    queue = deque([start])
    while queue:
        node = prompt.get(queue.popleft())
        if not isinstance(node, dict):
            continue
        for value in node.get("inputs", {}).values():
            if _is_link(value) and str(value[0]) not in seen and str(value[0]) in prompt:
                seen.append(str(value[0]))
                queue.append(str(value[0]))
    return seen


def _int_input(node: dict[str, Any], name: str) -> int | None:
    value = node.get("inputs", {}).get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return int(value)


def media_spec(
    prompt: dict[str, Any], node_id: str, image_size: Callable[[str], tuple[int, int] | None]
) -> MediaSpec:
    """Size, frame count and fps of what `node_id` saves, read from upstream inputs."""
    width, height, frames, fps = 512, 512, 1, 8.0
    found_size = found_fps = False
    for upstream_id in _upstream(prompt, node_id):
        node = prompt[upstream_id]
        if not found_fps:
            value = node.get("inputs", {}).get("fps", node.get("inputs", {}).get("frame_rate"))
            if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
                fps, found_fps = float(value), True
        if found_size:
            continue
        w, h = _int_input(node, "width"), _int_input(node, "height")
        if w and h:
            width, height, found_size = w, h, True
            length = _int_input(node, "length")
            batch = _int_input(node, "batch_size") or 1
            frames = max(1, length if length else batch)
            continue
        if node.get("class_type") in _LOAD_IMAGE_CLASSES:
            size = image_size(str(node.get("inputs", {}).get("image", "")))
            if size:
                width, height, found_size = size[0], size[1], True
    return MediaSpec(width=width, height=height, frames=frames, fps=fps)


def _color(seed: str) -> tuple[int, int, int]:
    digest = hashlib.sha256(seed.encode()).digest()
    return digest[0], digest[1], digest[2]


def write_png(path: Path, width: int, height: int, seed: str, prompt: dict[str, Any]) -> None:
    image = Image.new("RGB", (width, height), _color(seed))
    stripe = Image.new("RGB", (max(1, width // 4), height), _color(seed + "s"))
    image.paste(stripe, (0, 0))
    meta = PngImagePlugin.PngInfo()
    meta.add_text("prompt", json.dumps(prompt))
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, "PNG", pnginfo=meta, compress_level=1)


@cache
def preview_jpeg(step: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), _color(f"preview{step}")).save(buffer, "JPEG", quality=70)
    return buffer.getvalue()


_VIDEO_ARGS: dict[str, list[str]] = {
    "mp4": [
        "-c:v",
        "libx264",
        "-pix_fmt",
        "yuv420p",
        "-preset",
        "ultrafast",
        "-movflags",
        "+faststart",
    ],
    "webm": ["-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-b:v", "300k"],
    "webp": ["-c:v", "libwebp_anim", "-loop", "0", "-lossless", "0", "-quality", "60"],
    "png": ["-f", "apng", "-plays", "0"],
}


async def make_video(kind: str, spec: MediaSpec, timeout_s: float = 60) -> Path:
    """A real small animation, generated once per spec and cached on disk."""
    fps = f"{spec.fps:g}"
    key = f"{kind}-{spec.width}x{spec.height}-{spec.frames}f-{fps}fps"
    target = _MEDIA_CACHE / f"{key}.{kind}"
    if target.exists():
        return target
    _MEDIA_CACHE.mkdir(parents=True, exist_ok=True)
    tmp = _MEDIA_CACHE / f".{key}.{uuid.uuid4().hex}.{kind}"
    command = [
        imageio_ffmpeg.get_ffmpeg_exe(),
        "-hide_banner",
        "-loglevel",
        "error",
        "-y",
        "-f",
        "lavfi",
        "-i",
        f"testsrc2=size={spec.width}x{spec.height}:rate={fps}",
        "-frames:v",
        str(spec.frames),
        *_VIDEO_ARGS[kind],
        str(tmp),
    ]
    process = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    try:
        async with asyncio.timeout(timeout_s):
            _, stderr = await process.communicate()
    except TimeoutError:
        process.kill()
        await process.wait()
        raise RuntimeError(f"ffmpeg timed out making {key}") from None
    if process.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise RuntimeError(f"ffmpeg failed making {key}: {stderr.decode(errors='replace')[-500:]}")
    os.replace(tmp, target)
    return target


# ============================================================================== server


class NodeFailure(Exception):
    """Raised inside the fake worker to end a job with `execution_error`."""

    def __init__(self, message: str, exception_type: str) -> None:
        super().__init__(message)
        self.exception_type = exception_type


class _Interrupted(Exception):
    pass


@dataclass
class FailureSpec:
    node_id: str | None
    message: str
    exception_type: str


@dataclass
class RecordedRequest:
    method: str
    path: str  # as received, e.g. "/api/prompt"
    route: str  # without the "/api" prefix, e.g. "/prompt"
    query: dict[str, str]
    json: Any = None


@dataclass
class _Job:
    number: float
    prompt_id: str
    prompt: dict[str, Any]
    extra_data: dict[str, Any]
    outputs: list[str]
    done: asyncio.Future[None]

    @property
    def client_id(self) -> str | None:
        value = self.extra_data.get("client_id")
        return value if isinstance(value, str) else None

    def queue_item(self) -> list[Any]:
        return [self.number, self.prompt_id, self.prompt, self.extra_data, self.outputs]


@dataclass
class _Client:
    sid: str
    ws: web.WebSocketResponse
    transport: asyncio.Transport | None
    supports_metadata: bool = False
    frozen: bool = False
    thaw: asyncio.Event = field(default_factory=asyncio.Event)


class FakeComfyUI:
    """See the module docstring for the test-control API."""

    host = "127.0.0.1"

    def __init__(self, root: Path | None = None, *, port: int = 0) -> None:
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if root is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="fake-comfy-")
            root = Path(self._tmp.name)
        self.root = Path(root)
        self.output_dir = self.root / "output"
        self.input_dir = self.root / "input"
        self.temp_dir = self.root / "temp"
        for folder in (self.output_dir, self.input_dir, self.temp_dir):
            folder.mkdir(parents=True, exist_ok=True)
        self.port = port
        # --- test controls
        self.step_delay_s = 0.0
        self.node_delay_s = 0.0
        self.events_before_reply = False
        self.available_nodes: set[str] | None = None
        self.models: dict[str, list[str]] = {}
        self.max_video_side = 256
        self.comfyui_version = COMFYUI_VERSION
        self.requests: list[RecordedRequest] = []
        # --- state
        self.history: dict[str, dict[str, Any]] = {}
        self._pending: list[tuple[float, int, _Job]] = []
        self._seq = itertools.count()
        self._number = 0
        self.running: _Job | None = None
        self._last_node: str | None = None
        self._failures: deque[FailureSpec] = deque()
        self._cache: dict[str, dict[str, Any]] = {}
        self._counters: dict[tuple[str, str], int] = {}
        self._clients: dict[str, _Client] = {}
        self._queue_changed = asyncio.Event()
        self._released = asyncio.Event()
        self._released.set()
        self._interrupt = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._runner: web.AppRunner | None = None
        self._worker: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ lifecycle
    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}/ws"

    @property
    def is_running(self) -> bool:
        return self._runner is not None

    async def start(self) -> None:
        """Listen (again) on `self.port` (ephemeral on the first start)."""
        if self._runner is not None:
            return
        app = web.Application(client_max_size=200 * 1024 * 1024, middlewares=[self._record])
        self._add_routes(app)
        runner = web.AppRunner(app, shutdown_timeout=0.5, access_log=None)
        await runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        sock.listen(128)
        sock.setblocking(False)
        self.port = sock.getsockname()[1]
        site = web.SockSite(runner, sock)
        await site.start()
        self._runner = runner
        self._worker = asyncio.create_task(self._work(), name=f"fake-comfy-worker:{self.port}")

    async def stop(self) -> None:
        """Graceful shutdown (close frames sent); state is kept for a later `start()`."""
        for client in list(self._clients.values()):
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1):
                    await client.ws.close()
        await self._shutdown()

    async def kill(self, *, keep_history: bool = True) -> None:
        """Die at once: sockets and listener aborted, the running job is lost.

        `keep_history=False` also forgets history, queue and cache, like a process restart."""
        for client in list(self._clients.values()):
            if client.transport is not None:
                client.transport.abort()
        await self._shutdown()
        if not keep_history:
            self.history.clear()
            for _, _, job in self._pending:
                if not job.done.done():
                    job.done.cancel()
            self._pending.clear()
            self._cache.clear()
            self._number = 0
            self._idle.set()

    async def close(self) -> None:
        """Final stop; removes the temporary root if this object created it."""
        await self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    async def _shutdown(self) -> None:
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker
        job, self.running = self.running, None
        if job is not None and not job.done.done():
            job.done.cancel()
        self._last_node = None
        self._clients.clear()
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
        if not self._pending:
            self._idle.set()

    # ------------------------------------------------------------------ controls
    def fail_next(
        self,
        node_id: str | None = None,
        message: str = "Fake failure",
        exception_type: str = "RuntimeError",
    ) -> None:
        """The next job fails at `node_id` (None or absent: its first executed node)."""
        self._failures.append(FailureSpec(node_id, message, exception_type))

    def hold(self) -> None:
        """Keep jobs queued: the worker takes no new job until `release()`."""
        self._released.clear()

    def release(self) -> None:
        self._released.set()

    async def drop_sockets(self) -> None:
        """Abort every WebSocket (no close frame); the server and its jobs keep going."""
        for client in list(self._clients.values()):
            if client.transport is not None:
                client.transport.abort()
        self._clients.clear()

    def hang_sockets(self) -> None:
        """Half-dead connections: no more frames and no pongs on the current sockets."""
        for client in self._clients.values():
            client.frozen = True

    async def wait_idle(self, timeout_s: float = 10) -> None:
        async with asyncio.timeout(timeout_s):
            while self.running is not None or self._pending:
                self._idle.clear()
                await self._idle.wait()

    @property
    def prompt_posts(self) -> list[Any]:
        """JSON bodies received by POST /prompt (valid or not), in order."""
        return [r.json for r in self.requests if r.method == "POST" and r.route == "/prompt"]

    def count(self, method: str, route: str) -> int:
        return sum(1 for r in self.requests if r.method == method and r.route == route)

    @property
    def pending_ids(self) -> list[str]:
        return [job.prompt_id for _, _, job in sorted(self._pending)]

    @property
    def connected_client_ids(self) -> list[str]:
        return list(self._clients)

    def object_info(self) -> dict[str, Any]:
        """The effective object_info: `available_nodes`, `models` and uploads applied."""
        base = load_object_info()
        names = (
            base if self.available_nodes is None else [n for n in base if n in self.available_nodes]
        )
        result: dict[str, Any] = {}
        uploads = self._uploaded_names()
        for name in names:
            entry = base[name]
            patched = None
            for category in ("required", "optional"):
                for input_name, spec in entry["input"].get(category, {}).items():
                    values: list[str] | None = None
                    if input_name in self.models and (
                        isinstance(spec[0], list) or spec[0] == "COMBO"
                    ):
                        values = list(self.models[input_name])
                    elif name in _LOAD_IMAGE_CLASSES and input_name == "image":
                        values = sorted(set(spec[0]) | set(uploads))
                    if values is None:
                        continue
                    if patched is None:
                        patched = json.loads(json.dumps(entry))
                    target = patched["input"][category][input_name]
                    if target[0] == "COMBO":
                        target[1]["options"] = values
                    else:
                        target[0] = values
            result[name] = patched if patched is not None else entry
        return result

    # ------------------------------------------------------------------ files
    def _uploaded_names(self) -> list[str]:
        names = []
        for path in self.input_dir.rglob("*"):
            if path.is_file():
                names.append(path.relative_to(self.input_dir).as_posix())
        return names

    def _input_path(self, annotated: str) -> Path | None:
        name = annotated
        base = self.input_dir
        for suffix, folder in (
            (" [input]", self.input_dir),
            (" [output]", self.output_dir),
            (" [temp]", self.temp_dir),
        ):
            if name.endswith(suffix):
                name, base = name[: -len(suffix)], folder
        if not name or name.startswith("/") or ".." in name:
            return None
        path = base / name
        return path if path.is_file() else None

    def _image_size(self, annotated: str) -> tuple[int, int] | None:
        path = self._input_path(annotated)
        if path is None:
            return None
        try:
            with Image.open(path) as image:
                return image.size
        except OSError:
            return None

    def _next_filename(self, folder: Path, subfolder: str, base: str, ext: str) -> str:
        key = (str(folder / subfolder), base)
        counter = self._counters.get(key)
        if counter is None:
            counter = 0
            directory = folder / subfolder
            if directory.is_dir():
                prefix = f"{base}_"
                for existing in directory.iterdir():
                    stem = existing.name
                    if stem.startswith(prefix) and stem[len(prefix) : len(prefix) + 5].isdigit():
                        counter = max(counter, int(stem[len(prefix) : len(prefix) + 5]))
        counter += 1
        self._counters[key] = counter
        return f"{base}_{counter:05}_.{ext}"

    def _save_target(self, prefix: str) -> tuple[str, str]:
        subfolder, _, base = prefix.replace("\\", "/").rpartition("/")
        full = (self.output_dir / subfolder).resolve()
        if os.path.commonpath([full, self.output_dir.resolve()]) != str(self.output_dir.resolve()):
            raise NodeFailure(
                "**** ERROR: Saving image outside the output folder is not allowed."
                f"\n full_output_folder: {full}\n         output_dir: {self.output_dir}",
                "Exception",
            )
        return subfolder, base or "ComfyUI"

    # ------------------------------------------------------------------ websocket
    async def _send(self, client: _Client, kind: str, data: Any) -> None:
        if client.frozen or client.ws.closed:
            return
        try:
            await client.ws.send_str(json.dumps({"type": kind, "data": data}))
        except (ConnectionError, RuntimeError):
            self._forget(client)

    async def _send_bytes(self, client: _Client, frame: bytes) -> None:
        if client.frozen or client.ws.closed:
            return
        try:
            await client.ws.send_bytes(frame)
        except (ConnectionError, RuntimeError):
            self._forget(client)

    def _forget(self, client: _Client) -> None:
        if self._clients.get(client.sid) is client:
            del self._clients[client.sid]

    def _targets(self, sid: str | None) -> list[_Client]:
        if sid is None:
            return list(self._clients.values())
        client = self._clients.get(sid)
        return [client] if client is not None else []

    async def _emit(self, kind: str, data: Any, sid: str | None) -> None:
        """ComfyUI's send_sync: to `sid`, or to everybody when sid is None."""
        for client in self._targets(sid):
            await self._send(client, kind, data)

    def _queue_remaining(self) -> int:
        return len(self._pending) + (1 if self.running is not None else 0)

    async def _broadcast_status(self) -> None:
        await self._emit(
            "status", {"status": {"exec_info": {"queue_remaining": self._queue_remaining()}}}, None
        )

    async def _handle_ws(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=False, max_msg_size=16 * 1024 * 1024)
        await ws.prepare(request)
        sid = request.query.get("clientId") or uuid.uuid4().hex
        transport = request.transport
        client = _Client(
            sid=sid,
            ws=ws,
            transport=transport if isinstance(transport, asyncio.Transport) else None,
        )
        self._clients[sid] = client
        try:
            await self._send(
                client,
                "status",
                {"status": {"exec_info": {"queue_remaining": self._queue_remaining()}}, "sid": sid},
            )
            if self.running is not None and self.running.client_id == sid and self._last_node:
                await self._send(client, "executing", {"node": self._last_node})
            first = True
            while not ws.closed:
                message = await ws.receive()
                if message.type == WSMsgType.PING:
                    if not client.frozen:
                        await ws.pong(message.data)
                    continue
                if message.type == WSMsgType.TEXT:
                    if first:
                        with contextlib.suppress(ValueError, AttributeError):
                            data = json.loads(message.data)
                            if data.get("type") == "feature_flags":
                                flags = data.get("data") or {}
                                client.supports_metadata = (
                                    flags.get("supports_preview_metadata") is True
                                )
                                await self._send(client, "feature_flags", dict(_SERVER_FEATURES))
                    first = False
                    continue
                if message.type in (
                    WSMsgType.CLOSE,
                    WSMsgType.CLOSING,
                    WSMsgType.CLOSED,
                    WSMsgType.ERROR,
                ):
                    break
        except (ConnectionError, RuntimeError, asyncio.CancelledError):
            pass
        finally:
            self._forget(client)
        return ws

    # ------------------------------------------------------------------ http
    @web.middleware
    async def _record(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        path = request.path
        route = path[4:] if path.startswith("/api/") else path
        body: Any = None
        if request.method == "POST" and not (request.content_type or "").startswith("multipart/"):
            raw = await request.read()
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = raw.decode("utf-8", "replace")
        self.requests.append(
            RecordedRequest(request.method, path, route, dict(request.query), body)
        )
        return await handler(request)

    def _add_routes(self, app: web.Application) -> None:
        routes: list[tuple[str, str, Callable[[web.Request], Awaitable[web.StreamResponse]]]] = [
            ("GET", "/ws", self._handle_ws),
            ("POST", "/prompt", self._post_prompt),
            ("GET", "/prompt", self._get_prompt),
            ("GET", "/queue", self._get_queue),
            ("POST", "/queue", self._post_queue),
            ("POST", "/interrupt", self._post_interrupt),
            ("GET", "/history", self._get_history),
            ("GET", "/history/{prompt_id}", self._get_history_one),
            ("POST", "/history", self._post_history),
            ("GET", "/view", self._get_view),
            ("POST", "/upload/image", self._post_upload),
            ("GET", "/object_info", self._get_object_info),
            ("GET", "/object_info/{node_class}", self._get_object_info_one),
            ("GET", "/system_stats", self._get_system_stats),
            ("GET", "/features", self._get_features),
            ("GET", "/embeddings", self._get_embeddings),
        ]
        for prefix in ("", "/api"):
            for method, path, handler in routes:
                app.router.add_route(method, prefix + path, handler)

    async def _post_prompt(self, request: web.Request) -> web.StreamResponse:
        try:
            body = json.loads(await request.read())
        except ValueError:
            return web.Response(
                status=500,
                text="500 Internal Server Error\n\nServer got itself in trouble",
                content_type="text/plain",
            )
        if not isinstance(body, dict):
            body = {}
        if "number" in body:
            number: float = float(body["number"])
        else:
            number = self._number
            if body.get("front"):
                number = -number
            self._number += 1
        if "prompt" not in body:
            error = {
                "type": "no_prompt",
                "message": "No prompt provided",
                "details": "No prompt provided",
                "extra_info": {},
            }
            return web.json_response({"error": error, "node_errors": {}}, status=400)
        prompt = body["prompt"]
        if not isinstance(prompt, dict):
            error = {
                "type": "invalid_prompt",
                "message": "Invalid prompt",
                "details": "",
                "extra_info": {},
            }
            return web.json_response({"error": error, "node_errors": {}}, status=400)
        prompt_id = str(body.get("prompt_id") or uuid.uuid4())
        info = self.object_info()
        valid, failure, outputs, node_errors = validate_prompt(
            prompt, info, lambda name: self._input_path(name) is not None
        )
        if not valid:
            return web.json_response({"error": failure, "node_errors": node_errors}, status=400)
        extra_data = dict(body.get("extra_data") or {})
        if "client_id" in body:
            extra_data["client_id"] = body["client_id"]
        job = _Job(
            number=number,
            prompt_id=prompt_id,
            prompt=prompt,
            extra_data=extra_data,
            outputs=outputs,
            done=asyncio.get_running_loop().create_future(),
        )
        heapq.heappush(self._pending, (number, next(self._seq), job))
        self._idle.clear()
        self._queue_changed.set()
        await self._broadcast_status()
        if self.events_before_reply:
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                async with asyncio.timeout(30):
                    await asyncio.shield(job.done)
        shown = int(number) if float(number).is_integer() else number
        return web.json_response(
            {"prompt_id": prompt_id, "number": shown, "node_errors": node_errors}
        )

    async def _get_prompt(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({"exec_info": {"queue_remaining": self._queue_remaining()}})

    async def _get_queue(self, request: web.Request) -> web.StreamResponse:
        running = [self.running.queue_item()] if self.running is not None else []
        pending = [job.queue_item() for _, _, job in sorted(self._pending)]
        return web.json_response({"queue_running": running, "queue_pending": pending})

    async def _post_queue(self, request: web.Request) -> web.StreamResponse:
        body = await self._json_or_empty(request)
        if body.get("clear"):
            for _, _, job in self._pending:
                if not job.done.done():
                    job.done.cancel()
            self._pending.clear()
        delete = body.get("delete")
        if isinstance(delete, list):
            kept = []
            for item in self._pending:
                if item[2].prompt_id in delete:
                    if not item[2].done.done():
                        item[2].done.cancel()
                else:
                    kept.append(item)
            heapq.heapify(kept)
            self._pending = kept
        if not self._pending and self.running is None:
            self._idle.set()
        await self._broadcast_status()
        return web.Response(status=200)

    async def _post_interrupt(self, request: web.Request) -> web.StreamResponse:
        body = await self._json_or_empty(request)
        target = body.get("prompt_id")
        running = self.running
        if running is not None and (target is None or target == running.prompt_id):
            self._interrupt.set()
        return web.Response(status=200)

    async def _get_history(self, request: web.Request) -> web.StreamResponse:
        items = list(self.history.items())
        max_items = request.query.get("max_items")
        if max_items and max_items.isdigit():
            items = items[-int(max_items) :] if int(max_items) else []
        return web.json_response(dict(items))

    async def _get_history_one(self, request: web.Request) -> web.StreamResponse:
        prompt_id = request.match_info["prompt_id"]
        entry = self.history.get(prompt_id)
        return web.json_response({prompt_id: entry} if entry is not None else {})

    async def _post_history(self, request: web.Request) -> web.StreamResponse:
        body = await self._json_or_empty(request)
        if body.get("clear"):
            self.history.clear()
        delete = body.get("delete")
        if isinstance(delete, list):
            for prompt_id in delete:
                self.history.pop(str(prompt_id), None)
        return web.Response(status=200)

    async def _get_view(self, request: web.Request) -> web.StreamResponse:
        filename = request.query.get("filename")
        if not filename:
            return web.Response(status=404)
        if filename.startswith("/") or ".." in filename:
            return web.Response(status=400)
        folders = {"output": self.output_dir, "input": self.input_dir, "temp": self.temp_dir}
        base = folders.get(request.query.get("type", "output"))
        if base is None:
            return web.Response(status=400)
        directory = (base / request.query.get("subfolder", "")).resolve()
        if os.path.commonpath([directory, base.resolve()]) != str(base.resolve()):
            return web.Response(status=403)
        path = directory / filename
        if not path.is_file():
            return web.Response(status=404)
        content_type = mimetypes.guess_type(filename)[0] or "application/octet-stream"
        return web.FileResponse(
            path,
            headers={
                "Content-Disposition": f'filename="{filename}"',
                "Content-Type": content_type,
            },
        )

    async def _post_upload(self, request: web.Request) -> web.StreamResponse:
        post = await request.post()
        image = post.get("image")
        if not isinstance(image, web.FileField) or not image.filename:
            return web.Response(status=400)
        kind = str(post.get("type", "input"))
        folders = {"input": self.input_dir, "temp": self.temp_dir, "output": self.output_dir}
        base = folders.get(kind, self.input_dir)
        subfolder = str(post.get("subfolder", ""))
        overwrite = str(post.get("overwrite", "")).lower() in ("true", "1")
        directory = (base / subfolder).resolve()
        filename = os.path.basename(image.filename)
        if os.path.commonpath([directory, base.resolve()]) != str(base.resolve()) or not filename:
            return web.Response(status=400)
        directory.mkdir(parents=True, exist_ok=True)
        data = image.file.read()
        path = directory / filename
        if not overwrite:
            stem, dot, ext = filename.rpartition(".")
            if not dot:
                stem, ext = filename, ""
            index = 1
            while path.exists():
                if path.read_bytes() == data:
                    break
                filename = f"{stem} ({index}).{ext}" if dot else f"{stem} ({index})"
                path = directory / filename
                index += 1
        path.write_bytes(data)
        return web.json_response({"name": filename, "subfolder": subfolder, "type": kind})

    async def _get_object_info(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(self.object_info())

    async def _get_object_info_one(self, request: web.Request) -> web.StreamResponse:
        node_class = request.match_info["node_class"]
        info = self.object_info()
        return web.json_response({node_class: info[node_class]} if node_class in info else {})

    async def _get_system_stats(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(
            {
                "system": {
                    "os": "posix",
                    "ram_total": 25276514304,
                    "ram_free": 23619260416,
                    "comfyui_version": self.comfyui_version,
                    "required_frontend_version": "1.27.10",
                    "installed_templates_version": "0.1.95",
                    "required_templates_version": "0.1.95",
                    "python_version": sys.version,
                    "pytorch_version": "2.14.1+cu130",
                    "embedded_python": False,
                    "argv": ["main.py", "--listen", self.host, "--port", str(self.port)],
                },
                "devices": [
                    {
                        "name": "cpu",
                        "type": "cpu",
                        "index": None,
                        "vram_total": 25276514304,
                        "vram_free": 23619260416,
                        "torch_vram_total": 25276514304,
                        "torch_vram_free": 23619260416,
                    }
                ],
            }
        )

    async def _get_features(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(dict(_SERVER_FEATURES))

    async def _get_embeddings(self, request: web.Request) -> web.StreamResponse:
        return web.json_response([])

    @staticmethod
    async def _json_or_empty(request: web.Request) -> dict[str, Any]:
        raw = await request.read()
        try:
            data = json.loads(raw) if raw else {}
        except ValueError:
            return {}
        return data if isinstance(data, dict) else {}

    # ------------------------------------------------------------------ worker
    async def _work(self) -> None:
        while True:
            await self._released.wait()
            if not self._pending:
                if self.running is None:
                    self._idle.set()
                self._queue_changed.clear()
                await self._queue_changed.wait()
                continue
            _, _, job = heapq.heappop(self._pending)
            self.running = job
            self._interrupt.clear()
            await self._broadcast_status()
            try:
                await self._execute(job)
            finally:
                self.running = None
                self._last_node = None
                if not job.done.done():
                    job.done.set_result(None)

    async def _wait(self, delay: float) -> None:
        """Sleep that ends early (with `_Interrupted`) on /interrupt."""
        if self._interrupt.is_set():
            raise _Interrupted
        if delay <= 0:
            await asyncio.sleep(0)
        else:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._interrupt.wait()
        if self._interrupt.is_set():
            raise _Interrupted

    def _cache_keys(self, prompt: dict[str, Any]) -> dict[str, str]:
        keys: dict[str, str] = {}

        def key(node_id: str, depth: int = 0) -> str:
            if node_id in keys:
                return keys[node_id]
            if depth > len(prompt) or node_id not in prompt:
                return f"missing:{node_id}"
            node = prompt[node_id]
            parts: dict[str, Any] = {}
            for name, value in node.get("inputs", {}).items():
                parts[name] = (
                    ["link", key(str(value[0]), depth + 1), value[1]] if _is_link(value) else value
                )
            if node.get("class_type") in _LOAD_IMAGE_CLASSES:
                path = self._input_path(str(node.get("inputs", {}).get("image", "")))
                parts["__file__"] = hashlib.sha256(path.read_bytes()).hexdigest() if path else None
            text = json.dumps([node.get("class_type"), parts], sort_keys=True, default=str)
            keys[node_id] = hashlib.sha256(text.encode()).hexdigest()
            return keys[node_id]

        for node_id in prompt:
            key(node_id)
        return keys

    async def _execute(self, job: _Job) -> None:
        prompt, prompt_id, sid = job.prompt, job.prompt_id, job.client_id
        info = self.object_info()
        messages: list[list[Any]] = []

        async def add_message(kind: str, data: dict[str, Any]) -> None:
            data = {**data, "timestamp": _now_ms()}
            messages.append([kind, data])
            if sid is not None:
                await self._emit(kind, data, sid)

        await add_message("execution_start", {"prompt_id": prompt_id})
        keys = self._cache_keys(prompt)
        live = set(keys.values())
        self._cache = {k: v for k, v in self._cache.items() if k in live}
        cached = [node_id for node_id in prompt if keys[node_id] in self._cache]
        await add_message("execution_cached", {"nodes": cached, "prompt_id": prompt_id})
        order = ExecutionList(prompt, info, set(cached))
        for output in job.outputs:
            order.add_node(output)
        failure = self._failures.popleft() if self._failures else None
        progress: dict[str, dict[str, Any]] = {}
        executed: list[str] = []
        outputs: dict[str, Any] = {}
        meta: dict[str, Any] = {}
        status_str, completed = "success", True
        node_id = ""

        def state(node: str, value: float, maximum: float, name: str) -> dict[str, Any]:
            return {
                "value": value,
                "max": maximum,
                "state": name,
                "node_id": node,
                "prompt_id": prompt_id,
                "display_node_id": node,
                "parent_node_id": None,
                "real_node_id": node,
            }

        async def send_progress_state() -> None:
            await self._emit(
                "progress_state", {"prompt_id": prompt_id, "nodes": dict(progress)}, sid
            )

        def record_output(node: str, ui: dict[str, Any]) -> None:
            outputs[node] = ui
            meta[node] = {
                "node_id": node,
                "display_node": node,
                "parent_node": None,
                "real_node_id": node,
            }

        try:
            while not order.is_empty():
                node_id = order.next_node()
                class_type = prompt[node_id]["class_type"]
                if node_id in cached:
                    ui = self._cache[keys[node_id]]
                    if ui:
                        record_output(node_id, ui)
                        if sid is not None:
                            await self._emit(
                                "executed",
                                {
                                    "node": node_id,
                                    "display_node": node_id,
                                    "output": ui,
                                    "prompt_id": prompt_id,
                                },
                                sid,
                            )
                    progress[node_id] = state(node_id, 1, 1, "finished")
                    await send_progress_state()
                    order.complete(node_id)
                    continue
                await self._wait(0)
                progress[node_id] = state(node_id, 0.0, 1.0, "running")
                await send_progress_state()
                self._last_node = node_id
                if sid is not None:
                    await self._emit(
                        "executing",
                        {"node": node_id, "display_node": node_id, "prompt_id": prompt_id},
                        sid,
                    )
                if failure is not None and (
                    failure.node_id in (None, node_id) or failure.node_id not in prompt
                ):
                    raise NodeFailure(failure.message, failure.exception_type)
                if class_type in SAMPLER_CLASSES:
                    steps = self._sampler_steps(prompt, node_id)
                    for step in range(1, steps + 1):
                        await self._wait(self.step_delay_s)
                        progress[node_id] = state(node_id, step, steps, "running")
                        await self._sampler_step(job, node_id, step, steps, progress)
                    progress[node_id] = state(node_id, steps, steps, "finished")
                    await send_progress_state()
                else:
                    await self._wait(self.node_delay_s)
                ui = (
                    await self._produce(job, node_id, class_type)
                    if info[class_type].get("output_node")
                    else {}
                )
                if ui:
                    record_output(node_id, ui)
                    if sid is not None:
                        await self._emit(
                            "executed",
                            {
                                "node": node_id,
                                "display_node": node_id,
                                "output": ui,
                                "prompt_id": prompt_id,
                            },
                            sid,
                        )
                if class_type not in SAMPLER_CLASSES:
                    progress[node_id] = state(node_id, 1.0, 1.0, "finished")
                    await send_progress_state()
                self._cache[keys[node_id]] = ui
                executed.append(node_id)
                order.complete(node_id)
            await add_message("execution_success", {"prompt_id": prompt_id})
        except _Interrupted:
            status_str, completed = "error", False
            await add_message(
                "execution_interrupted",
                {
                    "prompt_id": prompt_id,
                    "node_id": node_id,
                    "node_type": prompt.get(node_id, {}).get("class_type"),
                    "executed": executed,
                },
            )
        except (NodeFailure, RuntimeError, OSError) as exc:
            status_str, completed = "error", False
            exception_type = (
                exc.exception_type if isinstance(exc, NodeFailure) else _full_type_name(exc)
            )
            inputs = prompt.get(node_id, {}).get("inputs", {})
            await add_message(
                "execution_error",
                {
                    "prompt_id": prompt_id,
                    "node_id": node_id,
                    "node_type": prompt.get(node_id, {}).get("class_type"),
                    "executed": executed,
                    "exception_message": f"{exc}\n",
                    "exception_type": exception_type,
                    "traceback": traceback.format_tb(exc.__traceback__),
                    "current_inputs": {k: [v] for k, v in inputs.items() if not _is_link(v)},
                    "current_outputs": list(order.pending),
                },
            )
        # ComfyUI lists outputs by node, not in execution order.
        outputs = {n: outputs[n] for n in prompt if n in outputs}
        meta = {n: meta[n] for n in prompt if n in meta}
        self.history[prompt_id] = {
            "prompt": job.queue_item(),
            "outputs": outputs,
            "status": {"status_str": status_str, "completed": completed, "messages": messages},
            "meta": meta,
        }
        self.running = None
        self._last_node = None
        await self._broadcast_status()
        if sid is not None:
            await self._emit("executing", {"node": None, "prompt_id": prompt_id}, sid)

    @staticmethod
    def _sampler_steps(prompt: dict[str, Any], node_id: str) -> int:
        node = prompt[node_id]
        steps = _int_input(node, "steps")
        if node.get("class_type") == "KSamplerAdvanced" and steps:
            start = _int_input(node, "start_at_step") or 0
            end = _int_input(node, "end_at_step")
            end = steps if end is None else min(end, steps)
            return max(0, end - start)
        if steps:
            return steps
        sigmas = node.get("inputs", {}).get("sigmas")
        if _is_link(sigmas):
            for upstream_id in _upstream(prompt, str(sigmas[0])):
                found = _int_input(prompt[upstream_id], "steps")
                if found:
                    return found
        return 20

    async def _sampler_step(
        self, job: _Job, node_id: str, step: int, steps: int, progress: dict[str, Any]
    ) -> None:
        targets = self._targets(job.client_id)
        state = {"prompt_id": job.prompt_id, "nodes": dict(progress)}
        data = {"value": step, "max": steps, "prompt_id": job.prompt_id, "node": node_id}
        image = preview_jpeg(step % 8)
        for client in targets:
            await self._send(client, "progress_state", state)
            if client.supports_metadata:
                metadata = {
                    "node_id": node_id,
                    "prompt_id": job.prompt_id,
                    "display_node_id": node_id,
                    "parent_node_id": None,
                    "real_node_id": node_id,
                    "image_type": "image/jpeg",
                }
                await self._send_bytes(client, encode_preview_with_metadata(image, metadata))
                await self._send(client, "progress", data)
            else:
                await self._send(client, "progress", data)
                await self._send_bytes(client, encode_preview(image))

    async def _produce(self, job: _Job, node_id: str, class_type: str) -> dict[str, Any]:
        node = job.prompt[node_id]
        inputs = node.get("inputs", {})
        spec = media_spec(job.prompt, node_id, self._image_size)
        seed = f"{job.prompt_id}:{node_id}"
        if class_type in ("PreviewImage", "MaskPreview"):
            tag = "".join(random.choice(string.ascii_lowercase) for _ in range(5))
            base = f"ComfyUI_temp_{tag}"
            images = []
            for index in range(spec.frames):
                filename = f"{base}_{index + 1:05}_.png"
                await asyncio.to_thread(
                    write_png,
                    self.temp_dir / filename,
                    spec.width,
                    spec.height,
                    f"{seed}:{index}",
                    job.prompt,
                )
                images.append({"filename": filename, "subfolder": "", "type": "temp"})
            return {"images": images}
        if class_type == "SaveImage":
            subfolder, base = self._save_target(str(inputs.get("filename_prefix", "ComfyUI")))
            images = []
            for index in range(spec.frames):
                filename = self._next_filename(self.output_dir, subfolder, base, "png")
                path = self.output_dir / subfolder / filename
                await asyncio.to_thread(
                    write_png, path, spec.width, spec.height, f"{seed}:{index}", job.prompt
                )
                images.append({"filename": filename, "subfolder": subfolder, "type": "output"})
            return {"images": images}
        video_kinds = {
            "SaveVideo": "mp4",
            "SaveWEBM": "webm",
            "SaveAnimatedWEBP": "webp",
            "SaveAnimatedPNG": "png",
        }
        kind = video_kinds.get(class_type)
        if kind is None:
            return {}
        if kind == "mp4" and (spec.width % 2 or spec.height % 2):
            raise NodeFailure(
                "[Errno 542398533] Generic error in an external library: "
                "'avcodec_open2(\"libx264\", {})'",
                "av.error.ExternalError",
            )
        default_prefix = "video/ComfyUI" if class_type == "SaveVideo" else "ComfyUI"
        subfolder, base = self._save_target(str(inputs.get("filename_prefix", default_prefix)))
        source = await make_video(kind, self._scaled(spec))
        filename = self._next_filename(self.output_dir, subfolder, base, kind)
        target = self.output_dir / subfolder / filename
        target.parent.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(shutil.copyfile, source, target)
        return {
            "images": [{"filename": filename, "subfolder": subfolder, "type": "output"}],
            "animated": [True],
        }

    def _scaled(self, spec: MediaSpec) -> MediaSpec:
        side = max(spec.width, spec.height)
        if side <= self.max_video_side:
            return spec
        ratio = self.max_video_side / side
        width = max(2, int(spec.width * ratio) // 2 * 2)
        height = max(2, int(spec.height * ratio) // 2 * 2)
        return MediaSpec(width=width, height=height, frames=spec.frames, fps=spec.fps)


# ============================================================================ fixtures


@pytest.fixture
async def fake_comfy(tmp_path: Path) -> AsyncIterator[FakeComfyUI]:
    """A started FakeComfyUI, stopped after the test."""
    server = FakeComfyUI(tmp_path / "comfy")
    await server.start()
    try:
        yield server
    finally:
        await server.close()


@pytest.fixture
async def fake_comfy_factory(
    tmp_path: Path,
) -> AsyncIterator[Callable[[], Awaitable[FakeComfyUI]]]:
    """`make = fake_comfy_factory; a = await make(); b = await make()`: several backends."""
    servers: list[FakeComfyUI] = []

    async def make() -> FakeComfyUI:
        server = FakeComfyUI(tmp_path / f"comfy{len(servers)}")
        await server.start()
        servers.append(server)
        return server

    try:
        yield make
    finally:
        for server in servers:
            await server.close()


__all__ = [
    "ExecutionList",
    "FakeComfyUI",
    "MediaSpec",
    "RecordedRequest",
    "fake_comfy",
    "fake_comfy_factory",
    "load_object_info",
    "make_video",
    "media_spec",
    "validate_prompt",
]
