"""ComfyUI wire protocol, pure: WebSocket frames -> typed events, and readable failure reasons.

Nothing here does I/O. Every parser is total: a frame it does not understand becomes `Unknown`,
never an exception, because a newer ComfyUI may add message types at any time.
Shapes follow a recorded ComfyUI 0.3.64 (see tests/fixtures/comfyui/).
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeAlias

# Binary frame types (comfy.server.BinaryEventTypes).
BINARY_PREVIEW_IMAGE = 1
BINARY_UNENCODED_PREVIEW_IMAGE = 2
BINARY_TEXT = 3
BINARY_PREVIEW_IMAGE_WITH_METADATA = 4

_IMAGE_FORMATS = {1: "image/jpeg", 2: "image/png"}
_U32 = struct.Struct(">I")

SAMPLER_NODES = frozenset(
    {"KSampler", "KSamplerAdvanced", "SamplerCustom", "SamplerCustomAdvanced"}
)


@dataclass(frozen=True, slots=True)
class Status:
    """Queue size broadcast to every socket; `sid` only in the first frame after connecting."""

    queue_remaining: int
    sid: str | None = None
    prompt_id: str | None = None


@dataclass(frozen=True, slots=True)
class FeatureFlags:
    """The server's answer to our `feature_flags` frame."""

    flags: Mapping[str, Any]
    prompt_id: str | None = None


@dataclass(frozen=True, slots=True)
class ExecutionStart:
    prompt_id: str | None
    timestamp: int | None = None


@dataclass(frozen=True, slots=True)
class ExecutionCached:
    prompt_id: str | None
    nodes: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Executing:
    """A node started; `node is None` means the whole prompt is finished (any outcome)."""

    prompt_id: str | None
    node: str | None
    display_node: str | None = None

    @property
    def finished(self) -> bool:
        return self.node is None


@dataclass(frozen=True, slots=True)
class Progress:
    """One sampler step: `value` of `max` done."""

    prompt_id: str | None
    node: str | None
    value: int
    max: int


@dataclass(frozen=True, slots=True)
class NodeState:
    node_id: str
    value: float
    max: float
    state: str  # "pending" | "running" | "finished" | "error"


@dataclass(frozen=True, slots=True)
class ProgressState:
    prompt_id: str | None
    nodes: Mapping[str, NodeState]


@dataclass(frozen=True, slots=True)
class Executed:
    """An output node finished; `output` is its UI dict (`images`, `animated`, ...)."""

    prompt_id: str | None
    node: str
    output: Mapping[str, Any]
    display_node: str | None = None


@dataclass(frozen=True, slots=True)
class ExecutionSuccess:
    prompt_id: str | None
    timestamp: int | None = None


@dataclass(frozen=True, slots=True)
class ExecutionError:
    prompt_id: str | None
    node_id: str | None
    node_type: str | None
    exception_type: str
    exception_message: str
    traceback: tuple[str, ...] = ()
    executed: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ExecutionInterrupted:
    prompt_id: str | None
    node_id: str | None = None
    node_type: str | None = None
    executed: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Preview:
    """A sampler preview image. Type-1 frames carry no ids: the socket fills in `prompt_id`."""

    prompt_id: str | None
    node_id: str | None
    mime: str
    data: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class Unknown:
    """Anything not understood (new message type, malformed frame). Never raised."""

    type: str
    data: Any = field(default=None, repr=False)
    prompt_id: str | None = None


@dataclass(frozen=True, slots=True)
class Reconnected:
    """Local event, not from ComfyUI: the socket was down and is back; events may be lost,
    so the subscriber should read `/history` for its prompt."""

    prompt_id: str | None


@dataclass(frozen=True, slots=True)
class Disconnected:
    """Local event, not from ComfyUI: the socket just went down; until `Reconnected`, the
    subscriber hears nothing from ComfyUI and should poll `/history` itself."""

    prompt_id: str | None


Event: TypeAlias = (
    Status
    | FeatureFlags
    | ExecutionStart
    | ExecutionCached
    | Executing
    | Progress
    | ProgressState
    | Executed
    | ExecutionSuccess
    | ExecutionError
    | ExecutionInterrupted
    | Preview
    | Unknown
    | Reconnected
    | Disconnected
)

# Events after which ComfyUI sends nothing more for the prompt except `executing{node:null}`.
TERMINAL_TYPES = (ExecutionSuccess, ExecutionError, ExecutionInterrupted)


def is_terminal(event: Event) -> bool:
    """True for the last event of a prompt: success/error/interrupted or `executing{node:null}`."""
    if isinstance(event, Executing):
        return event.finished
    return isinstance(event, TERMINAL_TYPES)


# --------------------------------------------------------------------------- text frames


def _opt_str(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str | int):
        return str(value)
    raise TypeError(f"not an id: {value!r}")


def _str_tuple(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list | tuple):
        raise TypeError("not a list")
    return tuple(str(v) for v in value)


def _opt_int(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError("not a number")
    return int(value)


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError("not a number")
    return float(value)


def _node_states(nodes: Any) -> dict[str, NodeState]:
    if not isinstance(nodes, dict):
        raise TypeError("nodes is not an object")
    out: dict[str, NodeState] = {}
    for key, item in nodes.items():
        out[str(key)] = NodeState(
            node_id=str(item.get("node_id", key)),
            value=_number(item.get("value", 0)),
            max=_number(item.get("max", 1)),
            state=str(item.get("state", "")),
        )
    return out


def _event_from(kind: str, data: dict[str, Any]) -> Event:
    pid = _opt_str(data.get("prompt_id"))
    if kind == "status":
        status = data.get("status") or {}
        remaining = (status.get("exec_info") or {}).get("queue_remaining", 0)
        return Status(queue_remaining=int(_number(remaining)), sid=_opt_str(data.get("sid")))
    if kind == "feature_flags":
        return FeatureFlags(flags=dict(data))
    if kind == "execution_start":
        return ExecutionStart(prompt_id=pid, timestamp=_opt_int(data.get("timestamp")))
    if kind == "execution_cached":
        return ExecutionCached(prompt_id=pid, nodes=_str_tuple(data.get("nodes")))
    if kind == "executing":
        return Executing(
            prompt_id=pid,
            node=_opt_str(data.get("node")),
            display_node=_opt_str(data.get("display_node")),
        )
    if kind == "progress":
        return Progress(
            prompt_id=pid,
            node=_opt_str(data.get("node")),
            value=int(_number(data["value"])),
            max=int(_number(data["max"])),
        )
    if kind == "progress_state":
        return ProgressState(prompt_id=pid, nodes=_node_states(data.get("nodes")))
    if kind == "executed":
        output = data.get("output")
        if output is None:
            output = {}
        if not isinstance(output, dict):
            raise TypeError("output is not an object")
        node = _opt_str(data.get("node"))
        if node is None:
            raise TypeError("executed without node")
        return Executed(
            prompt_id=pid,
            node=node,
            output=output,
            display_node=_opt_str(data.get("display_node")),
        )
    if kind == "execution_success":
        return ExecutionSuccess(prompt_id=pid, timestamp=_opt_int(data.get("timestamp")))
    if kind == "execution_error":
        return ExecutionError(
            prompt_id=pid,
            node_id=_opt_str(data.get("node_id")),
            node_type=_opt_str(data.get("node_type")),
            exception_type=str(data.get("exception_type") or ""),
            exception_message=str(data.get("exception_message") or ""),
            traceback=_str_tuple(data.get("traceback")),
            executed=_str_tuple(data.get("executed")),
        )
    if kind == "execution_interrupted":
        return ExecutionInterrupted(
            prompt_id=pid,
            node_id=_opt_str(data.get("node_id")),
            node_type=_opt_str(data.get("node_type")),
            executed=_str_tuple(data.get("executed")),
        )
    return Unknown(type=kind, data=data, prompt_id=pid)


def parse_text(text: str | bytes) -> Event:
    """Parse one text frame `{"type": ..., "data": {...}}`."""
    try:
        message = json.loads(text)
    except (ValueError, UnicodeDecodeError):
        return Unknown(type="invalid_json", data=text)
    if not isinstance(message, dict):
        return Unknown(type="invalid_message", data=message)
    kind = message.get("type")
    data = message.get("data")
    if not isinstance(kind, str):
        return Unknown(type="invalid_message", data=message)
    if not isinstance(data, dict):
        return Unknown(type=kind, data=data)
    try:
        return _event_from(kind, data)
    except (KeyError, TypeError, ValueError, AttributeError):
        pid = data.get("prompt_id")
        return Unknown(type=kind, data=data, prompt_id=pid if isinstance(pid, str) else None)


# ------------------------------------------------------------------------- binary frames


def parse_binary(frame: bytes) -> Event:
    """Parse one binary frame: `[u32 BE type][payload]`."""
    if len(frame) < 4:
        return Unknown(type="binary:short", data=bytes(frame))
    (kind,) = _U32.unpack_from(frame, 0)
    if kind == BINARY_PREVIEW_IMAGE:
        if len(frame) < 8:
            return Unknown(type="binary:1", data=bytes(frame))
        (fmt,) = _U32.unpack_from(frame, 4)
        mime = _IMAGE_FORMATS.get(fmt, "application/octet-stream")
        return Preview(prompt_id=None, node_id=None, mime=mime, data=bytes(frame[8:]))
    if kind == BINARY_PREVIEW_IMAGE_WITH_METADATA:
        if len(frame) < 8:
            return Unknown(type="binary:4", data=bytes(frame))
        (meta_len,) = _U32.unpack_from(frame, 4)
        end = 8 + meta_len
        if end > len(frame):
            return Unknown(type="binary:4", data=bytes(frame))
        try:
            meta = json.loads(frame[8:end])
        except (ValueError, UnicodeDecodeError):
            return Unknown(type="binary:4", data=bytes(frame))
        if not isinstance(meta, dict):
            return Unknown(type="binary:4", data=bytes(frame))
        pid = meta.get("prompt_id")
        node = meta.get("node_id")
        image_type = meta.get("image_type")
        return Preview(
            prompt_id=pid if isinstance(pid, str) else None,
            node_id=str(node) if isinstance(node, str | int) else None,
            mime=image_type if isinstance(image_type, str) else "application/octet-stream",
            data=bytes(frame[end:]),
        )
    return Unknown(type=f"binary:{kind}", data=bytes(frame))


def encode_preview(data: bytes, *, mime: str = "image/jpeg") -> bytes:
    """Build a type-1 frame (used by the fake server and tests)."""
    fmt = 2 if mime == "image/png" else 1
    return _U32.pack(BINARY_PREVIEW_IMAGE) + _U32.pack(fmt) + data


def encode_preview_with_metadata(data: bytes, metadata: Mapping[str, Any]) -> bytes:
    """Build a type-4 frame the way ComfyUI does (`json.dumps` with default separators)."""
    meta = json.dumps(dict(metadata)).encode()
    return _U32.pack(BINARY_PREVIEW_IMAGE_WITH_METADATA) + _U32.pack(len(meta)) + meta + data


# --------------------------------------------------------------------------- reasons

_MAX_REASON = 300
_PATH_RE = re.compile(r"(?:[A-Za-z]:\\|/)(?:[^\s'\",:;()\[\]]+[/\\])+[^\s'\",:;()\[\]]*")


def _scrub(text: str) -> str:
    """One line, no file-system paths, bounded length."""
    line = " ".join(str(text).split())
    line = _PATH_RE.sub("<path>", line)
    if len(line) > _MAX_REASON:
        line = line[: _MAX_REASON - 1].rstrip() + "…"
    return line


def _node_error_text(node_id: str, entry: Any) -> str | None:
    if not isinstance(entry, dict):
        return None
    class_type = entry.get("class_type") or "unknown node"
    errors = entry.get("errors")
    if not isinstance(errors, list) or not errors:
        return None
    first = errors[0] if isinstance(errors[0], dict) else {}
    message = str(first.get("message") or "invalid").rstrip(".")
    details = str(first.get("details") or "").strip()
    text = f"{class_type} (node {node_id}): {message}"
    if details:
        text += f" ({details})"
    if len(errors) > 1:
        text += f" and {len(errors) - 1} more problem(s)"
    return text


def validation_reason(body: Any) -> str:
    """One short sentence from a 400 `/prompt` body: which node class, what is wrong."""
    if not isinstance(body, dict):
        return "The GPU server rejected the workflow."
    error = body.get("error")
    node_errors = body.get("node_errors")
    parts: list[str] = []
    if isinstance(node_errors, dict):
        for node_id, entry in node_errors.items():
            text = _node_error_text(str(node_id), entry)
            if text:
                parts.append(text)
    if parts:
        reason = parts[0]
        if len(parts) > 1:
            reason += f"; {len(parts) - 1} more node(s) invalid"
        return _scrub(f"The workflow was rejected: {reason}.")
    if isinstance(error, dict):
        message = str(error.get("message") or "invalid workflow").strip().rstrip(".")
        details = str(error.get("details") or "").strip()
        if details and details != message:
            message += f" ({details})"
        return _scrub(f"The workflow was rejected: {message}.")
    if isinstance(error, str) and error:
        return _scrub(f"The workflow was rejected: {error.rstrip('.')}.")
    return "The GPU server rejected the workflow."


def execution_reason(error: ExecutionError) -> str:
    """One short sentence for an `execution_error`: which node failed and why."""
    where = error.node_type or "a node"
    if error.node_id:
        where += f" (node {error.node_id})"
    exc_type = error.exception_type.rsplit(".", 1)[-1]
    message = error.exception_message.strip().splitlines()[0] if error.exception_message else ""
    what = f"{exc_type}: {message}" if exc_type and message else exc_type or message or "error"
    return _scrub(f"Generation failed in {where}: {what}")


# ----------------------------------------------------------------------------- outputs

_MEDIA_KEYS = ("images", "gifs", "videos", "video", "audio")
_VIDEO_EXT = frozenset({".mp4", ".webm", ".mov", ".mkv", ".avi", ".m4v"})
_AUDIO_EXT = frozenset({".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".aac"})
_ANIMATABLE_EXT = frozenset({".webp", ".gif", ".png", ".apng"})


@dataclass(frozen=True, slots=True)
class OutputRef:
    """One file ComfyUI produced. All fields are untrusted text from the server."""

    node_id: str
    filename: str
    subfolder: str
    type: str
    animated: bool = False

    @property
    def extension(self) -> str:
        dot = self.filename.rfind(".")
        return self.filename[dot:].lower() if dot > 0 else ""

    @property
    def kind(self) -> str:
        """ "video", "animation" (animated webp/gif/png), "audio" or "image"."""
        ext = self.extension
        if ext in _VIDEO_EXT:
            return "video"
        if ext in _AUDIO_EXT:
            return "audio"
        if ext == ".gif" or (self.animated and ext in _ANIMATABLE_EXT):
            return "animation"
        return "image"


def outputs_from_node_output(node_id: str, output: Mapping[str, Any]) -> list[OutputRef]:
    """Files of one node's UI output (an `executed` event's `output` or a history entry)."""
    refs: list[OutputRef] = []
    animated_flags = output.get("animated")
    for key in _MEDIA_KEYS:
        items = output.get(key)
        if not isinstance(items, list):
            continue
        for index, item in enumerate(items):
            if not isinstance(item, dict):
                continue
            filename = item.get("filename")
            if not isinstance(filename, str) or not filename:
                continue
            animated = key in ("gifs", "videos", "video")
            if isinstance(animated_flags, list) and key == "images":
                flag = animated_flags[index] if index < len(animated_flags) else animated_flags[-1]
                animated = animated or bool(flag)
            refs.append(
                OutputRef(
                    node_id=str(node_id),
                    filename=filename,
                    subfolder=str(item.get("subfolder") or ""),
                    type=str(item.get("type") or "output"),
                    animated=animated,
                )
            )
    return refs


def outputs_from_history(history_entry: Mapping[str, Any]) -> list[OutputRef]:
    """Files listed in one `/history/{id}` entry (the value under the prompt id), node order."""
    outputs = history_entry.get("outputs")
    if not isinstance(outputs, dict):
        return []
    refs: list[OutputRef] = []
    for node_id, node_output in outputs.items():
        if isinstance(node_output, dict):
            refs.extend(outputs_from_node_output(str(node_id), node_output))
    return refs


def kept_outputs(refs: Iterable[OutputRef]) -> list[OutputRef]:
    """The files a job keeps: saved ones (not `temp` previews, like PreviewImage's), images
    and videos (not audio)."""
    return [ref for ref in refs if ref.type == "output" and ref.kind != "audio"]


@dataclass(frozen=True, slots=True)
class HistoryOutcome:
    """How a finished prompt ended, read from its history entry."""

    status: str  # "success" | "error" | "interrupted" | other text ComfyUI used
    completed: bool
    error: ExecutionError | None = None

    @property
    def succeeded(self) -> bool:
        return self.status == "success"


def outcome_from_history(history_entry: Mapping[str, Any]) -> HistoryOutcome:
    """Success, error (with the `execution_error` details) or interrupted, from `status`."""
    status = history_entry.get("status")
    if not isinstance(status, dict):
        return HistoryOutcome(status="unknown", completed=False)
    status_str = str(status.get("status_str") or "unknown")
    completed = bool(status.get("completed"))
    error: ExecutionError | None = None
    interrupted = False
    messages = status.get("messages")
    if isinstance(messages, list):
        for message in messages:
            if not isinstance(message, list | tuple) or len(message) != 2:
                continue
            kind, data = message
            if kind == "execution_interrupted":
                interrupted = True
            if kind == "execution_error" and isinstance(data, dict):
                event = _safe_event("execution_error", data)
                if isinstance(event, ExecutionError):
                    error = event
    if interrupted and error is None:
        status_str = "interrupted"
    return HistoryOutcome(status=status_str, completed=completed, error=error)


def _safe_event(kind: str, data: dict[str, Any]) -> Event:
    try:
        return _event_from(kind, data)
    except (KeyError, TypeError, ValueError, AttributeError):
        return Unknown(type=kind, data=data)
