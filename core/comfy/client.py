"""HTTP client for one ComfyUI backend.

Every call has a timeout. Failures map onto `core.errors`:
  * connection error, timeout, 5xx            -> `ComfyUnavailable` (the backend may come back)
  * 400 from `POST /prompt`                   -> `ComfyValidationError` (retrying will not help)
  * any other unexpected status or body       -> `ComfyError`
Downloads stream to a temporary file next to the destination and are renamed when complete;
the destination name is ours, ComfyUI's filename/subfolder are only sent as query values.
"""

from __future__ import annotations

import asyncio
import json
import mimetypes
import os
import uuid
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

import aiohttp

from core.comfy.protocol import OutputRef, validation_reason
from core.errors import (
    ComfyError,
    ComfyUnavailable,
    ComfyValidationError,
    InvalidInput,
    describe,
)
from core.logs import get_logger

log = get_logger(__name__)

_JSON_BODY_LIMIT = 64 * 1024 * 1024
_CHUNK = 256 * 1024
_IN_MEMORY_BYTES = 16 * 1024 * 1024  # outputs up to this size are downloaded in one piece
_UNSAFE_NAME_CHARS = frozenset('/\\\x00:*?"<>|')


@dataclass(frozen=True, slots=True)
class SubmitResult:
    prompt_id: str
    number: int
    node_errors: Mapping[str, Any] | None = None  # outputs ComfyUI dropped as invalid


@dataclass(frozen=True, slots=True)
class QueueState:
    running_ids: tuple[str, ...]
    pending_ids: tuple[str, ...]
    # prompt id -> the WebSocket client id it was submitted with (ComfyUI sends that prompt's
    # events to that client only); prompts submitted without one are not listed.
    client_ids: Mapping[str, str] = field(default_factory=dict)

    def client_of(self, prompt_id: str) -> str | None:
        return self.client_ids.get(prompt_id)

    def __contains__(self, prompt_id: object) -> bool:
        return prompt_id in self.running_ids or prompt_id in self.pending_ids

    def position(self, prompt_id: str) -> int | None:
        """0 = running, 1.. = place in the pending queue, None = not queued."""
        if prompt_id in self.running_ids:
            return 0
        if prompt_id in self.pending_ids:
            return self.pending_ids.index(prompt_id) + 1
        return None


def safe_file_name(name: str) -> str:
    """`name` if it is a plain file name we may create; `InvalidInput` otherwise."""
    cleaned = name.strip()
    if (
        not cleaned
        or cleaned in {".", ".."}
        or ".." in cleaned
        or cleaned.startswith(".")
        or any(ch in _UNSAFE_NAME_CHARS or ord(ch) < 32 for ch in cleaned)
        or len(cleaned.encode()) > 200
    ):
        raise InvalidInput(
            f"unsafe file name {name!r}", user_message="That file name is not allowed."
        )
    return cleaned


def _short(body: bytes, limit: int = 500) -> str:
    return body[:limit].decode("utf-8", "replace")


async def _read_limited(response: aiohttp.ClientResponse, limit: int) -> bytes | None:
    """The whole body, or None when it is larger than `limit` (read in chunks, never more)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Mark a shared result's exception as seen (its callers may all have been cancelled)."""
    if not future.cancelled():
        future.exception()


def _client_ids(data: Mapping[str, Any]) -> dict[str, str]:
    """prompt id -> client id of the `/queue` items (`[number, id, prompt, extra_data, ...]`)."""
    found: dict[str, str] = {}
    for key in ("queue_running", "queue_pending"):
        for item in data.get(key, []):
            extra = item[3] if len(item) > 3 else None
            client = extra.get("client_id") if isinstance(extra, dict) else None
            if isinstance(client, str) and client:
                found[str(item[1])] = client
    return found


class ComfyClient:
    """Async client of one ComfyUI server; use `async with ComfyClient(url) as c:`."""

    def __init__(
        self,
        base_url: str,
        session: aiohttp.ClientSession | None = None,
        timeout_s: float = 30,
        *,
        connect_timeout_s: float = 10,
        download_timeout_s: float = 600,
        max_download_bytes: int = 2 * 1024**3,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self._timeout = aiohttp.ClientTimeout(
            total=timeout_s, connect=min(connect_timeout_s, timeout_s)
        )
        self._download_timeout = aiohttp.ClientTimeout(
            total=download_timeout_s,
            connect=min(connect_timeout_s, timeout_s),
            sock_read=timeout_s,
        )
        self.max_download_bytes = max_download_bytes
        self._session = session
        self._owns_session = session is None
        self._queue_waiters: asyncio.Future[QueueState] | None = None
        self._queue_reader: asyncio.Task[None] | None = None

    # -- lifecycle -----------------------------------------------------------------
    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            if not self._owns_session:
                raise ComfyError("the shared HTTP session is closed")
            self._session = aiohttp.ClientSession()
        return self._session

    async def close(self) -> None:
        """Close the HTTP session, only if this client created it."""
        if self._queue_reader is not None and not self._queue_reader.done():
            self._queue_reader.cancel()
        # A reader cancelled before it ever ran cannot fail its callers: fail them here.
        waiters, self._queue_waiters = self._queue_waiters, None
        if waiters is not None and not waiters.done():
            waiters.set_exception(ComfyUnavailable(f"GET {self.url('/queue')}: closed"))
        if self._owns_session and self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None if self._owns_session else self._session

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def url(self, path: str) -> str:
        return f"{self.base_url}/{path.lstrip('/')}"

    # -- plumbing ------------------------------------------------------------------
    async def _request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        data: Any = None,
        params: Mapping[str, str] | None = None,
    ) -> tuple[int, bytes]:
        url = self.url(path)
        try:
            async with self.session.request(
                method, url, json=json_body, data=data, params=params, timeout=self._timeout
            ) as response:
                body = await _read_limited(response, _JSON_BODY_LIMIT)
                if body is None:
                    raise ComfyError(f"{method} {path}: response larger than {_JSON_BODY_LIMIT}")
                status = response.status
        except TimeoutError as exc:
            raise ComfyUnavailable(f"{method} {url}: timed out after {self.timeout_s}s") from exc
        except aiohttp.ClientError as exc:
            raise ComfyUnavailable(f"{method} {url}: {describe(exc)}") from exc
        if status >= 500:
            raise ComfyUnavailable(f"{method} {url}: HTTP {status}: {_short(body)}")
        return status, body

    @staticmethod
    def _json(method: str, path: str, body: bytes) -> Any:
        try:
            return json.loads(body)
        except ValueError as exc:
            raise ComfyError(f"{method} {path}: invalid JSON: {_short(body, 200)!r}") from exc

    async def _get_json(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        status, body = await self._request("GET", path, params=params)
        if status != 200:
            raise ComfyError(f"GET {path}: HTTP {status}: {_short(body)}")
        return self._json("GET", path, body)

    async def _post_ok(self, path: str, payload: Any) -> None:
        status, body = await self._request("POST", path, json_body=payload)
        if status != 200:
            raise ComfyError(f"POST {path}: HTTP {status}: {_short(body)}")

    # -- prompts -------------------------------------------------------------------
    async def submit(
        self,
        prompt: Mapping[str, Any],
        *,
        prompt_id: str,
        client_id: str,
        extra_data: Mapping[str, Any] | None = None,
        front: bool = False,
    ) -> SubmitResult:
        """`POST /prompt`; ComfyUI keeps our `prompt_id`, so events can be matched early."""
        payload: dict[str, Any] = {"prompt": prompt, "client_id": client_id, "prompt_id": prompt_id}
        if extra_data:
            payload["extra_data"] = dict(extra_data)
        if front:
            payload["front"] = True
        status, body = await self._request("POST", "/prompt", json_body=payload)
        if status == 400:
            parsed: Any
            try:
                parsed = json.loads(body)
            except ValueError:
                parsed = None
            reason = validation_reason(parsed)
            log.warning("comfy prompt rejected", prompt_id=prompt_id, reason=reason)
            raise ComfyValidationError(
                f"POST /prompt {prompt_id} rejected: {_short(body, 2000)}", user_message=reason
            )
        if status != 200:
            raise ComfyError(f"POST /prompt {prompt_id}: HTTP {status}: {_short(body)}")
        data = self._json("POST", "/prompt", body)
        try:
            result = SubmitResult(
                prompt_id=str(data["prompt_id"]),
                number=int(data["number"]),
                node_errors=data.get("node_errors") or None,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ComfyError(f"POST /prompt: unexpected reply {_short(body, 300)!r}") from exc
        if result.prompt_id != prompt_id:
            log.warning("comfy replaced our prompt id", ours=prompt_id, theirs=result.prompt_id)
        if result.node_errors:
            log.warning(
                "comfy dropped invalid outputs", prompt_id=prompt_id, node_errors=result.node_errors
            )
        return result

    async def history(self, prompt_id: str) -> dict[str, Any] | None:
        """The history entry of a finished prompt; None while it is queued or running."""
        data = await self._get_json(f"/history/{prompt_id}")
        if not isinstance(data, dict):
            raise ComfyError(f"GET /history/{prompt_id}: not an object")
        entry = data.get(prompt_id)
        return entry if isinstance(entry, dict) else None

    async def queue(self) -> QueueState:
        """What the server runs and has queued.

        Concurrent callers share one request, always one that started after they called (so
        never an older snapshot than asking alone would give): every job tracked on a server
        polls it, and each answer lists every pending prompt in full, so N pollers asking
        separately cost O(N^2) bytes per round; shared, it is one request at a time."""
        waiters = self._queue_waiters
        if waiters is None:
            waiters = self._queue_waiters = asyncio.get_running_loop().create_future()
            waiters.add_done_callback(_retrieve)
            if self._queue_reader is None or self._queue_reader.done():
                self._queue_reader = asyncio.create_task(self._read_queues())
        return await asyncio.shield(waiters)

    async def _read_queues(self) -> None:
        """One request per batch of `queue()` callers, until no caller waits."""
        while (waiters := self._queue_waiters) is not None:
            self._queue_waiters = None  # callers from now on wait for the next request
            try:
                waiters.set_result(await self._read_queue())
            except asyncio.CancelledError:  # the client is closing: nobody may wait forever
                for pending in (waiters, self._queue_waiters):
                    if pending is not None and not pending.done():
                        pending.set_exception(ComfyUnavailable(f"GET {self.url('/queue')}: closed"))
                self._queue_waiters = None
                raise
            except Exception as exc:  # every caller gets what asking alone would have raised
                waiters.set_exception(exc)

    async def _read_queue(self) -> QueueState:
        data = await self._get_json("/queue")
        try:
            running = [(int(item[0]), str(item[1])) for item in data.get("queue_running", [])]
            pending = [(int(item[0]), str(item[1])) for item in data.get("queue_pending", [])]
        except (AttributeError, IndexError, KeyError, TypeError, ValueError) as exc:
            raise ComfyError("GET /queue: unexpected shape") from exc
        pending.sort(key=lambda item: item[0])
        return QueueState(
            running_ids=tuple(pid for _, pid in running),
            pending_ids=tuple(pid for _, pid in pending),
            client_ids=_client_ids(data),
        )

    async def delete_from_queue(self, prompt_ids: Iterable[str]) -> None:
        """Remove pending prompts (unknown ids are ignored by ComfyUI)."""
        ids = list(prompt_ids)
        if ids:
            await self._post_ok("/queue", {"delete": ids})

    async def interrupt(self, prompt_id: str) -> None:
        """Stop `prompt_id` if it is the one running; a no-op otherwise."""
        await self._post_ok("/interrupt", {"prompt_id": prompt_id})

    async def interrupt_all(self) -> None:
        """Stop whatever is running, whoever submitted it."""
        await self._post_ok("/interrupt", {})

    async def cancel(self, prompt_id: str) -> None:
        """Drop `prompt_id` from the queue if pending, interrupt it if running."""
        await self.delete_from_queue([prompt_id])
        await self.interrupt(prompt_id)

    async def delete_history(self, prompt_ids: Iterable[str]) -> None:
        ids = list(prompt_ids)
        if ids:
            await self._post_ok("/history", {"delete": ids})

    # -- info ----------------------------------------------------------------------
    async def object_info(self, node_class: str | None = None) -> dict[str, Any]:
        path = "/object_info" if node_class is None else f"/object_info/{node_class}"
        data = await self._get_json(path)
        if not isinstance(data, dict):
            raise ComfyError(f"GET {path}: not an object")
        return data

    async def system_stats(self) -> dict[str, Any]:
        data = await self._get_json("/system_stats")
        if not isinstance(data, dict):
            raise ComfyError("GET /system_stats: not an object")
        return data

    # -- files ---------------------------------------------------------------------
    async def upload_image(
        self,
        image: Path | bytes,
        name: str,
        *,
        subfolder: str = "",
        overwrite: bool = True,
    ) -> str:
        """Upload to ComfyUI's input folder; returns the value for a `LoadImage.image` input."""
        filename = safe_file_name(name)
        if subfolder:
            for part in subfolder.split("/"):
                safe_file_name(part)
        content = image if isinstance(image, bytes) else await asyncio.to_thread(image.read_bytes)
        form = aiohttp.FormData()
        content_type = mimetypes.guess_type(filename)[0] or "application/octet-stream"
        form.add_field("image", content, filename=filename, content_type=content_type)
        form.add_field("type", "input")
        form.add_field("overwrite", "true" if overwrite else "false")
        if subfolder:
            form.add_field("subfolder", subfolder)
        status, body = await self._request("POST", "/upload/image", data=form)
        if status != 200:
            raise ComfyError(f"POST /upload/image {filename}: HTTP {status}: {_short(body)}")
        data = self._json("POST", "/upload/image", body)
        if not isinstance(data, dict) or not isinstance(data.get("name"), str):
            raise ComfyError(f"POST /upload/image: unexpected reply {_short(body, 300)!r}")
        stored_sub = str(data.get("subfolder") or "")
        return f"{stored_sub}/{data['name']}" if stored_sub else str(data["name"])

    @asynccontextmanager
    async def _view(
        self, ref: OutputRef
    ) -> AsyncIterator[tuple[aiohttp.ClientResponse, int | None]]:
        """`GET /view` of one output: the response (status checked) and its declared size;
        a timeout or a connection error while it is read is `ComfyUnavailable`."""
        params = {"filename": ref.filename, "subfolder": ref.subfolder, "type": ref.type}
        try:
            async with self.session.get(
                self.url("/view"), params=params, timeout=self._download_timeout
            ) as response:
                yield response, self._check_view(response, ref)
        except TimeoutError as exc:
            raise ComfyUnavailable(f"GET /view {ref.filename}: timed out") from exc
        except aiohttp.ClientError as exc:
            raise ComfyUnavailable(f"GET /view {ref.filename}: {describe(exc)}") from exc

    async def fetch(self, ref: OutputRef) -> bytes:
        """One output in memory (an image: its post-processing reads all of it anyway)."""
        async with self._view(ref) as (response, declared):
            body = await _read_limited(response, self.max_download_bytes)
        if body is None:
            raise ComfyError(
                f"GET /view {ref.filename}: over {self.max_download_bytes} bytes",
                user_message="The result is too large.",
            )
        if declared is not None and len(body) != declared:
            raise ComfyUnavailable(f"GET /view {ref.filename}: {len(body)} of {declared} bytes")
        log.debug("comfy output fetched", filename=ref.filename, bytes=len(body))
        return body

    async def download(self, ref: OutputRef, dest_dir: Path, name: str) -> Path:
        """Stream one output to `dest_dir/name` (temp file + rename); returns the path."""
        filename = safe_file_name(name)
        dest_dir = Path(dest_dir)
        final = dest_dir / filename
        if final.resolve().parent != dest_dir.resolve():
            raise InvalidInput(
                f"{name!r} escapes {dest_dir}", user_message="That file name is not allowed."
            )
        tmp = dest_dir / f".{filename}.{uuid.uuid4().hex}.part"
        try:
            async with self._view(ref) as (response, declared):
                if declared is not None and declared <= _IN_MEMORY_BYTES:
                    size = await self._save_small(response, ref, tmp, final, declared)
                else:
                    size = await self._save_streamed(response, ref, tmp, final, declared)
        finally:
            if tmp.exists():
                tmp.unlink(missing_ok=True)
        log.debug("comfy output downloaded", filename=ref.filename, path=str(final), bytes=size)
        return final

    def _check_view(self, response: aiohttp.ClientResponse, ref: OutputRef) -> int | None:
        """The declared size of a `/view` answer; raises for an error status or a file over
        the limit."""
        if response.status >= 500:
            raise ComfyUnavailable(f"GET /view {ref.filename}: HTTP {response.status}")
        if response.status != 200:
            raise ComfyError(
                f"GET /view {ref.filename} ({ref.type}): HTTP {response.status}",
                user_message="The result file is missing on the GPU server.",
            )
        declared = response.content_length
        if response.headers.get(aiohttp.hdrs.CONTENT_ENCODING, "identity").lower() != "identity":
            declared = None  # the size of the encoded body, not of the (decoded) file
        if declared is not None and declared > self.max_download_bytes:
            raise ComfyError(
                f"GET /view {ref.filename}: {declared} bytes > {self.max_download_bytes}",
                user_message="The result is too large.",
            )
        return declared

    async def _save_small(
        self,
        response: aiohttp.ClientResponse,
        ref: OutputRef,
        tmp: Path,
        final: Path,
        declared: int,
    ) -> int:
        """A small output (an image): read in memory, then written (with its folder) in one
        thread hop."""
        body = await response.read()
        if len(body) != declared:
            raise ComfyUnavailable(f"GET /view {ref.filename}: {len(body)} of {declared} bytes")
        await asyncio.to_thread(_write_new_file, tmp, final, body)
        return len(body)

    async def _save_streamed(
        self,
        response: aiohttp.ClientResponse,
        ref: OutputRef,
        tmp: Path,
        final: Path,
        declared: int | None,
    ) -> int:
        """A large output (a video) or one of unknown size: streamed to disk by chunks."""
        size = 0
        await asyncio.to_thread(final.parent.mkdir, parents=True, exist_ok=True)
        handle: IO[bytes] = await asyncio.to_thread(tmp.open, "wb")
        try:
            async for chunk in response.content.iter_chunked(_CHUNK):
                size += len(chunk)
                if size > self.max_download_bytes:
                    raise ComfyError(
                        f"GET /view {ref.filename}: over {self.max_download_bytes} bytes",
                        user_message="The result is too large.",
                    )
                await asyncio.to_thread(handle.write, chunk)
        finally:
            await asyncio.to_thread(handle.close)
        if declared is not None and size != declared:
            raise ComfyUnavailable(f"GET /view {ref.filename}: {size} of {declared} bytes")
        await asyncio.to_thread(os.replace, tmp, final)
        return size


def _write_new_file(tmp: Path, final: Path, data: bytes) -> None:
    """`data` to `final` through `tmp`, creating its folder (blocking)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp.write_bytes(data)
    os.replace(tmp, final)
