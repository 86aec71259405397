"""Settings: defaults, environment and `.env`, one-line errors naming the setting, secrets."""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from pathlib import Path

import platformdirs
import pytest
from pydantic import SecretStr

from core import logs
from core.errors import ConfigError
from core.settings import Settings, load_settings

EXAMPLE = Path(__file__).resolve().parents[2] / ".env.example"
TOKEN = "123456789:AAFakeTokenForSettingsTests_xyz"


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No setting from the developer's environment or working directory can leak in."""
    fields = set(Settings.model_fields)
    for key in list(os.environ):
        if key.lower() in fields:
            monkeypatch.delenv(key)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    monkeypatch.setattr(logs, "_SECRETS", set())
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


def _config_error(**env: str) -> str:
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        with pytest.raises(ConfigError) as caught:
            load_settings()
    message = str(caught.value)
    assert "\n" not in message
    assert caught.value.user_message  # generic, safe for users
    return message


def test_defaults() -> None:
    s = load_settings()
    assert s.telegram_bot_token is None
    assert s.telegram_api_base_url == "https://api.telegram.org/bot"
    assert s.telegram_file_base_url == "https://api.telegram.org/file/bot"
    assert s.database_url is None
    assert s.data_dir == Path(platformdirs.user_data_dir("animebot", appauthor=False))
    assert s.data_dir.is_absolute() and s.data_dir.name == "animebot"
    assert s.outputs_dir == s.data_dir / "outputs"
    assert s.comfyui_urls == ["http://127.0.0.1:8188"]
    assert s.jellyfin_url is None
    assert s.jellyfin_api_key is None
    assert s.jellyfin_library_dir is None
    assert s.jellyfin_configured is False
    assert s.admin_user_ids == []
    assert s.allowed_chat_ids == []  # empty: every chat
    assert s.status_port == 8765
    assert s.log_level == "INFO"
    assert s.log_format == "console"
    with pytest.raises(ConfigError, match="TELEGRAM_BOT_TOKEN") as caught:
        s.token()
    assert "\n" not in str(caught.value)


def test_default_data_dir_is_per_user(tmp_path: Path) -> None:
    if not sys.platform.startswith("linux"):
        pytest.skip("XDG_DATA_HOME is only used on Linux")
    assert load_settings().data_dir == tmp_path / "xdg-data" / "animebot"


def test_reads_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env = {
        "TELEGRAM_BOT_TOKEN": TOKEN,
        "TELEGRAM_API_BASE_URL": "http://127.0.0.1:8081/bot",
        "TELEGRAM_FILE_BASE_URL": "http://127.0.0.1:8081/file/bot/",
        "DATABASE_URL": "postgresql://bot:hunter2hunter2@db:5432/animebot",
        "DATA_DIR": str(tmp_path / "data"),
        "COMFYUI_URLS": "http://gpu1:8188/, https://gpu2.example.com ,,http://10.0.0.3:8188",
        "JELLYFIN_URL": "http://jellyfin:8096/",
        "JELLYFIN_API_KEY": "jellyfin-api-key-0123456789",
        "JELLYFIN_LIBRARY_DIR": str(tmp_path / "library"),
        "ADMIN_USER_IDS": "111, 222",
        "ALLOWED_CHAT_IDS": "-1001234567890,42",
        "STATUS_PORT": "9100",
        "LOG_LEVEL": "debug",
        "LOG_FORMAT": "json",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    s = load_settings()
    assert s.token() == TOKEN
    assert s.telegram_api_base_url == "http://127.0.0.1:8081/bot"
    assert s.telegram_file_base_url == "http://127.0.0.1:8081/file/bot"  # trailing / dropped
    assert s.database_url is not None
    assert s.database_url.get_secret_value() == env["DATABASE_URL"]
    assert s.data_dir == tmp_path / "data"
    assert s.comfyui_urls == [
        "http://gpu1:8188",
        "https://gpu2.example.com",
        "http://10.0.0.3:8188",
    ]
    assert s.jellyfin_url == "http://jellyfin:8096"
    assert s.jellyfin_api_key is not None
    assert s.jellyfin_api_key.get_secret_value() == "jellyfin-api-key-0123456789"
    assert s.jellyfin_library_dir == tmp_path / "library"
    assert s.jellyfin_configured is True
    assert s.admin_user_ids == [111, 222]
    assert s.allowed_chat_ids == [-1001234567890, 42]
    assert s.status_port == 9100
    assert s.log_level == "DEBUG"
    assert s.log_format == "json"


def test_lowercase_environment_names_work(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("status_port", "9200")
    assert load_settings().status_port == 9200


def test_reads_dotenv_and_environment_wins(monkeypatch: pytest.MonkeyPatch, isolated: Path) -> None:
    (isolated / ".env").write_text(
        "# comment\n"
        f"TELEGRAM_BOT_TOKEN={TOKEN}\n"
        "COMFYUI_URLS=http://a:8188,http://b:8188\n"
        "ADMIN_USER_IDS=7\n"
        "STATUS_PORT=9000\n"
        'LOG_FORMAT="json"\n'
        "UNRELATED_THING=ignored\n",
        encoding="utf-8",
    )
    s = load_settings()
    assert s.token() == TOKEN
    assert s.comfyui_urls == ["http://a:8188", "http://b:8188"]
    assert s.admin_user_ids == [7]
    assert s.status_port == 9000
    assert s.log_format == "json"

    monkeypatch.setenv("STATUS_PORT", "9001")
    monkeypatch.setenv("ADMIN_USER_IDS", "8,9")
    s = load_settings()
    assert s.status_port == 9001
    assert s.admin_user_ids == [8, 9]
    assert s.comfyui_urls == ["http://a:8188", "http://b:8188"]  # still from .env


def test_overrides_win(isolated: Path) -> None:
    (isolated / ".env").write_text("STATUS_PORT=9000\n")
    assert load_settings(status_port=1234).status_port == 1234


def test_copied_env_example_gives_defaults_for_empty_values(isolated: Path) -> None:
    """`KEY=` lines (as in .env.example) mean "not set", not an empty string or Path(".")."""
    shutil.copy(EXAMPLE, isolated / ".env")
    empty = re.findall(r"^([A-Z0-9_]+)=$", EXAMPLE.read_text(), re.MULTILINE)
    assert "DATA_DIR" in empty and "JELLYFIN_LIBRARY_DIR" in empty
    loaded = load_settings()
    (isolated / ".env").unlink()
    defaults = load_settings()
    for key in empty:
        field = key.lower()
        assert getattr(loaded, field) == getattr(defaults, field), key
    assert loaded.data_dir == defaults.data_dir != Path(".")
    assert loaded.jellyfin_library_dir is None
    assert loaded.database_url is None
    assert loaded.allowed_chat_ids == []


def test_empty_environment_values_mean_default(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in (
        "ALLOWED_CHAT_IDS",
        "ADMIN_USER_IDS",
        "COMFYUI_URLS",
        "DATA_DIR",
        "JELLYFIN_LIBRARY_DIR",
        "STATUS_PORT",
        "TELEGRAM_BOT_TOKEN",
        "JELLYFIN_URL",
    ):
        monkeypatch.setenv(key, "")
    s = load_settings()
    assert s.allowed_chat_ids == [] and s.admin_user_ids == []
    assert s.comfyui_urls == ["http://127.0.0.1:8188"]
    assert s.data_dir == Path(platformdirs.user_data_dir("animebot", appauthor=False))
    assert s.jellyfin_library_dir is None and s.jellyfin_url is None
    assert s.status_port == 8765
    with pytest.raises(ConfigError, match="TELEGRAM_BOT_TOKEN"):
        s.token()


BAD_VALUES = [
    ("COMFYUI_URLS", "not a url"),
    ("COMFYUI_URLS", "http://ok:8188,ftp://gpu:21"),
    ("COMFYUI_URLS", " , "),
    ("TELEGRAM_API_BASE_URL", "api.telegram.org/bot"),
    ("TELEGRAM_FILE_BASE_URL", "file://tmp"),
    ("JELLYFIN_URL", "jellyfin:8096"),
    ("ADMIN_USER_IDS", "123,abc"),
    ("ADMIN_USER_IDS", "1.5"),
    ("ALLOWED_CHAT_IDS", "@mychannel"),
    ("STATUS_PORT", "http"),
    ("STATUS_PORT", "70000"),
    ("STATUS_PORT", "-1"),
    ("LOG_FORMAT", "xml"),
    ("LOG_LEVEL", "LOUD"),
]


@pytest.mark.parametrize(("name", "value"), BAD_VALUES, ids=[f"{n}={v}" for n, v in BAD_VALUES])
def test_invalid_value_is_one_line_naming_the_setting(name: str, value: str) -> None:
    message = _config_error(**{name: value})
    assert message.startswith(f"invalid setting {name}:")
    assert "validation error" not in message  # not pydantic's multi-line dump
    assert "https://errors.pydantic.dev" not in message


def test_invalid_value_in_dotenv(isolated: Path) -> None:
    (isolated / ".env").write_text("LOG_FORMAT=yaml\n")
    message = _config_error()
    assert message.startswith("invalid setting LOG_FORMAT:")
    assert "console" in message and "json" in message


def test_several_invalid_values_still_one_line() -> None:
    message = _config_error(STATUS_PORT="x", ADMIN_USER_IDS="y", LOG_FORMAT="z")
    for name in ("STATUS_PORT", "ADMIN_USER_IDS", "LOG_FORMAT"):
        assert f"invalid setting {name}:" in message


def test_explains_what_is_wrong() -> None:
    assert "'abc' is not a numeric Telegram id" in _config_error(ADMIN_USER_IDS="1,abc")
    assert "not a valid http(s) URL" in _config_error(COMFYUI_URLS="gpu:8188")


def test_secrets_are_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    secrets = {
        "TELEGRAM_BOT_TOKEN": TOKEN,
        "JELLYFIN_API_KEY": "jf-key-abcdef123456",
        "DATABASE_URL": "postgresql://bot:dbpass-987654@db/animebot",
        "STATUS_TOKEN": "status-token-13579",
        "TELEGRAM_WEBHOOK_SECRET": "webhook-secret-24680",
    }
    for key, value in secrets.items():
        monkeypatch.setenv(key, value)
    s = load_settings()
    for key, value in secrets.items():
        field = getattr(s, key.lower())
        assert isinstance(field, SecretStr), key
        assert field.get_secret_value() == value
        assert value not in str(field) and value not in repr(field)
    shown = [repr(s), str(s), s.model_dump_json(), json.dumps(s.model_dump(mode="json"))]
    for text in shown:
        for value in [*secrets.values(), "dbpass-987654", TOKEN.split(":")[1]]:
            assert value not in text
    assert "**********" in s.model_dump_json()


def test_loading_registers_secrets_with_the_log_redactor(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every secret setting: the bot token (and its secret part alone), the Jellyfin key, the
    database password, the webhook secret and the status page's token."""
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", TOKEN)
    monkeypatch.setenv("JELLYFIN_API_KEY", "jf-key-abcdef123456")
    monkeypatch.setenv("DATABASE_URL", "postgresql://bot:dbpass-987654@db/animebot")
    monkeypatch.setenv("TELEGRAM_WEBHOOK_SECRET", "webhook-secret-24680")
    monkeypatch.setenv("STATUS_TOKEN", "status-token-13579")
    secrets = (
        TOKEN,
        TOKEN.split(":")[1],
        "jf-key-abcdef123456",
        "dbpass-987654",
        "webhook-secret-24680",
        "status-token-13579",
    )
    for value in secrets:
        assert logs.redact(value) == value  # nothing registered yet
    load_settings()
    line = logs.redact(
        f"GET https://api.telegram.org/bot{TOKEN}/getMe key=jf-key-abcdef123456 "
        "dsn=postgresql://bot:dbpass-987654@db/animebot tail=" + TOKEN.split(":")[1] + " "
        "X-Telegram-Bot-Api-Secret-Token: webhook-secret-24680 "
        "GET /ws?token=status-token-13579"
    )
    for value in secrets:
        assert value not in line
    assert "postgresql://bot:***@db/animebot" in line
    assert "X-Telegram-Bot-Api-Secret-Token: *** " in line
    assert line.endswith("GET /ws?token=***")
