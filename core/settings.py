"""The one Settings class, read from the environment and an optional `.env` file.

Every setting is listed, with a comment, in `.env.example`. Secrets are `SecretStr`: they print as
`**********` and are registered with the log redactor when settings are loaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

import platformdirs
from pydantic import (
    AnyHttpUrl,
    Field,
    SecretStr,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from core.errors import ConfigError
from core.logs import register_secret

_URL = TypeAdapter(AnyHttpUrl)


def _default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir("animebot", appauthor=False))


def _split(value: object) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, list | tuple | set):
        return [str(part).strip() for part in value if str(part).strip()]
    return [str(value)]


def _check_url(value: str, *, name: str) -> str:
    try:
        _URL.validate_python(value)
    except ValidationError:
        raise ValueError(f"{value!r} is not a valid http(s) URL") from None
    return value.rstrip("/")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=False,
        # `KEY=` (as in .env.example) means "not set": use the default, not "" or Path(".").
        env_ignore_empty=True,
    )

    # Telegram
    telegram_bot_token: SecretStr | None = None
    telegram_api_base_url: str = "https://api.telegram.org/bot"
    telegram_file_base_url: str = "https://api.telegram.org/file/bot"
    telegram_webhook_url: str | None = None
    telegram_webhook_secret: SecretStr | None = None
    telegram_webhook_listen: str = "0.0.0.0"  # noqa: S104 - the webhook must be reachable
    telegram_webhook_port: int = Field(default=8443, ge=1, le=65535)

    # Storage
    database_url: SecretStr | None = None
    data_dir: Path = Field(default_factory=_default_data_dir)

    # ComfyUI
    comfyui_urls: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["http://127.0.0.1:8188"]
    )
    comfyui_max_in_flight: int = Field(default=2, ge=1, le=64)
    comfyui_timeout_s: float = Field(default=30.0, gt=0)
    workflows_dir: Path | None = None
    image_workflow: str = "txt2img_sd15"
    reference_workflow: str = "img2img_sd15"
    video_workflow: str = "txt2video_wan"
    animate_workflow: str = "img2video_wan"
    upscale_workflow: str = "upscale_esrgan"
    backend_lost_after_s: float = Field(default=60.0, gt=0)
    checkpoint_name: str = "anything-v5.safetensors"
    sdxl_checkpoint_name: str = "animagine-xl-3.1.safetensors"
    video_unet_name: str = "wan2.1_t2v_1.3B_fp16.safetensors"
    video_i2v_unet_name: str = "wan2.1_i2v_480p_14B_fp16.safetensors"
    video_clip_name: str = "umt5_xxl_fp8_e4m3fn_scaled.safetensors"
    video_vae_name: str = "wan_2.1_vae.safetensors"
    video_clip_vision_name: str = "clip_vision_h.safetensors"
    upscale_model_name: str = "RealESRGAN_x4plus_anime_6B.pth"

    # Jobs
    image_timeout_s: float = Field(default=600.0, gt=0)
    video_timeout_s: float = Field(default=3600.0, gt=0)
    max_queued_per_user: int = Field(default=5, ge=1)
    daily_quota: int = Field(default=100, ge=0)
    max_characters_per_user: int = Field(default=50, ge=1)

    # Jellyfin
    jellyfin_url: str | None = None
    jellyfin_public_url: str | None = None
    jellyfin_api_key: SecretStr | None = None
    jellyfin_library_dir: Path | None = None
    jellyfin_library_name: str = "Anime Studio"
    jellyfin_create_library: bool = False
    jellyfin_path_map: str | None = None
    jellyfin_layout: Literal["character", "chat"] = "character"
    jellyfin_timeout_s: float = Field(default=10.0, gt=0)
    jellyfin_scan_attempts: int = Field(default=12, ge=1)
    jellyfin_scan_interval_s: float = Field(default=10.0, gt=0)
    library_retry_s: float = Field(default=300.0, gt=0)

    # Music
    music_dir: Path | None = None
    itunes_enabled: bool = False
    itunes_base_url: str = "https://itunes.apple.com"
    itunes_country: str = "US"
    itunes_calls_per_minute: int = Field(default=20, ge=1, le=100)

    # Access
    admin_user_ids: Annotated[list[int], NoDecode] = Field(default_factory=list)
    allowed_chat_ids: Annotated[list[int], NoDecode] = Field(default_factory=list)
    rate_limit_burst: int = Field(default=20, ge=1)
    rate_limit_per_second: float = Field(default=1.0, gt=0)

    # Operations
    status_host: str = "127.0.0.1"
    status_port: int = Field(default=8765, ge=0, le=65535)
    status_token: SecretStr | None = None
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["console", "json"] = "console"

    @field_validator("jellyfin_path_map")
    @classmethod
    def _path_map(cls, value: str | None) -> str | None:
        if value:
            from core.library.layout import parse_path_map

            try:
                parse_path_map(value)
            except ConfigError as error:
                raise ValueError(str(error)) from None
        return value

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: SecretStr | None) -> SecretStr | None:
        # asyncpg takes only postgresql:// or postgres:// URLs; anything else crashed the start
        # with its traceback. The message must not echo the value: it holds the password.
        if value is not None and _scheme_of(value.get_secret_value()) not in POSTGRES_SCHEMES:
            raise ValueError(
                "is not a PostgreSQL URL (postgresql://user:password@host:port/database)"
            )
        return value

    @field_validator("jellyfin_api_key")
    @classmethod
    def _jellyfin_api_key(cls, value: SecretStr | None) -> SecretStr | None:
        # It goes into a quoted header: refused here rather than at every library tick.
        if (
            value is not None
            and value.get_secret_value()
            and not sendable_api_key(value.get_secret_value())
        ):
            raise ValueError("contains characters that cannot be sent (quotes, \\, line breaks)")
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("comfyui_urls", mode="before")
    @classmethod
    def _parse_urls(cls, value: object) -> list[str]:
        urls = [_check_url(url, name="COMFYUI_URLS") for url in _split(value)]
        if not urls:
            raise ValueError("at least one ComfyUI URL is needed")
        return urls

    @field_validator("admin_user_ids", "allowed_chat_ids", mode="before")
    @classmethod
    def _parse_ids(cls, value: object) -> list[int]:
        ids = []
        for part in _split(value):
            try:
                ids.append(int(part))
            except ValueError:
                raise ValueError(f"{part!r} is not a numeric Telegram id") from None
        return ids

    @field_validator(
        "telegram_api_base_url",
        "telegram_file_base_url",
        "jellyfin_url",
        "jellyfin_public_url",
        "telegram_webhook_url",
        "itunes_base_url",
    )
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return None if value in (None, "") else _check_url(str(value), name="")

    @model_validator(mode="after")
    def _register_secrets(self) -> Settings:
        for secret in (
            self.telegram_bot_token,
            self.jellyfin_api_key,
            self.telegram_webhook_secret,
            self.status_token,
        ):
            if secret is not None:
                register_secret(secret.get_secret_value())
        if self.database_url is not None:
            password = _password_of(self.database_url.get_secret_value())
            if password:
                register_secret(password)
        return self

    @property
    def jellyfin_configured(self) -> bool:
        return bool(self.jellyfin_url and self.jellyfin_api_key)

    @property
    def library_enabled(self) -> bool:
        """Results are filed into the library (JELLYFIN_LIBRARY_DIR is set); when not, each
        output is saved with library status `off`."""
        return self.jellyfin_library_dir is not None

    @property
    def outputs_dir(self) -> Path:
        return self.data_dir / "outputs"

    def token(self) -> str:
        if self.telegram_bot_token is None or not self.telegram_bot_token.get_secret_value():
            raise ConfigError(
                "TELEGRAM_BOT_TOKEN is not set: create a bot with @BotFather and put its token "
                "in the environment or in .env"
            )
        return self.telegram_bot_token.get_secret_value()


POSTGRES_SCHEMES = ("postgresql", "postgres")


def sendable_api_key(key: str) -> bool:
    """Whether `key` fits the quoted `MediaBrowser Token="..."` header Jellyfin reads."""
    return bool(key) and not any(ch in key for ch in '"\\\r\n') and key.isprintable()


def _scheme_of(url: str) -> str | None:
    """The URL's scheme, None when it cannot be parsed at all."""
    try:
        return urlsplit(url).scheme
    except ValueError:
        return None


def _password_of(url: str) -> str | None:
    return urlsplit(url).password  # it parses: `_database_url` refused any URL that does not


def _describe(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        name = "_".join(str(part) for part in item["loc"][:1]).upper() or "SETTINGS"
        message = item["msg"].removeprefix("Value error, ")
        lines.append(f"invalid setting {name}: {message}")
    return "; ".join(lines)


def load_settings(**overrides: object) -> Settings:
    """Read settings; a bad value raises ConfigError with one line naming the setting."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as error:
        raise ConfigError(_describe(error)) from None
