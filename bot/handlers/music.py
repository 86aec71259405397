"""Soundtracks of videos: the music chooser, the user's own audio, audio sent with /video.

- `/video <scene> --music "query"`: once the options are valid and the characters are known
  (bot/handlers/scenes.py calls `ask_soundtrack` from `queue_scene`, in the picker message when
  there was one), the music sources are searched (`service.search_soundtracks`: the local
  MUSIC_DIR, and iTunes previews when ITUNES_ENABLED) and up to six results are offered as
  buttons (title — artist, marked local / iTunes) with "Send my own audio", "No music" and
  Cancel. No result, a busy iTunes (MusicError) or no configured source say so and offer the
  same fallback. Only the requester may press (the codec's owner). The chosen message becomes
  the job's progress message.
- "Send my own audio" asks for an audio file or a voice message: the next such message of that
  user in that chat (in a group: a reply to the question) is downloaded with getFile (at most
  20 MB, checked before downloading), kept by `service.soundtrack_from_upload` (which refuses
  what is not audio) and the video is queued with it. The wait expires after WAIT_TTL_S.
- An audio, voice message or audio document whose caption is `/video <scene>` queues that
  video with it directly (through the character picker when needed); with `/image` the user
  is told that music is only for videos.

The state (`PendingMusic`, in bot_data like the scenes' pickers) is in memory: after a restart
the buttons answer that the choice has expired.
"""

from __future__ import annotations

import mimetypes
import time
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Any
from uuid import UUID

from telegram import Audio, Document, InlineKeyboardMarkup, Message, Update, Voice
from telegram.constants import ParseMode
from telegram.error import BadRequest, TelegramError
from telegram.ext import Application, CallbackQueryHandler, MessageHandler, filters

from bot import keyboards as kb
from bot.context import (
    Context,
    Who,
    edit,
    pressed,
    reply,
    report_error,
    service_of,
    stale_button,
    toast,
    who,
)
from bot.handlers.scenes import (
    SCENE_PREVIEW,
    command_text,
    enqueue,
    pending_of,
    start_scene,
)
from bot.render import isolate, trim_text
from bot.texts import t, t_plain
from core.errors import InvalidInput, MusicError
from core.logs import get_logger
from core.models import JobKind
from core.music.service import SoundtrackChoice

log = get_logger(__name__)

PENDING_KEY = "music.pending"
RESULTS_SHOWN = 6
DOWNLOAD_MAX_BYTES = 20 * 1024 * 1024  # the Bot API's getFile limit
DRAFT_TTL_S = 60 * 60.0
WAIT_TTL_S = 15 * 60.0
MAX_DRAFTS = 2000
TITLE_LABEL = 40
ARTIST_LABEL = 28
QUERY_SHOWN = 100

# Buttons of the chooser; all owned by the requester, the draft is the message's.
PICK = kb.action("mu_pick", kb.int_arg(RESULTS_SHOWN - 1))  # index of the result
OWN = kb.action("mu_own")
NO_MUSIC = kb.action("mu_none")
STOP = kb.action("mu_stop")

_MEDIA = (
    filters.AUDIO
    | filters.VOICE
    | filters.Document.ALL
    | filters.PHOTO
    | filters.VIDEO
    | filters.VIDEO_NOTE
    | filters.Sticker.ALL
)
_AUDIO = filters.AUDIO | filters.VOICE | filters.Document.ALL
_SCENE_CAPTION = filters.CaptionRegex(r"(?i)^/(video|image)(@\w+)?(\s|$)")


@dataclass(frozen=True)
class SceneOrder:
    """A video scene whose options and characters are settled, waiting for its music."""

    user_id: int
    text: str
    request_message_id: int | None
    character_ids: list[UUID]


@dataclass
class MusicDraft:
    order: SceneOrder
    choices: list[SoundtrackChoice]
    at: float


@dataclass(frozen=True)
class AudioWait:
    """The user was asked for their own audio in the chooser message `draft_key`."""

    draft_key: tuple[int, int]
    at: float


class PendingMusic:
    """Open music choices (keyed by the chooser message) and users asked for their audio
    (keyed by chat and user)."""

    def __init__(self) -> None:
        self.drafts: OrderedDict[tuple[int, int], MusicDraft] = OrderedDict()
        self.waits: OrderedDict[tuple[int, int], AudioWait] = OrderedDict()

    def add(self, key: tuple[int, int], draft: MusicDraft) -> None:
        self.drafts[key] = draft
        while len(self.drafts) > MAX_DRAFTS:
            self.drafts.popitem(last=False)

    def draft(self, key: tuple[int, int]) -> MusicDraft | None:
        draft = self.drafts.get(key)
        if draft is not None and time.monotonic() - draft.at > DRAFT_TTL_S:
            self.take(key)
            return None
        return draft

    def take(self, key: tuple[int, int]) -> MusicDraft | None:
        """Remove a draft (and the wait for audio that belongs to it)."""
        draft = self.drafts.pop(key, None)
        if draft is not None:
            self.waits.pop((key[0], draft.order.user_id), None)
        return draft

    def wait(self, key: tuple[int, int], user_id: int) -> None:
        self.waits[(key[0], user_id)] = AudioWait(key, time.monotonic())
        self.waits.move_to_end((key[0], user_id))
        while len(self.waits) > MAX_DRAFTS:
            self.waits.popitem(last=False)

    def waiting_for(self, message: Message) -> tuple[tuple[int, int], MusicDraft] | None:
        """The chooser `message` answers with audio: any message of the user in a private
        chat, a reply to the question in a group."""
        user = message.from_user
        if user is None:
            return None
        wait = self.waits.get((message.chat_id, user.id))
        if wait is None:
            return None
        draft = self.draft(wait.draft_key)
        if draft is None or time.monotonic() - wait.at > WAIT_TTL_S:
            self.waits.pop((message.chat_id, user.id), None)
            return None
        if message.chat.type == "private":
            return wait.draft_key, draft
        replied = message.reply_to_message
        if replied is not None and replied.message_id == wait.draft_key[1]:
            return wait.draft_key, draft
        return None


class _AwaitedAudio(filters.MessageFilter):
    """Media answering "send me your audio"."""

    def __init__(self, pending: PendingMusic) -> None:
        super().__init__(name="awaited_audio")
        self.pending = pending

    def filter(self, message: Message) -> bool:
        return self.pending.waiting_for(message) is not None


def music_of(context: Context) -> PendingMusic:
    pending: PendingMusic = context.bot_data[PENDING_KEY]
    return pending


# -- the chooser ---------------------------------------------------------------------------------


def result_label(choice: SoundtrackChoice, lang: str) -> str:
    title = trim_text(choice.title, TITLE_LABEL)
    if choice.source == "itunes":
        artist = trim_text(choice.artist or "?", ARTIST_LABEL)
        return t_plain("music.label_itunes", lang, title=title, artist=artist)
    return t_plain("music.label_local", lang, title=title)


def chooser_markup(
    choices: list[SoundtrackChoice], owner: int, lang: str, *, own: bool = True
) -> InlineKeyboardMarkup:
    """One result per row, then "Send my own audio", then "No music" and Cancel."""
    keyboard = [
        [kb.button(result_label(choice, lang), PICK.data(index, owner=owner))]
        for index, choice in enumerate(choices[:RESULTS_SHOWN])
    ]
    if own:
        keyboard.append([kb.button(t_plain("music.btn_own", lang), OWN.data(owner=owner))])
    keyboard.append(
        [
            kb.button(t_plain("music.btn_none", lang), NO_MUSIC.data(owner=owner)),
            kb.button(t_plain("common.cancel", lang), STOP.data(owner=owner)),
        ]
    )
    return InlineKeyboardMarkup(keyboard)


async def _search(context: Context, query: str) -> tuple[str, list[SoundtrackChoice]]:
    """The text key of the chooser and the results to offer."""
    service = service_of(context)
    if not service.music_available:
        return "music.unavailable", []
    try:
        found = await service.search_soundtracks(query)
    except MusicError as error:
        log.info("music search failed", error=str(error))
        return "music.busy", []
    except InvalidInput as error:
        log.info("music search refused", error=str(error))
        return "music.nothing_found", []
    choices = found[:RESULTS_SHOWN]
    return ("music.choose" if choices else "music.nothing_found"), choices


async def ask_soundtrack(
    update: Update,
    context: Context,
    asker: Who,
    order: SceneOrder,
    query: str,
    *,
    reuse_message: Message | None = None,
) -> None:
    """Search music for `query` and show the chooser (editing `reuse_message`, the character
    picker, when given; else replying to the request)."""
    key, choices = await _search(context, query)
    scene = isolate(trim_text(order.text, SCENE_PREVIEW))
    text = t(key, asker.lang, query=trim_text(query, QUERY_SHOWN), scene=scene)
    markup = chooser_markup(choices, asker.user_id, asker.lang)
    message: Message | None = None
    if reuse_message is not None:
        try:
            edited = await reuse_message.edit_text(
                text, parse_mode=ParseMode.HTML, reply_markup=markup
            )
            message = edited if isinstance(edited, Message) else reuse_message
        except BadRequest as error:
            log.info("picker not reusable for the music chooser", error=error.message)
    if message is None:
        message = await reply(update, text, markup=markup, quote=True)
    music_of(context).add(
        (message.chat_id, message.message_id), MusicDraft(order, choices, time.monotonic())
    )
    await toast(update, "")
    log.info(
        "asked for the soundtrack",
        user_id=asker.user_id,
        results=len(choices),
        sources=sorted({c.source for c in choices}),
        answer=key,
    )


async def _draft(
    update: Update, context: Context, expected: kb.Action
) -> tuple[kb.Callback, tuple[int, int], MusicDraft, Message] | None:
    """The draft under the pressed button, after the owner check (else answered)."""
    callback = await pressed(update, expected)
    if callback is None:
        return None
    query = update.callback_query
    assert query is not None
    message = query.message
    if not isinstance(message, Message):
        await stale_button(update)
        return None
    key = (message.chat_id, message.message_id)
    draft = music_of(context).draft(key)
    if draft is None or draft.order.user_id != callback.owner:
        asker = await who(update, context)
        log.info("music choice expired", message_id=message.message_id)
        await toast(update, t_plain("music.expired", asker.lang))
        return None
    return callback, key, draft, message


async def _queue(
    update: Update,
    context: Context,
    draft: MusicDraft,
    message: Message,
    soundtrack: SoundtrackChoice | None,
) -> None:
    asker = await who(update, context)
    order = draft.order
    started = await enqueue(
        update,
        context,
        asker,
        JobKind.VIDEO,
        order.text,
        order.character_ids,
        request_message_id=order.request_message_id,
        reuse_message=message,
        soundtrack=soundtrack,
    )
    if started:
        await toast(update, t_plain("scenes.started_toast", asker.lang))


async def pick_button(update: Update, context: Context) -> None:
    found = await _draft(update, context, PICK)
    if found is None:
        return
    callback, key, draft, message = found
    index = callback.int(0)
    if index >= len(draft.choices):
        await stale_button(update)
        return
    if music_of(context).take(key) is None:  # pressed twice at once
        return
    choice = draft.choices[index]
    log.info("soundtrack picked", source=choice.source, user_id=draft.order.user_id)
    await _queue(update, context, draft, message, choice)


async def no_music_button(update: Update, context: Context) -> None:
    found = await _draft(update, context, NO_MUSIC)
    if found is None:
        return
    _callback, key, draft, message = found
    if music_of(context).take(key) is None:
        return
    await _queue(update, context, draft, message, None)


async def stop_button(update: Update, context: Context) -> None:
    found = await _draft(update, context, STOP)
    if found is None:
        return
    _callback, key, _, _ = found
    music_of(context).take(key)
    asker = await who(update, context)
    await toast(update, "")
    query = update.callback_query
    assert query is not None
    await edit(query, t("music.cancelled", asker.lang))


async def own_button(update: Update, context: Context) -> None:
    """Ask for the user's audio in the chooser message (No music and Cancel stay)."""
    found = await _draft(update, context, OWN)
    if found is None:
        return
    _callback, key, draft, message = found
    asker = await who(update, context)
    music_of(context).wait(key, asker.user_id)
    question = "music.ask_audio_group" if asker.in_group else "music.ask_audio"
    scene = isolate(trim_text(draft.order.text, SCENE_PREVIEW))
    text = t(question, asker.lang, max=DOWNLOAD_MAX_BYTES // (1024 * 1024), scene=scene)
    await toast(update, "")
    query = update.callback_query
    assert query is not None
    await edit(query, text, chooser_markup([], asker.user_id, asker.lang, own=False))
    log.info("asked for own audio", user_id=asker.user_id, message_id=message.message_id)


# -- own audio -----------------------------------------------------------------------------------


def _suffix(mime_type: str | None, default: str) -> str:
    guessed = mimetypes.guess_extension(mime_type or "") if mime_type else None
    return guessed or default


def _audio_of(message: Message, lang: str) -> tuple[Audio | Voice | Document, str] | None:
    """The file of an audio, voice or document message and a file name for it."""
    if message.audio is not None:
        audio = message.audio
        name = audio.file_name or f"{audio.title or 'audio'}{_suffix(audio.mime_type, '.mp3')}"
        return audio, name
    if message.voice is not None:
        return message.voice, f"{t_plain('music.voice_title', lang)}.ogg"
    if message.document is not None:
        document = message.document
        name = document.file_name or f"audio{_suffix(document.mime_type, '.bin')}"
        return document, name
    return None


async def receive_audio(update: Update, context: Context, asker: Who) -> SoundtrackChoice | None:
    """Download and keep the audio of this message; None after telling the user what is
    wrong (not audio, too large)."""
    message = update.effective_message
    assert message is not None
    found = _audio_of(message, asker.lang)
    if found is None:
        log.info("own audio is no audio", user_id=asker.user_id)
        await reply(update, t("music.not_audio", asker.lang))
        return None
    media, filename = found
    limit_mb = DOWNLOAD_MAX_BYTES // (1024 * 1024)
    size = media.file_size
    if size is not None and size > DOWNLOAD_MAX_BYTES:
        log.info("own audio too large", size=size, user_id=asker.user_id)
        mb = round(size / 1024 / 1024, 1)
        await reply(update, t("music.too_big", asker.lang, size=mb, max=limit_mb))
        return None
    try:
        telegram_file = await context.bot.get_file(media.file_id)
        data = bytes(await telegram_file.download_as_bytearray())
    except BadRequest as error:  # "file is too big" when file_size was not given
        log.info("own audio download refused", error=error.message)
        await reply(update, t("music.too_big", asker.lang, size=f">{limit_mb}", max=limit_mb))
        return None
    try:
        choice = await service_of(context).soundtrack_from_upload(data, filename)
    except InvalidInput as error:
        await report_error(update, error, asker.lang)
        return None
    if isinstance(media, Audio) and media.title:
        choice = replace(choice, title=media.title[:80], artist=media.performer or None)
    log.info("own audio kept", user_id=asker.user_id, bytes=len(data), key=choice.key)
    return choice


async def got_audio(update: Update, context: Context) -> None:
    """The answer to "send me your audio": keep it and queue the video with it."""
    message = update.effective_message
    if message is None:
        return
    pending = music_of(context)
    found = pending.waiting_for(message)
    if found is None:
        return
    key, _ = found
    asker = await who(update, context)
    choice = await receive_audio(update, context, asker)
    if choice is None:
        return  # still waiting: the user may send another file
    draft = pending.take(key)
    if draft is None:  # answered by a button meanwhile
        return
    try:
        await context.bot.edit_message_text(
            t("music.got_audio", asker.lang, title=trim_text(choice.title, 80)),
            chat_id=key[0],
            message_id=key[1],
            parse_mode=ParseMode.HTML,
        )
    except TelegramError as error:
        log.info("audio question not closed", error=str(error))
    order = draft.order
    await enqueue(
        update,
        context,
        asker,
        JobKind.VIDEO,
        order.text,
        order.character_ids,
        request_message_id=order.request_message_id,
        soundtrack=choice,
    )


async def scene_with_audio(update: Update, context: Context) -> None:
    """An audio, voice message or audio document captioned `/video <scene>`."""
    message = update.effective_message
    if message is None:
        return
    asker = await who(update, context)
    command = (message.caption or "").split(maxsplit=1)[0].split("@", 1)[0].lower()
    if command != "/video":
        await reply(update, t("music.only_videos", asker.lang))
        return
    text = command_text(message)
    if not text:
        await reply(update, t("scenes.usage_video", asker.lang))
        return
    try:
        service_of(context).check_scene(text, JobKind.VIDEO)  # bad options before downloading
    except InvalidInput as error:
        await report_error(update, error, asker.lang)
        return
    choice = await receive_audio(update, context, asker)
    if choice is None:
        return
    wait = pending_of(context).take_wait(message)  # answering a character card's question
    await start_scene(
        update,
        context,
        JobKind.VIDEO,
        text,
        preselected=[wait.character_id] if wait is not None else None,
        soundtrack=choice,
    )


def register(app: Application[Any, Any, Any, Any, Any, Any]) -> None:
    """Called by bot.handlers.scenes.register (this module extends the scene flow)."""
    pending = PendingMusic()
    app.bot_data[PENDING_KEY] = pending
    app.add_handler(MessageHandler(_AUDIO & _SCENE_CAPTION, scene_with_audio))
    app.add_handler(MessageHandler(_MEDIA & _AwaitedAudio(pending), got_audio))
    app.add_handler(CallbackQueryHandler(pick_button, pattern=PICK.pattern))
    app.add_handler(CallbackQueryHandler(own_button, pattern=OWN.pattern))
    app.add_handler(CallbackQueryHandler(no_music_button, pattern=NO_MUSIC.pattern))
    app.add_handler(CallbackQueryHandler(stop_button, pattern=STOP.pattern))
