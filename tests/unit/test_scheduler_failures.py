"""The temporary-files task when a file cannot be removed, and what the task reports."""

from __future__ import annotations

import io
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import asyncpg
import pytest

from core.library.service import LibraryFiler
from core.logs import configure_logging
from core.scheduler import TEMP_MAX_AGE_S, Maintenance, expire_temp_files
from tests.conftest import TEST_LOG_LEVEL

OLD = TEMP_MAX_AGE_S + 60


def _file(path: Path, age_s: float, now: float) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    os.utime(path, (now - age_s, now - age_s))
    return path


@pytest.fixture
def log() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    configure_logging("INFO", "json", stream=stream)
    try:
        yield stream
    finally:
        configure_logging(TEST_LOG_LEVEL, "console")  # as tests/conftest.py set it


def _lines(stream: io.StringIO, event: str) -> list[dict[str, Any]]:
    parsed = [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]
    return [line for line in parsed if line.get("event") == event]


def test_a_file_that_cannot_be_removed_does_not_stop_the_sweep(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = time.time()
    stuck = _file(tmp_path / "outputs" / "j1" / ".a.png.1.part", OLD, now)
    stale = [
        _file(tmp_path / "outputs" / "j1" / ".b.png.2.part", OLD, now),
        _file(tmp_path / "outputs" / "j2" / ".c.png.3.part", OLD, now),
        _file(tmp_path / "references" / "r.png.tmp4", OLD, now),
    ]
    real_unlink = Path.unlink
    tried: list[Path] = []

    def unlink(self: Path, missing_ok: bool = False) -> None:
        tried.append(self)
        if self == stuck:
            raise PermissionError(13, "Permission denied", str(self))
        real_unlink(self, missing_ok)

    monkeypatch.setattr(Path, "unlink", unlink)
    assert expire_temp_files(tmp_path, now) == 3
    assert stuck.exists() and not any(path.exists() for path in stale)
    assert sorted(tried) == sorted([stuck, *stale])


async def test_the_temp_task_says_how_many_files_it_removed(
    tmp_path: Path, log: io.StringIO
) -> None:
    now = time.time()
    removed = [
        _file(tmp_path / "outputs" / "j1" / ".a.part", OLD, now),
        _file(tmp_path / "music" / "x.mp3.tmp1", OLD, now),
    ]
    kept = _file(tmp_path / "outputs" / "j1" / "00_original.png", OLD, now)
    maintenance = Maintenance(
        cast(asyncpg.Pool, None), tmp_path, cast(LibraryFiler, None), rate_limit=(1.0, 5)
    )
    await maintenance.temp_files()
    assert not any(path.exists() for path in removed) and kept.exists()
    (line,) = _lines(log, "old temporary files removed")
    assert line["files"] == 2
    await maintenance.temp_files()  # nothing left: nothing said
    assert len(_lines(log, "old temporary files removed")) == 1
