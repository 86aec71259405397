"""Settings edges: JELLYFIN_PATH_MAP, DATABASE_URL and the music settings with bad values are
refused at load with one line naming the setting, never echoing a secret."""

from __future__ import annotations

import pytest

from core import logs
from core.errors import ConfigError
from core.settings import load_settings
from tests.unit import test_settings as settings_tests

PASSWORD = "s3cret-Pw-4711"

isolated = settings_tests.isolated  # the autouse fixture of tests/unit/test_settings.py


def _config_error(monkeypatch: pytest.MonkeyPatch, **env: str) -> str:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    message = str(caught.value)
    assert "\n" not in message
    assert caught.value.user_message == "The bot is not configured correctly."
    return message


# --------------------------------------------------------------------------- JELLYFIN_PATH_MAP


def test_path_map_is_checked_at_load(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = "/data/library=/media/anime, /data/other=D:\\Media"
    monkeypatch.setenv("JELLYFIN_PATH_MAP", spec)
    assert load_settings().jellyfin_path_map == spec


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            "data/library=/media/anime",
            "invalid setting JELLYFIN_PATH_MAP: JELLYFIN_PATH_MAP bot path 'data/library' must "
            "be absolute",
        ),
        (
            "/data/library=/media/anime,/data/other",
            "invalid setting JELLYFIN_PATH_MAP: JELLYFIN_PATH_MAP entry '/data/other' is not "
            "'bot=jellyfin'",
        ),
        (
            "/data/library=",
            "invalid setting JELLYFIN_PATH_MAP: JELLYFIN_PATH_MAP entry '/data/library=' is not "
            "'bot=jellyfin'",
        ),
    ],
    ids=["relative", "no-equals", "no-jellyfin-side"],
)
def test_bad_path_map_is_one_line_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch, value: str, message: str
) -> None:
    assert _config_error(monkeypatch, JELLYFIN_PATH_MAP=value) == message


# --------------------------------------------------------------------------- DATABASE_URL


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql://bot:{PASSWORD}@[db/animebot",  # urlsplit: "Invalid IPv6 URL"
        f"postgresql+asyncpg://bot:{PASSWORD}@db/animebot",  # an SQLAlchemy URL
        f"mysql://bot:{PASSWORD}@db/animebot",
        f"bot:{PASSWORD}@db:5432/animebot",  # no scheme at all
    ],
    ids=["unparsable", "sqlalchemy", "mysql", "no-scheme"],
)
def test_database_url_that_postgres_cannot_use_is_refused_without_echoing_it(
    monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    """Accepted, it crashed the start with a traceback from asyncpg (and an unparsable one
    kept its password out of the log redactor)."""
    message = _config_error(monkeypatch, DATABASE_URL=url)
    assert message == (
        "invalid setting DATABASE_URL: is not a PostgreSQL URL "
        "(postgresql://user:password@host:port/database)"
    )
    assert PASSWORD not in message


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql://bot:{PASSWORD}@db:5432/animebot",
        f"postgres://bot:{PASSWORD}@db/animebot",
        f"postgresql://bot:{PASSWORD}@db1:5432,db2:5433/animebot",  # several hosts
        "postgresql:///animebot?host=/run/postgresql",  # a Unix socket, no password
    ],
    ids=["plain", "postgres-scheme", "multi-host", "socket"],
)
def test_database_urls_asyncpg_takes_are_accepted(
    monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    monkeypatch.setenv("DATABASE_URL", url)
    settings = load_settings()
    assert settings.database_url is not None
    assert settings.database_url.get_secret_value() == url
    assert PASSWORD not in repr(settings)
    assert PASSWORD not in logs.redact(f"connecting to {url}")


@pytest.mark.parametrize(
    "key",
    ['abc"def', "abc\\def", "abc\ndef", "abc\tdef"],
    ids=["quote", "backslash", "newline", "tab"],
)
def test_a_jellyfin_key_that_cannot_be_sent_is_refused_at_load(
    monkeypatch: pytest.MonkeyPatch, key: str
) -> None:
    """It goes into a quoted `MediaBrowser Token="..."` header: accepted, it failed every
    library tick later with a ConfigError."""
    message = _config_error(monkeypatch, JELLYFIN_API_KEY=key)
    assert message == (
        "invalid setting JELLYFIN_API_KEY: contains characters that cannot be sent "
        "(quotes, \\, line breaks)"
    )
    assert key not in message


def test_a_plain_jellyfin_key_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JELLYFIN_API_KEY", "0123456789abcdef0123456789abcdef")
    settings = load_settings()
    assert settings.jellyfin_api_key is not None


# --------------------------------------------------------------------------- music settings


@pytest.mark.parametrize(
    ("name", "value", "detail"),
    [
        ("ITUNES_CALLS_PER_MINUTE", "0", "Input should be greater than or equal to 1"),
        ("ITUNES_CALLS_PER_MINUTE", "500", "Input should be less than or equal to 100"),
        ("ITUNES_CALLS_PER_MINUTE", "many", "Input should be a valid integer"),
        ("ITUNES_BASE_URL", "itunes.apple.com", "'itunes.apple.com' is not a valid http(s) URL"),
        ("ITUNES_ENABLED", "maybe", "Input should be a valid boolean"),
    ],
)
def test_bad_music_setting_is_one_line_naming_it(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, detail: str
) -> None:
    message = _config_error(monkeypatch, **{name: value})
    assert message.startswith(f"invalid setting {name}: {detail}")
    assert "https://errors.pydantic.dev" not in message


def test_a_bad_setting_next_to_secrets_never_echoes_them(monkeypatch: pytest.MonkeyPatch) -> None:
    secrets = {
        "TELEGRAM_BOT_TOKEN": f"123456:{PASSWORD}",
        "JELLYFIN_API_KEY": f"jf-{PASSWORD}",
        "DATABASE_URL": f"postgresql+asyncpg://bot:{PASSWORD}@db/animebot",
    }
    message = _config_error(monkeypatch, ITUNES_CALLS_PER_MINUTE="0", **secrets)
    assert message.startswith("invalid setting DATABASE_URL: ")
    assert "; invalid setting ITUNES_CALLS_PER_MINUTE: " in message
    assert PASSWORD not in message
