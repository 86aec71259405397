"""A fake Telegram Bot API server for tests: real HTTP on 127.0.0.1, an ephemeral port.

python-telegram-bot talks to it exactly as to api.telegram.org:

    fake = FakeTelegram()
    await fake.start()
    app = fake.builder().build()          # ApplicationBuilder with token + base URLs set
    bot = fake.make_bot()                 # or a bare telegram.Bot

What it does, in the order a request meets it:
  * token check (401 "Unauthorized"), method lookup (case-insensitive; unknown -> 404 "Not Found"),
  * body decoding: query string, JSON, form-urlencoded or multipart (files, `attach://` references);
    a body over 50 MB -> 413 "Request Entity Too Large",
  * test-injected failures (`fail_next`), then the optional flood model (`enable_flood_model`),
  * the method itself, with Telegram's validations and exact error descriptions.

Everything is recorded for assertions: `calls` (every API call), `messages` (every message with
the history of its versions), `callback_answers`, `chat_actions`, `flood_violations`, `conflicts`.
Test-side helpers build chats and users, inject updates (delivered by long polling or POSTed to
the webhook), and wait for conditions without sleeping.

Deliberate simplifications: `parse_mode=HTML` is parsed (tags stripped, bad markup rejected like
Telegram); Markdown modes keep the text as given. Entities are generated for injected user
messages (commands, mentions, URLs) but not for messages the bot sends. Photos keep the uploaded
bytes as the largest size (Telegram would recompress); smaller sizes are real JPEG thumbnails.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import itertools
import json
import math
import mimetypes
import re
import secrets
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any, Literal, TypeVar
from urllib.parse import parse_qsl

import aiohttp
import pytest
from aiohttp import web
from PIL import Image, UnidentifiedImageError
from telegram import Bot
from telegram.ext import Application, ApplicationBuilder

JSONDict = dict[str, Any]
T = TypeVar("T")

# --- Telegram's limits ------------------------------------------------------------------------
MAX_TEXT_LENGTH = 4096  # UTF-16 code units, after entity parsing
MAX_CAPTION_LENGTH = 1024
MAX_CALLBACK_DATA_BYTES = 64
MAX_PHOTO_BYTES = 10 * 1024 * 1024
MAX_PHOTO_DIMENSION_SUM = 10_000
MAX_PHOTO_RATIO = 20
MAX_UPLOAD_BYTES = 50 * 1024 * 1024
MAX_DOWNLOAD_BYTES = 20 * 1024 * 1024
MAX_THUMBNAIL_SIDE = 320
MAX_THUMBNAIL_BYTES = 200 * 1024
CALLBACK_QUERY_TTL = 15 * 60.0
PHOTO_SIZE_LIMITS = (90, 320, 800, 1280, 2560)

# --- Telegram's error descriptions ------------------------------------------------------------
ERR_UNAUTHORIZED = "Unauthorized"
ERR_NOT_FOUND = "Not Found"
ERR_TOO_LARGE = "Request Entity Too Large"
ERR_TEXT_TOO_LONG = "Bad Request: message is too long"
ERR_EDIT_TEXT_TOO_LONG = "Bad Request: MESSAGE_TOO_LONG"
ERR_CAPTION_TOO_LONG = "Bad Request: message caption is too long"
ERR_TEXT_EMPTY = "Bad Request: message text is empty"
ERR_BUTTON_DATA = "Bad Request: BUTTON_DATA_INVALID"
ERR_BUTTON_URL = "Bad Request: BUTTON_URL_INVALID"
ERR_MARKUP_JSON = "Bad Request: can't parse reply keyboard markup JSON object"
ERR_INLINE_KEYBOARD_EXPECTED = "Bad Request: inline keyboard expected"
ERR_NOT_MODIFIED = (
    "Bad Request: message is not modified: specified new message content and reply markup are "
    "exactly the same as a current content and reply markup of the message"
)
ERR_EDIT_NOT_FOUND = "Bad Request: message to edit not found"
ERR_CANT_EDIT = "Bad Request: message can't be edited"
ERR_NO_TEXT_TO_EDIT = "Bad Request: there is no text in the message to edit"
ERR_NO_CAPTION_TO_EDIT = "Bad Request: there is no caption in the message to edit"
ERR_MESSAGE_ID_MISSING = "Bad Request: message identifier is not specified"
ERR_DELETE_NOT_FOUND = "Bad Request: message to delete not found"
ERR_CANT_DELETE = "Bad Request: message can't be deleted"
ERR_REPLY_NOT_FOUND = "Bad Request: message to be replied not found"
ERR_REACT_NOT_FOUND = "Bad Request: message to react not found"
ERR_CHAT_ID_EMPTY = "Bad Request: chat_id is empty"
ERR_CHAT_NOT_FOUND = "Bad Request: chat not found"
ERR_USER_NOT_FOUND = "Bad Request: user not found"
ERR_THREAD_NOT_FOUND = "Bad Request: message thread not found"
ERR_PHOTO_DIMENSIONS = "Bad Request: PHOTO_INVALID_DIMENSIONS"
ERR_PHOTO_TOO_BIG = "Bad Request: PHOTO_SAVE_FILE_INVALID"
ERR_IMAGE_PROCESS = "Bad Request: IMAGE_PROCESS_FAILED"
ERR_WRONG_FILE = "Bad Request: wrong file identifier/HTTP URL specified"
ERR_INVALID_FILE_ID = "Bad Request: invalid file_id"
ERR_FILE_TOO_BIG = "Bad Request: file is too big"
ERR_QUERY_TOO_OLD = (
    "Bad Request: query is too old and response timeout expired or query ID is invalid"
)
ERR_BLOCKED = "Forbidden: bot was blocked by the user"
ERR_KICKED_GROUP = "Forbidden: bot was kicked from the group chat"
ERR_KICKED_SUPERGROUP = "Forbidden: bot was kicked from the supergroup chat"
ERR_CONFLICT_TERMINATED = (
    "Conflict: terminated by other getUpdates request; make sure that only one bot instance "
    "is running"
)
ERR_CONFLICT_WEBHOOK = (
    "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook to delete "
    "the webhook first"
)
ERR_NO_ADMINS_PRIVATE = "Bad Request: there are no administrators in the private chat"
ERR_COMMAND_INVALID = "Bad Request: BOT_COMMAND_INVALID"
ERR_COMMAND_DESCRIPTION = "Bad Request: command description must be non-empty"
ERR_SECRET_TOKEN = "Bad Request: secret token contains unallowed characters"
ERR_WRONG_ACTION = "Bad Request: wrong parameter action in request"

DEFAULT_ERROR_DESCRIPTIONS: dict[int, str] = {
    400: "Bad Request",
    401: ERR_UNAUTHORIZED,
    403: ERR_BLOCKED,
    404: ERR_NOT_FOUND,
    409: ERR_CONFLICT_TERMINATED,
    500: "Internal Server Error",
    502: "Bad Gateway",
}

# Update types delivered when allowed_updates is empty or was never given.
DEFAULT_UPDATE_TYPES = frozenset(
    {
        "message",
        "edited_message",
        "channel_post",
        "edited_channel_post",
        "inline_query",
        "chosen_inline_result",
        "callback_query",
        "shipping_query",
        "pre_checkout_query",
        "poll",
        "poll_answer",
        "my_chat_member",
        "chat_join_request",
    }
)
# Methods that put a message into a chat (or change one): what flood control counts.
FLOOD_COUNTED_METHODS = frozenset(
    {
        "sendMessage",
        "sendPhoto",
        "sendVideo",
        "sendDocument",
        "sendAudio",
        "sendVoice",
        "editMessageText",
        "editMessageCaption",
        "editMessageMedia",
        "editMessageReplyMarkup",
    }
)
CHAT_ACTIONS = frozenset(
    {
        "typing",
        "upload_photo",
        "record_video",
        "upload_video",
        "record_voice",
        "upload_voice",
        "upload_document",
        "choose_sticker",
        "find_location",
        "record_video_note",
        "upload_video_note",
    }
)

_INT_PARAMS = frozenset(
    {
        "chat_id",
        "message_id",
        "message_thread_id",
        "offset",
        "limit",
        "timeout",
        "user_id",
        "reply_to_message_id",
        "duration",
        "width",
        "height",
        "cache_time",
        "max_connections",
    }
)
_BOOL_PARAMS = frozenset(
    {
        "disable_notification",
        "protect_content",
        "show_alert",
        "drop_pending_updates",
        "supports_streaming",
        "has_spoiler",
        "allow_sending_without_reply",
        "is_big",
        "disable_content_type_detection",
        "disable_web_page_preview",
    }
)
_JSON_PARAMS = frozenset(
    {
        "reply_markup",
        "reply_parameters",
        "allowed_updates",
        "commands",
        "scope",
        "media",
        "reaction",
        "entities",
        "caption_entities",
        "link_preview_options",
    }
)


class ApiError(Exception):
    """An error answer of the Bot API: HTTP status = error_code, and its description."""

    def __init__(self, code: int, description: str, *, retry_after: int | None = None) -> None:
        super().__init__(description)
        self.code = code
        self.description = description
        self.retry_after = retry_after

    def body(self) -> JSONDict:
        body: JSONDict = {"ok": False, "error_code": self.code, "description": self.description}
        if self.retry_after is not None:
            body["parameters"] = {"retry_after": self.retry_after}
        return body


def too_many_requests(retry_after: int) -> ApiError:
    return ApiError(429, f"Too Many Requests: retry after {retry_after}", retry_after=retry_after)


def utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


# --- Test-side objects ------------------------------------------------------------------------
@dataclass
class FakeUser:
    id: int
    first_name: str
    username: str | None = None
    last_name: str | None = None
    is_bot: bool = False
    language_code: str | None = "en"

    def to_api(self) -> JSONDict:
        data: JSONDict = {"id": self.id, "is_bot": self.is_bot, "first_name": self.first_name}
        if self.last_name:
            data["last_name"] = self.last_name
        if self.username:
            data["username"] = self.username
        if self.language_code and not self.is_bot:
            data["language_code"] = self.language_code
        return data


ChatType = Literal["private", "group", "supergroup"]


@dataclass
class FakeChat:
    id: int
    type: ChatType
    title: str | None = None
    username: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    is_forum: bool = False
    topics: dict[int, str] = field(default_factory=dict)
    member_ids: set[int] = field(default_factory=set)
    admin_ids: set[int] = field(default_factory=set)
    creator_id: int | None = None
    blocked: bool = False  # private chat: the user blocked the bot -> 403
    kicked: bool = False  # group: the bot was removed -> 403

    @property
    def is_group(self) -> bool:
        return self.type in ("group", "supergroup")

    def to_api(self) -> JSONDict:
        data: JSONDict = {"id": self.id, "type": self.type}
        if self.type == "private":
            data["first_name"] = self.first_name or ""
            if self.last_name:
                data["last_name"] = self.last_name
        else:
            data["title"] = self.title or ""
        if self.username:
            data["username"] = self.username
        if self.is_forum:
            data["is_forum"] = True
        return data


@dataclass
class Upload:
    """One file part of a multipart request."""

    name: str
    filename: str | None
    content_type: str | None
    data: bytes = field(repr=False)


@dataclass
class FileRecord:
    file_id: str
    file_unique_id: str
    kind: str  # photo, video, document, audio, voice, thumbnail
    data: bytes = field(repr=False)
    file_path: str
    width: int | None = None
    height: int | None = None
    mime_type: str | None = None
    file_name: str | None = None
    # all sizes of one photo, smallest first
    group: list[FileRecord] | None = field(default=None, repr=False)

    @property
    def file_size(self) -> int:
        return len(self.data)

    def photo_size(self) -> JSONDict:
        return {
            "file_id": self.file_id,
            "file_unique_id": self.file_unique_id,
            "width": self.width or 0,
            "height": self.height or 0,
            "file_size": self.file_size,
        }


@dataclass
class MessageVersion:
    """One state of a message: the original and every edit, in order."""

    at: float  # time.time()
    method: str
    text: str | None
    caption: str | None
    media_kind: str | None
    media_file_id: str | None
    media_bytes: bytes | None = field(repr=False)
    reply_markup: JSONDict | None


@dataclass
class StoredMessage:
    chat: FakeChat
    message_id: int
    sender: FakeUser
    date: int
    from_bot: bool
    thread_id: int | None = None
    reply_to: StoredMessage | None = None
    text: str | None = None
    caption: str | None = None
    format_key: str | None = None  # raw markup of text/caption, to compare edits like Telegram
    parse_mode: str | None = None
    entities: list[JSONDict] = field(default_factory=list)
    media_kind: str | None = None
    media: Any = None  # API object: list of PhotoSize dicts for a photo, a dict otherwise
    media_file_id: str | None = None  # the largest size for photos
    media_bytes: bytes | None = field(default=None, repr=False)
    extras: JSONDict = field(default_factory=dict)
    reply_markup: JSONDict | None = None
    edit_date: int | None = None
    deleted: bool = False
    reactions: list[JSONDict] = field(default_factory=list)
    history: list[MessageVersion] = field(default_factory=list, repr=False)

    @property
    def chat_id(self) -> int:
        return self.chat.id

    @property
    def edits(self) -> list[MessageVersion]:
        return self.history[1:]

    @property
    def content(self) -> str | None:
        """The visible text: `text` for text messages, `caption` for media messages."""
        return self.text if self.media_kind is None else self.caption

    def snapshot(self, method: str) -> None:
        self.history.append(
            MessageVersion(
                at=time.time(),
                method=method,
                text=self.text,
                caption=self.caption,
                media_kind=self.media_kind,
                media_file_id=self.media_file_id,
                media_bytes=self.media_bytes,
                reply_markup=self.reply_markup,
            )
        )

    def to_api(self, *, with_reply: bool = True) -> JSONDict:
        data: JSONDict = {
            "message_id": self.message_id,
            "from": self.sender.to_api(),
            "chat": self.chat.to_api(),
            "date": self.date,
        }
        if self.thread_id is not None:
            data["message_thread_id"] = self.thread_id
            if self.chat.is_forum:
                data["is_topic_message"] = True
        if with_reply and self.reply_to is not None:
            data["reply_to_message"] = self.reply_to.to_api(with_reply=False)
        if self.edit_date is not None:
            data["edit_date"] = self.edit_date
        if self.text is not None:
            data["text"] = self.text
            if self.entities:
                data["entities"] = self.entities
        if self.media_kind is not None:
            data[self.media_kind] = self.media
            if self.caption:
                data["caption"] = self.caption
                if self.entities:
                    data["caption_entities"] = self.entities
        data.update(self.extras)
        if self.reply_markup is not None and "inline_keyboard" in self.reply_markup:
            data["reply_markup"] = self.reply_markup
        return data


@dataclass
class ApiCall:
    method: str
    params: JSONDict
    files: dict[str, Upload]
    at: float  # time.monotonic()
    status: int | None = None
    result: Any = None
    error: str | None = None

    @property
    def chat_id(self) -> Any:
        return self.params.get("chat_id")

    @property
    def ok(self) -> bool:
        return self.status == 200


@dataclass(frozen=True)
class FloodViolation:
    at: float
    chat_id: int | None
    method: str
    rule: str  # "private", "group" or "global"
    wait: float  # how long the bot should have waited


@dataclass
class FloodModel:
    """Token buckets in the spirit of Telegram's (unpublished) limits.

    private: ~1 message/edit per second per private chat, short bursts (`private_burst`) tolerated;
    group: `group_per_minute` per group chat, refilled evenly; global: `global_per_second`.
    With `enforce` a violation is answered with 429, otherwise it is only recorded.
    """

    private_per_second: float = 1.0
    private_burst: int = 3
    group_per_minute: int = 20
    global_per_second: int = 30
    enforce: bool = False
    _buckets: dict[str, tuple[float, float]] = field(default_factory=dict)

    def _take(self, key: str, rate: float, burst: int, now: float) -> float:
        tokens, last = self._buckets.get(key, (float(burst), now))
        tokens = min(float(burst), tokens + (now - last) * rate)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            return 0.0
        self._buckets[key] = (tokens, now)
        return (1.0 - tokens) / rate

    def check(self, chat: FakeChat | None, method: str, now: float) -> list[FloodViolation]:
        found: list[FloodViolation] = []
        wait = self._take("*", float(self.global_per_second), self.global_per_second, now)
        if wait:
            found.append(FloodViolation(now, chat.id if chat else None, method, "global", wait))
        if chat is not None:
            if chat.is_group:
                rate = self.group_per_minute / 60.0
                wait = self._take(f"c{chat.id}", rate, self.group_per_minute, now)
                rule = "group"
            else:
                wait = self._take(f"c{chat.id}", self.private_per_second, self.private_burst, now)
                rule = "private"
            if wait:
                found.append(FloodViolation(now, chat.id, method, rule, wait))
        return found


@dataclass
class _Failure:
    method: str
    remaining: int
    kind: int | str
    retry_after: int
    description: str | None
    chat_id: int | None


@dataclass
class _Callback:
    created: float
    chat_id: int
    message_id: int
    answered: bool = False


@dataclass
class _Poller:
    request: web.Request
    terminated: asyncio.Event = field(default_factory=asyncio.Event)
    finished: bool = False


class _Params:
    """Request parameters with Telegram's coercions (form values arrive as strings)."""

    def __init__(self, raw: JSONDict) -> None:
        self.raw = raw

    def __contains__(self, name: str) -> bool:
        return self.raw.get(name) not in (None, "")

    def get(self, name: str, default: Any = None) -> Any:
        value = self.raw.get(name)
        return default if value is None else value

    def text(self, name: str) -> str | None:
        value = self.raw.get(name)
        if value is None:
            return None
        return value if isinstance(value, str) else json.dumps(value)

    def integer(self, name: str) -> int | None:
        value = self.raw.get(name)
        if value in (None, ""):
            return None
        if isinstance(value, bool):
            return int(value)
        if isinstance(value, int):
            return value
        try:
            return int(str(value))
        except ValueError:
            raise ApiError(400, f"Bad Request: invalid {name} specified") from None

    def number(self, name: str) -> float | None:
        value = self.raw.get(name)
        if value in (None, ""):
            return None
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ApiError(400, f"Bad Request: invalid {name} specified") from None

    def flag(self, name: str) -> bool:
        value = self.raw.get(name)
        if isinstance(value, str):
            return value.lower() in ("true", "1")
        return bool(value)

    def obj(self, name: str) -> Any:
        value = self.raw.get(name)
        if isinstance(value, str):
            if value == "":
                return None
            try:
                return json.loads(value)
            except ValueError:
                if name == "reply_markup":
                    raise ApiError(400, ERR_MARKUP_JSON) from None
                raise ApiError(400, f"Bad Request: can't parse {name} JSON object") from None
        return value


@dataclass
class _Ctx:
    method: str
    p: _Params
    files: dict[str, Upload]
    request: web.Request


# --- Pure helpers -----------------------------------------------------------------------------
_ALLOWED_HTML_TAGS = frozenset(
    {
        "b",
        "strong",
        "i",
        "em",
        "u",
        "ins",
        "s",
        "strike",
        "del",
        "span",
        "tg-spoiler",
        "a",
        "code",
        "pre",
        "blockquote",
        "tg-emoji",
    }
)


class _TelegramHtml(HTMLParser):
    def __init__(self, source: str) -> None:
        super().__init__(convert_charrefs=True)
        self.source = source
        self.out: list[str] = []
        self.stack: list[str] = []
        self.error: str | None = None

    def _offset(self) -> int:
        line, col = self.getpos()
        lines = self.source.splitlines(keepends=True)
        chars = sum(len(x) for x in lines[: line - 1]) + col
        return len(self.source[:chars].encode("utf-8"))

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self.error:
            return
        if tag not in _ALLOWED_HTML_TAGS or (
            tag == "span" and dict(attrs).get("class") != "tg-spoiler"
        ):
            self.error = f'Unsupported start tag "{tag}" at byte offset {self._offset()}'
            return
        self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if not self.error:
            self.error = f'Unsupported start tag "{tag}" at byte offset {self._offset()}'

    def handle_endtag(self, tag: str) -> None:
        if self.error:
            return
        if not self.stack or self.stack[-1] != tag:
            self.error = f'Unmatched end tag at byte offset {self._offset()}, expected "</{tag}>"'
            return
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.out.append(data)


def parse_formatted(text: str, parse_mode: str | None) -> str:
    """The text a user sees: HTML tags removed and entities unescaped (raises ApiError 400)."""
    if not parse_mode or parse_mode.upper() != "HTML":
        return text
    parser = _TelegramHtml(text)
    parser.feed(text)
    parser.close()
    if not parser.error and parser.stack:
        parser.error = f'Can\'t find end tag corresponding to start tag "{parser.stack[-1]}"'
    if parser.error:
        raise ApiError(400, f"Bad Request: can't parse entities: {parser.error}")
    return "".join(parser.out)


_COMMAND_RE = re.compile(r"(?<![\w/@])/[A-Za-z0-9_]{1,32}(?:@[A-Za-z0-9_]{3,32})?")
_MENTION_RE = re.compile(r"(?<![\w@/])@[A-Za-z0-9_]{5,32}")
_URL_RE = re.compile(r"https?://[^\s<>\"]+")


def make_entities(text: str) -> list[JSONDict]:
    """Entities Telegram attaches to a user's message: bot_command, mention, url (UTF-16)."""
    spans: list[tuple[int, int, str]] = []
    for regex, kind in ((_COMMAND_RE, "bot_command"), (_URL_RE, "url"), (_MENTION_RE, "mention")):
        for match in regex.finditer(text):
            start, end = match.span()
            if any(start < e and s < end for s, e, _ in spans):
                continue
            spans.append((start, end, kind))
    spans.sort()
    return [
        {"type": kind, "offset": utf16_len(text[:start]), "length": utf16_len(text[start:end])}
        for start, end, kind in spans
    ]


def image_size(data: bytes) -> tuple[int, int] | None:
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.size
    except (UnidentifiedImageError, OSError, ValueError):
        return None


def image_format(data: bytes) -> str | None:
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.format
    except (UnidentifiedImageError, OSError, ValueError):
        return None


def jpeg_thumbnail(data: bytes, width: int, height: int) -> bytes:
    with Image.open(io.BytesIO(data)) as image:
        image.draft("RGB", (width, height))
        small = image.convert("RGB").resize((width, height))
    out = io.BytesIO()
    small.save(out, format="JPEG", quality=80)
    return out.getvalue()


def mp4_info(data: bytes) -> tuple[int, int, int] | None:
    """(duration seconds, width, height) from an MP4's mvhd/tkhd boxes, or None."""
    duration: float | None = None
    size: tuple[int, int] | None = None

    def walk(start: int, end: int) -> None:
        nonlocal duration, size
        pos = start
        while pos + 8 <= end:
            box_size, box_type = struct.unpack(">I4s", data[pos : pos + 8])
            header = 8
            if box_size == 1 and pos + 16 <= end:
                box_size = struct.unpack(">Q", data[pos + 8 : pos + 16])[0]
                header = 16
            elif box_size == 0:
                box_size = end - pos
            if box_size < header or pos + box_size > end:
                return
            body = pos + header
            if box_type in (b"moov", b"trak"):
                walk(body, pos + box_size)
            elif box_type == b"mvhd" and duration is None:
                version = data[body]
                if version == 1:
                    timescale, length = struct.unpack(">IQ", data[body + 20 : body + 32])
                else:
                    timescale, length = struct.unpack(">II", data[body + 12 : body + 20])
                if timescale:
                    duration = length / timescale
            elif box_type == b"tkhd" and size is None:
                version = data[body]
                offset = body + (92 if version == 1 else 80)
                if offset + 8 <= pos + box_size:
                    w, h = struct.unpack(">II", data[offset : offset + 8])
                    if w and h:
                        size = (w >> 16, h >> 16)
            pos += box_size

    try:
        walk(0, len(data))
    except (struct.error, IndexError):
        return None
    if duration is None and size is None:
        return None
    width, height = size or (0, 0)
    return round(duration or 0), width, height


def _normalize_markup(markup: Any) -> JSONDict | None:
    """Telegram's view of a reply_markup: validated, None when absent."""
    if markup is None:
        return None
    if not isinstance(markup, dict):
        raise ApiError(400, ERR_MARKUP_JSON)
    if "inline_keyboard" in markup:
        rows = markup["inline_keyboard"]
        if not isinstance(rows, list) or not all(isinstance(r, list) for r in rows):
            raise ApiError(400, ERR_MARKUP_JSON)
        for row in rows:
            for button in row:
                if not isinstance(button, dict) or not button.get("text"):
                    raise ApiError(
                        400,
                        "Bad Request: can't parse inline keyboard button: Text "
                        "buttons are unallowed in the inline keyboard",
                    )
                if "callback_data" in button:
                    size = len(str(button["callback_data"]).encode("utf-8"))
                    if not 1 <= size <= MAX_CALLBACK_DATA_BYTES:
                        raise ApiError(400, ERR_BUTTON_DATA)
                url = button.get("url")
                if url is not None and not re.match(r"^(https?|tg)://\S+$", str(url)):
                    raise ApiError(400, ERR_BUTTON_URL)
    return markup


# --- The server -------------------------------------------------------------------------------
Handler = Callable[[_Ctx], Awaitable[Any]]


class FakeTelegram:
    """The fake Bot API. See the module docstring; every public method is test-side API."""

    def __init__(
        self,
        token: str = "7000000001:AAFakeTokenForTests_abcdefghijklmnopq",
        bot_username: str = "AnimeStudioTestBot",
        *,
        bot_name: str = "Anime Studio",
        privacy_mode: bool = True,
    ) -> None:
        self.token = token
        bot_id = int(token.split(":", 1)[0])
        self.bot_user = FakeUser(bot_id, bot_name, username=bot_username, is_bot=True)
        self.privacy_mode = privacy_mode
        self.hang_seconds = 30.0
        self.callback_ttl = CALLBACK_QUERY_TTL

        self.users: dict[int, FakeUser] = {bot_id: self.bot_user}
        self.chats: dict[int, FakeChat] = {}
        self.messages: dict[tuple[int, int], StoredMessage] = {}
        self.files: dict[str, FileRecord] = {}
        self.calls: list[ApiCall] = []
        self.callback_answers: dict[str, JSONDict] = {}
        self.chat_actions: list[JSONDict] = []
        self.commands: dict[tuple[str, str], list[JSONDict]] = {}
        self.flood_model: FloodModel | None = None
        self.flood_violations: list[FloodViolation] = []
        self.conflicts = 0
        self.internal_errors: list[str] = []
        self.webhook_url = ""
        self.webhook_secret: str | None = None
        self.webhook_allowed_updates: list[str] | None = None
        self.webhook_max_connections = 40
        self.webhook_last_error: tuple[int, str] | None = None
        self.webhook_deliveries: list[tuple[JSONDict, int]] = []

        self._ids = itertools.count(100_000_001)
        self._group_ids = itertools.count(4_000_000_001)
        self._supergroup_ids = itertools.count(1_000_000_001)
        self._update_ids = itertools.count(700_000_001)
        self._file_seq = itertools.count(1)
        self._thread_ids: dict[int, itertools.count[int]] = {}
        self._message_ids: dict[int, itertools.count[int]] = {}
        self._updates: list[JSONDict] = []
        self._allowed_updates: list[str] = []
        self._callbacks: dict[str, _Callback] = {}
        self._failures: list[_Failure] = []
        self._bot_posted: set[int] = set()
        self._poller: _Poller | None = None
        self._changed = asyncio.Event()
        self._new_update = asyncio.Event()
        self._closing = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._webhook_task: asyncio.Task[None] | None = None
        self.url = ""
        self._methods: dict[str, tuple[str, Handler]] = {}
        for name, handler in self._method_table().items():
            self._methods[name.lower()] = (name, handler)

    # -- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        app = web.Application(client_max_size=MAX_UPLOAD_BYTES + 1024 * 1024)
        app.router.add_route("*", "/bot{token}/{method}", self._handle_api)
        app.router.add_get("/file/bot{token}/{path:.+}", self._handle_file)
        self._runner = web.AppRunner(
            app, handler_cancellation=True, shutdown_timeout=1.0, access_log=None
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"

    async def close(self) -> None:
        self._closing.set()
        self._new_update.set()
        if self._webhook_task is not None:
            self._webhook_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._webhook_task
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def __aenter__(self) -> FakeTelegram:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def api_url(self) -> str:
        """Value for ApplicationBuilder().base_url / Bot(base_url=...)."""
        return f"{self.url}/bot"

    @property
    def file_url(self) -> str:
        return f"{self.url}/file/bot"

    def builder(self) -> ApplicationBuilder:  # type: ignore[type-arg]
        """An ApplicationBuilder already pointed at this server with its token."""
        return (
            Application.builder()
            .token(self.token)
            .base_url(self.api_url)
            .base_file_url(self.file_url)
        )

    def make_bot(self, **kwargs: Any) -> Bot:
        return Bot(self.token, base_url=self.api_url, base_file_url=self.file_url, **kwargs)

    # -- building the world --------------------------------------------------------------------
    def user(
        self,
        first_name: str = "Alice",
        *,
        username: str | None = None,
        last_name: str | None = None,
        language_code: str | None = "en",
        is_bot: bool = False,
    ) -> FakeUser:
        user = FakeUser(
            next(self._ids),
            first_name,
            username=username,
            last_name=last_name,
            is_bot=is_bot,
            language_code=language_code,
        )
        self.users[user.id] = user
        return user

    def private_chat(self, user: FakeUser | None = None, *, blocked: bool = False) -> FakeChat:
        """The private chat of `user` with the bot (a new user when None)."""
        user = user or self.user()
        chat = self.chats.get(user.id)
        if chat is None:
            chat = FakeChat(
                user.id,
                "private",
                username=user.username,
                first_name=user.first_name,
                last_name=user.last_name,
                member_ids={user.id, self.bot_user.id},
            )
            self.chats[chat.id] = chat
        chat.blocked = blocked
        return chat

    def group(
        self,
        title: str = "Test group",
        *,
        members: Iterable[FakeUser] = (),
        admins: Iterable[FakeUser] = (),
        creator: FakeUser | None = None,
    ) -> FakeChat:
        chat = FakeChat(-next(self._group_ids), "group", title=title)
        return self._setup_group(chat, members, admins, creator)

    def supergroup(
        self,
        title: str = "Test supergroup",
        *,
        forum: bool = False,
        username: str | None = None,
        members: Iterable[FakeUser] = (),
        admins: Iterable[FakeUser] = (),
        creator: FakeUser | None = None,
    ) -> FakeChat:
        chat_id = -(1_000_000_000_000 + next(self._supergroup_ids))
        chat = FakeChat(chat_id, "supergroup", title=title, username=username, is_forum=forum)
        return self._setup_group(chat, members, admins, creator)

    def forum(self, title: str = "Test forum", **kwargs: Any) -> FakeChat:
        return self.supergroup(title, forum=True, **kwargs)

    def _setup_group(
        self,
        chat: FakeChat,
        members: Iterable[FakeUser],
        admins: Iterable[FakeUser],
        creator: FakeUser | None,
    ) -> FakeChat:
        chat.member_ids = {u.id for u in members} | {self.bot_user.id}
        self.chats[chat.id] = chat
        self.set_admins(chat, admins, creator=creator)
        return chat

    def add_topic(self, chat: FakeChat, name: str) -> int:
        """A forum topic; returns its message_thread_id."""
        if not chat.is_forum:
            raise ValueError(f"chat {chat.id} is not a forum")
        counter = self._thread_ids.setdefault(chat.id, itertools.count(2))
        thread_id = next(counter)
        chat.topics[thread_id] = name
        return thread_id

    def set_admins(
        self, chat: FakeChat, admins: Iterable[FakeUser], *, creator: FakeUser | None = None
    ) -> None:
        """Administrators of a group (include `fake.bot_user` to make the bot an admin)."""
        chat.admin_ids = {u.id for u in admins}
        if creator is not None:
            chat.creator_id = creator.id
        chat.member_ids |= chat.admin_ids | ({creator.id} if creator else set())

    def block(self, chat: FakeChat, blocked: bool = True) -> None:
        chat.blocked = blocked

    # -- injecting updates ---------------------------------------------------------------------
    def inject_update(self, payload: JSONDict) -> JSONDict:
        """Queue a raw update ({"message": {...}} etc.); update_id is assigned here."""
        update = {"update_id": next(self._update_ids), **payload}
        self._updates.append(update)
        self._new_update.set()
        self._notify()
        return update

    def inject_message(
        self,
        chat: FakeChat,
        user: FakeUser,
        text: str | None = None,
        *,
        reply_to: int | None = None,
        thread_id: int | None = None,
        caption: str | None = None,
        photo: bytes | None = None,
        document: bytes | None = None,
        document_name: str = "file.bin",
        document_mime: str | None = None,
        audio: bytes | None = None,
        voice: bytes | None = None,
        duration: int = 1,
    ) -> JSONDict | None:
        """A user writes in `chat`. Returns the update, or None when privacy mode hides it."""
        chat.member_ids.add(user.id)
        self.users.setdefault(user.id, user)
        reply_msg = self.messages.get((chat.id, reply_to)) if reply_to is not None else None
        if reply_to is not None and reply_msg is None:
            raise ValueError(f"no message {reply_to} in chat {chat.id}")
        if thread_id is None and reply_msg is not None:
            thread_id = reply_msg.thread_id
        if thread_id is not None and chat.is_forum and thread_id not in chat.topics:
            raise ValueError(f"no topic {thread_id} in chat {chat.id}")
        msg = StoredMessage(
            chat=chat,
            message_id=self._next_message_id(chat),
            sender=user,
            date=int(time.time()),
            from_bot=False,
            thread_id=thread_id,
            reply_to=reply_msg,
        )
        visible_text = text if text is not None else caption
        if photo is not None:
            size = image_size(photo)
            if size is None:
                raise ValueError("photo is not a readable image")
            sizes = self._photo_records(photo, *size)
            msg.media_kind, msg.media = "photo", [r.photo_size() for r in sizes]
            msg.media_file_id, msg.media_bytes = sizes[-1].file_id, photo
        elif document is not None:
            mime = document_mime or mimetypes.guess_type(document_name)[0]
            record = self._new_file("document", document, file_name=document_name, mime_type=mime)
            msg.media_kind, msg.media = "document", self._document_api(record)
            msg.media_file_id, msg.media_bytes = record.file_id, document
        elif audio is not None:
            record = self._new_file("audio", audio, mime_type="audio/mpeg")
            msg.media_kind = "audio"
            msg.media = {**self._file_api(record), "duration": duration}
            msg.media_file_id, msg.media_bytes = record.file_id, audio
        elif voice is not None:
            record = self._new_file("voice", voice, mime_type="audio/ogg")
            msg.media_kind = "voice"
            msg.media = {**self._file_api(record), "duration": duration}
            msg.media_file_id, msg.media_bytes = record.file_id, voice
        if msg.media_kind is None:
            msg.text = text or ""
        else:
            msg.caption = visible_text
        if visible_text:
            msg.entities = make_entities(visible_text)
        msg.snapshot("user")
        self.messages[(chat.id, msg.message_id)] = msg
        if not self._visible_to_bot(chat, visible_text or "", reply_msg):
            self._notify()
            return None
        return self.inject_update({"message": msg.to_api()})

    def inject_callback(
        self, chat: FakeChat, user: FakeUser, message_id: int, data: str
    ) -> JSONDict:
        """A user presses an inline button under message `message_id`. Returns the update."""
        msg = self.messages.get((chat.id, message_id))
        if msg is None or msg.deleted:
            raise ValueError(f"no message {message_id} in chat {chat.id}")
        query_id = str(secrets.randbelow(10**18) + 10**18)
        self._callbacks[query_id] = _Callback(time.monotonic(), chat.id, message_id)
        return self.inject_update(
            {
                "callback_query": {
                    "id": query_id,
                    "from": user.to_api(),
                    "message": msg.to_api(),
                    "chat_instance": str(abs(hash((chat.id, self.bot_user.id)))),
                    "data": data,
                }
            }
        )

    def _visible_to_bot(self, chat: FakeChat, text: str, reply: StoredMessage | None) -> bool:
        """Privacy mode: what a group bot that is no admin receives."""
        if chat.type == "private" or not self.privacy_mode:
            return True
        if self.bot_user.id in chat.admin_ids or (reply is not None and reply.from_bot):
            return True
        name = (self.bot_user.username or "").lower()
        for match in _COMMAND_RE.finditer(text):
            _, _, target = match.group(0).partition("@")
            if target.lower() == name or (not target and chat.id in self._bot_posted):
                return True
        return any(m.group(0)[1:].lower() == name for m in _MENTION_RE.finditer(text))

    # -- failures and flood control --------------------------------------------------------------
    def fail_next(
        self,
        method: str,
        n: int = 1,
        kind: int | Literal["timeout", "timeout_after"] = 429,
        *,
        retry_after: int = 1,
        description: str | None = None,
        chat_id: int | None = None,
    ) -> None:
        """Make the next `n` calls of `method` (to `chat_id`, if given) fail.

        kind: an HTTP error code (429 carries retry_after; others a default or given description),
        "timeout" (no answer, nothing done) or "timeout_after" (done, but no answer): the request
        hangs until the client gives up or `hang_seconds` pass.
        """
        canonical = self._methods[method.lower()][0] if method.lower() in self._methods else method
        self._failures.append(_Failure(canonical, n, kind, retry_after, description, chat_id))

    def enable_flood_model(self, **kwargs: Any) -> FloodModel:
        """Start recording would-be 429s (`flood_violations`); `enforce=True` answers them."""
        self.flood_model = FloodModel(**kwargs)
        return self.flood_model

    def _take_failure(self, method: str, p: _Params) -> _Failure | None:
        for failure in self._failures:
            if failure.method != method or failure.remaining <= 0:
                continue
            if failure.chat_id is not None and p.get("chat_id") != failure.chat_id:
                continue
            failure.remaining -= 1
            if failure.remaining == 0:
                self._failures.remove(failure)
            return failure
        return None

    def _check_flood(self, method: str, p: _Params) -> None:
        if self.flood_model is None or method not in FLOOD_COUNTED_METHODS:
            return
        chat = self.chats.get(p.get("chat_id")) if isinstance(p.get("chat_id"), int) else None
        found = self.flood_model.check(chat, method, time.monotonic())
        self.flood_violations.extend(found)
        if found and self.flood_model.enforce:
            raise too_many_requests(max(1, math.ceil(max(v.wait for v in found))))

    async def _hang(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closing.wait(), self.hang_seconds)

    # -- assertions and waiting ----------------------------------------------------------------
    def calls_of(self, method: str) -> list[ApiCall]:
        name = method.lower()
        return [c for c in self.calls if c.method.lower() == name]

    def message(self, chat_id: int, message_id: int) -> StoredMessage:
        return self.messages[(chat_id, message_id)]

    def bot_messages(self, chat_id: int | None = None) -> list[StoredMessage]:
        """Messages the bot sent (deleted ones included), oldest first."""
        return [
            m
            for m in self.messages.values()
            if m.from_bot and (chat_id is None or m.chat.id == chat_id)
        ]

    def file_bytes(self, file_id: str) -> bytes:
        return self.files[file_id].data

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_for(
        self,
        predicate: Callable[[], T | Literal[False] | None],
        timeout: float = 5.0,
        *,
        what: str = "condition",
    ) -> T:
        """Wait until predicate() is truthy (re-checked on every change); return its value."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                recent = ", ".join(
                    f"{c.method}:{c.status}" for c in self.calls[-12:] if c.method != "getUpdates"
                )
                raise AssertionError(
                    f"timed out after {timeout}s waiting for {what}; recent calls: {recent}"
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(remaining, 0.1))

    async def wait_for_message(
        self,
        chat_id: int,
        predicate: Callable[[StoredMessage], bool] | None = None,
        timeout: float = 5.0,
    ) -> StoredMessage:
        """The first bot message in `chat_id` (in its current state) matching `predicate`."""

        def find() -> StoredMessage | None:
            for msg in self.bot_messages(chat_id):
                if not msg.deleted and (predicate is None or predicate(msg)):
                    return msg
            return None

        return await self.wait_for(find, timeout, what=f"a bot message in chat {chat_id}")

    async def wait_for_call(
        self,
        method: str,
        predicate: Callable[[ApiCall], bool] | None = None,
        timeout: float = 5.0,
    ) -> ApiCall:
        """The first answered call of `method` matching `predicate`."""

        def find() -> ApiCall | None:
            for call in self.calls_of(method):
                if call.status is not None and (predicate is None or predicate(call)):
                    return call
            return None

        return await self.wait_for(find, timeout, what=f"a {method} call")

    # -- webhook ---------------------------------------------------------------------------------
    async def post_to_webhook(
        self, update: JSONDict, *, secret: str | Literal[False] | None = False
    ) -> int:
        """POST one update to the webhook now and return the HTTP status.

        secret: False sends the stored secret_token; None sends no header; a string sends it.
        """
        if not self.webhook_url:
            raise RuntimeError("no webhook is set")
        token = self.webhook_secret if secret is False else secret
        headers = {"X-Telegram-Bot-Api-Secret-Token": token} if token else {}
        if self._session is None:
            self._session = aiohttp.ClientSession()
        async with self._session.post(
            self.webhook_url,
            json=update,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=10),
        ) as response:
            await response.read()
            self.webhook_deliveries.append((update, response.status))
            return response.status

    async def _deliver_webhook(self) -> None:
        while not self._closing.is_set() and self.webhook_url:
            if not self._updates:
                self._new_update.clear()
                await self._new_update.wait()
                continue
            update = self._updates[0]
            if not self._update_allowed(update, self.webhook_allowed_updates or []):
                self._updates.pop(0)
                continue
            try:
                status = await self.post_to_webhook(update)
            except (aiohttp.ClientError, TimeoutError) as exc:
                self.webhook_last_error = (int(time.time()), f"Connection failed: {exc}")
                await asyncio.sleep(0.2)
                continue
            if 200 <= status < 300:
                if self._updates and self._updates[0] is update:
                    self._updates.pop(0)
                self._notify()
            else:
                self.webhook_last_error = (
                    int(time.time()),
                    f"Wrong response from the webhook: {status}",
                )
                await asyncio.sleep(0.2)

    # -- HTTP plumbing -----------------------------------------------------------------------------
    @staticmethod
    def _json(body: JSONDict, status: int = 200) -> web.Response:
        return web.json_response(body, status=status)

    async def _handle_file(self, request: web.Request) -> web.StreamResponse:
        if request.match_info["token"] != self.token:
            return self._json(ApiError(401, ERR_UNAUTHORIZED).body(), 401)
        path = request.match_info["path"]
        for record in self.files.values():
            if record.file_path == path:
                return web.Response(
                    body=record.data, content_type=record.mime_type or "application/octet-stream"
                )
        return self._json(ApiError(404, ERR_NOT_FOUND).body(), 404)

    async def _handle_api(self, request: web.Request) -> web.StreamResponse:
        if request.match_info["token"] != self.token:
            return self._json(ApiError(401, ERR_UNAUTHORIZED).body(), 401)
        entry = self._methods.get(request.match_info["method"].lower())
        try:
            raw, files = await self._read_request(request)
        except ApiError as exc:
            return self._json(exc.body(), exc.code)
        if entry is None:
            self.calls.append(
                ApiCall(
                    request.match_info["method"],
                    raw,
                    files,
                    time.monotonic(),
                    404,
                    error=ERR_NOT_FOUND,
                )
            )
            self._notify()
            return self._json(ApiError(404, ERR_NOT_FOUND).body(), 404)
        name, handler = entry
        params = _Params(raw)
        call = ApiCall(name, raw, files, time.monotonic())
        self.calls.append(call)
        ctx = _Ctx(name, params, files, request)
        try:
            failure = self._take_failure(name, params)
            if failure is not None and failure.kind == "timeout":
                await self._hang()
                raise ApiError(504, "Gateway Timeout")
            if failure is not None and failure.kind != "timeout_after":
                assert isinstance(failure.kind, int)
                if failure.kind == 429:
                    raise too_many_requests(failure.retry_after)
                raise ApiError(
                    failure.kind,
                    failure.description or DEFAULT_ERROR_DESCRIPTIONS.get(failure.kind, "Error"),
                )
            self._check_flood(name, params)
            result = await handler(ctx)
            if failure is not None:  # timeout_after: done, but the answer never comes
                call.status, call.result = 200, result
                self._notify()
                await self._hang()
                raise ApiError(504, "Gateway Timeout")
        except ApiError as exc:
            call.status, call.error = exc.code, exc.description
            self._notify()
            return self._json(exc.body(), exc.code)
        except asyncio.CancelledError:
            call.status, call.error = 499, "client went away"
            self._notify()
            raise
        except Exception as exc:  # a bug in the fake: make it loud
            self.internal_errors.append(f"{name}: {exc!r}")
            call.status, call.error = 500, repr(exc)
            self._notify()
            return self._json(ApiError(500, f"Internal Server Error: {exc!r}").body(), 500)
        call.status, call.result = 200, result
        self._notify()
        return self._json({"ok": True, "result": result})

    async def _read_request(self, request: web.Request) -> tuple[JSONDict, dict[str, Upload]]:
        params: JSONDict = dict(request.query)
        files: dict[str, Upload] = {}
        length = request.content_length
        if length is not None and length > MAX_UPLOAD_BYTES:
            await self._drain(request)
            raise ApiError(413, ERR_TOO_LARGE)
        ctype = request.content_type
        if ctype.startswith("multipart/"):
            reader = await request.multipart()
            total = 0
            while True:
                part = await reader.next()
                if part is None:
                    break
                if not isinstance(part, aiohttp.BodyPartReader) or part.name is None:
                    continue
                data = bytes(await part.read(decode=True))
                total += len(data)
                if total > MAX_UPLOAD_BYTES:
                    await self._drain(request)
                    raise ApiError(413, ERR_TOO_LARGE)
                if part.filename is not None:
                    ptype = part.headers.get(aiohttp.hdrs.CONTENT_TYPE)
                    files[part.name] = Upload(part.name, part.filename, ptype, data)
                else:
                    params[part.name] = data.decode("utf-8")
        elif request.can_read_body:
            body = await request.read()
            if ctype == "application/json":
                try:
                    decoded = json.loads(body or b"{}")
                except ValueError:
                    raise ApiError(400, "Bad Request: invalid JSON body") from None
                if isinstance(decoded, dict):
                    params.update(decoded)
            else:
                params.update(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
        return self._coerce(params), files

    @staticmethod
    async def _drain(request: web.Request) -> None:
        while await request.content.read(1 << 20):
            pass

    @staticmethod
    def _coerce(params: JSONDict) -> JSONDict:
        out: JSONDict = {}
        for key, value in params.items():
            if isinstance(value, str):
                if key in _INT_PARAMS and re.fullmatch(r"-?\d+", value):
                    value = int(value)
                elif key in _BOOL_PARAMS and value.lower() in ("true", "false", "1", "0"):
                    value = value.lower() in ("true", "1")
                elif key in _JSON_PARAMS and value[:1] in ("{", "["):
                    with contextlib.suppress(ValueError):
                        value = json.loads(value)
            out[key] = value
        return out

    # -- shared method logic -----------------------------------------------------------------------
    def _next_message_id(self, chat: FakeChat) -> int:
        return next(self._message_ids.setdefault(chat.id, itertools.count(1)))

    def _chat(self, p: _Params) -> FakeChat:
        value = p.get("chat_id")
        if value in (None, ""):
            raise ApiError(400, ERR_CHAT_ID_EMPTY)
        chat: FakeChat | None = None
        if isinstance(value, str) and value.startswith("@"):
            name = value[1:].lower()
            chat = next(
                (c for c in self.chats.values() if (c.username or "").lower() == name), None
            )
        else:
            chat = self.chats.get(p.integer("chat_id") or 0)
        if chat is None:
            raise ApiError(400, ERR_CHAT_NOT_FOUND)
        if chat.blocked:
            raise ApiError(403, ERR_BLOCKED)
        if chat.kicked:
            raise ApiError(
                403, ERR_KICKED_SUPERGROUP if chat.type == "supergroup" else ERR_KICKED_GROUP
            )
        return chat

    def _thread(self, chat: FakeChat, p: _Params, reply: StoredMessage | None) -> int | None:
        thread_id = p.integer("message_thread_id")
        if thread_id is None:
            return reply.thread_id if reply is not None and chat.is_forum else None
        if not chat.is_forum or thread_id not in chat.topics:
            raise ApiError(400, ERR_THREAD_NOT_FOUND)
        return thread_id

    def _reply(self, chat: FakeChat, p: _Params) -> StoredMessage | None:
        params = p.obj("reply_parameters")
        if isinstance(params, dict):
            target, allow = (
                params.get("message_id"),
                bool(params.get("allow_sending_without_reply")),
            )
        else:
            target, allow = p.integer("reply_to_message_id"), p.flag("allow_sending_without_reply")
        if target is None:
            return None
        msg = self.messages.get((chat.id, int(target)))
        if msg is None or msg.deleted:
            if allow:
                return None
            raise ApiError(400, ERR_REPLY_NOT_FOUND)
        return msg

    def _text(self, value: Any, parse_mode: str | None, *, caption: bool, edit: bool) -> str:
        raw = "" if value is None else str(value)
        plain = parse_formatted(raw, parse_mode).strip()
        limit = MAX_CAPTION_LENGTH if caption else MAX_TEXT_LENGTH
        if utf16_len(plain) > limit:
            if caption:
                raise ApiError(400, ERR_CAPTION_TOO_LONG)
            raise ApiError(400, ERR_EDIT_TEXT_TOO_LONG if edit else ERR_TEXT_TOO_LONG)
        return plain

    @staticmethod
    def _markup(p: _Params, *, edit: bool) -> JSONDict | None:
        markup = _normalize_markup(p.obj("reply_markup"))
        if edit and markup is not None and "inline_keyboard" not in markup:
            raise ApiError(400, ERR_INLINE_KEYBOARD_EXPECTED)
        return markup

    def _store_bot_message(
        self,
        ctx: _Ctx,
        chat: FakeChat,
        *,
        text: str | None = None,
        caption: str | None = None,
        media: tuple[str, Any, str, bytes] | None = None,
        extras: JSONDict | None = None,
    ) -> JSONDict:
        p = ctx.p
        reply = self._reply(chat, p)
        thread_id = self._thread(chat, p, reply)
        markup = self._markup(p, edit=False)
        msg = StoredMessage(
            chat=chat,
            message_id=self._next_message_id(chat),
            sender=self.bot_user,
            date=int(time.time()),
            from_bot=True,
            thread_id=thread_id,
            reply_to=reply,
            text=text,
            caption=caption or None,
            format_key=self._format_key(p, "text" if media is None else "caption"),
            parse_mode=p.text("parse_mode"),
            reply_markup=markup,
            extras=extras or {},
        )
        if media is not None:
            msg.media_kind, msg.media, msg.media_file_id, msg.media_bytes = media
        msg.snapshot(ctx.method)
        self.messages[(chat.id, msg.message_id)] = msg
        self._bot_posted.add(chat.id)
        return msg.to_api()

    @staticmethod
    def _format_key(p: _Params, name: str) -> str | None:
        raw = p.text(name)
        mode = p.text("parse_mode")
        return f"{mode}:{raw}" if mode and raw is not None else raw

    def _editable(self, p: _Params) -> StoredMessage:
        if "inline_message_id" in p:
            raise ApiError(400, "Bad Request: MESSAGE_ID_INVALID")
        chat = self._chat(p)
        message_id = p.integer("message_id")
        if message_id is None:
            raise ApiError(400, ERR_MESSAGE_ID_MISSING)
        msg = self.messages.get((chat.id, message_id))
        if msg is None or msg.deleted:
            raise ApiError(400, ERR_EDIT_NOT_FOUND)
        if not msg.from_bot:
            raise ApiError(400, ERR_CANT_EDIT)
        return msg

    def _edited(self, msg: StoredMessage, method: str) -> JSONDict:
        msg.edit_date = int(time.time())
        msg.snapshot(method)
        return msg.to_api()

    # -- files -------------------------------------------------------------------------------------
    def _new_file(
        self,
        kind: str,
        data: bytes,
        *,
        width: int | None = None,
        height: int | None = None,
        mime_type: str | None = None,
        file_name: str | None = None,
    ) -> FileRecord:
        seq = next(self._file_seq)
        ext = {
            "photo": "jpg",
            "thumbnail": "jpg",
            "video": "mp4",
            "audio": "mp3",
            "voice": "oga",
        }.get(kind)
        if ext is None:
            guessed = (file_name or "").rsplit(".", 1)
            ext = guessed[1] if len(guessed) == 2 else "bin"
        folder = {"photo": "photos", "audio": "music"}.get(kind, f"{kind}s")
        prefix = {"photo": "AgAC", "video": "BAAC", "document": "BQAC", "audio": "CQAC"}
        record = FileRecord(
            file_id=prefix.get(kind, "AwAC") + secrets.token_urlsafe(24),
            file_unique_id="AQAD" + secrets.token_urlsafe(8),
            kind=kind,
            data=data,
            file_path=f"{folder}/file_{seq}.{ext}",
            width=width,
            height=height,
            mime_type=mime_type,
            file_name=file_name,
        )
        self.files[record.file_id] = record
        return record

    def _photo_records(self, data: bytes, width: int, height: int) -> list[FileRecord]:
        records: list[FileRecord] = []
        for limit in PHOTO_SIZE_LIMITS:
            scale = min(1.0, limit / max(width, height))
            w, h = max(1, round(width * scale)), max(1, round(height * scale))
            if scale < 1.0:
                thumb = jpeg_thumbnail(data, w, h)
                records.append(
                    self._new_file("photo", thumb, width=w, height=h, mime_type="image/jpeg")
                )
            else:
                records.append(
                    self._new_file("photo", data, width=w, height=h, mime_type="image/jpeg")
                )
                break
        for record in records:
            record.group = records
        return records

    @staticmethod
    def _file_api(record: FileRecord) -> JSONDict:
        data: JSONDict = {
            "file_id": record.file_id,
            "file_unique_id": record.file_unique_id,
            "file_size": record.file_size,
        }
        if record.mime_type:
            data["mime_type"] = record.mime_type
        if record.file_name:
            data["file_name"] = record.file_name
        return data

    def _document_api(self, record: FileRecord) -> JSONDict:
        return self._file_api(record)

    def _input(self, value: Any, files: dict[str, Upload], name: str) -> Upload | FileRecord:
        """Resolve a file parameter: an uploaded part, `attach://part`, or a file_id."""
        if value in (None, "") and name in files:
            return files[name]
        if isinstance(value, str):
            if value.startswith("attach://"):
                part = files.get(value.removeprefix("attach://"))
                if part is None:
                    raise ApiError(400, ERR_WRONG_FILE)
                return part
            record = self.files.get(value)
            if record is not None:
                return record
        raise ApiError(400, ERR_WRONG_FILE)

    def _photo(self, source: Upload | FileRecord) -> tuple[str, Any, str, bytes]:
        if isinstance(source, FileRecord):
            group = source.group or [source]
            return "photo", [r.photo_size() for r in group], group[-1].file_id, group[-1].data
        if len(source.data) > MAX_PHOTO_BYTES:
            raise ApiError(400, ERR_PHOTO_TOO_BIG)
        size = image_size(source.data)
        if size is None:
            raise ApiError(400, ERR_IMAGE_PROCESS)
        width, height = size
        if width + height > MAX_PHOTO_DIMENSION_SUM or max(width, height) > MAX_PHOTO_RATIO * min(
            width, height
        ):
            raise ApiError(400, ERR_PHOTO_DIMENSIONS)
        records = self._photo_records(source.data, width, height)
        return "photo", [r.photo_size() for r in records], records[-1].file_id, source.data

    def _thumbnail(self, value: Any, files: dict[str, Upload]) -> JSONDict | None:
        """A valid thumbnail (JPEG, <= 320 px a side, < 200 kB), else None (Telegram ignores it)."""
        if not isinstance(value, str) or not value.startswith("attach://"):
            return None
        part = files.get(value.removeprefix("attach://"))
        if part is None or len(part.data) >= MAX_THUMBNAIL_BYTES:
            return None
        size = image_size(part.data)
        if size is None or image_format(part.data) != "JPEG" or max(size) > MAX_THUMBNAIL_SIDE:
            return None
        record = self._new_file(
            "thumbnail", part.data, width=size[0], height=size[1], mime_type="image/jpeg"
        )
        return record.photo_size()

    def _generic(
        self,
        kind: str,
        source: Upload | FileRecord,
        p: _Params,
        files: dict[str, Upload],
        spec: JSONDict | None = None,
    ) -> tuple[str, Any, str, bytes]:
        """video, document, audio or voice: the API object for an upload or a known file_id."""
        spec = spec or {}

        def opt(name: str) -> Any:
            return spec.get(name, p.get(name))

        if isinstance(source, FileRecord):
            record = source
        else:
            mime = source.content_type
            if not mime or mime == "application/octet-stream":
                mime = mimetypes.guess_type(source.filename or "")[0] or mime
            record = self._new_file(kind, source.data, mime_type=mime, file_name=source.filename)
        data = self._file_api(record)
        if kind == "video":
            info = mp4_info(record.data) or (0, 0, 0)
            duration, width, height = info
            data.update(
                duration=int(opt("duration") or duration),
                width=int(opt("width") or width),
                height=int(opt("height") or height),
            )
        elif kind in ("audio", "voice"):
            data["duration"] = int(opt("duration") or 0)
            for name in ("performer", "title"):
                if kind == "audio" and opt(name):
                    data[name] = str(opt(name))
        if kind != "voice":
            thumb = self._thumbnail(opt("thumbnail"), files)
            if thumb is not None:
                data["thumbnail"] = thumb
        return kind, data, record.file_id, record.data

    # -- methods ---------------------------------------------------------------------------------
    def _method_table(self) -> dict[str, Handler]:
        return {
            "getMe": self._get_me,
            "logOut": self._true,
            "close": self._true,
            "getUpdates": self._get_updates,
            "setWebhook": self._set_webhook,
            "deleteWebhook": self._delete_webhook,
            "getWebhookInfo": self._get_webhook_info,
            "setMyCommands": self._set_my_commands,
            "getMyCommands": self._get_my_commands,
            "deleteMyCommands": self._delete_my_commands,
            "sendMessage": self._send_message,
            "sendPhoto": self._send_photo,
            "sendVideo": self._send_media("video"),
            "sendDocument": self._send_media("document"),
            "sendAudio": self._send_media("audio"),
            "sendVoice": self._send_media("voice"),
            "editMessageText": self._edit_text,
            "editMessageCaption": self._edit_caption,
            "editMessageMedia": self._edit_media,
            "editMessageReplyMarkup": self._edit_markup,
            "deleteMessage": self._delete_message,
            "sendChatAction": self._send_chat_action,
            "answerCallbackQuery": self._answer_callback,
            "getFile": self._get_file,
            "getChat": self._get_chat,
            "getChatMember": self._get_chat_member,
            "getChatAdministrators": self._get_chat_administrators,
            "setMessageReaction": self._set_reaction,
        }

    async def _true(self, ctx: _Ctx) -> bool:
        return True

    async def _get_me(self, ctx: _Ctx) -> JSONDict:
        return {
            **self.bot_user.to_api(),
            "can_join_groups": True,
            "can_read_all_group_messages": not self.privacy_mode,
            "supports_inline_queries": False,
            "can_connect_to_business": False,
            "has_main_web_app": False,
        }

    # getUpdates ---------------------------------------------------------------------------------
    def _update_allowed(self, update: JSONDict, allowed: list[str]) -> bool:
        kind = next(k for k in update if k != "update_id")
        return kind in (set(allowed) if allowed else DEFAULT_UPDATE_TYPES)

    def _confirm(self, offset: int | None) -> None:
        if offset is None or offset == 0:
            return
        if offset > 0:
            self._updates = [u for u in self._updates if u["update_id"] >= offset]
        else:
            self._updates = self._updates[offset:]

    def _take_updates(self, limit: int) -> list[JSONDict]:
        kept: list[JSONDict] = []
        for update in self._updates:
            if self._update_allowed(update, self._allowed_updates):
                kept.append(update)
        self._updates = kept  # updates of types the bot did not ask for are dropped
        return kept[:limit]

    async def _get_updates(self, ctx: _Ctx) -> list[JSONDict]:
        p = ctx.p
        if self.webhook_url:
            raise ApiError(409, ERR_CONFLICT_WEBHOOK)
        previous = self._poller
        if previous is not None and not previous.finished:
            await asyncio.sleep(0.02)  # let a closed connection cancel its handler first
            if not previous.finished:
                transport = previous.request.transport
                if transport is not None and not transport.is_closing():
                    self.conflicts += 1
                previous.terminated.set()
        poller = _Poller(ctx.request)
        self._poller = poller
        try:
            allowed = p.obj("allowed_updates")
            if isinstance(allowed, list):
                self._allowed_updates = [str(a) for a in allowed]
            self._confirm(p.integer("offset"))
            limit = min(max(p.integer("limit") or 100, 1), 100)
            deadline = time.monotonic() + max(p.number("timeout") or 0.0, 0.0)
            while True:
                updates = self._take_updates(limit)
                remaining = deadline - time.monotonic()
                if updates or remaining <= 0 or self._closing.is_set():
                    return updates
                self._new_update.clear()
                waiters = [
                    asyncio.ensure_future(self._new_update.wait()),
                    asyncio.ensure_future(poller.terminated.wait()),
                ]
                try:
                    await asyncio.wait(
                        waiters, timeout=remaining, return_when=asyncio.FIRST_COMPLETED
                    )
                finally:
                    for waiter in waiters:
                        waiter.cancel()
                if poller.terminated.is_set():
                    raise ApiError(409, ERR_CONFLICT_TERMINATED)
        finally:
            poller.finished = True
            if self._poller is poller:
                self._poller = None

    # webhook -------------------------------------------------------------------------------------
    async def _set_webhook(self, ctx: _Ctx) -> bool:
        p = ctx.p
        url = p.text("url") or ""
        secret = p.text("secret_token")
        if secret is not None and not re.fullmatch(r"[A-Za-z0-9_-]{1,256}", secret):
            raise ApiError(400, ERR_SECRET_TOKEN)
        if p.flag("drop_pending_updates"):
            self._updates.clear()
        if not url:
            return await self._delete_webhook(ctx)
        if not re.match(r"^https?://", url):
            raise ApiError(
                400, "Bad Request: bad webhook: An HTTPS URL must be provided for webhook"
            )
        allowed = p.obj("allowed_updates")
        self.webhook_url = url
        self.webhook_secret = secret
        self.webhook_allowed_updates = [str(a) for a in allowed] if allowed else None
        self.webhook_max_connections = p.integer("max_connections") or 40
        self.webhook_last_error = None
        if self._webhook_task is None or self._webhook_task.done():
            self._webhook_task = asyncio.create_task(self._deliver_webhook())
        self._new_update.set()
        return True

    async def _delete_webhook(self, ctx: _Ctx) -> bool:
        if ctx.p.flag("drop_pending_updates"):
            self._updates.clear()
        self.webhook_url = ""
        self.webhook_secret = None
        self._new_update.set()
        return True

    async def _get_webhook_info(self, ctx: _Ctx) -> JSONDict:
        info: JSONDict = {
            "url": self.webhook_url,
            "has_custom_certificate": False,
            "pending_update_count": len(self._updates),
        }
        if self.webhook_url:
            info["max_connections"] = self.webhook_max_connections
            if self.webhook_allowed_updates:
                info["allowed_updates"] = self.webhook_allowed_updates
            if self.webhook_last_error:
                info["last_error_date"], info["last_error_message"] = self.webhook_last_error
        return info

    # commands ------------------------------------------------------------------------------------
    @staticmethod
    def _commands_key(p: _Params) -> tuple[str, str]:
        scope = p.obj("scope") or {"type": "default"}
        return json.dumps(scope, sort_keys=True), p.text("language_code") or ""

    async def _set_my_commands(self, ctx: _Ctx) -> bool:
        commands = ctx.p.obj("commands")
        if not isinstance(commands, list) or len(commands) > 100:
            raise ApiError(400, "Bad Request: can't parse commands JSON object")
        for item in commands:
            if not isinstance(item, dict):
                raise ApiError(400, "Bad Request: can't parse commands JSON object")
            if not re.fullmatch(r"[a-z0-9_]{1,32}", str(item.get("command", ""))):
                raise ApiError(400, ERR_COMMAND_INVALID)
            if not 1 <= len(str(item.get("description", ""))) <= 256:
                raise ApiError(400, ERR_COMMAND_DESCRIPTION)
        self.commands[self._commands_key(ctx.p)] = [
            {"command": c["command"], "description": c["description"]} for c in commands
        ]
        return True

    async def _get_my_commands(self, ctx: _Ctx) -> list[JSONDict]:
        return self.commands.get(self._commands_key(ctx.p), [])

    async def _delete_my_commands(self, ctx: _Ctx) -> bool:
        self.commands.pop(self._commands_key(ctx.p), None)
        return True

    # sending -------------------------------------------------------------------------------------
    async def _send_message(self, ctx: _Ctx) -> JSONDict:
        chat = self._chat(ctx.p)
        text = self._text(ctx.p.get("text"), ctx.p.text("parse_mode"), caption=False, edit=False)
        if not text:
            raise ApiError(400, ERR_TEXT_EMPTY)
        return self._store_bot_message(ctx, chat, text=text)

    def _caption(self, ctx: _Ctx, spec: JSONDict | None = None) -> str:
        source = spec if spec is not None else ctx.p.raw
        return self._text(source.get("caption"), source.get("parse_mode"), caption=True, edit=False)

    async def _send_photo(self, ctx: _Ctx) -> JSONDict:
        chat = self._chat(ctx.p)
        caption = self._caption(ctx)
        media = self._photo(self._input(ctx.p.get("photo"), ctx.files, "photo"))
        extras = {"has_media_spoiler": True} if ctx.p.flag("has_spoiler") else {}
        return self._store_bot_message(ctx, chat, caption=caption, media=media, extras=extras)

    def _send_media(self, kind: str) -> Handler:
        async def send(ctx: _Ctx) -> JSONDict:
            chat = self._chat(ctx.p)
            caption = self._caption(ctx)
            source = self._input(ctx.p.get(kind), ctx.files, kind)
            media = self._generic(kind, source, ctx.p, ctx.files)
            return self._store_bot_message(ctx, chat, caption=caption, media=media)

        return send

    # editing -------------------------------------------------------------------------------------
    async def _edit_text(self, ctx: _Ctx) -> JSONDict:
        msg = self._editable(ctx.p)
        if msg.media_kind is not None:
            raise ApiError(400, ERR_NO_TEXT_TO_EDIT)
        text = self._text(ctx.p.get("text"), ctx.p.text("parse_mode"), caption=False, edit=True)
        if not text:
            raise ApiError(400, ERR_TEXT_EMPTY)
        markup = self._markup(ctx.p, edit=True)
        key = self._format_key(ctx.p, "text")
        if text == msg.text and key == msg.format_key and markup == msg.reply_markup:
            raise ApiError(400, ERR_NOT_MODIFIED)
        msg.text, msg.format_key, msg.reply_markup = text, key, markup
        msg.parse_mode = ctx.p.text("parse_mode")
        return self._edited(msg, ctx.method)

    async def _edit_caption(self, ctx: _Ctx) -> JSONDict:
        msg = self._editable(ctx.p)
        if msg.media_kind is None:
            raise ApiError(400, ERR_NO_CAPTION_TO_EDIT)
        caption = self._caption(ctx) or None
        markup = self._markup(ctx.p, edit=True)
        key = self._format_key(ctx.p, "caption")
        if caption == msg.caption and key == msg.format_key and markup == msg.reply_markup:
            raise ApiError(400, ERR_NOT_MODIFIED)
        msg.caption, msg.format_key, msg.reply_markup = caption, key, markup
        return self._edited(msg, ctx.method)

    async def _edit_media(self, ctx: _Ctx) -> JSONDict:
        msg = self._editable(ctx.p)
        spec = ctx.p.obj("media")
        if not isinstance(spec, dict) or spec.get("type") not in (
            "photo",
            "video",
            "document",
            "audio",
        ):
            raise ApiError(400, "Bad Request: can't parse InputMedia: media not found")
        kind = str(spec["type"])
        caption = self._caption(ctx, spec) or None
        markup = self._markup(ctx.p, edit=True)
        source = self._input(spec.get("media"), ctx.files, "media")
        if (
            isinstance(source, FileRecord)
            and source.file_id == msg.media_file_id
            and caption == msg.caption
            and markup == msg.reply_markup
        ):
            raise ApiError(400, ERR_NOT_MODIFIED)
        if kind == "photo":
            media = self._photo(source)
        else:
            media = self._generic(kind, source, ctx.p, ctx.files, spec)
        msg.media_kind, msg.media, msg.media_file_id, msg.media_bytes = media
        msg.text, msg.caption, msg.reply_markup = None, caption, markup
        msg.format_key = (
            f"{spec.get('parse_mode')}:{spec.get('caption')}"
            if spec.get("parse_mode")
            else spec.get("caption")
        )
        if "has_spoiler" in spec:
            msg.extras["has_media_spoiler"] = bool(spec["has_spoiler"])
        return self._edited(msg, ctx.method)

    async def _edit_markup(self, ctx: _Ctx) -> JSONDict:
        msg = self._editable(ctx.p)
        markup = self._markup(ctx.p, edit=True)
        if markup == msg.reply_markup:
            raise ApiError(400, ERR_NOT_MODIFIED)
        msg.reply_markup = markup
        return self._edited(msg, ctx.method)

    async def _delete_message(self, ctx: _Ctx) -> bool:
        chat = self._chat(ctx.p)
        msg = self.messages.get((chat.id, ctx.p.integer("message_id") or 0))
        if msg is None or msg.deleted:
            raise ApiError(400, ERR_DELETE_NOT_FOUND)
        if not msg.from_bot and chat.is_group and self.bot_user.id not in chat.admin_ids:
            raise ApiError(400, ERR_CANT_DELETE)
        msg.deleted = True
        return True

    # other chat methods --------------------------------------------------------------------------
    async def _send_chat_action(self, ctx: _Ctx) -> bool:
        chat = self._chat(ctx.p)
        action = ctx.p.text("action")
        if action not in CHAT_ACTIONS:
            raise ApiError(400, ERR_WRONG_ACTION)
        thread_id = ctx.p.integer("message_thread_id")
        self.chat_actions.append(
            {"chat_id": chat.id, "action": action, "thread_id": thread_id, "at": time.time()}
        )
        return True

    async def _answer_callback(self, ctx: _Ctx) -> bool:
        query_id = ctx.p.text("callback_query_id") or ""
        record = self._callbacks.get(query_id)
        if (
            record is None
            or record.answered
            or time.monotonic() - record.created > self.callback_ttl
        ):
            raise ApiError(400, ERR_QUERY_TOO_OLD)
        record.answered = True
        self.callback_answers[query_id] = {
            "text": ctx.p.text("text"),
            "show_alert": ctx.p.flag("show_alert"),
            "url": ctx.p.text("url"),
            "cache_time": ctx.p.integer("cache_time"),
            "chat_id": record.chat_id,
            "message_id": record.message_id,
            "at": time.time(),
        }
        return True

    async def _get_file(self, ctx: _Ctx) -> JSONDict:
        record = self.files.get(ctx.p.text("file_id") or "")
        if record is None:
            raise ApiError(400, ERR_INVALID_FILE_ID)
        if record.file_size > MAX_DOWNLOAD_BYTES:
            raise ApiError(400, ERR_FILE_TOO_BIG)
        return {
            "file_id": record.file_id,
            "file_unique_id": record.file_unique_id,
            "file_size": record.file_size,
            "file_path": record.file_path,
        }

    async def _get_chat(self, ctx: _Ctx) -> JSONDict:
        chat = self._chat(ctx.p)
        return {
            **chat.to_api(),
            "accent_color_id": 0,
            "max_reaction_count": 11,
            "accepted_gift_types": {
                "unlimited_gifts": False,
                "limited_gifts": False,
                "unique_gifts": False,
                "premium_subscription": False,
                "gifts_from_channels": False,
            },
        }

    def _member(self, chat: FakeChat, user: FakeUser) -> JSONDict:
        if user.id == chat.creator_id:
            return {"status": "creator", "user": user.to_api(), "is_anonymous": False}
        if user.id in chat.admin_ids:
            rights = dict.fromkeys(
                (
                    "can_manage_chat",
                    "can_delete_messages",
                    "can_manage_video_chats",
                    "can_restrict_members",
                    "can_change_info",
                    "can_invite_users",
                    "can_post_stories",
                    "can_edit_stories",
                    "can_delete_stories",
                    "can_pin_messages",
                ),
                True,
            )
            return {
                "status": "administrator",
                "user": user.to_api(),
                "can_be_edited": False,
                "is_anonymous": False,
                "can_promote_members": False,
                **rights,
            }
        if user.id in chat.member_ids:
            return {"status": "member", "user": user.to_api()}
        return {"status": "left", "user": user.to_api()}

    async def _get_chat_member(self, ctx: _Ctx) -> JSONDict:
        chat = self._chat(ctx.p)
        user = self.users.get(ctx.p.integer("user_id") or 0)
        if user is None:
            raise ApiError(400, ERR_USER_NOT_FOUND)
        return self._member(chat, user)

    async def _get_chat_administrators(self, ctx: _Ctx) -> list[JSONDict]:
        chat = self._chat(ctx.p)
        if not chat.is_group:
            raise ApiError(400, ERR_NO_ADMINS_PRIVATE)
        ids = ([chat.creator_id] if chat.creator_id else []) + sorted(
            chat.admin_ids - {chat.creator_id}
        )
        return [self._member(chat, self.users[i]) for i in ids if i in self.users]

    async def _set_reaction(self, ctx: _Ctx) -> bool:
        chat = self._chat(ctx.p)
        msg = self.messages.get((chat.id, ctx.p.integer("message_id") or 0))
        if msg is None or msg.deleted:
            raise ApiError(400, ERR_REACT_NOT_FOUND)
        reaction = ctx.p.obj("reaction") or []
        msg.reactions = list(reaction) if isinstance(reaction, list) else []
        return True


@pytest.fixture
async def fake_telegram() -> AsyncIterator[FakeTelegram]:
    """A running fake Bot API with a bot token and the username "AnimeStudioTestBot"."""
    fake = FakeTelegram()
    await fake.start()
    try:
        yield fake
    finally:
        await fake.close()
