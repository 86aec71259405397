"""One root exception for the product, a subclass per failure.

Every error carries `user_message`: a short sentence that is safe to show a Telegram user
(no paths, no secrets, no tracebacks). `str(error)` is the detailed text for the log.
"""

from __future__ import annotations


def describe(error: BaseException) -> str:
    """An exception as one line for a log or a FAILED reason: ``"ValueError: bad"``, or just
    ``"TimeoutError"`` when its text is empty (`TimeoutError()`, `asyncio.CancelledError`...),
    never ``"TimeoutError: "``."""
    name = type(error).__name__
    text = str(error).strip()
    return f"{name}: {text}" if text else name


class AnimeBotError(Exception):
    """Root of every error raised on purpose by `core`."""

    default_user_message = "Something went wrong."

    def __init__(self, message: str, *, user_message: str | None = None) -> None:
        super().__init__(message)
        self.user_message = user_message or self.default_user_message


class ConfigError(AnimeBotError):
    default_user_message = "The bot is not configured correctly."


class StoreError(AnimeBotError):
    default_user_message = "The database is not available right now."


class MigrationError(StoreError):
    pass


class NotFound(AnimeBotError):
    default_user_message = "Not found."


class Conflict(AnimeBotError):
    default_user_message = "That already exists."


class InvalidInput(AnimeBotError):
    """User input that cannot be used; `user_message` says what to fix."""

    default_user_message = "That input cannot be used."


class LimitReached(AnimeBotError):
    default_user_message = "You have reached a limit."


class IllegalTransition(AnimeBotError):
    default_user_message = "That job cannot change state like that."


class WorkflowError(AnimeBotError):
    default_user_message = "The workflow is not usable."


class ComfyError(AnimeBotError):
    default_user_message = "The GPU server failed."


class ComfyUnavailable(ComfyError):
    """Network failure, timeout or 5xx: the backend may come back."""

    default_user_message = "The GPU server is not reachable."


class ComfyValidationError(ComfyError):
    """`POST /prompt` answered 400: the workflow is wrong; retrying will not help."""

    default_user_message = "The GPU server rejected the workflow."


class ComfyExecutionError(ComfyError):
    """`execution_error` while the prompt ran."""

    default_user_message = "The GPU server failed while generating."


class MediaError(AnimeBotError):
    default_user_message = "The result could not be processed."


class LibraryError(AnimeBotError):
    default_user_message = "The media library is not available."


class MusicError(AnimeBotError):
    default_user_message = "The music source is not available."
