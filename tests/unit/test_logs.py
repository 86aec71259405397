"""Logging: secrets never reach a log line (stdlib, structlog, tracebacks, URLs), JSON context."""

from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from core import logs
from core.settings import Settings, load_settings

TOKEN = "123456:ABCdefSECRET"
SECRET_PART = "ABCdefSECRET"
URL = f"https://api.telegram.org/bot{TOKEN}/getMe"
FILE_URL = f"https://api.telegram.org/file/bot{TOKEN}/photos/file_1.jpg"
ENCODED_URL = "https://api.telegram.org/bot123456%3AABCdefSECRET/getMe"
FORMATS = ["console", "json"]


@pytest.fixture(autouse=True)
def clean_logging(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test gets a fresh secret registry; the global logging set-up is put back after."""
    monkeypatch.setattr(logs, "_SECRETS", set())
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    structlog_config = structlog.get_config()
    logs.clear_context()
    yield
    logs.clear_context()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)
    structlog.configure(**structlog_config)


def _configure(fmt: str, level: str = "DEBUG") -> io.StringIO:
    stream = io.StringIO()
    logs.configure_logging(level, fmt, stream)
    return stream


def _assert_clean(text: str) -> None:
    assert text, "nothing was logged"
    assert TOKEN not in text
    assert SECRET_PART not in text
    assert "***" in text


def _emit_everything() -> None:
    std = logging.getLogger("telegram.ext.ExtBot")
    std.info("calling %s", URL)
    std.warning(f"download failed: {FILE_URL}")
    std.info("extra fields", extra={"request_url": URL})
    std.info("encoded %s", ENCODED_URL)
    log = logs.get_logger("core.test")
    log.info("polling " + URL, url=URL, token=TOKEN, tail=SECRET_PART)
    log.info("nested", request={"url": URL, "headers": [TOKEN]}, raw=URL.encode())
    try:
        raise ConnectionError(f"cannot reach {URL}")
    except ConnectionError:
        log.exception("structlog traceback", attempt=1)
        std.exception("stdlib traceback for %s", FILE_URL)
    try:
        try:
            raise ValueError(TOKEN)
        except ValueError as inner:
            raise RuntimeError("wrapped") from inner
    except RuntimeError as error:
        log.error("chained", exc_info=error)


@pytest.mark.parametrize("fmt", FORMATS)
def test_registered_token_never_appears(fmt: str) -> None:
    stream = _configure(fmt)
    logs.register_secret(TOKEN)
    _emit_everything()
    text = stream.getvalue()
    _assert_clean(text)
    assert "https://api.telegram.org/bot***/getMe" in text
    assert "https://api.telegram.org/bot123456%3A***/getMe" in text  # URL-encoded token
    assert "Traceback (most recent call last)" in text
    assert "ConnectionError" in text and "RuntimeError" in text
    if fmt == "json":
        events = [json.loads(line)["event"] for line in text.splitlines()]
        assert len(events) == 9
        assert "chained" in events


@pytest.mark.parametrize("fmt", FORMATS)
def test_token_from_settings_is_redacted(
    fmt: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for key in list(os.environ):
        if key.lower() in Settings.model_fields:
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", TOKEN)
    stream = _configure(fmt)
    settings = load_settings()
    logging.getLogger("httpx").warning("HTTP Request: POST %s", URL)
    logs.get_logger("bot").info("starting", settings=repr(settings), api=URL)
    logs.get_logger("bot").info("token", value=settings.token())
    _assert_clean(stream.getvalue())


@pytest.mark.parametrize("fmt", FORMATS)
def test_json_lines_parse_and_carry_context(fmt: str) -> None:
    stream = _configure(fmt)
    logs.register_secret(TOKEN)
    logs.bind_context(job_id="job-1", chat_id=-100)
    logs.get_logger("core.jobs").info("job submitted", backend="http://gpu:8188")
    logging.getLogger("aiohttp.client").info("stdlib line %d", 7)
    logs.clear_context(["job_id"])
    logs.get_logger("core.jobs").warning("after unbind")
    logs.clear_context()
    try:
        raise KeyError(URL)
    except KeyError:
        logs.get_logger("core.jobs").exception("crash")
    lines = stream.getvalue().splitlines()
    if fmt == "console":
        assert "job_id=job-1" in lines[0] and "job submitted" in lines[0]
        assert "job_id=job-1" in lines[1] and "stdlib line 7" in lines[1]
        assert "job_id" not in lines[2] and "chat_id=-100" in lines[2]
        return
    records = [json.loads(line) for line in lines]  # every line is one JSON document
    assert len(records) == 4
    first, second, third, fourth = records
    assert first["event"] == "job submitted"
    assert (first["job_id"], first["chat_id"]) == ("job-1", -100)
    assert first["level"] == "info"
    assert first["logger"] == "core.jobs"
    assert first["backend"] == "http://gpu:8188"
    assert first["timestamp"].endswith("Z")
    assert (second["event"], second["job_id"], second["logger"]) == (
        "stdlib line 7",
        "job-1",
        "aiohttp.client",
    )
    assert "job_id" not in third and third["chat_id"] == -100 and third["level"] == "warning"
    assert "job_id" not in fourth and "chat_id" not in fourth
    assert "KeyError" in fourth["exception"]
    assert TOKEN not in fourth["exception"] and SECRET_PART not in fourth["exception"]


def test_level_filtering_and_noisy_loggers() -> None:
    stream = _configure("json", level="warning")
    logs.get_logger("x").info("hidden")
    logs.get_logger("x").warning("shown")
    logging.getLogger("httpx").info("GET %s", URL)  # httpx logs URLs at INFO: kept quiet
    assert [json.loads(line)["event"] for line in stream.getvalue().splitlines()] == ["shown"]
    assert logging.getLogger("httpx").level == logging.WARNING
    _configure("json", level="DEBUG")
    assert logging.getLogger("httpx").level == logging.WARNING


def test_configure_replaces_handlers() -> None:
    first = _configure("json")
    second = _configure("console")
    logs.get_logger("x").info("once")
    assert first.getvalue() == ""
    assert second.getvalue().count("once") == 1


def test_register_secret_rules() -> None:
    logs.register_secret(None)
    logs.register_secret("")
    logs.register_secret("short")  # too short to be a real secret; would mangle every line
    assert logs.redact("short and sweet") == "short and sweet"
    logs.register_secret("1:abc")
    assert logs.redact("1:abc") == "1:abc"
    logs.register_secret(TOKEN)
    assert logs.redact(f"a {TOKEN} b {SECRET_PART} c") == "a *** b *** c"
    assert logs.redact("123456 alone is the public bot id") == "123456 alone is the public bot id"
    # A longer secret that contains a shorter one is masked as a whole.
    logs.register_secret("abcdef")
    logs.register_secret("abcdef-and-more")
    assert logs.redact("x abcdef-and-more y abcdef") == "x *** y ***"


def test_redact_secrets_processor() -> None:
    logs.register_secret(TOKEN)
    event = {"event": f"url {URL}", "n": 3, "token": TOKEN}
    out = logs.redact_secrets(None, "info", event)
    assert out == {"event": "url https://api.telegram.org/bot***/getMe", "n": 3, "token": "***"}
