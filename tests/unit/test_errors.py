"""`core.errors.describe`: one line naming an exception, also when its text is empty."""

from __future__ import annotations

import asyncio

import pytest

from core.errors import ComfyUnavailable, describe


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (ValueError("bad"), "ValueError: bad"),
        (TimeoutError(), "TimeoutError"),
        (asyncio.CancelledError(), "CancelledError"),
        (ConnectionResetError(""), "ConnectionResetError"),
        (OSError("  \n"), "OSError"),  # only blanks: nothing to say after the name
        (KeyError("x"), "KeyError: 'x'"),
        (ComfyUnavailable("GET /queue: HTTP 502"), "ComfyUnavailable: GET /queue: HTTP 502"),
        (RuntimeError("two\nlines\n"), "RuntimeError: two\nlines"),
    ],
)
def test_describe_names_the_exception_and_its_text_when_there_is_one(
    error: BaseException, expected: str
) -> None:
    assert describe(error) == expected
    assert not describe(error).endswith(": ")
