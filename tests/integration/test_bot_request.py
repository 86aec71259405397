"""bot.request.CountingRequest: PTB's Bot over aiohttp, against real local HTTP servers."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import aiohttp
import pytest
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy
from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup, InputFile
from telegram.error import BadRequest, NetworkError, RetryAfter, TelegramError, TimedOut
from telegram.request import BaseRequest, HTTPXRequest
from yarl import URL

from bot import request as request_module
from bot.request import CountingRequest, _describe
from core.metrics import METRICS
from tests.metric_values import telegram_api_calls
from tests.webhook import free_port

TOKEN = "123456789:AAHsecretTokenValue_0123456789abcdefgh"
SECRET = TOKEN.split(":", 1)[1]
BOT_USER = {"id": 123456789, "is_bot": True, "first_name": "Test", "username": "test_bot"}
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40  # the bytes only need to round-trip
BIG = 32 * 1024 * 1024  # far more than a loopback socket buffers: the writer must block

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def ok(result: Any) -> web.Response:
    return web.json_response({"ok": True, "result": result})


def message(chat_id: int, text: str | None = None) -> dict[str, Any]:
    msg: dict[str, Any] = {"message_id": 7, "date": 0, "chat": {"id": chat_id, "type": "private"}}
    if text is not None:
        msg["text"] = text
    return msg


@dataclass
class Part:
    name: str | None
    disposition: str | None
    filename: str | None
    content_type: str | None
    data: bytes


@dataclass
class Seen:
    method: str
    content_type: str
    user_agent: str
    body: bytes = b""
    parts: list[Part] = field(default_factory=list)


@dataclass
class ApiServer:
    """A Bot API on 127.0.0.1: getMe answers, the rest runs `handlers[method]` or echoes."""

    url: str = ""
    seen: list[Seen] = field(default_factory=list)
    handlers: dict[str, Handler] = field(default_factory=dict)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    chunk_pause: float = 0.1  # between the 10 chunks of a file download

    @property
    def base_url(self) -> str:
        return f"{self.url}/bot"

    def bot(self, request: BaseRequest) -> Bot:
        return Bot(TOKEN, base_url=self.base_url, request=request)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        assert request.match_info["token"] == TOKEN
        method = request.match_info["method"]
        if method == "getMe":
            return ok(BOT_USER)
        seen = Seen(method, request.content_type, request.headers.get("User-Agent", ""))
        if request.content_type == "multipart/form-data":
            reader = await request.multipart()
            async for part in reader:
                assert isinstance(part, aiohttp.BodyPartReader)
                seen.parts.append(
                    Part(
                        part.name,
                        part.headers.get("Content-Disposition"),
                        part.filename,
                        part.headers.get("Content-Type"),
                        bytes(await part.read()),
                    )
                )
        else:
            seen.body = await request.read()
        self.seen.append(seen)
        self.arrived.set()
        handler = self.handlers.get(method)
        if handler is not None:
            return await handler(request)
        form = dict(parse_qsl(seen.body.decode()))
        return ok(message(int(form.get("chat_id", "1")), form.get("text")))

    async def download(self, request: web.Request) -> web.StreamResponse:
        assert request.match_info["token"] == TOKEN
        response = web.StreamResponse()
        await response.prepare(request)
        for _ in range(10):
            await response.write(PNG)
            await asyncio.sleep(self.chunk_pause)
        await response.write_eof()
        return response


@pytest.fixture
async def api() -> AsyncIterator[ApiServer]:
    server = ApiServer()
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_route("*", "/bot{token}/{method}", server.handle)
    app.router.add_get("/file/bot{token}/{path:.+}", server.download)
    runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=0.5, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    server.url = f"http://{host}:{port}"
    try:
        yield server
    finally:
        await runner.cleanup()


@pytest.fixture
async def deaf_server() -> AsyncIterator[str]:
    """Accepts connections and never reads a byte nor answers: an upload to it blocks."""
    writers: list[asyncio.StreamWriter] = []

    async def accept(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/bot"
    finally:
        server.close()
        for writer in writers:
            writer.close()
        await server.wait_closed()


@pytest.fixture
def refused_url() -> str:
    return f"http://127.0.0.1:{free_port()}/bot"  # nothing listens there


@pytest.fixture
def unanswered_connect_url() -> Iterator[str]:
    """A listener whose accept queue is full: the kernel drops new SYNs, connect() hangs."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(4):
        filler = socket.socket()
        filler.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            filler.connect(("127.0.0.1", port))
        fillers.append(filler)
    time.sleep(0.2)
    try:
        yield f"http://127.0.0.1:{port}/bot"
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


def assert_no_secret(error: BaseException) -> None:
    for text in (str(error), repr(error), getattr(error, "message", "")):
        assert SECRET not in text
        assert "/bot" not in text


# --- bodies ---------------------------------------------------------------------------------------
async def test_send_message_is_a_form_urlencoded_post(api: ApiServer) -> None:
    markup = InlineKeyboardMarkup([[InlineKeyboardButton("Go & see", callback_data="v1:a=b")]])
    async with api.bot(CountingRequest()) as bot:
        sent = await bot.send_message(42, "héllo & a=b+c 🌸", reply_markup=markup)
    assert sent.text == "héllo & a=b+c 🌸" and sent.chat.id == 42
    (seen,) = api.seen
    assert seen.method == "sendMessage"
    assert seen.content_type == "application/x-www-form-urlencoded"
    assert seen.user_agent == BaseRequest.USER_AGENT
    form = dict(parse_qsl(seen.body.decode(), strict_parsing=True))
    assert form["chat_id"] == "42"
    assert form["text"] == "héllo & a=b+c 🌸"
    assert json.loads(form["reply_markup"]) == markup.to_dict()


async def test_bodies_are_byte_for_byte_those_of_httpx_request(api: ApiServer) -> None:
    """The same calls through PTB's HTTPXRequest and through ours reach the server alike."""
    upload = InputFile(PNG, filename='ко "t"\\x.png')
    for request in (HTTPXRequest(), CountingRequest()):
        async with api.bot(request) as bot:
            await bot.send_message(5, "a b&c=d/é", parse_mode="HTML")
            await bot.send_document(5, upload, caption="cap é", disable_notification=True)
    httpx_text, httpx_upload, ours_text, ours_upload = api.seen
    assert ours_text.body == httpx_text.body
    assert ours_text.content_type == httpx_text.content_type
    assert len(ours_upload.parts) == len(httpx_upload.parts) == 4
    for ours, theirs in zip(ours_upload.parts, httpx_upload.parts, strict=True):
        assert (ours.name, ours.disposition, ours.data) == (
            theirs.name,
            theirs.disposition,
            theirs.data,
        )
        if theirs.filename is not None:
            assert ours.content_type == theirs.content_type
    document = ours_upload.parts[-1]
    assert document.name == "document" and document.data == PNG


async def test_photo_upload_is_multipart_with_filename_type_and_bytes(api: ApiServer) -> None:
    async def photo_answer(_request: web.Request) -> web.Response:
        size = {"file_id": "f1", "file_unique_id": "u1", "width": 1, "height": 1}
        return ok(message(42) | {"photo": [size], "caption": "result"})

    api.handlers["sendPhoto"] = photo_answer
    async with api.bot(CountingRequest()) as bot:
        sent = await bot.send_photo(42, InputFile(PNG, filename="pic.png"), caption="result")
    assert sent.photo[0].file_id == "f1"
    (seen,) = api.seen
    assert seen.content_type == "multipart/form-data"
    assert seen.user_agent == BaseRequest.USER_AGENT
    fields = {p.name: p for p in seen.parts}
    assert set(fields) == {"chat_id", "caption", "photo"}
    assert fields["chat_id"].data == b"42" and fields["caption"].data == b"result"
    assert fields["chat_id"].filename is None
    photo = fields["photo"]
    assert photo.filename == "pic.png"
    assert photo.content_type == "image/png"
    assert photo.data == PNG


async def test_file_handle_uploads_too(api: ApiServer, tmp_path: Any) -> None:
    path = tmp_path / "clip.png"
    path.write_bytes(PNG)
    async with api.bot(CountingRequest()) as bot:
        with path.open("rb") as handle:
            await bot.send_document(9, InputFile(handle, read_file_handle=False))
    (part,) = [p for p in api.seen[0].parts if p.name == "document"]
    assert part.filename == "clip.png" and part.data == PNG


# --- answers --------------------------------------------------------------------------------------
async def test_429_surfaces_as_retry_after(api: ApiServer) -> None:
    async def flood(_request: web.Request) -> web.Response:
        body = {
            "ok": False,
            "error_code": 429,
            "description": "Too Many Requests: retry after 3",
            "parameters": {"retry_after": 3},
        }
        return web.json_response(body, status=429)

    api.handlers["sendMessage"] = flood
    before = telegram_api_calls("sendMessage", "429")
    async with api.bot(CountingRequest()) as bot:
        with pytest.raises(RetryAfter, match=r"Retry in (3 seconds|0:00:03)"):
            await bot.send_message(1, "x")
    assert telegram_api_calls("sendMessage", "429") == before + 1


async def test_400_not_modified_surfaces_as_bad_request(api: ApiServer) -> None:
    async def not_modified(_request: web.Request) -> web.Response:
        description = (
            "Bad Request: message is not modified: specified new message content and reply "
            "markup are exactly the same as a current content and reply markup of the message"
        )
        body = {"ok": False, "error_code": 400, "description": description}
        return web.json_response(body, status=400)

    api.handlers["editMessageText"] = not_modified
    before = telegram_api_calls("editMessageText", "400")
    async with api.bot(CountingRequest()) as bot:
        with pytest.raises(BadRequest, match=r"[Mm]essage is not modified"):
            await bot.edit_message_text("same", chat_id=1, message_id=2)
    assert telegram_api_calls("editMessageText", "400") == before + 1


# --- timeouts -------------------------------------------------------------------------------------
async def test_read_timeout_raises_timed_out(api: ApiServer) -> None:
    async def slow(_request: web.Request) -> web.Response:
        await asyncio.sleep(3)
        return ok(True)

    api.handlers["sendMessage"] = slow
    before = telegram_api_calls("sendMessage", "timeout")
    async with api.bot(CountingRequest(read_timeout=0.3)) as bot:
        started = time.monotonic()
        with pytest.raises(TimedOut) as info:
            await bot.send_message(1, "x")
        assert time.monotonic() - started < 2
        assert_no_secret(info.value)
    assert telegram_api_calls("sendMessage", "timeout") == before + 1
    # A per-call value overrides the default; `read_timeout` reports the default.
    request = CountingRequest(read_timeout=30)
    assert request.read_timeout == 30
    async with api.bot(request) as bot:
        started = time.monotonic()
        with pytest.raises(TimedOut):
            await bot.send_message(1, "x", read_timeout=0.3)
        assert time.monotonic() - started < 2


async def test_read_timeout_none_waits_as_long_as_it_takes(api: ApiServer) -> None:
    async def slow(_request: web.Request) -> web.Response:
        await asyncio.sleep(0.6)
        return ok(message(1, "late"))

    api.handlers["sendMessage"] = slow
    async with api.bot(CountingRequest(read_timeout=0.2)) as bot:
        sent = await bot.send_message(1, "late", read_timeout=None)
    assert sent.text == "late"


async def test_connect_timeout_raises_timed_out(unanswered_connect_url: str) -> None:
    request = CountingRequest(connect_timeout=0.3, read_timeout=5)
    async with request:
        started = time.monotonic()
        with pytest.raises(TimedOut) as info:
            await request.post(f"{unanswered_connect_url}{TOKEN}/getMe")
        assert time.monotonic() - started < 2
        assert_no_secret(info.value)
        # None: no limit (the connect attempt is still pending when we give up waiting).
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(
                request.post(f"{unanswered_connect_url}{TOKEN}/getMe", connect_timeout=None), 0.8
            )


async def test_pool_timeout_says_the_request_was_not_sent(api: ApiServer) -> None:
    release = asyncio.Event()

    async def hang(_request: web.Request) -> web.Response:
        await release.wait()
        return ok(message(1, "first"))

    api.handlers["sendMessage"] = hang
    async with api.bot(CountingRequest(connection_pool_size=1, pool_timeout=0.2)) as bot:
        first = asyncio.create_task(bot.send_message(1, "first"))
        await asyncio.wait_for(api.arrived.wait(), 5)
        started = time.monotonic()
        with pytest.raises(TimedOut, match=r"not\* sent") as info:
            await bot.send_message(1, "second")
        assert 0.15 < time.monotonic() - started < 2
        assert_no_secret(info.value)
        assert [s.method for s in api.seen] == ["sendMessage"]  # the second never left
        # pool_timeout=None: waits for the connection, then goes out.
        second = asyncio.create_task(bot.send_message(1, "second", pool_timeout=None))
        await asyncio.sleep(0.4)
        assert not second.done() and len(api.seen) == 1
        release.set()
        assert (await first).text == "first"
        assert (await second).text == "first"
    assert len(api.seen) == 2


async def test_overall_deadline_bounds_an_upload_nobody_reads(deaf_server: str) -> None:
    """aiohttp has no write timeout: connect + write + read bounds the whole request."""
    request = CountingRequest(
        connect_timeout=0.2, read_timeout=0.2, write_timeout=0.2, media_write_timeout=3.0
    )
    bot = Bot(TOKEN, base_url=deaf_server, request=request)
    before = telegram_api_calls("sendDocument", "timeout")
    async with request:  # not the Bot: its initialize() would call getMe
        started = time.monotonic()
        with pytest.raises(TimedOut) as info:
            await bot.send_document(1, InputFile(b"\0" * BIG, filename="big.bin"))
        elapsed = time.monotonic() - started
        assert 3.4 <= elapsed < 6, elapsed  # media_write_timeout for an upload
        assert_no_secret(info.value)

        started = time.monotonic()
        with pytest.raises(TimedOut):
            await bot.send_message(1, "x" * BIG)
        elapsed = time.monotonic() - started
        assert 0.5 <= elapsed < 2.2, elapsed  # write_timeout for anything else (+ encoding)

        started = time.monotonic()
        with pytest.raises(TimedOut):
            await bot.send_document(1, InputFile(b"\0" * BIG, filename="b"), write_timeout=0.1)
        assert time.monotonic() - started < 2.2  # an explicit value beats media_write_timeout

    assert telegram_api_calls("sendDocument", "timeout") == before + 2

    # write_timeout=None: no deadline (the defaults would give up after 0.6 s), it would wait
    # forever.
    quick = CountingRequest(
        connect_timeout=0.2, read_timeout=0.2, write_timeout=0.2, media_write_timeout=0.2
    )
    bot = Bot(TOKEN, base_url=deaf_server, request=quick)
    async with quick:
        upload = InputFile(b"\0" * BIG, filename="b")
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(bot.send_document(1, upload, write_timeout=None), 1.5)


async def test_a_slow_download_is_bounded_per_read_not_as_a_whole(api: ApiServer) -> None:
    """A GET has no body to write: no overall deadline, only the read timeout between bytes."""
    request = CountingRequest(connect_timeout=0.2, write_timeout=0.2, read_timeout=0.4)
    url = f"{api.url}/file/bot{TOKEN}/photos/file_1.png"
    async with request:
        started = time.monotonic()
        assert await request.retrieve(url) == PNG * 10
        assert time.monotonic() - started >= 0.9  # longer than connect + write + read
        api.chunk_pause = 1.0
        started = time.monotonic()
        with pytest.raises(TimedOut):
            await request.retrieve(url)
        assert time.monotonic() - started < 1.5


# --- errors ---------------------------------------------------------------------------------------
async def test_connection_refused_is_network_error(refused_url: str) -> None:
    request = CountingRequest()
    bot = Bot(TOKEN, base_url=refused_url, request=request)
    before = telegram_api_calls("sendMessage", "error")
    async with request:
        with pytest.raises(NetworkError) as info:
            await bot.send_message(1, "x")
    assert not isinstance(info.value, TimedOut)
    assert "ClientConnectorError" in str(info.value)
    host_port = refused_url.removeprefix("http://").removesuffix("/bot")
    assert f"cannot connect to {host_port} [" in str(info.value)  # the host is fine to show
    assert_no_secret(info.value)
    assert telegram_api_calls("sendMessage", "error") == before + 1


async def test_server_hanging_up_mid_upload_is_network_error() -> None:
    """aiohttp's own text here is 'Can not write request body for <url>': never passed on."""

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.transport.abort()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    request = CountingRequest()
    bot = Bot(TOKEN, base_url=f"http://127.0.0.1:{port}/bot", request=request)
    try:
        async with request:
            with pytest.raises(NetworkError) as info:
                await bot.send_document(1, InputFile(b"\0" * BIG, filename="big.bin"))
    finally:
        server.close()
        await server.wait_closed()
    assert not isinstance(info.value, TimedOut)
    assert "aiohttp." in str(info.value)
    assert_no_secret(info.value)


async def test_invalid_url_error_never_shows_the_url() -> None:
    request = CountingRequest()
    async with request:
        with pytest.raises(TelegramError) as info:
            await request.post(f"http://127.0.0.1:99999/bot{TOKEN}/getMe")
    assert_no_secret(info.value)


def test_error_descriptions_never_contain_the_url() -> None:
    url = f"https://api.telegram.org/bot{TOKEN}/sendPhoto"
    info = aiohttp.RequestInfo(URL(url), "POST", CIMultiDictProxy(CIMultiDict[str]()), URL(url))
    errors: list[BaseException] = [
        aiohttp.ClientOSError(32, f"Can not write request body for {url}"),
        aiohttp.InvalidURL(url),
        aiohttp.ClientResponseError(info, (), status=502, message=f"bad gateway {url}"),
        aiohttp.ClientPayloadError(f"Response payload is not completed for {url}"),
        aiohttp.ConnectionTimeoutError(f"Connection timeout to host {url}"),
        aiohttp.SocketTimeoutError(f"Timeout on reading data from socket {url}"),
        OSError(f"weird {url}"),
        OSError(5, f"weird {url}"),
        TimeoutError(url),
    ]
    for error in errors:
        text = _describe(error, url)
        assert SECRET not in text and "/bot" not in text, text
        assert type(error).__name__ in text
    # The OS's own words for an error number are kept.
    assert _describe(errors[0], url) == "aiohttp.ClientOSError: [Errno 32] Broken pipe"


# --- proxies --------------------------------------------------------------------------------------
async def test_proxy_from_the_environment_like_httpx(
    api: ApiServer, refused_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    request_lines: list[bytes] = []

    async def proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        request_lines.append(head.split(b"\r\n", 1)[0])
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        await reader.readexactly(length)
        body = json.dumps({"ok": True, "result": message(3, "via proxy")}).encode()
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(proxy, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("NO_PROXY", "localhost")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("http_proxy", raising=False)
    try:
        request = CountingRequest()
        async with request:
            bot = Bot(TOKEN, base_url="http://api.telegram.invalid/bot", request=request)
            assert (await bot.send_message(3, "x")).text == "via proxy"
    finally:
        server.close()
        await server.wait_closed()
    assert request_lines == [
        f"POST http://api.telegram.invalid/bot{TOKEN}/sendMessage HTTP/1.1".encode()
    ]

    # NO_PROXY names the host: straight to it (the proxy is now a dead port).
    monkeypatch.setenv("HTTP_PROXY", refused_url.removesuffix("/bot"))
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    async with api.bot(CountingRequest()) as bot:
        assert (await bot.send_message(1, "direct")).text == "direct"


# --- TLS ----------------------------------------------------------------------------------------
@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
async def test_tls_is_verified_against_the_system_store(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    command = "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=127.0.0.1"
    command += " -addext subjectAltName=IP:127.0.0.1"
    subprocess.run(
        [*command.split(), "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True
    )

    async def get_me(_request: web.Request) -> web.Response:
        return ok(BOT_USER)

    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)
    app = web.Application()
    app.router.add_post("/bot{token}/getMe", get_me)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_context)
    await site.start()
    url = f"https://127.0.0.1:{runner.addresses[0][1]}/bot{TOKEN}/getMe"
    try:
        request_module._ssl_context.cache_clear()
        async with CountingRequest() as request:
            with pytest.raises(NetworkError, match="Certificate") as info:
                await request.post(url)  # self-signed: refused
            assert_no_secret(info.value)
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # now in the "system" store
        request_module._ssl_context.cache_clear()
        async with CountingRequest() as request:
            assert await request.post(url) == BOT_USER
    finally:
        request_module._ssl_context.cache_clear()
        await runner.cleanup()


# --- lifecycle ------------------------------------------------------------------------------------
async def test_initialize_shutdown_and_again(api: ApiServer) -> None:
    request = CountingRequest()
    url = f"{api.base_url}{TOKEN}/getMe"
    with pytest.raises(RuntimeError, match="not initialized"):
        await request.do_request(url, "POST")
    await request.shutdown()  # harmless before initialize
    bot = api.bot(request)
    async with bot:
        assert (await bot.send_message(1, "one")).text == "one"
    with pytest.raises(RuntimeError, match="not initialized"):
        await request.do_request(url, "POST")
    await request.shutdown()  # and twice
    async with bot:  # PTB initializes again after a shutdown
        assert (await bot.send_message(1, "two")).text == "two"
    await request.initialize()
    await request.initialize()  # idempotent while open
    await request.shutdown()


async def test_every_call_is_counted_by_method_and_outcome(api: ApiServer) -> None:
    before = {
        "getMe": telegram_api_calls("getMe", "200"),
        "sendMessage": telegram_api_calls("sendMessage", "200"),
    }
    async with api.bot(CountingRequest()) as bot:
        await bot.send_message(1, "a")
        await bot.send_message(1, "b")
    assert telegram_api_calls("getMe", "200") == before["getMe"] + 1
    assert telegram_api_calls("sendMessage", "200") == before["sendMessage"] + 2
    for metric in METRICS.registry.collect():
        for sample in metric.samples:
            assert SECRET not in str(sample.labels)
