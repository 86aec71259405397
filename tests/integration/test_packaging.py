"""A non-editable install carries everything the bot reads at run time."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_wheel_ships_migrations_templates_and_status_page(tmp_path: Path) -> None:
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        timeout=300,
        capture_output=True,
        text=True,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = tmp_path.glob("anime_studio_bot-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    migrations = {p.name for p in (ROOT / "sql").glob("*.sql")}
    shipped = {n.rsplit("/", 1)[-1] for n in names if "/share/animebot/sql/" in n}
    assert migrations and shipped == migrations
    templates = {p.name for p in (ROOT / "core" / "workflows" / "templates").glob("*.json")}
    assert {f"core/workflows/templates/{t}" for t in templates} <= names
    assert "core/status_page.html" in names
    assert "bot/cli.py" in names
