"""The HTTP transport to the Bot API: aiohttp, counting every call for /metrics.

`CountingRequest` implements python-telegram-bot's `BaseRequest` on one `aiohttp.ClientSession`
(PTB's own `HTTPXRequest` costs about three times the CPU per call). It behaves like
`HTTPXRequest`:

* the same constructor timeouts and defaults; each timeout passed to a call may be
  `DEFAULT_NONE` (use the constructor's; for the write timeout of an upload,
  `media_write_timeout`), `None` (no limit) or seconds;
* pool -> waiting for a free connection (at most `connection_pool_size` requests in flight),
  connect -> DNS, TCP and TLS set-up (aiohttp's `connect` and `sock_connect`),
  read -> the longest silence while waiting for the answer (aiohttp's `sock_read`);
  aiohttp has no write timeout, so when connect, write and read are all finite a request
  that sends a body is bounded as a whole (once a connection slot is free) by their sum: an
  upload never hangs. A request without a body (`retrieve`: a file download) has nothing to
  write and keeps only the per-read limit, as with httpx, so a large download may take longer;
* the body: form-urlencoded parameters, or multipart/form-data with the files;
* errors: any timeout -> `TimedOut` (pool exhaustion says the request was *not* sent), other
  aiohttp / OS errors -> `NetworkError`. No message ever contains the URL: it holds the token.
  (aiohttp's own messages may, e.g. "Can not write request body for <url>"; the chained
  `__cause__` keeps them for debugging, and `core.logs` redacts the token from tracebacks.)

Every call is counted with `record_telegram_call(api_method, outcome)`: the HTTP status code,
`"timeout"` or `"error"`.
"""

from __future__ import annotations

import asyncio
import functools
import os
import ssl
from urllib.parse import urlencode, urlsplit
from urllib.request import (  # type: ignore[attr-defined]  # not in typeshed
    getproxies_environment,
    proxy_bypass_environment,
)

import aiohttp
from telegram._utils.defaultvalue import DefaultValue
from telegram._utils.types import ODVInput
from telegram.error import NetworkError, TimedOut
from telegram.request import BaseRequest, RequestData

from core.metrics import record_telegram_call

_FORM = "application/x-www-form-urlencoded"
_POOL_TIMEOUT_MESSAGE = (
    "Pool timeout: All connections in the connection pool are occupied. "
    "Request was *not* sent to Telegram. Consider adjusting the connection "
    "pool size or the pool timeout."
)
# How httpx writes a multipart filename (HTML5 form encoding); aiohttp escapes the backslash.
_FILENAME_ESCAPES = {ord('"'): "%22"} | {c: f"%{c:02X}" for c in range(0x20) if c != 0x1B}


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    """The system's CAs (honouring SSL_CERT_FILE / SSL_CERT_DIR) plus certifi's, which httpx
    used: a slim image without ca-certificates still reaches api.telegram.org."""
    context = ssl.create_default_context()
    try:
        import certifi
    except ImportError:  # pragma: no cover - certifi comes with httpx, a PTB dependency
        return context
    context.load_verify_locations(cafile=certifi.where())
    return context


def _filename(name: str) -> str:
    return name.translate(_FILENAME_ESCAPES)


def _describe(error: BaseException, url: str) -> str:
    """A message for `error` that never contains `url` (nor its token)."""
    name = type(error).__name__
    if type(error).__module__.startswith("aiohttp"):
        name = f"aiohttp.{name}"
    if isinstance(error, aiohttp.ClientConnectorError):
        # Only the host and port (no path) and the OS's reason.
        reason = error.os_error.strerror or type(error.os_error).__name__
        message = f"{name}: cannot connect to {error.host}:{error.port} [{reason}]"
    elif isinstance(error, OSError) and error.errno and not isinstance(error, TimeoutError):
        # The OS's text for the error number, never the error's own text: aiohttp's may hold
        # the URL ("Can not write request body for <url>").
        message = f"{name}: [Errno {error.errno}] {os.strerror(error.errno)}"
    else:
        # Only the class: aiohttp's texts may hold the URL (InvalidURL, ClientResponseError,
        # ConnectionTimeoutError).
        message = name
    # Belt and braces: nothing above holds the path, but never let it (nor its token) through.
    for secret in (url, *(part for part in url.split("/")[3:] if len(part) >= 8)):
        message = message.replace(secret, "***")
    return message


class CountingRequest(BaseRequest):
    """A `telegram.request.BaseRequest` on aiohttp that counts every call (see the module)."""

    __slots__ = (
        "_connect_timeout",
        "_media_write_timeout",
        "_pool_size",
        "_pool_timeout",
        "_proxies",
        "_read_timeout",
        "_session",
        "_slots",
        "_write_timeout",
    )

    def __init__(
        self,
        connection_pool_size: int = 256,
        read_timeout: float | None = 5.0,
        write_timeout: float | None = 5.0,
        connect_timeout: float | None = 5.0,
        pool_timeout: float | None = 1.0,
        media_write_timeout: float | None = 20.0,
    ) -> None:
        if connection_pool_size < 1:
            raise ValueError("connection_pool_size must be at least 1")
        self._pool_size = connection_pool_size
        self._read_timeout = read_timeout
        self._write_timeout = write_timeout
        self._connect_timeout = connect_timeout
        self._pool_timeout = pool_timeout
        self._media_write_timeout = media_write_timeout
        self._session: aiohttp.ClientSession | None = None
        self._slots = asyncio.Semaphore(connection_pool_size)
        self._proxies: dict[str, str | None] = {}

    @property
    def read_timeout(self) -> float | None:
        """The default read timeout (PTB's Updater adds it to the long-poll timeout)."""
        return self._read_timeout

    async def initialize(self) -> None:
        """Create the session (in the running loop); again after a `shutdown`."""
        if self._session is not None and not self._session.closed:
            return
        self._slots = asyncio.Semaphore(self._pool_size)
        self._proxies = {}  # the environment is read again
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self._pool_size, ssl=_ssl_context()),
            headers={"User-Agent": self.USER_AGENT},
            timeout=aiohttp.ClientTimeout(),  # none: every request passes its own
            cookie_jar=aiohttp.DummyCookieJar(),
        )

    def _proxy_for(self, url: str) -> str | None:
        """Like httpx, honour HTTP(S)_PROXY / ALL_PROXY / NO_PROXY from the environment (http
        proxies only: aiohttp has no SOCKS). Worked out once per server, not per request as
        aiohttp's `trust_env` does (two thread hops per call)."""
        origin = url[: url.find("/", url.find("//") + 2)]
        try:
            return self._proxies[origin]
        except KeyError:
            pass
        proxy: str | None = None
        parts = urlsplit(origin)
        environment = getproxies_environment()
        candidate = environment.get(parts.scheme) or environment.get("all")
        if (
            candidate
            and urlsplit(candidate).scheme in ("http", "https")
            and not proxy_bypass_environment(parts.hostname or "", environment)
        ):
            proxy = candidate
        self._proxies[origin] = proxy
        return proxy

    async def shutdown(self) -> None:
        """Close the session (a no-op when it is not open)."""
        session, self._session = self._session, None
        if session is not None and not session.closed:
            await session.close()

    async def do_request(
        self,
        url: str,
        method: str,
        request_data: RequestData | None = None,
        read_timeout: ODVInput[float] = BaseRequest.DEFAULT_NONE,
        write_timeout: ODVInput[float] = BaseRequest.DEFAULT_NONE,
        connect_timeout: ODVInput[float] = BaseRequest.DEFAULT_NONE,
        pool_timeout: ODVInput[float] = BaseRequest.DEFAULT_NONE,
    ) -> tuple[int, bytes]:
        """See `BaseRequest.do_request`; counts the call's outcome."""
        api_method = url.rsplit("/", 1)[-1]  # never the URL: it contains the token
        try:
            code, payload = await self._send(
                url,
                method,
                request_data,
                read_timeout,
                write_timeout,
                connect_timeout,
                pool_timeout,
            )
        except TimedOut:
            record_telegram_call(api_method, "timeout")
            raise
        except NetworkError:
            record_telegram_call(api_method, "error")
            raise
        record_telegram_call(api_method, code)
        return code, payload

    async def _send(
        self,
        url: str,
        method: str,
        request_data: RequestData | None,
        read_timeout: ODVInput[float],
        write_timeout: ODVInput[float],
        connect_timeout: ODVInput[float],
        pool_timeout: ODVInput[float],
    ) -> tuple[int, bytes]:
        session = self._session
        if session is None or session.closed:
            raise RuntimeError("This CountingRequest is not initialized!")
        timeout = self._timeout(request_data, read_timeout, write_timeout, connect_timeout)
        data, headers = _body(request_data)
        slots = await self._take_slot(pool_timeout)
        try:
            async with session.request(
                method,
                url,
                data=data,
                headers=headers,
                timeout=timeout,
                allow_redirects=False,
                proxy=self._proxy_for(url),
            ) as response:
                return response.status, await response.read()
        except TimeoutError as error:  # aiohttp's ServerTimeoutError is one too
            raise TimedOut(message=f"Timed out: {_describe(error, url)}") from error
        except (aiohttp.ClientError, OSError) as error:
            raise NetworkError(_describe(error, url)) from error
        finally:
            slots.release()

    def _timeout(
        self,
        request_data: RequestData | None,
        read_timeout: ODVInput[float],
        write_timeout: ODVInput[float],
        connect_timeout: ODVInput[float],
    ) -> aiohttp.ClientTimeout:
        """aiohttp's timeouts for one call (defaults filled in; see the module docstring)."""
        if isinstance(read_timeout, DefaultValue):
            read_timeout = self._read_timeout
        if isinstance(connect_timeout, DefaultValue):
            connect_timeout = self._connect_timeout
        if isinstance(write_timeout, DefaultValue):
            uploads = request_data is not None and bool(request_data.multipart_data)
            write_timeout = self._media_write_timeout if uploads else self._write_timeout
        deadline = (
            connect_timeout + write_timeout + read_timeout
            if request_data is not None
            and connect_timeout is not None
            and write_timeout is not None
            and read_timeout is not None
            else None
        )
        return aiohttp.ClientTimeout(
            total=deadline,
            connect=connect_timeout,
            sock_connect=connect_timeout,
            sock_read=read_timeout,
        )

    async def _take_slot(self, pool_timeout: ODVInput[float]) -> asyncio.Semaphore:
        """One of the `connection_pool_size` slots (released on the semaphore returned, even
        if a re-`initialize` made a new one meanwhile); when all are busy, wait at most
        `pool_timeout` for one."""
        if isinstance(pool_timeout, DefaultValue):
            pool_timeout = self._pool_timeout
        slots = self._slots
        if not slots.locked():
            await slots.acquire()
            return slots
        try:
            async with asyncio.timeout(pool_timeout):
                await slots.acquire()
        except TimeoutError:
            raise TimedOut(message=_POOL_TIMEOUT_MESSAGE) from None
        return slots


def _body(
    request_data: RequestData | None,
) -> tuple[aiohttp.FormData | bytes | None, dict[str, str] | None]:
    """The request body and its headers: multipart/form-data with the files, else the
    parameters form-urlencoded (none without `request_data`)."""
    if request_data is None:
        return None, None
    if request_data.multipart_data:
        form = aiohttp.FormData(quote_fields=False)
        for name, value in request_data.json_parameters.items():
            form.add_field(name, value)
        for name, (filename, content, mimetype) in request_data.multipart_data.items():
            form.add_field(name, content, filename=_filename(filename), content_type=mimetype)
        return form, None
    return urlencode(request_data.json_parameters).encode(), {"Content-Type": _FORM}
