"""The public API the bot calls: a facade over the store, the director and the orchestrator.

Every method takes an `Actor` (who asks, from which chat) and returns typed results; failures
are `AnimeBotError`s whose `user_message` the bot shows as is.
"""

from __future__ import annotations

import asyncio
import re
import tempfile
import unicodedata
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol
from uuid import UUID

from core import director
from core.access import AccessPolicy
from core.db import characters as char_db
from core.db import generations as gen_db
from core.db import outputs as out_db
from core.db import people
from core.db import rate_limits as rate_db
from core.db.outputs import LibraryCounts
from core.db.people import ChatMigration
from core.db.pool import Database
from core.db.rate_limits import RateVerdict
from core.db.tx import transaction
from core.dialogs import Dialogs
from core.errors import IllegalTransition, InvalidInput, LimitReached, NotFound
from core.eta import DEFAULT_JOB_SECONDS, queue_eta
from core.events import EventBus
from core.jobs.postprocess import sha256_of
from core.logs import get_logger
from core.media.images import normalize_reference
from core.models import (
    Character,
    Chat,
    ChatType,
    Generation,
    JobKind,
    Operation,
    Output,
    Role,
    User,
)
from core.music.service import MusicService, SoundtrackChoice
from core.settings import Settings
from core.states import CANCELLABLE, JobState
from core.workflows.patch import even_scaled_size

log = get_logger(__name__)

NAME_MAX = 64
VARIATION_DENOISE = 0.55
UPSCALE_FACTOR = 2.0
APPEARANCE_MAX = 2000
PERSONALITY_MAX = 1000
CAST_LIMIT = 500  # characters a scene can name (and the picker offer)
# Removed from free text: control characters (but line breaks), zero-width spaces, bidi
# marks and overrides. The zero-width (non-)joiners stay: emoji and Persian words need them.
_CONTROL = re.compile(
    r"[\x00-\x09\x0b-\x1f\x7f\u200b\u200e\u200f\u202a-\u202e\u2060\u2066-\u2069\ufeff]"
)
_SPACING = re.compile(r"[\t\v\f]")
_JOINERS = re.compile("[\u200c\u200d]")
_NAME_OK = re.compile(r"^[\w][\w .'\-]*$", re.UNICODE)
_MARKS = frozenset({"Mn", "Mc"})


class AccessDenied(InvalidInput):
    default_user_message = "You cannot use this bot here."


@dataclass(frozen=True)
class Actor:
    """Who is asking and where (filled by the bot from the Telegram update)."""

    user_id: int
    chat_id: int
    chat_type: ChatType = ChatType.PRIVATE
    first_name: str = ""
    username: str | None = None
    language_code: str | None = None
    chat_title: str | None = None
    is_forum: bool = False
    thread_id: int | None = None


@dataclass(frozen=True)
class JobTicket:
    job: Generation
    position: int | None
    eta_s: float | None


class JobStarter(Protocol):
    """This process's engine, starting the jobs this process queues into an empty queue."""

    def expect(self, job_id: UUID) -> None:
        """`job_id` is about to be queued here: its NOTIFY needs no dispatch round until
        `start_new` has said whether it started it."""

    async def start_new(self, job: Generation | None, job_id: UUID, *, alone: bool) -> bool:
        """True when the job (None: not queued after all) was claimed and started; otherwise
        the dispatch loop takes it as any queued job."""
        ...


@dataclass(frozen=True)
class SceneCast:
    named: list[Character]  # named in the scene's text, in text order
    owned: list[Character]  # all of the user's characters (up to CAST_LIMIT), as listed


@dataclass(frozen=True)
class CharacterDraft:
    name: str
    appearance: str
    personality: str = ""
    style: str = "anime"
    negative_prompt: str = ""
    reference: Path | bytes | None = None  # an untrusted image; validated and normalized


@dataclass(frozen=True)
class Stats:
    users: int
    jobs_by_state: dict[str, int]
    backends: dict[str, int]
    library: LibraryCounts | None  # None: the library is off (no JELLYFIN_LIBRARY_DIR)


def clean_text(text: str, *, limit: int, field: str, minimum: int = 1) -> str:
    """Strip control characters and outer space; enforce a length (a user-facing error).
    Line breaks are kept, a tab is a space; text that shows nothing counts as empty."""
    text = _SPACING.sub(" ", text.replace("\r\n", "\n").replace("\r", "\n"))
    cleaned = _CONTROL.sub("", text).strip()
    if not director.has_visible(cleaned):
        cleaned = ""
    if len(cleaned) < minimum:
        raise InvalidInput(
            f"{field} too short", user_message=f"The {field} is empty. Please write it again."
        )
    if len(cleaned) > limit:
        raise InvalidInput(
            f"{field} too long ({len(cleaned)})",
            user_message=f"The {field} is too long ({len(cleaned)} characters, at most {limit}).",
        )
    return cleaned


def _name_ok(name: str) -> bool:
    """Letters and digits of any script (with their combining marks), spaces, . ' -."""
    if not name or unicodedata.category(name[0]) in _MARKS:
        return False
    bare = "".join(char for char in name if unicodedata.category(char) not in _MARKS)
    return bool(_NAME_OK.match(bare))


def clean_name(text: str) -> str:
    cleaned = clean_text(_JOINERS.sub("", text), limit=NAME_MAX, field="name")
    name = unicodedata.normalize("NFC", " ".join(cleaned.split()))
    if not _name_ok(name):
        raise InvalidInput(
            f"bad character name {name!r}",
            user_message="A name uses letters, digits, spaces, dots, apostrophes or dashes, "
            "and starts with a letter or digit.",
        )
    return name


def derive_base_seed(character_id: UUID) -> int:
    return character_id.int % (2**32)


class StudioService:
    def __init__(self, settings: Settings, database: Database, events: EventBus) -> None:
        self.settings = settings
        self.db = database.pool
        self.events = events
        self.policy = AccessPolicy(
            frozenset(settings.allowed_chat_ids), frozenset(settings.admin_user_ids)
        )
        self.capacity = max(1, len(settings.comfyui_urls) * settings.comfyui_max_in_flight)
        self.music = MusicService(settings)
        self.dialogs = Dialogs(self.db)  # unfinished dialogs of the bot, shared by its processes
        # Set by the runtime while this process runs the engine: starts a job queued into an
        # empty queue at once, without waiting for the NOTIFY round trip.
        self.starter: JobStarter | None = None
        # Supergroups not in ALLOWED_CHAT_IDS but upgraded from a group that is (found in the
        # database once per process; an upgrade is never undone).
        self._allowed_by_upgrade: set[int] = set()

    # -- people and access -------------------------------------------------------------

    async def seen(self, actor: Actor) -> tuple[User, Chat]:
        """Record the user and chat of an update; raises AccessDenied when not allowed."""
        if not await self.chat_allowed(actor.chat_id):
            raise AccessDenied(
                f"chat {actor.chat_id} not in ALLOWED_CHAT_IDS",
                user_message="This bot is not enabled in this chat.",
            )
        user, chat = await people.seen(
            self.db,
            user_id=actor.user_id,
            first_name=actor.first_name,
            username=actor.username,
            language_code=actor.language_code,
            chat_id=actor.chat_id,
            chat_type=actor.chat_type,
            title=actor.chat_title,
            is_forum=actor.is_forum,
        )
        if not self.policy.user_allowed(user.id, user.role):
            raise AccessDenied(
                f"user {user.id} is banned", user_message="You are not allowed to use this bot."
            )
        return user, chat

    async def chat_allowed(self, chat_id: int) -> bool:
        """ALLOWED_CHAT_IDS (empty: every chat), or a supergroup upgraded from a listed group
        (recorded by `chat_migrated`; looked up only for a chat outside the list)."""
        if self.policy.chat_allowed(chat_id) or chat_id in self._allowed_by_upgrade:
            return True
        origins = [
            o for o in await people.migrated_from(self.db, chat_id) if self.policy.chat_allowed(o)
        ]
        if not origins:
            return False
        self._allowed_by_upgrade.add(chat_id)
        log.warning(
            "chat allowed as the supergroup of an allowed group: add its id to ALLOWED_CHAT_IDS",
            chat_id=chat_id,
            migrated_from=origins[0],
        )
        return True

    async def chat_migrated(
        self, old_chat_id: int, new_chat_id: int, *, title: str | None = None
    ) -> ChatMigration:
        """Group `old_chat_id` was upgraded to supergroup `new_chat_id` (Telegram's service
        messages, or a call refused with ChatMigrated): its settings, undelivered jobs,
        characters and per-user dialogs move to the new id, in one transaction. Idempotent:
        call it for every signal of the upgrade, in any order."""
        moved = await people.migrate_chat(self.db, old_chat_id, new_chat_id, title=title)
        log.info(
            "group upgraded to a supergroup",
            old_chat_id=old_chat_id,
            new_chat_id=new_chat_id,
            first=moved.first,
            settings_copied=moved.settings_copied,
            jobs=moved.jobs,
            characters=moved.characters,
            dialogs=moved.dialogs,
        )
        listed = self.settings.allowed_chat_ids
        if moved.first and listed and new_chat_id not in listed and old_chat_id in listed:
            log.warning(
                "an allowed group became a supergroup with a new id: add it to ALLOWED_CHAT_IDS"
                " (until then it is allowed as the upgraded group)",
                old_chat_id=old_chat_id,
                new_chat_id=new_chat_id,
            )
        return moved

    async def same_chat(self, chat_id: int, other_chat_id: int) -> bool:
        """The same chat, or a group and the supergroup it was upgraded to (a button under a
        result of the group, pressed after the upgrade)."""
        if chat_id == other_chat_id:
            return True
        return await people.upgraded_from_one_another(self.db, chat_id, other_chat_id)

    def is_admin(self, user: User) -> bool:
        return self.policy.is_admin(user.id, user.role)

    async def rate_limit(self, user_id: int) -> RateVerdict:
        """Count one command or button press of the user against the flood limit shared by
        every process (RATE_LIMIT_BURST at once, then RATE_LIMIT_PER_SECOND); one round trip."""
        settings = self.settings
        return await rate_db.hit(
            self.db, user_id, rate=settings.rate_limit_per_second, burst=settings.rate_limit_burst
        )

    async def chat_settings(self, chat_id: int) -> Chat:
        chat = await people.get_chat(self.db, chat_id)
        if chat is None:
            raise NotFound(f"chat {chat_id} unknown")
        return chat

    async def update_chat_settings(self, chat_id: int, **changes: Any) -> Chat:
        if "style_preset" in changes and changes["style_preset"] not in director.STYLE_PRESETS:
            raise InvalidInput("unknown preset", user_message="Unknown style preset.")
        if "aspect_ratio" in changes:
            director.parse_aspect_ratio(changes["aspect_ratio"])
        chat = await people.update_chat_settings(self.db, chat_id, **changes)
        if chat is None:
            raise NotFound(f"chat {chat_id} unknown")
        return chat

    # -- characters -----------------------------------------------------------------------

    async def check_new_name(self, owner_id: int, text: str) -> str:
        name = clean_name(text)
        if await char_db.find_by_name(self.db, owner_id, name) is not None:
            raise InvalidInput(
                f"name {name!r} taken",
                user_message=f"You already have a character called {name}. Choose another name.",
            )
        return name

    async def check_room_for_character(self, owner_id: int) -> None:
        """Raises LimitReached when `owner_id` has as many characters as allowed: checked before
        the /newcharacter dialog asks anything, and again when the character is created."""
        if (
            await char_db.count_characters(self.db, owner_id)
            >= self.settings.max_characters_per_user
        ):
            raise LimitReached(
                "too many characters",
                user_message=f"You have {self.settings.max_characters_per_user} characters "
                "already; delete one first.",
            )

    async def create_character(self, actor: Actor, draft: CharacterDraft) -> Character:
        owner = actor.user_id
        await self.check_room_for_character(owner)
        name = clean_name(draft.name)
        appearance = clean_text(draft.appearance, limit=APPEARANCE_MAX, field="appearance")
        personality = clean_text(
            draft.personality, limit=PERSONALITY_MAX, field="personality", minimum=0
        )
        character_id = uuid.uuid4()
        async with transaction(self.db) as conn:
            character = await char_db.create_character(
                conn,
                owner_id=owner,
                chat_id=actor.chat_id,
                name=name,
                appearance=appearance,
                personality=personality,
                style=draft.style,
                negative_prompt=clean_text(
                    draft.negative_prompt, limit=1000, field="negative", minimum=0
                ),
                base_seed=derive_base_seed(character_id),
            )
            if draft.reference is not None:
                await self._attach_reference(conn, character.id, draft.reference)
        log.info("character created", character_id=str(character.id), owner=owner)
        return character

    async def _attach_reference(self, conn: Any, character_id: UUID, image: Path | bytes) -> None:
        """Validate and normalize an untrusted image, keep it, and record it."""
        dest = self.settings.data_dir / "references" / str(character_id) / f"{uuid.uuid4().hex}.png"
        stored = await normalize_reference(image, dest)
        digest = await asyncio.to_thread(sha256_of, stored.path)
        await char_db.add_reference(
            conn,
            character_id,
            file_path=str(stored.path),
            sha256=digest,
            width=stored.width,
            height=stored.height,
        )

    async def check_reference(self, image: Path | bytes) -> None:
        """Raise InvalidInput (saying what to fix) when an image cannot be a reference."""
        with tempfile.TemporaryDirectory() as tmp:
            await normalize_reference(image, Path(tmp) / "check.png")

    async def add_reference(self, actor: Actor, character_id: UUID, image: Path | bytes) -> None:
        await self.get_character(actor, character_id)
        await self._attach_reference(self.db, character_id, image)

    async def get_character(self, actor: Actor, character_id: UUID) -> Character:
        character = await char_db.get_character(self.db, character_id)
        if character is None or character.owner_id != actor.user_id:
            raise NotFound(
                f"character {character_id} not found for {actor.user_id}",
                user_message="That character does not exist (any more).",
            )
        return character

    async def list_characters(
        self, owner_id: int, *, page: int = 0, per_page: int = 8
    ) -> tuple[list[Character], int]:
        total = await char_db.count_characters(self.db, owner_id)
        items = await char_db.list_characters(
            self.db, owner_id, limit=per_page, offset=page * per_page
        )
        return items, total

    async def character_images(
        self, actor: Actor, character_id: UUID, *, limit: int = 8
    ) -> list[tuple[Generation, Output]]:
        """The character's most recent delivered images with their jobs, newest first."""
        await self.get_character(actor, character_id)
        outputs = await out_db.recent_images_of_character(self.db, character_id, limit=limit)
        jobs = {
            o.generation_id: await gen_db.require_generation(self.db, o.generation_id)
            for o in outputs
        }
        return [(jobs[o.generation_id], o) for o in outputs]

    async def references(self, character_id: UUID) -> list[Path]:
        """Reference images of a character, oldest first (scenes use the newest)."""
        return [Path(r.file_path) for r in await char_db.list_references(self.db, character_id)]

    async def update_character(
        self, actor: Actor, character_id: UUID, field: str, value: str
    ) -> Character:
        await self.get_character(actor, character_id)
        limits = {
            "appearance": APPEARANCE_MAX,
            "personality": PERSONALITY_MAX,
            "negative_prompt": 1000,
        }
        if field == "name":
            cleaned = await self.check_new_name(actor.user_id, value)
        elif field in limits:
            cleaned = clean_text(
                value,
                limit=limits[field],
                field=field.replace("_", " "),
                minimum=0 if field != "appearance" else 1,
            )
        elif field == "style":
            if value not in director.STYLE_PRESETS:
                raise InvalidInput("unknown style", user_message="Unknown style preset.")
            cleaned = value
        else:
            raise InvalidInput(f"field {field} not editable", user_message="That cannot be edited.")
        changes: dict[str, Any] = {field: cleaned}
        updated = await char_db.update_character(self.db, character_id, **changes)
        if updated is None:
            raise NotFound("character vanished", user_message="That character does not exist.")
        return updated

    async def delete_character(self, actor: Actor, character_id: UUID) -> None:
        await self.get_character(actor, character_id)
        await char_db.soft_delete_character(self.db, character_id)

    async def character_names(self, job: Generation) -> list[str]:
        """The names of a job's characters, in scene order (deleted ones too)."""
        names = await char_db.names_of(self.db, job.character_ids)
        return [names[cid] for cid in job.character_ids if cid in names]

    def check_scene(self, text: str, kind: JobKind) -> director.SceneRequest:
        """Parse a scene's options without queuing anything (InvalidInput says what to fix)."""
        return director.parse_scene_request(text, kind=kind.value)

    async def scene_cast(self, owner_id: int, text: str) -> SceneCast:
        """The user's characters (one query) and those the text names (`@Name` or the plain
        name as a word), in text order."""
        owned = await char_db.list_characters(self.db, owner_id, limit=CAST_LIMIT)
        return SceneCast(named=director.find_named_characters(text, owned), owned=owned)

    # -- generation -------------------------------------------------------------------------

    async def request_scene(
        self,
        actor: Actor,
        kind: JobKind,
        text: str,
        *,
        character_ids: list[UUID] | None = None,
        request_message_id: int | None = None,
        soundtrack: SoundtrackChoice | None = None,
        chat: Chat | None = None,
    ) -> JobTicket:
        """Queue a scene. A soundtrack (only for videos) is mixed into the delivered video.
        `chat`: the chat's settings when the caller read them while handling this request
        (`seen`); read here otherwise."""
        request = director.parse_scene_request(text, kind=kind.value)
        if soundtrack is not None and kind is not JobKind.VIDEO:
            raise InvalidInput("soundtrack on image", user_message="Only videos get music.")
        if chat is None or chat.id != actor.chat_id:
            chat = await self.chat_settings(actor.chat_id)
        characters = await char_db.get_characters(self.db, character_ids) if character_ids else []
        characters = [c for c in characters if c.owner_id == actor.user_id]
        plan = director.plan_generation(
            request=request,
            kind=kind.value,
            characters=[director.spec_from(c) for c in characters],
            chat_preset=chat.style_preset,
            chat_aspect_ratio=chat.aspect_ratio,
            video_seconds=chat.video_seconds,
        )
        workflow = (
            self.settings.image_workflow if kind is JobKind.IMAGE else self.settings.video_workflow
        )
        if kind is JobKind.IMAGE and characters:
            refs = await self.references(characters[0].id)
            if refs and self.settings.reference_workflow:
                workflow = self.settings.reference_workflow
                plan.params["reference_image"] = str(refs[-1])  # the newest reference
        return await self._enqueue(
            actor,
            kind=kind,
            operation=Operation.GENERATE,
            prompt_typed=request.scene_text or text,
            workflow=workflow,
            plan=plan,
            character_ids=[c.id for c in characters],
            request_message_id=request_message_id,
            soundtrack=soundtrack,
        )

    async def _enqueue(
        self,
        actor: Actor,
        *,
        kind: JobKind,
        operation: Operation,
        prompt_typed: str,
        workflow: str,
        plan: director.GenerationPlan,
        character_ids: list[UUID],
        request_message_id: int | None,
        parent_id: UUID | None = None,
        soundtrack: SoundtrackChoice | None = None,
    ) -> JobTicket:
        job_id = uuid.uuid4()
        today = datetime.now(UTC).date()
        starter = self.starter
        if starter is not None:
            starter.expect(job_id)
        try:
            async with transaction(self.db) as conn:
                await people.lock_user(conn, actor.user_id)  # concurrent requests: one at a time
                active = await gen_db.count_active_for_user(conn, actor.user_id)
                if active >= self.settings.max_queued_per_user:
                    raise LimitReached(
                        "too many active jobs",
                        user_message=f"You already have {active} jobs waiting or running; "
                        "wait for one to finish or /cancel one.",
                    )
                used = await people.take_quota(
                    conn, actor.user_id, today, self.settings.daily_quota
                )
                if used is None:
                    raise LimitReached(
                        "daily quota used",
                        user_message="You have used today's quota. It resets at midnight (UTC).",
                    )
                job, alone = await gen_db.create_queued(
                    conn,
                    id=job_id,
                    requester_id=actor.user_id,
                    chat_id=actor.chat_id,
                    thread_id=actor.thread_id,
                    request_message_id=request_message_id,
                    kind=kind,
                    operation=operation,
                    parent_id=parent_id,
                    prompt_typed=prompt_typed[:4000],
                    prompt_positive=plan.positive,
                    prompt_negative=plan.negative,
                    character_ids=character_ids,
                    workflow=workflow,
                    params=plan.params,
                    seed=plan.seed,
                    soundtrack=soundtrack.to_json() if soundtrack else None,
                )
        except BaseException:
            if starter is not None:
                await starter.start_new(None, job_id, alone=False)
            raise
        log.info("job queued", job_id=str(job.id), kind=kind.value, workflow=workflow)
        position = await self._place_in_queue(starter, job, alone=alone)
        return JobTicket(job, position, await self.eta_for(kind, position))

    async def _place_in_queue(
        self, starter: JobStarter | None, job: Generation, *, alone: bool
    ) -> int | None:
        """The new job's place in the queue; None when this process's engine started it at
        once (it was queued into an empty queue). First in line when nothing else was
        queued: no need to rank the queue then."""
        if starter is not None:
            try:
                if await starter.start_new(job, job.id, alone=alone):
                    return None
            except Exception as error:  # the dispatch loop takes it as any queued job
                log.warning("could not start the job at once", job_id=str(job.id), error=str(error))
        return 1 if alone else await gen_db.queue_position(self.db, job.id)

    async def _parent(self, actor: Actor, job_id: UUID) -> Generation:
        parent = await gen_db.require_generation(self.db, job_id)
        if not await self.same_chat(parent.chat_id, actor.chat_id):
            raise NotFound("job of another chat", user_message="That result is not from this chat.")
        return parent

    async def reroll(
        self,
        actor: Actor,
        job_id: UUID,
        *,
        variation: bool = False,
        request_message_id: int | None = None,
    ) -> JobTicket:
        """Same scene with a new seed; a variation re-imagines the delivered image itself
        (image-to-image from it, so the composition stays close)."""
        parent = await self._parent(actor, job_id)
        seed = director.reroll_seed(parent.seed or 0)
        params = dict(parent.params)
        params["seed"] = seed
        workflow = parent.workflow
        if variation and parent.kind is JobKind.IMAGE:
            output = await self._first_output(parent, JobKind.IMAGE)
            workflow = self.settings.reference_workflow
            params["reference_image"] = output.file_path
            params["denoise"] = VARIATION_DENOISE
        plan = director.GenerationPlan(parent.prompt_positive, parent.prompt_negative, seed, params)
        return await self._enqueue(
            actor,
            kind=parent.kind,
            operation=Operation.VARIATION if variation else Operation.REROLL,
            prompt_typed=parent.prompt_typed,
            workflow=workflow,
            plan=plan,
            character_ids=parent.character_ids,
            request_message_id=request_message_id,
            parent_id=parent.id,
            soundtrack=SoundtrackChoice.from_json(parent.soundtrack) if parent.soundtrack else None,
        )

    async def _first_output(self, job: Generation, kind: JobKind) -> Output:
        outputs = [o for o in await out_db.list_outputs(self.db, job.id) if o.kind is kind]
        if not outputs:
            raise InvalidInput("no output", user_message=f"That result has no {kind.value} to use.")
        return outputs[0]

    async def upscale(
        self, actor: Actor, job_id: UUID, *, request_message_id: int | None = None
    ) -> JobTicket:
        parent = await self._parent(actor, job_id)
        output = await self._first_output(parent, JobKind.IMAGE)
        if not (output.width and output.height):
            raise InvalidInput("output without size", user_message="That image cannot be upscaled.")
        width, height = even_scaled_size(output.width, output.height, UPSCALE_FACTOR)
        plan = director.GenerationPlan(
            parent.prompt_positive,
            parent.prompt_negative,
            parent.seed,
            {"input_image": output.file_path, "width": width, "height": height},
        )
        return await self._enqueue(
            actor,
            kind=JobKind.IMAGE,
            operation=Operation.UPSCALE,
            prompt_typed=parent.prompt_typed,
            workflow=self.settings.upscale_workflow,
            plan=plan,
            character_ids=parent.character_ids,
            request_message_id=request_message_id,
            parent_id=parent.id,
        )

    async def animate(
        self, actor: Actor, job_id: UUID, *, text: str = "", request_message_id: int | None = None
    ) -> JobTicket:
        parent = await self._parent(actor, job_id)
        output = await self._first_output(parent, JobKind.IMAGE)
        chat = await self.chat_settings(actor.chat_id)
        request = director.parse_scene_request(text or parent.prompt_typed, kind="video")
        characters = await char_db.get_characters(self.db, parent.character_ids)
        plan = director.plan_generation(
            request=request,
            kind="video",
            characters=[director.spec_from(c) for c in characters],
            chat_preset=chat.style_preset,
            chat_aspect_ratio=chat.aspect_ratio,
            video_seconds=chat.video_seconds,
        )
        plan.params["input_image"] = output.file_path
        if output.width and output.height:
            plan.params["width"], plan.params["height"] = director.video_size_like(
                output.width, output.height
            )
        return await self._enqueue(
            actor,
            kind=JobKind.VIDEO,
            operation=Operation.ANIMATE,
            prompt_typed=request.scene_text or parent.prompt_typed,
            workflow=self.settings.animate_workflow,
            plan=plan,
            character_ids=parent.character_ids,
            request_message_id=request_message_id,
            parent_id=parent.id,
        )

    async def cancel(self, actor: Actor, job_id: UUID) -> Generation:
        job = await gen_db.require_generation(self.db, job_id)
        if job.requester_id != actor.user_id:
            raise NotFound("not yours", user_message="This is not your request.")
        if job.status not in CANCELLABLE:
            raise InvalidInput(
                f"cannot cancel in {job.status}",
                user_message=f"That job is already {job.status.value}.",
            )
        if job.status is JobState.QUEUED:
            try:
                job = await gen_db.transition(
                    self.db,
                    job.id,
                    JobState.CANCELLED,
                    expected=JobState.QUEUED,
                    detail={"by": actor.user_id},
                )
                await people.give_back_quota(self.db, actor.user_id, datetime.now(UTC).date())
                self._publish_state(job)
                return job
            except IllegalTransition:  # taken by a worker meanwhile: ask it to stop
                log.info("queued job was taken while cancelling", job_id=str(job.id))
        requested = await gen_db.request_cancel(self.db, job.id)
        return requested or await gen_db.require_generation(self.db, job.id)

    def _publish_state(self, job: Generation) -> None:
        from core.events import JobEvent

        self.events.publish(
            JobEvent(
                job_id=job.id,
                type="state",
                status=job.status.value,
                chat_id=job.chat_id,
                message=job.error,
            )
        )

    async def set_progress_message(self, job_id: UUID, message_id: int) -> None:
        await gen_db.set_progress_message(self.db, job_id, message_id)

    async def job(self, job_id: UUID) -> Generation:
        return await gen_db.require_generation(self.db, job_id)

    async def outputs(self, job_id: UUID) -> list[Output]:
        return await out_db.list_outputs(self.db, job_id)

    async def job_state(self, job_id: UUID) -> JobState | None:
        """Just the job's state (None: no such job), for a check on a hot path."""
        return await gen_db.status_of(self.db, job_id)

    async def job_for_message(self, chat_id: int, message_id: int) -> Generation | None:
        return await gen_db.find_by_result_message(self.db, chat_id, message_id)

    async def eta_for(self, kind: JobKind, position: int | None) -> float | None:
        if position is None:
            return None
        return queue_eta(position, DEFAULT_JOB_SECONDS[kind.value], self.capacity)

    async def my_queue(self, actor: Actor) -> list[JobTicket]:
        active = [s for s in JobState if not s.final]
        jobs = await gen_db.list_for_user(self.db, actor.user_id, statuses=active, limit=20)
        positions = await gen_db.queue_positions(self.db)
        tickets = []
        for job in jobs:
            position = positions.get(job.id)
            tickets.append(JobTicket(job, position, await self.eta_for(job.kind, position)))
        return tickets

    async def history(self, actor: Actor, *, page: int = 0, per_page: int = 5) -> list[Generation]:
        return await gen_db.list_for_user(
            self.db,
            actor.user_id,
            statuses=[JobState.DONE],
            limit=per_page,
            offset=page * per_page,
        )

    # -- soundtracks -----------------------------------------------------------------------

    @property
    def music_available(self) -> bool:
        return self.music.available

    async def search_soundtracks(self, query: str) -> list[SoundtrackChoice]:
        """Local files and (when enabled) iTunes previews matching the query."""
        query = clean_text(query, limit=200, field="music search")
        return await self.music.search(query)

    async def soundtrack_from_upload(self, data: bytes, filename: str) -> SoundtrackChoice:
        return await self.music.store_upload(data, filename)

    # -- admin ----------------------------------------------------------------------------

    async def stats(self) -> Stats:
        by_state: dict[str, int] = {}
        for (status, _kind), count in (await gen_db.count_by_state(self.db)).items():
            by_state[status] = by_state.get(status, 0) + count
        library = None
        if self.settings.library_enabled:
            library = await out_db.library_counts(self.db, datetime.now(UTC))
        return Stats(
            users=await people.count_users(self.db),
            jobs_by_state=by_state,
            backends=await gen_db.in_flight_by_backend(self.db),
            library=library,
        )

    async def set_quota(self, user_id: int, quota: int | None) -> User:
        user = await people.set_daily_quota(self.db, user_id, quota)
        if user is None:
            raise NotFound("unknown user", user_message="I have never seen that user.")
        return user

    async def set_banned(self, user_id: int, banned: bool) -> User:
        if banned and user_id in self.policy.admin_user_ids:
            raise InvalidInput("ban admin", user_message="Admins cannot be banned.")
        user = await people.set_role(self.db, user_id, Role.BANNED if banned else Role.USER)
        if user is None:
            raise NotFound("unknown user", user_message="I have never seen that user.")
        return user

    async def find_user(self, reference: str) -> User | None:
        if reference.lstrip("-").isdigit():
            return await people.get_user(self.db, int(reference))
        return await people.find_user_by_username(self.db, reference)
