"""The HTTP transport to the Bot API, counting every call for /metrics (method and outcome)."""

from __future__ import annotations

from typing import Any

from telegram.error import NetworkError, TimedOut
from telegram.request import HTTPXRequest

from core.metrics import record_telegram_call


class CountingRequest(HTTPXRequest):
    async def do_request(
        self, url: str, method: str, *args: Any, **kwargs: Any
    ) -> tuple[int, bytes]:
        api_method = url.rsplit("/", 1)[-1]  # never the URL: it contains the token
        try:
            code, payload = await super().do_request(url, method, *args, **kwargs)
        except TimedOut:
            record_telegram_call(api_method, "timeout")
            raise
        except NetworkError:
            record_telegram_call(api_method, "error")
            raise
        record_telegram_call(api_method, code)
        return code, payload
