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

The state is stored in PostgreSQL (`core.dialogs`: `MusicDraft` keyed by the chooser message,
`AudioWait` keyed by chat and user), so any bot process continues it, also after a restart; a
chooser expires after DRAFT_TTL_S (its buttons then say so), a wait after WAIT_TTL_S. A chooser
that replaces the picker is stored before the edit shows its buttons; a new chooser message is
stored just after it is sent, and its buttons find it through `dialogs.of_message`.
"""

from __future__ import annotations

import mimetypes
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from telegram import Audio, Document, InlineKeyboardMarkup, Message, Update, Voice
from telegram.constants import ParseMode
from telegram.error import BadRequest, TelegramError
from telegram.ext import Application, CallbackQueryHandler, MessageHandler, filters

from bot import dialogs
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
    start_scene,
    take_wait,
)
from bot.render import isolate, trim_text
from bot.texts import t, t_plain
from core.dialogs import AudioWait, Dialog, MusicDraft, SceneOrder
from core.errors import InvalidInput, MusicError
from core.logs import get_logger
from core.models import JobKind
from core.music.service import SoundtrackChoice

log = get_logger(__name__)

RESULTS_SHOWN = 6
DOWNLOAD_MAX_BYTES = 20 * 1024 * 1024  # the Bot API's getFile limit
DRAFT_TTL_S = 60 * 60.0
WAIT_TTL_S = 15 * 60.0
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


def awaited(cache: dialogs.DialogCache, update: Update) -> Dialog[AudioWait] | None:
    """The wait for audio this message answers (in a group: a reply to the chooser message)."""
    wait = cache.of(update).audio_wait
    if wait is None or not dialogs.answers_question(update, wait.state.chooser_message_id):
        return None
    return wait


async def _take(context: Context, chat_id: int, message_id: int) -> MusicDraft | None:
    """End the chooser (and its owner's wait for audio); None when another update did."""
    dialog_store = service_of(context).dialogs
    taken = await dialog_store.take(MusicDraft, chat_id, message_id)
    if taken is None:
        return None
    await dialog_store.discard(AudioWait, chat_id, taken.user_id)
    return taken.state


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
    draft = MusicDraft(order=order, choices=choices)
    dialog_store = service_of(context).dialogs
    shown = False
    if reuse_message is not None:
        # stored before its buttons can be pressed
        chat_id, message_id = reuse_message.chat_id, reuse_message.message_id
        await dialog_store.start(chat_id, message_id, order.user_id, draft, ttl_s=DRAFT_TTL_S)
        try:
            await reuse_message.edit_text(text, parse_mode=ParseMode.HTML, reply_markup=markup)
            shown = True
        except BadRequest as error:
            log.info("picker not reusable for the music chooser", error=error.message)
            await dialog_store.discard(MusicDraft, chat_id, message_id)
    if not shown:
        message = await reply(update, text, markup=markup, quote=True)
        await dialog_store.start(
            message.chat_id, message.message_id, order.user_id, draft, ttl_s=DRAFT_TTL_S
        )
    await toast(update)
    log.info(
        "asked for the soundtrack",
        user_id=asker.user_id,
        results=len(choices),
        sources=sorted({c.source for c in choices}),
        answer=key,
    )


async def _draft(
    update: Update, context: Context, expected: kb.Action
) -> tuple[kb.Callback, Dialog[MusicDraft], Message] | None:
    """The chooser under the pressed button, after the owner check (else answered)."""
    callback = await pressed(update, expected)
    if callback is None:
        return None
    query = update.callback_query
    assert query is not None
    message = query.message
    if not isinstance(message, Message):
        await stale_button(update)
        return None
    chooser = await dialogs.of_message(context, MusicDraft, message)
    if chooser is None or chooser.user_id != callback.owner:
        asker = await who(update, context)
        log.info("music choice expired", message_id=message.message_id)
        await toast(update, t_plain("music.expired", asker.lang))
        return None
    return callback, chooser, message


async def _taken_meanwhile(update: Update, context: Context) -> None:
    """Answer a press whose chooser another update took first (a double tap, a press racing
    the user's audio, maybe on another bot process): as for an expired chooser."""
    asker = await who(update, context)
    log.info("music choice taken meanwhile", user_id=asker.user_id)
    await toast(update, t_plain("music.expired", asker.lang))


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
    callback, chooser, message = found
    index = callback.int(0)
    if index >= len(chooser.state.choices):
        await stale_button(update)
        return
    draft = await _take(context, chooser.chat_id, chooser.key)
    if draft is None:  # pressed twice at once (maybe on two processes)
        await _taken_meanwhile(update, context)
        return
    choice = draft.choices[index]
    log.info("soundtrack picked", source=choice.source, user_id=draft.order.user_id)
    await _queue(update, context, draft, message, choice)


async def no_music_button(update: Update, context: Context) -> None:
    found = await _draft(update, context, NO_MUSIC)
    if found is None:
        return
    _callback, chooser, message = found
    draft = await _take(context, chooser.chat_id, chooser.key)
    if draft is None:
        await _taken_meanwhile(update, context)
        return
    await _queue(update, context, draft, message, None)


async def stop_button(update: Update, context: Context) -> None:
    found = await _draft(update, context, STOP)
    if found is None:
        return
    _callback, chooser, _ = found
    if await _take(context, chooser.chat_id, chooser.key) is None:
        # a pick queued the video meanwhile: "cancelled" would be untrue
        await _taken_meanwhile(update, context)
        return
    asker = await who(update, context)
    await toast(update)
    query = update.callback_query
    assert query is not None
    await edit(query, t("music.cancelled", asker.lang))


async def own_button(update: Update, context: Context) -> None:
    """Ask for the user's audio in the chooser message (No music and Cancel stay)."""
    found = await _draft(update, context, OWN)
    if found is None:
        return
    _callback, chooser, message = found
    asker = await who(update, context)
    left_s = (chooser.expires_at - datetime.now(UTC)).total_seconds()
    await service_of(context).dialogs.start(
        chooser.chat_id,
        asker.user_id,
        asker.user_id,
        AudioWait(chooser_message_id=chooser.key),
        ttl_s=max(0.0, min(WAIT_TTL_S, left_s)),  # not past the chooser itself
    )
    question = "music.ask_audio_group" if asker.in_group else "music.ask_audio"
    scene = isolate(trim_text(chooser.state.order.text, SCENE_PREVIEW))
    text = t(question, asker.lang, max=DOWNLOAD_MAX_BYTES // (1024 * 1024), scene=scene)
    await toast(update)
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
    wait = awaited(dialogs.cache_of(context.application), update)
    if wait is None:
        return
    asker = await who(update, context)
    choice = await receive_audio(update, context, asker)
    if choice is None:
        return  # still waiting: the user may send another file
    chooser_id = wait.state.chooser_message_id
    draft = await _take(context, wait.chat_id, chooser_id)
    if draft is None:  # answered by a button meanwhile
        return
    try:
        await context.bot.edit_message_text(
            t("music.got_audio", asker.lang, title=trim_text(choice.title, 80)),
            chat_id=wait.chat_id,
            message_id=chooser_id,
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
    wait = await take_wait(update, context)  # answering a character card's question
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
    cache = dialogs.cache_of(app)
    app.add_handler(MessageHandler(_AUDIO & _SCENE_CAPTION, scene_with_audio))
    app.add_handler(
        MessageHandler(
            _MEDIA & dialogs.UpdateTest("awaited_audio", lambda u: awaited(cache, u) is not None),
            got_audio,
        )
    )
    app.add_handler(CallbackQueryHandler(pick_button, pattern=PICK.pattern))
    app.add_handler(CallbackQueryHandler(own_button, pattern=OWN.pattern))
    app.add_handler(CallbackQueryHandler(no_music_button, pattern=NO_MUSIC.pattern))
    app.add_handler(CallbackQueryHandler(stop_button, pattern=STOP.pattern))
