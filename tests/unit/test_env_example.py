"""`.env.example` lists every setting (and nothing that is not one), each with a comment, and
every value it gives is the setting's default."""

import os
import re
from pathlib import Path

import pytest

from core.settings import Settings

EXAMPLE = Path(__file__).resolve().parents[2] / ".env.example"
SETTING_LINE = re.compile(r"^([A-Z0-9_]+)=(.*)$")
SECTION = re.compile(r"^# -+ .* -+$")  # `# --- Telegram ----...`: a heading, not a comment


def settings_lines() -> list[tuple[int, str, str]]:
    """(line index, name, value) of every `NAME=value` line."""
    found = []
    for index, line in enumerate(EXAMPLE.read_text().splitlines()):
        match = SETTING_LINE.match(line)
        if match:
            found.append((index, match.group(1), match.group(2)))
    return found


def comment_block(lines: list[str], index: int) -> list[str]:
    """The comment lines directly above line `index`, over the settings they also describe."""
    above = index - 1
    while above >= 0 and SETTING_LINE.match(lines[above]):
        above -= 1
    block = []
    while above >= 0 and lines[above].startswith("#") and not SECTION.match(lines[above]):
        block.insert(0, lines[above])
        above -= 1
    return block


@pytest.fixture
def no_setting_in_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for key in list(os.environ):
        if key.lower() in Settings.model_fields:
            monkeypatch.delenv(key)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    monkeypatch.chdir(tmp_path)


def test_env_example_lists_every_setting() -> None:
    text = EXAMPLE.read_text()
    listed = set(re.findall(r"^([A-Z0-9_]+)=", text, re.MULTILINE))
    fields = {name.upper() for name in Settings.model_fields}
    assert fields - listed == set(), "settings missing from .env.example"
    assert listed - fields == set(), ".env.example names unknown settings"
    names = [name for _, name, _ in settings_lines()]
    assert len(names) == len(set(names)), "a setting is listed twice"


def test_every_setting_has_a_comment() -> None:
    """Each `NAME=` line is under a comment: its own, or the one of the group it belongs to."""
    lines = EXAMPLE.read_text().splitlines()
    uncommented = [name for index, name, _ in settings_lines() if not comment_block(lines, index)]
    assert uncommented == [], f"settings without a comment in .env.example: {uncommented}"


@pytest.mark.usefixtures("no_setting_in_environment")
def test_values_in_env_example_are_the_defaults() -> None:
    """Copied to `.env` unchanged, the example changes nothing: read as Settings reads a `.env`,
    every value it gives equals the field's default."""
    loaded = Settings(_env_file=EXAMPLE)
    defaults = Settings(_env_file=None)
    given = [(name, value) for _, name, value in settings_lines() if value]
    assert len(given) > 30, "the example gives no values any more?"
    differ = {
        name: (value, getattr(defaults, name.lower()))
        for name, value in given
        if getattr(loaded, name.lower()) != getattr(defaults, name.lower())
    }
    assert differ == {}, f".env.example value != default (value, default): {differ}"


@pytest.mark.usefixtures("no_setting_in_environment")
def test_empty_values_in_env_example_are_unset_settings() -> None:
    """`NAME=` (empty) stands for "not set": the default is None or empty, or the comment says
    what the default is (DATA_DIR's per-user folder)."""
    lines = EXAMPLE.read_text().splitlines()
    defaults = Settings(_env_file=None)
    hidden = {}
    for index, name, value in settings_lines():
        if value:
            continue
        default = getattr(defaults, name.lower())
        if default in (None, []):
            continue
        if "default" not in " ".join(comment_block(lines, index)).lower():
            hidden[name] = default
    assert hidden == {}, f"empty in .env.example, but the default is not empty: {hidden}"
