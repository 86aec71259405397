"""Maintenance helpers: which files expire, and that PostgreSQL's folder is never touched."""

from __future__ import annotations

import os
import time
from pathlib import Path

from core.scheduler import TEMP_MAX_AGE_S, UPLOAD_MAX_AGE_S, expire_temp_files


def _file(path: Path, age_s: float, now: float) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    os.utime(path, (now - age_s, now - age_s))
    return path


def test_expire_temp_files(tmp_path: Path) -> None:
    now = time.time()
    old = TEMP_MAX_AGE_S + 60
    stale_part = _file(tmp_path / "outputs" / "j1" / ".00_comfy.png.abc.part", old, now)
    fresh_part = _file(tmp_path / "outputs" / "j2" / ".00_comfy.png.def.part", 60, now)
    kept_output = _file(tmp_path / "outputs" / "j1" / "00_original.png", old * 10, now)
    old_upload = _file(tmp_path / "music" / "uploads" / "a.mp3", UPLOAD_MAX_AGE_S + 60, now)
    new_upload = _file(tmp_path / "music" / "uploads" / "b.mp3", old, now)
    pg_temp = _file(tmp_path / "pgdata" / "base" / "pgsql_tmp" / "pgsql_tmp1.tmp", old, now)

    assert expire_temp_files(tmp_path, now) == 2
    assert not stale_part.exists() and not old_upload.exists()
    assert fresh_part.exists() and kept_output.exists() and new_upload.exists()
    assert pg_temp.exists()  # PostgreSQL's own files are never ours to delete
