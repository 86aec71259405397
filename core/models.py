"""Domain types: stored rows (pydantic, validated at the database edge) and small value types."""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum
from typing import Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict

from core.states import JobState


class Row(BaseModel):
    model_config = ConfigDict(frozen=True, from_attributes=True)

    @classmethod
    def from_record(cls, record: Any) -> Any:
        return cls.model_validate(dict(record))


class Role(StrEnum):
    USER = "user"
    ADMIN = "admin"
    BANNED = "banned"


class ChatType(StrEnum):
    PRIVATE = "private"
    GROUP = "group"
    SUPERGROUP = "supergroup"
    CHANNEL = "channel"


class JobKind(StrEnum):
    IMAGE = "image"
    VIDEO = "video"


class Operation(StrEnum):
    GENERATE = "generate"
    REROLL = "reroll"
    VARIATION = "variation"
    UPSCALE = "upscale"
    ANIMATE = "animate"
    SHEET = "sheet"


class User(Row):
    id: int
    username: str | None
    first_name: str
    last_name: str | None
    language_code: str | None
    role: Role
    daily_quota: int | None
    quota_used: int
    quota_day: date
    created_at: datetime
    last_seen_at: datetime


class Chat(Row):
    id: int
    type: ChatType
    title: str | None
    is_forum: bool
    style_preset: str
    aspect_ratio: str
    video_seconds: int
    send_original: bool
    language: str | None
    created_at: datetime
    last_seen_at: datetime


class Character(Row):
    id: UUID
    owner_id: int
    chat_id: int | None
    name: str
    appearance: str
    personality: str
    style: str
    negative_prompt: str
    base_seed: int
    lora_name: str | None
    lora_strength: float
    created_at: datetime
    updated_at: datetime
    deleted_at: datetime | None


class CharacterReference(Row):
    id: UUID
    character_id: UUID
    file_path: str
    sha256: str
    width: int
    height: int
    telegram_file_id: str | None
    created_at: datetime


class Generation(Row):
    id: UUID
    requester_id: int
    chat_id: int
    thread_id: int | None
    request_message_id: int | None
    progress_message_id: int | None
    result_message_id: int | None
    delivery_error: str | None
    kind: JobKind
    operation: Operation
    parent_id: UUID | None
    prompt_typed: str
    prompt_positive: str
    prompt_negative: str
    character_ids: list[UUID]
    workflow: str
    params: dict[str, Any]
    seed: int | None
    soundtrack: dict[str, Any] | None = None
    backend: str | None
    attempts: int
    status: JobState
    progress: float
    error: str | None
    cancel_requested: bool
    lease_owner: int | None
    created_at: datetime
    submitted_at: datetime | None
    running_at: datetime | None
    postprocessing_at: datetime | None
    delivering_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime


class GenerationEvent(Row):
    id: int
    generation_id: UUID
    at: datetime
    from_status: str | None
    to_status: str
    detail: dict[str, Any]


class LibraryStatus(StrEnum):
    PENDING = "pending"
    FILED = "filed"
    LINKED = "linked"
    FAILED = "failed"
    OFF = "off"


class Output(Row):
    id: UUID
    generation_id: UUID
    position: int
    kind: JobKind
    file_path: str
    delivery_path: str | None
    thumbnail_path: str | None
    mime: str
    size_bytes: int
    sha256: str
    width: int | None
    height: int | None
    duration_s: float | None
    comfy_node: str | None
    comfy_filename: str | None
    telegram_file_id: str | None
    telegram_message_id: int | None
    library_path: str | None
    jellyfin_item_id: str | None
    jellyfin_link: str | None
    library_status: LibraryStatus
    library_attempts: int
    library_next_at: datetime | None
    library_unreachable: bool = False  # the last filing attempt could not reach Jellyfin
    without_music: str | None = None  # a video sent without its soundtrack: why (MissingReason)
    created_at: datetime


class Backend(Row):
    url: str
    healthy: bool
    version: str | None
    last_error: str | None
    missing_workflows: list[str]
    checked_at: datetime | None
