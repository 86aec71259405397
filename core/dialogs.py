"""Unfinished dialogs of the bot, kept in PostgreSQL so that any bot process continues any dialog
(and a restarted one does too).

A dialog is a typed state (one `DialogState` subclass per kind) under a key in a chat: the user
id for per-user dialogs (a character being created or edited, the "what happens in the scene?"
and "send your own audio" waits), the message id for those tied to a message (a scene's
character picker, a music chooser). Every dialog expires (`ttl_s`); an expired one is invisible
and `sweep` removes it, returning its `notice` (what to tell the user) to exactly one caller.

Concurrency: `save` is a compare-and-set on the dialog's version (None when another update
changed it first); `update` applies a pure change under the row's lock; `take` deletes and returns,
so of two concurrent callers only one gets the dialog.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, ClassVar, Generic, TypeVar
from uuid import UUID

from pydantic import BaseModel, ConfigDict, ValidationError

from core.db import dialogs as store
from core.db.tx import transaction
from core.db.types import Executor
from core.director import DEFAULT_STYLE
from core.logs import get_logger
from core.models import JobKind
from core.music.service import SoundtrackChoice

log = get_logger(__name__)

LOOK_AGAIN_S = 0.05  # between two reads of a dialog awaited with `get(wait_s=...)`


class DialogKind(StrEnum):
    CHARACTER = "character"  # per user: /newcharacter, or editing a field of a character
    SCENE_WAIT = "scene_wait"  # per user: "what happens in the scene?"
    AUDIO_WAIT = "audio_wait"  # per user: "send your own audio"
    PICKER = "picker"  # per message: who is in the scene
    MUSIC = "music"  # per message: the soundtrack of a video


class DialogState(BaseModel):
    model_config = ConfigDict(frozen=True)
    kind: ClassVar[DialogKind]


class CharacterStep(StrEnum):
    NAME = "name"
    APPEARANCE = "appearance"
    STYLE = "style"
    PERSONALITY = "personality"
    REFERENCE = "reference"
    CONFIRM = "confirm"
    EDIT_TEXT = "edit_text"
    EDIT_PHOTO = "edit_photo"


class CharacterDialog(DialogState):
    """A character being created (the draft; its reference photo is the attachment) or one
    field of `character_id` being edited. `question_id` is the bot's message that asks for the
    answer of the current step (or carries its buttons); None until it is sent, and in dialogs
    stored before it was recorded."""

    kind: ClassVar[DialogKind] = DialogKind.CHARACTER
    step: CharacterStep
    name: str = ""
    appearance: str = ""
    style: str = DEFAULT_STYLE
    personality: str = ""
    has_reference: bool = False
    character_id: UUID | None = None
    field: str = ""
    question_id: int | None = None


class SceneWait(DialogState):
    """The next text (in a group: a reply to `prompt_message_id`) is a scene with the character."""

    kind: ClassVar[DialogKind] = DialogKind.SCENE_WAIT
    character_id: UUID
    prompt_message_id: int


class AudioWait(DialogState):
    """The user was asked for their own audio in the chooser message `chooser_message_id`."""

    kind: ClassVar[DialogKind] = DialogKind.AUDIO_WAIT
    chooser_message_id: int


class PickerDraft(DialogState):
    """A scene waiting for its characters (keyed by the picker message)."""

    kind: ClassVar[DialogKind] = DialogKind.PICKER
    job_kind: JobKind
    text: str
    request_message_id: int | None
    characters: list[tuple[UUID, str]]
    selected: frozenset[UUID] = frozenset()
    soundtrack: SoundtrackChoice | None = None  # an audio the user sent with the command


class SceneOrder(BaseModel):
    """A video scene whose options and characters are settled, waiting for its music."""

    model_config = ConfigDict(frozen=True)
    user_id: int
    text: str
    request_message_id: int | None
    character_ids: list[UUID]


class MusicDraft(DialogState):
    """The music chooser of a video (keyed by the chooser message)."""

    kind: ClassVar[DialogKind] = DialogKind.MUSIC
    order: SceneOrder
    choices: list[SoundtrackChoice]


STATE_TYPES: dict[DialogKind, type[DialogState]] = {
    cls.kind: cls for cls in (CharacterDialog, SceneWait, AudioWait, PickerDraft, MusicDraft)
}
PER_USER = (DialogKind.CHARACTER, DialogKind.SCENE_WAIT, DialogKind.AUDIO_WAIT)

S = TypeVar("S", bound=DialogState)


@dataclass(frozen=True)
class Dialog(Generic[S]):
    chat_id: int
    key: int
    user_id: int
    state: S
    version: int
    expires_at: datetime
    attachment: bytes | None = None  # only returned by `take`


@dataclass(frozen=True)
class UserDialogs:
    """The per-user dialogs of one user in one chat."""

    character: Dialog[CharacterDialog] | None = None
    scene_wait: Dialog[SceneWait] | None = None
    audio_wait: Dialog[AudioWait] | None = None


@dataclass(frozen=True)
class Expired:
    chat_id: int
    kind: str
    key: int
    user_id: int
    notice: dict[str, Any] | None


def _dialog(kind: type[S], row: store.DialogRow | None) -> Dialog[S] | None:
    """The typed dialog of a row; None (logged) for a state this version cannot read."""
    if row is None:
        return None
    try:
        state = kind.model_validate(row.state)
    except ValidationError as error:
        log.warning("unreadable dialog state", kind=row.kind, error=str(error)[:300])
        return None
    return Dialog(
        row.chat_id, row.key, row.user_id, state, row.version, row.expires_at, row.attachment
    )


def _json(state: DialogState) -> dict[str, Any]:
    return state.model_dump(mode="json")


class Dialogs:
    """The dialog store the bot uses (`StudioService.dialogs`)."""

    def __init__(self, db: Executor) -> None:
        self.db = db

    async def start(
        self,
        chat_id: int,
        key: int,
        user_id: int,
        state: S,
        *,
        ttl_s: float,
        notice: dict[str, Any] | None = None,
        attachment: bytes | None = None,
    ) -> Dialog[S]:
        """Start a dialog, replacing the one with the same key (and its attachment)."""
        row = await store.put(
            self.db,
            chat_id,
            state.kind.value,
            key,
            user_id=user_id,
            state=_json(state),
            ttl_s=ttl_s,
            attachment=attachment,
            notice=notice,
        )
        return Dialog(chat_id, key, user_id, state, row.version, row.expires_at)

    async def get(
        self, kind: type[S], chat_id: int, key: int, *, wait_s: float = 0.0
    ) -> Dialog[S] | None:
        """The live dialog. With `wait_s`, a dialog not there yet is looked for again until
        then: a button can be pressed in the moment between its message being sent and its
        dialog being stored (by this process or another)."""
        deadline = time.monotonic() + wait_s
        while True:
            found = _dialog(kind, await store.get(self.db, chat_id, kind.kind.value, key))
            if found is not None or time.monotonic() >= deadline:
                return found
            await asyncio.sleep(LOOK_AGAIN_S)

    async def of_user(self, chat_id: int, user_id: int) -> UserDialogs:
        """The user's live per-user dialogs in the chat, in one query."""
        rows = {
            row.kind: row
            for row in await store.of_key(self.db, chat_id, [k.value for k in PER_USER], user_id)
        }
        return UserDialogs(
            character=_dialog(CharacterDialog, rows.get(DialogKind.CHARACTER.value)),
            scene_wait=_dialog(SceneWait, rows.get(DialogKind.SCENE_WAIT.value)),
            audio_wait=_dialog(AudioWait, rows.get(DialogKind.AUDIO_WAIT.value)),
        )

    async def touch(
        self,
        kind: type[S],
        chat_id: int,
        key: int,
        *,
        ttl_s: float,
        notice: dict[str, Any] | None = None,
    ) -> Dialog[S] | None:
        """The live dialog, its expiry pushed to `ttl_s` from now (and its notice replaced)."""
        row = await store.touch(self.db, chat_id, kind.kind.value, key, ttl_s=ttl_s, notice=notice)
        return _dialog(kind, row)

    async def save(
        self, dialog: Dialog[S], state: S, *, attachment: bytes | bool | None = False
    ) -> Dialog[S] | None:
        """Replace the state if `dialog` is still current; None when it changed meanwhile.
        `attachment`: False keeps it, None removes it, bytes replace it."""
        row = await store.save(
            self.db,
            dialog.chat_id,
            state.kind.value,
            dialog.key,
            version=dialog.version,
            state=_json(state),
            set_attachment=attachment is not False,
            attachment=attachment if isinstance(attachment, bytes) else None,
        )
        if row is None:
            return None
        return Dialog(dialog.chat_id, dialog.key, row.user_id, state, row.version, row.expires_at)

    async def update(
        self, kind: type[S], chat_id: int, key: int, change: Callable[[S], S]
    ) -> Dialog[S] | None:
        """Apply a pure `change` to the live dialog under its row lock (concurrent changes
        apply one after the other); None when there is no such dialog."""
        async with transaction(self.db) as conn:
            dialog = _dialog(
                kind, await store.get(conn, chat_id, kind.kind.value, key, for_update=True)
            )
            if dialog is None:
                return None
            return await Dialogs(conn).save(dialog, change(dialog.state))

    async def take(
        self, kind: type[S], chat_id: int, key: int, *, version: int | None = None
    ) -> Dialog[S] | None:
        """End the live dialog and return it with its attachment (at `version` when given);
        None when it is gone (or changed): another update ended it first."""
        row = await store.take(self.db, chat_id, kind.kind.value, key, version=version)
        return _dialog(kind, row)

    async def discard(self, kind: type[DialogState], chat_id: int, key: int) -> bool:
        """End the dialog (live or expired) without reading it."""
        return await store.delete(self.db, chat_id, kind.kind.value, key)

    async def sweep(self, *, limit: int = 100) -> list[Expired]:
        """Remove expired dialogs; each is returned to exactly one caller (of any process)."""
        rows = await store.sweep_expired(self.db, limit=limit)
        return [Expired(r.chat_id, r.kind, r.key, r.user_id, r.notice) for r in rows]
