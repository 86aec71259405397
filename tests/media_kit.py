"""Helpers shared by the media tests (tests/unit/test_media_edges.py and
tests/integration/test_media_process_edges.py)."""

from collections.abc import Iterator

import pytest

from core.media import ffmpeg_bin


@pytest.fixture
def fresh_locator() -> Iterator[None]:
    """The ffmpeg locator forgets its cached answer before and after the test."""
    ffmpeg_bin._default_ffmpeg.cache_clear()
    yield
    ffmpeg_bin._default_ffmpeg.cache_clear()
