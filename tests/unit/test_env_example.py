"""`.env.example` lists every setting (and nothing that is not one)."""

import re
from pathlib import Path

from core.settings import Settings

EXAMPLE = Path(__file__).resolve().parents[2] / ".env.example"


def test_env_example_lists_every_setting() -> None:
    text = EXAMPLE.read_text()
    listed = set(re.findall(r"^([A-Z0-9_]+)=", text, re.MULTILINE))
    fields = {name.upper() for name in Settings.model_fields}
    assert fields - listed == set(), "settings missing from .env.example"
    assert listed - fields == set(), ".env.example names unknown settings"
