"""ComfyClient failure paths over real HTTP: bad statuses and bodies, size limits, streamed
downloads and their clean-up, closing while `queue()` callers wait. Against the fake ComfyUI, or
a tiny aiohttp/raw server for what a healthy ComfyUI never sends."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from structlog.testing import capture_logs

from core.comfy import client as client_module
from core.comfy import protocol as p
from core.comfy.client import ComfyClient, SubmitResult
from core.errors import ComfyError, ComfyUnavailable, ComfyValidationError, InvalidInput
from tests.fakes.comfyui import FakeComfyUI
from tests.integration.engine_kit import Handler, serve

CLIP = p.OutputRef("9", "clip.mp4", "probe", "output", animated=True)
# Deterministic, incompressible-looking bytes: several 256 KiB client chunks.
VIDEO = bytes((i * 7919 + i // 251) % 256 for i in range(600_000))


@asynccontextmanager
async def raw_server(answer: bytes) -> AsyncIterator[str]:
    """A server that reads a request, writes `answer` as is, then hangs up."""

    async def respond(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answer)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(respond, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()


def replying(status: int, text: str, content_type: str = "application/json") -> Handler:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(status=status, text=text, content_type=content_type)

    return handler


async def chunked_video(request: web.Request) -> web.StreamResponse:
    """VIDEO with no Content-Length (chunked), in several writes."""
    response = web.StreamResponse(headers={"Content-Type": "video/mp4"})
    response.enable_chunked_encoding()
    await response.prepare(request)
    for start in range(0, len(VIDEO), 100_000):
        await response.write(VIDEO[start : start + 100_000])
    await response.write_eof()
    return response


def tiny_workflow(color: int = 0) -> dict[str, Any]:
    return {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": color},
        },
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "t"}},
    }


def files_in(folder: Path) -> list[str]:
    return sorted(x.name for x in folder.iterdir()) if folder.exists() else []


# ------------------------------------------------------------------ bad statuses and bodies


async def test_invalid_json_is_a_comfy_error() -> None:
    async with (
        serve(replying(200, "<html>proxy error</html>", "text/html")) as url,
        ComfyClient(url) as client,
    ):
        with pytest.raises(ComfyError) as caught:
            await client.history("p1")
    assert type(caught.value) is ComfyError
    assert str(caught.value) == "GET /history/p1: invalid JSON: '<html>proxy error</html>'"


@pytest.mark.parametrize(
    ("call", "status", "message"),
    [
        ("history", 404, "GET /history/p1: HTTP 404: not here"),
        ("interrupt", 403, "POST /interrupt: HTTP 403: not here"),
        ("upload", 413, "POST /upload/image in.png: HTTP 413: not here"),
    ],
)
async def test_unexpected_status_is_a_comfy_error(call: str, status: int, message: str) -> None:
    async with (
        serve(replying(status, "not here", "text/plain")) as url,
        ComfyClient(url) as client,
    ):
        calls: dict[str, Callable[[], Awaitable[Any]]] = {
            "history": lambda: client.history("p1"),
            "interrupt": lambda: client.interrupt("p1"),
            "upload": lambda: client.upload_image(b"\x89PNG", "in.png"),
        }
        with pytest.raises(ComfyError) as caught:
            await calls[call]()
    assert type(caught.value) is ComfyError  # not retried as an outage
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("call", "message"),
    [
        ("history", "GET /history/p1: not an object"),
        ("object_info", "GET /object_info: not an object"),
        ("object_info_one", "GET /object_info/SaveImage: not an object"),
        ("system_stats", "GET /system_stats: not an object"),
    ],
)
async def test_json_that_is_not_an_object_is_a_comfy_error(call: str, message: str) -> None:
    async with serve(replying(200, '["a", 1]')) as url, ComfyClient(url) as client:
        calls: dict[str, Callable[[], Awaitable[Any]]] = {
            "history": lambda: client.history("p1"),
            "object_info": lambda: client.object_info(),
            "object_info_one": lambda: client.object_info("SaveImage"),
            "system_stats": lambda: client.system_stats(),
        }
        with pytest.raises(ComfyError) as caught:
            await calls[call]()
    assert type(caught.value) is ComfyError
    assert str(caught.value) == message


async def test_json_reply_over_the_limit_is_refused(
    fake_comfy: FakeComfyUI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(client_module, "_JSON_BODY_LIMIT", 100_000)  # object_info is ~0.5 MB
    async with ComfyClient(fake_comfy.base_url) as client:
        with pytest.raises(ComfyError) as caught:
            await client.object_info()
        stats = await client.system_stats()  # a small answer still passes
    assert type(caught.value) is ComfyError
    assert str(caught.value) == "GET /object_info: response larger than 100000"
    assert stats["system"]["comfyui_version"] == "0.3.64"


async def test_rejection_with_a_body_that_is_not_json_keeps_a_generic_reason() -> None:
    async with (
        serve(replying(400, "<html>Bad Request</html>", "text/html")) as url,
        ComfyClient(url) as client,
    ):
        with pytest.raises(ComfyValidationError) as caught:
            await client.submit({}, prompt_id="p1", client_id="c")
    assert str(caught.value) == "POST /prompt p1 rejected: <html>Bad Request</html>"
    assert caught.value.user_message == "The GPU server rejected the workflow."


MALFORMED_REPLIES = {
    "submit": {
        "empty": "{}",
        "no number": '{"prompt_id": "p1"}',
        "number not a number": '{"prompt_id": "p1", "number": "first"}',
        "null number": '{"prompt_id": "p1", "number": null}',
        "a list": '["p1", 1]',
    },
    "queue": {
        "a list": "[]",
        "short item": '{"queue_running": [[1]], "queue_pending": []}',
        "null list": '{"queue_running": null, "queue_pending": []}',
        "number not a number": (
            '{"queue_running": [], "queue_pending": [["first", "p1", {}, {}, []]]}'
        ),
        "item an object": '{"queue_running": [{"0": 1, "1": "p1"}], "queue_pending": []}',
    },
    "upload": {"no name": '{"filename": "in.png"}', "name": '{"name": 5}', "list": "[]"},
}


@pytest.mark.parametrize(
    ("call", "reply"),
    [
        pytest.param(call, reply, id=f"{call}: {name}")
        for call, replies in MALFORMED_REPLIES.items()
        for name, reply in replies.items()
    ],
)
async def test_malformed_reply_is_a_comfy_error(call: str, reply: str) -> None:
    async with serve(replying(200, reply)) as url, ComfyClient(url) as client:
        calls: dict[str, Callable[[], Awaitable[Any]]] = {
            "submit": lambda: client.submit({}, prompt_id="p1", client_id="c"),
            "queue": lambda: client.queue(),
            "upload": lambda: client.upload_image(b"\x89PNG", "in.png"),
        }
        with pytest.raises(ComfyError) as caught:
            await calls[call]()
    expected = {
        "submit": f"POST /prompt: unexpected reply {reply!r}",
        "queue": "GET /queue: unexpected shape",
        "upload": f"POST /upload/image: unexpected reply {reply!r}",
    }
    assert type(caught.value) is ComfyError  # never a bare KeyError/TypeError
    assert str(caught.value) == expected[call]


async def test_replaced_prompt_id_is_returned_and_logged() -> None:
    reply = json.dumps({"prompt_id": "theirs", "number": 3, "node_errors": {}})
    async with serve(replying(200, reply)) as url, ComfyClient(url) as client:
        with capture_logs() as logs:
            result = await client.submit({}, prompt_id="ours", client_id="c")
    assert result == SubmitResult(prompt_id="theirs", number=3, node_errors=None)
    assert {
        "event": "comfy replaced our prompt id",
        "ours": "ours",
        "theirs": "theirs",
        "log_level": "warning",
    } in logs


# ------------------------------------------------------------------- session and closing


async def test_a_closed_shared_session_is_an_error_and_not_replaced(
    fake_comfy: FakeComfyUI,
) -> None:
    session = aiohttp.ClientSession()
    await session.close()
    client = ComfyClient(fake_comfy.base_url, session)
    with pytest.raises(ComfyError) as caught:
        await client.history("p1")
    assert type(caught.value) is ComfyError
    assert str(caught.value) == "the shared HTTP session is closed"
    assert fake_comfy.requests == []  # no private session was opened behind the owner's back


async def test_close_fails_queue_callers_in_flight_and_waiting() -> None:
    received: list[str] = []
    arrived = asyncio.Event()

    async def never_answers(request: web.Request) -> web.Response:
        received.append(request.path)
        arrived.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async with serve(never_answers) as url:
        client = ComfyClient(url, timeout_s=30)
        first = asyncio.create_task(client.queue())
        await asyncio.wait_for(arrived.wait(), 1)  # its request is in flight
        second = asyncio.create_task(client.queue())  # waits for the next request
        await asyncio.sleep(0)
        await client.close()
        async with asyncio.timeout(1):
            results = await asyncio.gather(first, second, return_exceptions=True)
    assert [type(r) for r in results] == [ComfyUnavailable, ComfyUnavailable]
    assert [str(r) for r in results] == [f"GET {url}/queue: closed"] * 2
    assert received == ["/queue"]


async def test_close_right_after_a_queue_call_does_not_leave_it_waiting(
    fake_comfy: FakeComfyUI,
) -> None:
    client = ComfyClient(fake_comfy.base_url, timeout_s=5)
    waiting = asyncio.create_task(client.queue())
    await asyncio.sleep(0)  # queue() has created its reader task; the reader has not run yet
    await client.close()
    with pytest.raises(ComfyUnavailable) as caught:
        async with asyncio.timeout(1):
            await waiting
    assert str(caught.value) == f"GET {fake_comfy.base_url}/queue: closed"
    assert fake_comfy.count("GET", "/queue") == 0
    async with client:  # the client is not wedged: a later call asks the server again
        async with asyncio.timeout(1):
            state = await client.queue()
    assert (state.running_ids, state.pending_ids) == ((), ())


# --------------------------------------------------------------------- server operations


async def test_front_submission_jumps_the_queue(fake_comfy: FakeComfyUI) -> None:
    fake_comfy.hold()
    ids = [str(uuid.uuid4()) for _ in range(3)]
    async with ComfyClient(fake_comfy.base_url, timeout_s=5) as client:
        await client.submit(tiny_workflow(1), prompt_id=ids[0], client_id="c")
        await client.submit(tiny_workflow(2), prompt_id=ids[1], client_id="c")
        await client.submit(tiny_workflow(3), prompt_id=ids[2], client_id="c", front=True)
        state = await client.queue()
    assert state.pending_ids == (ids[2], ids[0], ids[1])
    assert [post.get("front") for post in fake_comfy.prompt_posts] == [None, None, True]


async def test_interrupt_all_stops_a_prompt_of_another_client(fake_comfy: FakeComfyUI) -> None:
    fake_comfy.node_delay_s = 60  # the job would run for minutes
    prompt_id = str(uuid.uuid4())
    async with ComfyClient(fake_comfy.base_url, timeout_s=5) as client:
        await client.submit(tiny_workflow(), prompt_id=prompt_id, client_id="other-process")
        async with asyncio.timeout(1):
            while (await client.queue()).running_ids != (prompt_id,):
                await asyncio.sleep(0.01)
        await client.interrupt_all()
        await fake_comfy.wait_idle(1)
        entry = await client.history(prompt_id)
    assert entry is not None and p.outcome_from_history(entry).status == "interrupted"
    assert [r.json for r in fake_comfy.requests if r.route == "/interrupt"] == [{}]


async def test_delete_history_forgets_finished_prompts(fake_comfy: FakeComfyUI) -> None:
    prompt_id = str(uuid.uuid4())
    async with ComfyClient(fake_comfy.base_url, timeout_s=5) as client:
        await client.submit(tiny_workflow(), prompt_id=prompt_id, client_id="c")
        await fake_comfy.wait_idle(2)
        assert await client.history(prompt_id) is not None
        await client.delete_history([])
        assert fake_comfy.count("POST", "/history") == 0  # nothing to delete: no request
        await client.delete_history(iter([prompt_id]))
        assert await client.history(prompt_id) is None
    posts = [r.json for r in fake_comfy.requests if r.method == "POST" and r.route == "/history"]
    assert posts == [{"delete": [prompt_id]}]


# ------------------------------------------------------------------------------ downloads


async def test_view_server_error_is_unavailable_and_leaves_no_file(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    async with (
        serve(replying(503, "overloaded", "text/plain")) as url,
        ComfyClient(url) as client,
    ):
        with pytest.raises(ComfyUnavailable, match=r"^GET /view clip\.mp4: HTTP 503$"):
            await client.download(CLIP, dest, "job.mp4")
        with pytest.raises(ComfyUnavailable, match=r"^GET /view clip\.mp4: HTTP 503$"):
            await client.fetch(CLIP)
    assert files_in(dest) == []


async def test_download_of_unknown_size_is_streamed_to_disk(tmp_path: Path) -> None:
    dest = tmp_path / "new" / "dest"  # created on the way
    async with serve(chunked_video) as url, ComfyClient(url) as client:
        path = await client.download(CLIP, dest, "job.mp4")
    assert path == dest / "job.mp4"
    assert path.read_bytes() == VIDEO
    assert files_in(dest) == ["job.mp4"]  # the temporary file was renamed


async def test_download_over_the_limit_without_a_declared_size_leaves_nothing(
    tmp_path: Path,
) -> None:
    dest = tmp_path / "dest"
    async with (
        serve(chunked_video) as url,
        ComfyClient(url, max_download_bytes=300_000) as client,
    ):
        with pytest.raises(ComfyError) as caught:
            await client.download(CLIP, dest, "job.mp4")
    assert type(caught.value) is ComfyError  # not retried
    assert str(caught.value) == "GET /view clip.mp4: over 300000 bytes"
    assert caught.value.user_message == "The result is too large."
    assert files_in(dest) == []  # the partial temporary file is removed


async def test_fetch_over_the_limit_without_a_declared_size_is_refused() -> None:
    async with (
        serve(chunked_video) as url,
        ComfyClient(url, max_download_bytes=300_000) as client,
    ):
        with pytest.raises(ComfyError) as caught:
            await client.fetch(CLIP)
    assert type(caught.value) is ComfyError
    assert str(caught.value) == "GET /view clip.mp4: over 300000 bytes"
    assert caught.value.user_message == "The result is too large."


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"%x\r\n" % len(VIDEO[:300_000])
        + VIDEO[:300_000]
        + b"\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (20 * 1024 * 1024) + VIDEO,
    ],
    ids=["chunked", "declared 20 MiB"],
)
async def test_streamed_download_cut_short_leaves_no_partial_file(
    tmp_path: Path, answer: bytes
) -> None:
    dest = tmp_path / "dest"
    async with raw_server(answer) as url, ComfyClient(url, timeout_s=5) as client:
        with pytest.raises(ComfyUnavailable, match=r"^GET /view clip\.mp4: ClientPayloadError"):
            await client.download(CLIP, dest, "job.mp4")
    assert files_in(dest) == []  # neither the final name nor the .part file


async def test_large_declared_download_is_streamed_from_the_fake(
    fake_comfy: FakeComfyUI, tmp_path: Path
) -> None:
    video = VIDEO[:65_536] * 272  # 17 MiB: over the in-memory threshold
    assert len(video) > 16 * 1024 * 1024
    (fake_comfy.output_dir / "probe").mkdir(parents=True, exist_ok=True)
    (fake_comfy.output_dir / "probe" / "clip.mp4").write_bytes(video)
    async with ComfyClient(fake_comfy.base_url) as client:
        path = await client.download(CLIP, tmp_path / "dest", "job.mp4")
    assert path.read_bytes() == video
    assert files_in(tmp_path / "dest") == ["job.mp4"]


async def test_download_refuses_a_name_that_is_a_symlink_out_of_dest(
    fake_comfy: FakeComfyUI, tmp_path: Path
) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    victim = tmp_path / "victim.mp4"
    victim.write_bytes(b"keep me")
    (dest / "job.mp4").symlink_to(victim)
    async with ComfyClient(fake_comfy.base_url) as client:
        with pytest.raises(InvalidInput, match=f"^'job.mp4' escapes {re.escape(str(dest))}$"):
            await client.download(CLIP, dest, "job.mp4")
    assert victim.read_bytes() == b"keep me"
    assert files_in(dest) == ["job.mp4"] and (dest / "job.mp4").is_symlink()
    assert fake_comfy.count("GET", "/view") == 0


async def test_content_encoded_view_is_not_taken_for_a_partial_download(tmp_path: Path) -> None:
    """A compressing server (aiohttp's `enable_compression`, as ComfyUI's
    `--enable-compress-response-body` or a proxy does) declares the encoded size; the client
    reads the decoded bytes, which must not be mistaken for a cut-short answer, and the size
    limit must hold for the decoded bytes."""
    image = b"frame-" * 2000  # 12000 bytes, compresses to a few dozen

    async def compressed(request: web.Request) -> web.Response:
        response = web.Response(body=image, content_type="image/png")
        response.enable_compression()
        return response

    ref = p.OutputRef("3", "x.png", "", "output")
    async with serve(compressed) as url:
        async with ComfyClient(url) as client:
            assert await client.fetch(ref) == image
            path = await client.download(ref, tmp_path / "ok", "x.png")
            assert path.read_bytes() == image
        async with ComfyClient(url, max_download_bytes=5000) as small:
            with pytest.raises(ComfyError, match=r"^GET /view x\.png: over 5000 bytes$"):
                await small.fetch(ref)
            with pytest.raises(ComfyError, match=r"^GET /view x\.png: over 5000 bytes$"):
                await small.download(ref, tmp_path / "big", "x.png")
    assert files_in(tmp_path / "ok") == ["x.png"]
    assert files_in(tmp_path / "big") == []
