"""Ports and python-telegram-bot webhook applications for the tests and benchmarks."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from telegram.ext import Application


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (for a server or a child to listen on)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@asynccontextmanager
async def serving_webhook(
    app: Application[Any, Any, Any, Any, Any, Any],
    *,
    path: str,
    secret: str,
) -> AsyncIterator[str]:
    """`app` initialised, receiving updates by webhook on 127.0.0.1 (python-telegram-bot's own
    server, which also sets the webhook) and started; yields the webhook URL and stops it all
    on exit."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/{path}"
    await app.initialize()
    assert app.updater is not None
    await app.updater.start_webhook(
        listen="127.0.0.1", port=port, url_path=path, webhook_url=url, secret_token=secret
    )
    await app.start()
    try:
        yield url
    finally:
        await app.updater.stop()
        await app.stop()
        await app.shutdown()
