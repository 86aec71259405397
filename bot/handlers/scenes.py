"""Scenes: /image, /video, /animate, the character picker and "use in a scene".

- `/image <scene>` and `/video <scene>`: characters named in the text (`Name` or `@Name`) are
  used directly (`service.scene_cast`); when none is named and the user has characters,
  a multi-select picker asks who is in the scene (the picker message then becomes the job's
  progress message). Options (`--ar 16:9`, `--seed 42`, ...) are checked before the picker;
  a bad one is answered with core's message.
- `/animate [what happens]` replying to a delivered image turns it into a video.
- The `scene` button of a character card (bot.keyboards.SCENE, from bot/handlers/characters.py)
  asks for the scene text (the next message in a private chat, a reply in a group); the
  character is preselected. Replying `/video ...` to that question makes a video instead.
  In a group every open question can be answered (two topics, two characters): the wait is
  kept per question. A reply to a scene question that can no longer be answered (answered,
  expired) is told so (`scenes.ask_closed`); one to another user's question too.
- Soundtracks (bot/handlers/music.py extends this flow): `/video ... --music "query"` shows the
  music chooser once the characters are known (`queue_scene`); `--music` on /image is refused
  with a clear message; a video may carry its soundtrack through the picker (`PickerDraft`).

Pickers (keyed by the picker message) and "what happens in the scene?" waits (keyed by the
question in a group, by the user in a private chat) are stored in PostgreSQL (`core.dialogs`),
so any bot process continues them; a picker expires after PICKER_TTL_S, a wait after
WAIT_TTL_S.

Every job gets one progress message (`bot.live.LiveProgress.post`).
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from telegram import Message, Update
from telegram.constants import ParseMode
from telegram.error import BadRequest
from telegram.ext import (
    Application,
    CallbackQueryHandler,
    CommandHandler,
    MessageHandler,
    filters,
)

from bot import dialogs
from bot import keyboards as kb
from bot.context import (
    Context,
    Who,
    ask_markup,
    check_owner,
    reply,
    report_error,
    runtime_of,
    service_of,
    stale_button,
    toast,
    who,
)
from bot.live import live_for
from bot.render import (
    PICK_DONE,
    PICK_STOP,
    PICK_TOGGLE,
    isolate,
    picker_markup,
    trim_text,
)
from bot.texts import LANGUAGES, core_text, t, t_plain
from core.dialogs import Dialog, PickerDraft, SceneOrder, SceneWait
from core.errors import AnimeBotError, InvalidInput
from core.logs import get_logger
from core.models import JobKind
from core.music.service import SoundtrackChoice

log = get_logger(__name__)

PICKER_LIMIT = 96  # characters shown in the picker (Telegram allows 100 buttons)
PICKER_TTL_S = 24 * 60 * 60.0
WAIT_TTL_S = 15 * 60.0
SCENE_PREVIEW = 300
REDRAW_ATTEMPTS = 3
# Where the question starts in its plain text, in each language: at the start, or after the
# "Name, " that addresses it to the user in a group (bot.context.addressed).
_QUESTION_MARKERS = tuple(
    t_plain("scenes.ask_scene", lang, name="\0").partition("\0")[0] for lang in LANGUAGES
)
_ADDRESS_MAX = 80  # characters of that "Name, " at most (a first name has 64)


def scene_question_of(update: Update) -> Message | None:
    """The bot's "what happens in the scene?" question this message replies to, if it does
    (known by its text: an expired question has no stored wait)."""
    message = update.message
    replied = message.reply_to_message if message is not None else None
    sender = replied.from_user if replied is not None else None
    if replied is None or sender is None or not sender.is_bot or replied.text is None:
        return None
    try:
        if sender.id != replied.get_bot().id:
            return None
    except RuntimeError:  # no bot attached, or not initialised: whose message is unknown
        return None
    text = replied.text
    for marker in _QUESTION_MARKERS:
        at = text.find(marker, 0, _ADDRESS_MAX + len(marker))
        if at == 0 or (at > 0 and text[:at].endswith(", ")):
            return replied
    return None


def waiting_for(cache: dialogs.DialogCache, update: Update) -> Dialog[SceneWait] | None:
    """The user's wait stored per chat and user (a private chat's) this message answers: in a
    private chat any message, but a reply to another scene question only answers that one;
    in a group a reply to the question (a wait stored before they were kept per question)."""
    wait = cache.of(update).scene_wait
    if wait is None or not dialogs.answers_question(update, wait.state.prompt_message_id):
        return None
    question = scene_question_of(update)
    if question is not None and question.message_id != wait.state.prompt_message_id:
        return None
    return wait


def answers_scene_question(cache: dialogs.DialogCache, update: Update) -> bool:
    """Is this message an answer to a scene question (maybe one that is closed)?"""
    return waiting_for(cache, update) is not None or scene_question_of(update) is not None


async def find_wait(update: Update, context: Context) -> tuple[Dialog[SceneWait] | None, str]:
    """The wait this message answers; else none and, when the message replies to a scene
    question that cannot be answered (by this user), the key of the text saying why."""
    wait = waiting_for(dialogs.cache_of(context.application), update)
    if wait is not None:
        return wait, ""
    question = scene_question_of(update)
    if question is None:
        return None, ""
    wait = await dialogs.of_message(context, SceneWait, question)  # kept per question
    user = update.effective_user
    if wait is None or wait.state.prompt_message_id != question.message_id:
        log.info("reply to a closed scene question", message_id=question.message_id)
        return None, "scenes.ask_closed"
    if user is None or wait.user_id != user.id:
        log.info("reply to the scene question of another user", message_id=question.message_id)
        return None, "common.not_yours"
    return wait, ""


async def take_answered(update: Update, context: Context) -> tuple[SceneWait | None, str]:
    """End the wait this message answers and return it (none when another update took it
    first), or none and why the question it replies to is not answered (`find_wait`)."""
    wait, refusal = await find_wait(update, context)
    if wait is None:
        return None, refusal
    taken = await service_of(context).dialogs.take(
        SceneWait, wait.chat_id, wait.key, version=wait.version
    )
    return (None, "") if taken is None else (taken.state, "")


async def take_wait(update: Update, context: Context) -> SceneWait | None:
    """End the wait this message answers and return it (None when there is none, or when
    another update took it)."""
    wait, _refusal = await take_answered(update, context)
    return wait


def command_text(message: Message) -> str:
    """The text after the leading /command (and its @bot)."""
    text = message.text or message.caption or ""
    if not text.startswith("/"):
        return text.strip()
    parts = text.split(maxsplit=1)
    return parts[1].strip() if len(parts) > 1 else ""


# -- starting scenes ------------------------------------------------------------------------------


async def start_scene(
    update: Update,
    context: Context,
    kind: JobKind,
    text: str,
    *,
    preselected: list[UUID] | None = None,
    soundtrack: SoundtrackChoice | None = None,
) -> None:
    """Check the request, find its characters (or ask), queue it and post its progress."""
    asker = await who(update, context)
    message = update.effective_message
    assert message is not None
    if not text:
        await reply(update, t(f"scenes.usage_{kind.value}", asker.lang))
        return
    service = service_of(context)
    try:
        request = service.check_scene(text, kind)  # bad options: say so before asking
    except InvalidInput as error:
        log.info("scene refused", reason=str(error), user_id=asker.user_id)
        await report_error(update, error, asker.lang)
        return
    if request.music_query is not None and kind is not JobKind.VIDEO:
        log.info("music asked for an image", user_id=asker.user_id)
        await reply(update, t("music.only_videos", asker.lang))
        return
    ids = list(preselected or [])
    cast = await service.scene_cast(asker.user_id, text)
    for character in cast.named:
        if character.id not in ids:
            ids.append(character.id)
    if not ids and cast.owned:
        owned = owned_pairs(cast.owned[:PICKER_LIMIT])
        await ask_characters(update, context, asker, kind, text, owned, soundtrack=soundtrack)
        return
    await queue_scene(
        update,
        context,
        asker,
        kind,
        text,
        ids,
        request_message_id=message.message_id,
        soundtrack=soundtrack,
    )


def owned_pairs(owned: list[Any]) -> list[tuple[UUID, str]]:
    return [(c.id, c.name) for c in owned]


async def ask_characters(
    update: Update,
    context: Context,
    asker: Who,
    kind: JobKind,
    text: str,
    characters: list[tuple[UUID, str]],
    *,
    soundtrack: SoundtrackChoice | None = None,
) -> None:
    message = update.effective_message
    assert message is not None
    scene = isolate(trim_text(text, SCENE_PREVIEW))
    picker = await reply(
        update,
        t("scenes.pick_characters", asker.lang, scene=scene),
        markup=picker_markup(characters, set(), asker.user_id, asker.lang),
        quote=True,
    )
    draft = PickerDraft(
        job_kind=kind,
        text=text,
        request_message_id=message.message_id,
        characters=characters,
        soundtrack=soundtrack,
    )
    await service_of(context).dialogs.start(
        picker.chat_id, picker.message_id, asker.user_id, draft, ttl_s=PICKER_TTL_S
    )
    log.info("asked for the characters of a scene", user_id=asker.user_id, kind=kind.value)


async def queue_scene(
    update: Update,
    context: Context,
    asker: Who,
    kind: JobKind,
    text: str,
    character_ids: list[UUID],
    *,
    request_message_id: int | None,
    reuse_message: Message | None = None,
    soundtrack: SoundtrackChoice | None = None,
) -> bool:
    """Queue the scene, unless it is a video asking for music (`--music "..."`) without a
    soundtrack yet: then the music chooser is shown instead (in `reuse_message` when given).
    True when the job was queued."""
    if kind is JobKind.VIDEO and soundtrack is None:
        try:
            query = service_of(context).check_scene(text, kind).music_query
        except InvalidInput:
            query = None  # enqueue reports it
        if query is not None:
            from bot.handlers import music  # it extends this flow (and imports this module)

            await music.ask_soundtrack(
                update,
                context,
                asker,
                SceneOrder(
                    user_id=asker.user_id,
                    text=text,
                    request_message_id=request_message_id,
                    character_ids=character_ids,
                ),
                query,
                reuse_message=reuse_message,
            )
            return False
    return await enqueue(
        update,
        context,
        asker,
        kind,
        text,
        character_ids,
        request_message_id=request_message_id,
        reuse_message=reuse_message,
        soundtrack=soundtrack,
    )


async def enqueue(
    update: Update,
    context: Context,
    asker: Who,
    kind: JobKind,
    text: str,
    character_ids: list[UUID],
    *,
    request_message_id: int | None,
    reuse_message: Message | None = None,
    soundtrack: SoundtrackChoice | None = None,
) -> bool:
    """Queue the scene and post its progress message. False (and the user told) on refusal."""
    service = service_of(context)
    try:
        ticket = await service.request_scene(
            asker.actor,
            kind,
            text,
            character_ids=character_ids,
            request_message_id=request_message_id,
            soundtrack=soundtrack,
            chat=asker.chat,
        )
    except AnimeBotError as error:
        log.info("scene refused", reason=str(error), user_id=asker.user_id)
        if reuse_message is not None:
            await _close_picker(
                reuse_message,
                t("common.failed", asker.lang, message=core_text(error.user_message, asker.lang)),
            )
            if update.callback_query is not None:
                await toast(update, core_text(error.user_message, asker.lang))
            return False
        await report_error(update, error, asker.lang)
        return False
    live = live_for(runtime_of(context), context.bot)
    await live.post(
        ticket,
        lang=asker.lang,
        reply_to=request_message_id,
        reuse_message_id=reuse_message.message_id if reuse_message is not None else None,
    )
    log.info(
        "scene queued",
        job_id=str(ticket.job.id),
        kind=kind.value,
        characters=len(character_ids),
        position=ticket.position,
        soundtrack=soundtrack.source if soundtrack is not None else None,
    )
    return True


async def _close_picker(message: Message, text: str) -> None:
    try:
        await message.edit_text(text, parse_mode=ParseMode.HTML, reply_markup=None)
    except BadRequest as error:
        log.info("picker not closed", error=error.message)


# -- commands ------------------------------------------------------------------------------------


async def image_command(update: Update, context: Context) -> None:
    await _scene_command(update, context, JobKind.IMAGE)


async def video_command(update: Update, context: Context) -> None:
    await _scene_command(update, context, JobKind.VIDEO)


async def _scene_command(update: Update, context: Context, kind: JobKind) -> None:
    message = update.effective_message
    if message is None:
        return
    wait = await take_wait(update, context)
    preselected = [wait.character_id] if wait is not None else None
    await start_scene(update, context, kind, command_text(message), preselected=preselected)


async def animate_command(update: Update, context: Context) -> None:
    asker = await who(update, context)
    message = update.effective_message
    if message is None:
        return
    replied = message.reply_to_message
    if replied is None:
        await reply(update, t("scenes.usage_animate", asker.lang))
        return
    service = service_of(context)
    job = await service.job_for_message(message.chat_id, replied.message_id)
    if job is None or job.kind is not JobKind.IMAGE:
        log.info("animate: not a result image", message_id=replied.message_id)
        await reply(update, t("scenes.animate_not_result", asker.lang))
        return
    text = command_text(message)
    try:
        ticket = await service.animate(
            asker.actor, job.id, text=text, request_message_id=message.message_id
        )
    except AnimeBotError as error:
        log.info("animate refused", reason=str(error), job_id=str(job.id))
        await report_error(update, error, asker.lang)
        return
    live = live_for(runtime_of(context), context.bot)
    await live.post(ticket, lang=asker.lang, reply_to=message.message_id)
    log.info("animation queued", job_id=str(ticket.job.id), parent=str(job.id))


async def scene_answer(update: Update, context: Context) -> None:
    """The text answering "what happens in the scene with X?"."""
    message = update.effective_message
    if message is None:
        return
    wait, refusal = await take_answered(update, context)
    if wait is None:
        if refusal:
            asker = await who(update, context)
            button = t_plain("chars.btn_scene", asker.lang)
            await reply(update, t(refusal, asker.lang, button=button))
        return
    await start_scene(
        update,
        context,
        JobKind.IMAGE,
        (message.text or "").strip(),
        preselected=[wait.character_id],
    )


# -- buttons ---------------------------------------------------------------------------------------


async def _picker(
    update: Update, context: Context
) -> tuple[kb.Callback, Dialog[PickerDraft]] | None:
    """The picker under the pressed button, after the owner check (else answered)."""
    query = update.callback_query
    callback = kb.decode(query.data if query else None)
    if query is None or callback is None or not isinstance(query.message, Message):
        await stale_button(update)
        return None
    if not await check_owner(update, callback):
        return None
    message = query.message
    picker = await dialogs.of_message(context, PickerDraft, message)
    if picker is None or picker.user_id != callback.owner:
        await _expired(update, context)
        return None
    return callback, picker


async def _expired(update: Update, context: Context) -> None:
    asker = await who(update, context)
    query = update.callback_query
    message_id = query.message.message_id if query and query.message else None
    log.info("picker expired", message_id=message_id)
    await toast(update, t_plain("scenes.pick_expired", asker.lang))


async def pick_toggle(update: Update, context: Context) -> None:
    found = await _picker(update, context)
    if found is None:
        return
    callback, picker = found
    character_id = callback.uuid(0)
    if character_id not in {cid for cid, _ in picker.state.characters}:
        await stale_button(update)
        return
    toggled = await service_of(context).dialogs.update(
        PickerDraft,
        picker.chat_id,
        picker.key,
        lambda draft: draft.model_copy(update={"selected": draft.selected ^ {character_id}}),
    )
    if toggled is None:
        await _expired(update, context)
        return
    await toast(update)
    await _redraw(update, context, toggled)


async def _redraw(update: Update, context: Context, shown: Dialog[PickerDraft]) -> None:
    """Show the picker's selection. A concurrent toggle (maybe on another process) may store a
    newer one while this edit is on its way: then draw again, so the last edit shows it."""
    asker = await who(update, context)
    query = update.callback_query
    assert query is not None
    for _ in range(REDRAW_ATTEMPTS):
        draft = shown.state
        markup = picker_markup(draft.characters, set(draft.selected), asker.user_id, asker.lang)
        try:
            await query.edit_message_reply_markup(markup)
        except BadRequest as error:
            if "not modified" not in error.message.lower():  # gone, or too old to edit
                log.info("picker not redrawn", error=error.message)
                return
        latest = await service_of(context).dialogs.get(PickerDraft, shown.chat_id, shown.key)
        if latest is None or latest.version == shown.version:
            return
        shown = latest


async def pick_done(update: Update, context: Context) -> None:
    found = await _picker(update, context)
    if found is None:
        return
    _callback, picker = found
    asker = await who(update, context)
    query = update.callback_query
    assert query is not None and isinstance(query.message, Message)
    taken = await service_of(context).dialogs.take(PickerDraft, picker.chat_id, picker.key)
    if taken is None:  # done or cancelled meanwhile (a double tap, maybe on another process)
        await _expired(update, context)
        return
    draft = taken.state
    order = [cid for cid, _ in draft.characters if cid in draft.selected]
    started = await queue_scene(
        update,
        context,
        asker,
        draft.job_kind,
        draft.text,
        order,
        request_message_id=draft.request_message_id,
        reuse_message=query.message,
        soundtrack=draft.soundtrack,
    )
    if started:
        await toast(update, t_plain("scenes.started_toast", asker.lang))


async def pick_stop(update: Update, context: Context) -> None:
    found = await _picker(update, context)
    if found is None:
        return
    _callback, picker = found
    asker = await who(update, context)
    query = update.callback_query
    assert query is not None and isinstance(query.message, Message)
    await service_of(context).dialogs.take(PickerDraft, picker.chat_id, picker.key)
    await toast(update)
    await _close_picker(query.message, t("scenes.pick_cancelled", asker.lang))


async def scene_button(update: Update, context: Context) -> None:
    """`scene` on a character card: ask for the scene, with the character preselected."""
    query = update.callback_query
    callback = kb.decode(query.data if query else None)
    if query is None or callback is None or callback.action is not kb.SCENE:
        await stale_button(update)
        return
    if not await check_owner(update, callback):
        return
    asker = await who(update, context)
    try:
        character = await service_of(context).get_character(asker.actor, callback.uuid(0))
    except AnimeBotError as error:
        await report_error(update, error, asker.lang)
        return
    await toast(update, t_plain("scenes.ask_toast", asker.lang))
    question = await reply(
        update,
        t("scenes.ask_scene", asker.lang, name=isolate(character.name)),
        markup=ask_markup(update, t_plain("scenes.ask_placeholder", asker.lang)),
    )
    wait = SceneWait(character_id=character.id, prompt_message_id=question.message_id)
    store = service_of(context).dialogs
    if asker.in_group:  # every open question can be answered, until it expires
        await store.start(asker.chat_id, question.message_id, asker.user_id, wait, ttl_s=WAIT_TTL_S)
    else:  # the next message answers: the newest question only
        await store.start(asker.chat_id, asker.user_id, asker.user_id, wait, ttl_s=WAIT_TTL_S)
    log.info("asked for a scene", character_id=str(character.id), user_id=asker.user_id)


def register(app: Application[Any, Any, Any, Any, Any, Any]) -> None:
    from bot.handlers import music  # it extends this flow (and imports this module)

    cache = dialogs.cache_of(app)
    cache.want(commands=("image", "video"))  # they take a pending "what happens?" wait
    app.add_handler(CommandHandler("image", image_command))
    app.add_handler(CommandHandler("video", video_command))
    app.add_handler(CommandHandler("animate", animate_command))
    app.add_handler(CallbackQueryHandler(pick_toggle, pattern=PICK_TOGGLE.pattern))
    app.add_handler(CallbackQueryHandler(pick_done, pattern=PICK_DONE.pattern))
    app.add_handler(CallbackQueryHandler(pick_stop, pattern=PICK_STOP.pattern))
    app.add_handler(CallbackQueryHandler(scene_button, pattern=kb.SCENE.pattern))
    app.add_handler(
        MessageHandler(
            filters.TEXT
            & ~filters.COMMAND
            & dialogs.UpdateTest(
                "answers_scene_question", lambda u: answers_scene_question(cache, u)
            ),
            scene_answer,
        )
    )
    music.register(app)
