"""/newcharacter (a conversation), /characters (paged list) and the character card.

Creation: name -> appearance -> style (buttons) -> personality (text or /skip) -> reference photo
(or /skip) -> confirm (buttons). Editing a field is a short conversation started from the
card. Both are one dialog per (chat, user), so people in one group each have their own; /cancel
leaves at any step, and after CONVERSATION_TIMEOUT_S without an answer the dialog ends with a
message. The dialog (the draft, its reference photo) is stored in PostgreSQL
(`core.dialogs.CharacterDialog`, driven by `bot.dialogs.StoredConversation`), so any bot process
continues it. In groups every question is asked as a selective ForceReply: the answer is a reply
to the bot, which privacy mode lets through. The dialog keeps the id of its last question (`_ask`,
`dialogs.asked`): in a group only a reply to that question is its answer, in a private chat any
message but a reply to another question of the bot (a scene's), and only the buttons of that
message act on it (those of an abandoned draft are no longer valid); see `dialogs.takes`.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from pathlib import Path
from typing import Any
from uuid import UUID

from telegram import InlineKeyboardButton, InlineKeyboardMarkup, Message, Update
from telegram.constants import ChatAction, ParseMode
from telegram.error import BadRequest, TelegramError
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
    edit,
    paged_list,
    pressed,
    reply,
    report_error,
    runtime_of,
    service_of,
    toast,
    who,
)
from bot.texts import core_text, t, t_plain
from core.dialogs import CharacterDialog
from core.dialogs import CharacterStep as Step
from core.director import STYLE_PRESETS
from core.errors import AnimeBotError, InvalidInput, NotFound
from core.logs import get_logger
from core.media.images import build_reference
from core.media.sheet import SheetTile, character_sheet
from core.models import Character
from core.service import (
    APPEARANCE_MAX,
    NAME_MAX,
    PERSONALITY_MAX,
    CharacterDraft,
    clean_name,
    clean_text,
)

log = get_logger(__name__)

PER_PAGE = 8
MAX_PHOTO_BYTES = 20 * 1024 * 1024  # getFile's download limit
CAPTION_APPEARANCE = 700  # a card's caption must stay under 1024 characters
SHEET_TILES = 12
TEXT_FIELDS = ("name", "appearance", "personality")
CONVERSATION_TIMEOUT_S = 30 * 60
TIMEOUT_NOTICE = "common.timeout"

STYLES = tuple(STYLE_PRESETS)
NEW_STYLE = kb.action("ncs", kb.word_arg(STYLES))
NEW_OK = kb.action("ncok")
NEW_CANCEL = kb.action("ncno")
LIST = kb.action("chl", kb.int_arg(10_000))
OPEN = kb.action("cho", kb.UUID_ARG)
BACK = kb.action("chb", kb.UUID_ARG)
EDIT_MENU = kb.action("che", kb.UUID_ARG)
EDIT_FIELD = kb.action("chf", kb.UUID_ARG, kb.word_arg((*TEXT_FIELDS, "reference")))
STYLE_MENU = kb.action("chsm", kb.UUID_ARG)
SET_STYLE = kb.action("chy", kb.UUID_ARG, kb.word_arg(STYLES))
SHEET = kb.action("chsh", kb.UUID_ARG)
DELETE = kb.action("chd", kb.UUID_ARG)
DELETE_YES = kb.action("chdy", kb.UUID_ARG)
DELETE_NO = kb.action("chdn", kb.UUID_ARG)


# -- the stored dialog ---------------------------------------------------------------------------


def _draft(context: Context) -> CharacterDialog:
    return dialogs.current(context).state


async def _begin(update: Update, context: Context, state: CharacterDialog) -> None:
    await dialogs.begin(
        update, context, state, ttl_s=CONVERSATION_TIMEOUT_S, notice_key=TIMEOUT_NOTICE
    )


async def _ask(
    update: Update, context: Context, text: str, markup: InlineKeyboardMarkup | None = None
) -> None:
    """Ask the dialog's question (in groups as a ForceReply, unless it has buttons) and record
    its message: in a group only a reply to it answers the dialog, and only its buttons act on
    the dialog (`dialogs.takes`). A question asked again after a refused answer is recorded too:
    the ForceReply makes the next answer a reply to it."""
    question = await reply(update, text, markup=ask_markup(update) if markup is None else markup)
    await dialogs.asked(context, question)


def _temp_dir(context: Context) -> Path:
    folder = runtime_of(context).settings.data_dir / "tmp"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


# -- validation of typed answers (localized; core re-checks) ---------------------------------------


def _squeeze(text: str | None) -> str:
    return " ".join((text or "").split())


async def _check_name(update: Update, context: Context, asker: Who, text: str | None) -> str | None:
    """A usable new name, or None after telling the user what to fix."""
    lang, name = asker.lang, _squeeze(text)
    if not name:
        await _ask(update, context, t("chars.name_empty", lang))
        return None
    if len(name) > NAME_MAX:
        await _ask(update, context, t("chars.name_too_long", lang, length=len(name), max=NAME_MAX))
        return None
    try:
        name = clean_name(name)
    except InvalidInput as error:
        log.info("character name refused", reason=str(error))
        await _ask(update, context, t("chars.name_bad", lang))
        return None
    try:
        return await service_of(context).check_new_name(asker.user_id, name)
    except InvalidInput as error:
        log.info("character name refused", reason=str(error))
        await _ask(update, context, t("chars.name_taken", lang, name=name))
        return None


async def _check_long_text(
    update: Update,
    context: Context,
    asker: Who,
    text: str | None,
    *,
    field: str,
    limit: int,
    required: bool,
    name: str,
) -> str | None:
    value = (text or "").strip()
    if required and not value:
        await _ask(update, context, t(f"chars.{field}_empty", asker.lang, name=name))
        return None
    if len(value) > limit:
        await _ask(
            update, context, t(f"chars.{field}_too_long", asker.lang, length=len(value), max=limit)
        )
        return None
    try:
        return clean_text(value, limit=limit, field=field, minimum=1 if required else 0)
    except InvalidInput as error:
        await report_error(update, error, asker.lang)
        return None


async def _receive_reference(update: Update, context: Context, asker: Who) -> bytes | None:
    """Download and normalize the photo of this message (PNG bytes); None after saying what
    to fix."""
    message = update.effective_message
    assert message is not None
    if message.photo:
        media = message.photo[-1]
        file_id, size = media.file_id, media.file_size
    elif message.document and (message.document.mime_type or "").startswith("image/"):
        file_id, size = message.document.file_id, message.document.file_size
    else:
        log.info("reference is not a photo", user_id=asker.user_id)
        await _ask(update, context, t("chars.reference_not_photo", asker.lang))
        return None
    limit_mb = MAX_PHOTO_BYTES // 1024 // 1024
    if size is not None and size > MAX_PHOTO_BYTES:
        log.info("reference too big", size=size)
        mb = round(size / 1024 / 1024, 1)
        too_big = t("chars.reference_too_big", asker.lang, size=mb, max=limit_mb)
        await _ask(update, context, too_big)
        return None
    await message.reply_chat_action(ChatAction.TYPING)
    try:
        telegram_file = await context.bot.get_file(file_id)
        data = bytes(await telegram_file.download_as_bytearray())
    except BadRequest as error:  # "file is too big" when the update gave no file_size
        log.info("reference download refused", error=error.message)
        too_big = t("chars.reference_too_big", asker.lang, size=f">{limit_mb}", max=limit_mb)
        await _ask(update, context, too_big)
        return None
    try:
        png, (width, height), _ = await asyncio.to_thread(build_reference, data)
    except InvalidInput as error:
        message_text = core_text(error.user_message, asker.lang)
        await _ask(update, context, t("chars.reference_retry", asker.lang, message=message_text))
        return None
    log.info("reference received", width=width, height=height)
    return png


async def _existing(paths: list[Path]) -> list[Path]:
    return await asyncio.to_thread(lambda: [path for path in paths if path.exists()])


# -- /newcharacter --------------------------------------------------------------------------------
# The steps below run through `dialogs.StoredConversation`: `_draft` is the stored state read just
# before the step, `dialogs.advance` stores the next one (before the next question is asked) and
# `dialogs.finish` / `dialogs.end` end the dialog.


def _style_keyboard(
    owner: int, action: kb.Action, *prefix: UUID
) -> list[list[InlineKeyboardButton]]:
    buttons = [kb.button(style, action.data(*prefix, style, owner=owner)) for style in STYLES]
    return kb.rows(buttons, 2)


async def new_character(update: Update, context: Context) -> None:
    asker = await who(update, context)
    try:  # no room for one more: said now, not after every question was answered
        await service_of(context).check_room_for_character(asker.user_id)
    except AnimeBotError as error:
        log.info("new character refused", reason=str(error), user_id=asker.user_id)
        await report_error(update, error, asker.lang)
        return
    await _begin(update, context, CharacterDialog(step=Step.NAME))
    await _ask(update, context, t("chars.ask_name", asker.lang, max=NAME_MAX))


async def got_name(update: Update, context: Context) -> None:
    asker = await who(update, context)
    draft = _draft(context)
    message = update.effective_message
    name = await _check_name(update, context, asker, message.text if message else None)
    if name is None:
        return
    await dialogs.advance(context, draft.model_copy(update={"name": name, "step": Step.APPEARANCE}))
    await _ask(
        update, context, t("chars.ask_appearance", asker.lang, name=name, max=APPEARANCE_MAX)
    )


async def got_appearance(update: Update, context: Context) -> None:
    asker = await who(update, context)
    draft = _draft(context)
    message = update.effective_message
    value = await _check_long_text(
        update,
        context,
        asker,
        message.text if message else None,
        field="appearance",
        limit=APPEARANCE_MAX,
        required=True,
        name=draft.name,
    )
    if value is None:
        return
    await dialogs.advance(
        context, draft.model_copy(update={"appearance": value, "step": Step.STYLE})
    )
    keyboard = _style_keyboard(asker.user_id, NEW_STYLE)
    keyboard.append(
        [kb.button(t_plain("common.cancel", asker.lang), NEW_CANCEL.data(owner=asker.user_id))]
    )
    await _ask(
        update,
        context,
        t("chars.ask_style", asker.lang, name=draft.name),
        InlineKeyboardMarkup(keyboard),
    )


async def got_style(update: Update, context: Context) -> None:
    callback = await pressed(update, NEW_STYLE)
    if callback is None:
        return
    asker = await who(update, context)
    draft = _draft(context).model_copy(update={"style": callback.word(0), "step": Step.PERSONALITY})
    await dialogs.advance(context, draft)
    await toast(update)
    assert update.callback_query is not None
    await edit(
        update.callback_query,
        t("chars.ask_style", asker.lang, name=draft.name) + f" <b>{draft.style}</b>",
    )
    await _ask(update, context, t("chars.ask_personality", asker.lang, name=draft.name))


async def style_needs_button(update: Update, context: Context) -> None:
    asker = await who(update, context)
    await reply(update, t("chars.style_use_buttons", asker.lang))


async def got_personality(update: Update, context: Context) -> None:
    asker = await who(update, context)
    draft = _draft(context)
    message = update.effective_message
    value = await _check_long_text(
        update,
        context,
        asker,
        message.text if message else None,
        field="personality",
        limit=PERSONALITY_MAX,
        required=False,
        name=draft.name,
    )
    if value is None:
        return
    await _ask_reference(update, context, asker, draft.model_copy(update={"personality": value}))


async def skip_personality(update: Update, context: Context) -> None:
    asker = await who(update, context)
    await _ask_reference(
        update, context, asker, _draft(context).model_copy(update={"personality": ""})
    )


async def _ask_reference(
    update: Update, context: Context, asker: Who, draft: CharacterDialog
) -> None:
    await dialogs.advance(context, draft.model_copy(update={"step": Step.REFERENCE}))
    await _ask(update, context, t("chars.ask_reference", asker.lang, name=draft.name))


async def got_reference(update: Update, context: Context) -> None:
    asker = await who(update, context)
    png = await _receive_reference(update, context, asker)
    if png is None:
        return
    draft = _draft(context).model_copy(update={"has_reference": True})
    await _ask_confirm(update, context, asker, draft, attachment=png)


async def skip_reference(update: Update, context: Context) -> None:
    asker = await who(update, context)
    await _ask_confirm(update, context, asker, _draft(context))


async def _ask_confirm(
    update: Update,
    context: Context,
    asker: Who,
    draft: CharacterDialog,
    *,
    attachment: bytes | bool = False,
) -> None:
    await dialogs.advance(
        context, draft.model_copy(update={"step": Step.CONFIRM}), attachment=attachment
    )
    lang = asker.lang
    none = t_plain("chars.none_value", lang)
    text = t(
        "chars.confirm",
        lang,
        name=draft.name,
        appearance=_shorten(draft.appearance, 1500),
        style=draft.style,
        personality=_shorten(draft.personality, 800) or none,
        reference=t_plain("common.yes" if draft.has_reference else "common.no", lang),
    )
    markup = kb.confirm(
        NEW_OK.data(owner=asker.user_id),
        NEW_CANCEL.data(owner=asker.user_id),
        lang,
        yes_key="chars.btn_create",
        no_key="common.cancel",
    )
    await _ask(update, context, text, markup)


async def confirm_needs_button(update: Update, context: Context) -> None:
    asker = await who(update, context)
    await reply(update, t("chars.confirm_use_buttons", asker.lang))


async def create(update: Update, context: Context) -> None:
    if await pressed(update, NEW_OK) is None:
        return
    asker = await who(update, context)
    taken = await dialogs.finish(context)  # a second tap (on any process) finds nothing
    draft = taken.state
    query = update.callback_query
    assert query is not None
    try:
        character = await service_of(context).create_character(
            asker.actor,
            CharacterDraft(
                name=draft.name,
                appearance=draft.appearance,
                personality=draft.personality,
                style=draft.style,
                reference=taken.attachment,
            ),
        )
    except AnimeBotError as error:
        await report_error(update, error, asker.lang)
        with contextlib.suppress(TelegramError):
            await query.edit_message_reply_markup(None)
        return
    await toast(update)
    with contextlib.suppress(TelegramError):
        await query.edit_message_reply_markup(None)
    await reply(update, t("chars.created", asker.lang, name=character.name))


async def cancel(update: Update, context: Context) -> None:
    asker = await who(update, context)
    query = update.callback_query
    if query is not None and await pressed(update, NEW_CANCEL) is None:
        return  # another user's Cancel (or forged data): the presser's own dialog goes on
    await dialogs.end(update, context)
    if query is not None:
        await toast(update)
        await edit(query, t("common.cancelled", asker.lang))
    else:
        await reply(update, t("common.cancelled", asker.lang))


# -- /characters and the card ---------------------------------------------------------------------


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def card_text(character: Character, lang: str, *, caption: bool = False) -> str:
    appearance = _shorten(character.appearance, CAPTION_APPEARANCE if caption else 2000)
    text = t("chars.card", lang, name=character.name, style=character.style, appearance=appearance)
    if character.personality:
        personality = _shorten(character.personality, 200 if caption else 1000)
        text += "\n" + t("chars.card_personality", lang, personality=personality)
    return text


def card_markup(owner: int, character_id: UUID, lang: str) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(
        [
            [kb.button(t_plain("chars.btn_scene", lang), kb.SCENE.data(character_id, owner=owner))],
            [
                kb.button(
                    t_plain("chars.btn_edit", lang), EDIT_MENU.data(character_id, owner=owner)
                ),
                kb.button(t_plain("chars.btn_sheet", lang), SHEET.data(character_id, owner=owner)),
            ],
            [kb.button(t_plain("chars.btn_delete", lang), DELETE.data(character_id, owner=owner))],
        ]
    )


async def send_card(update: Update, context: Context, asker: Who, character: Character) -> Message:
    """The character card as a new message: the reference photo with a caption, or text."""
    references = await _existing(await service_of(context).references(character.id))
    markup = card_markup(asker.user_id, character.id, asker.lang)
    message = update.effective_message
    assert message is not None
    if references:
        return await message.reply_photo(
            references[-1],
            caption=card_text(character, asker.lang, caption=True),
            parse_mode=ParseMode.HTML,
            reply_markup=markup,
            do_quote=False,
        )
    return await reply(update, card_text(character, asker.lang), markup=markup, quote=False)


async def _list_view(
    context: Context, asker: Who, page: int
) -> tuple[str, InlineKeyboardMarkup | None]:
    service = service_of(context)
    items, total = await service.list_characters(asker.user_id, page=page, per_page=PER_PAGE)
    pages = kb.page_count(total, PER_PAGE)
    if total and not items and page > 0:
        page = pages - 1
        items, total = await service.list_characters(asker.user_id, page=page, per_page=PER_PAGE)
    if not total:
        return t("chars.none", asker.lang), None
    owner = asker.user_id
    buttons = [kb.button(c.name, OPEN.data(c.id, owner=owner)) for c in items]
    markup = kb.paged(buttons, page, pages, lambda p: LIST.data(p, owner=owner), per_row=2)
    return t("chars.list_title", asker.lang, total=total), markup


list_characters, list_page = paged_list(LIST, _list_view)


async def _character(
    update: Update, context: Context, asker: Who, character_id: UUID
) -> Character | None:
    try:
        return await service_of(context).get_character(asker.actor, character_id)
    except AnimeBotError as error:
        await report_error(update, error, asker.lang)
        return None


async def open_card(update: Update, context: Context) -> None:
    callback = await pressed(update, OPEN)
    if callback is None:
        return
    asker = await who(update, context)
    character = await _character(update, context, asker, callback.uuid(0))
    if character is None:
        return
    await toast(update)
    await send_card(update, context, asker, character)


async def back_to_card(update: Update, context: Context) -> None:
    callback = await pressed(update, BACK)
    if callback is None:
        return
    asker = await who(update, context)
    character = await _character(update, context, asker, callback.uuid(0))
    if character is None:
        return
    await toast(update)
    await _restore_card(update, asker, character)


async def _restore_card(update: Update, asker: Who, character: Character) -> None:
    query = update.callback_query
    assert query is not None
    is_photo = isinstance(query.message, Message) and bool(query.message.photo)
    await edit(
        query,
        card_text(character, asker.lang, caption=is_photo),
        card_markup(asker.user_id, character.id, asker.lang),
    )


async def edit_menu(update: Update, context: Context) -> None:
    callback = await pressed(update, EDIT_MENU)
    if callback is None:
        return
    asker = await who(update, context)
    character = await _character(update, context, asker, callback.uuid(0))
    if character is None:
        return
    owner, cid, lang = asker.user_id, character.id, asker.lang
    fields = [
        kb.button(t_plain(f"chars.field_{f}", lang), EDIT_FIELD.data(cid, f, owner=owner))
        for f in TEXT_FIELDS
    ]
    fields.append(kb.button(t_plain("chars.field_style", lang), STYLE_MENU.data(cid, owner=owner)))
    fields.append(
        kb.button(
            t_plain("chars.field_reference", lang), EDIT_FIELD.data(cid, "reference", owner=owner)
        )
    )
    keyboard = kb.rows(fields, 2)
    keyboard.append([kb.button(t_plain("common.back", lang), BACK.data(cid, owner=owner))])
    await toast(update)
    assert update.callback_query is not None
    await edit(
        update.callback_query,
        t("chars.edit_pick", lang, name=character.name),
        InlineKeyboardMarkup(keyboard),
    )


async def style_menu(update: Update, context: Context) -> None:
    callback = await pressed(update, STYLE_MENU)
    if callback is None:
        return
    asker = await who(update, context)
    character = await _character(update, context, asker, callback.uuid(0))
    if character is None:
        return
    keyboard = _style_keyboard(asker.user_id, SET_STYLE, character.id)
    keyboard.append(
        [
            kb.button(
                t_plain("common.back", asker.lang), BACK.data(character.id, owner=asker.user_id)
            )
        ]
    )
    await toast(update)
    assert update.callback_query is not None
    await edit(
        update.callback_query,
        t("chars.edit_style_pick", asker.lang, name=character.name),
        InlineKeyboardMarkup(keyboard),
    )


async def set_style(update: Update, context: Context) -> None:
    callback = await pressed(update, SET_STYLE)
    if callback is None:
        return
    asker = await who(update, context)
    try:
        character = await service_of(context).update_character(
            asker.actor, callback.uuid(0), "style", callback.word(1)
        )
    except AnimeBotError as error:
        await report_error(update, error, asker.lang)
        return
    await toast(update, t_plain("chars.edit_saved", asker.lang))
    await _restore_card(update, asker, character)


async def edit_field(update: Update, context: Context) -> None:
    # A refused entry (another user's button, the character is gone) is answered with a toast
    # and leaves the presser's own dialog, if any, as it was.
    callback = await pressed(update, EDIT_FIELD)
    if callback is None:
        return
    asker = await who(update, context)
    character = await _character(update, context, asker, callback.uuid(0))
    if character is None:
        return
    field = callback.word(1)
    step = Step.EDIT_PHOTO if field == "reference" else Step.EDIT_TEXT
    await _begin(
        update,
        context,
        CharacterDialog(step=step, character_id=character.id, field=field, name=character.name),
    )
    await toast(update)
    if field == "reference":
        await _ask(update, context, t("chars.edit_ask_reference", asker.lang, name=character.name))
        return
    current = getattr(character, field) or t_plain("chars.none_value", asker.lang)
    await _ask(
        update,
        context,
        t(
            "chars.edit_ask_text",
            asker.lang,
            field=t_plain(f"chars.field_{field}", asker.lang).lower(),
            name=character.name,
            current=_shorten(str(current), 300),
        ),
    )


def _edited(context: Context, lang: str) -> UUID:
    """The character whose field is being edited."""
    character_id = _draft(context).character_id
    if character_id is None:
        message = t_plain("chars.open_again", lang)
        raise InvalidInput("no edit in progress", user_message=message)
    return character_id


async def _done_editing(context: Context) -> None:
    """End the edit dialog, unless a new one began meanwhile (the edit is saved either way)."""
    with contextlib.suppress(dialogs.DialogChanged):
        await dialogs.finish(context)


async def got_edit_text(update: Update, context: Context) -> None:
    asker = await who(update, context)
    editing = _draft(context)
    character_id = _edited(context, asker.lang)
    message = update.effective_message
    text = message.text if message else None
    value: str | None
    if editing.field == "name":
        value = await _check_name(update, context, asker, text)
    else:
        limit = APPEARANCE_MAX if editing.field == "appearance" else PERSONALITY_MAX
        value = await _check_long_text(
            update,
            context,
            asker,
            text,
            field=editing.field,
            limit=limit,
            required=editing.field == "appearance",
            name=editing.name,
        )
    if value is None:
        return
    try:
        character = await service_of(context).update_character(
            asker.actor, character_id, editing.field, value
        )
    except AnimeBotError as error:
        await report_error(update, error, asker.lang)
        if isinstance(error, NotFound):  # deleted meanwhile: no answer can be saved any more
            await _done_editing(context)
        return
    await _done_editing(context)
    await reply(update, t("chars.edit_saved", asker.lang))
    await send_card(update, context, asker, character)


async def edit_needs_text(update: Update, context: Context) -> None:
    asker = await who(update, context)
    await _ask(update, context, t("chars.edit_text_only", asker.lang))


async def got_edit_photo(update: Update, context: Context) -> None:
    asker = await who(update, context)
    character_id = _edited(context, asker.lang)
    png = await _receive_reference(update, context, asker)
    if png is None:
        return
    service = service_of(context)
    try:
        await service.add_reference(asker.actor, character_id, png)
        character = await service.get_character(asker.actor, character_id)
    except AnimeBotError as error:
        await report_error(update, error, asker.lang)
        await _done_editing(context)
        return
    await _done_editing(context)
    await reply(update, t("chars.edit_saved", asker.lang))
    await send_card(update, context, asker, character)


# -- delete ---------------------------------------------------------------------------------------


async def delete(update: Update, context: Context) -> None:
    callback = await pressed(update, DELETE)
    if callback is None:
        return
    asker = await who(update, context)
    character = await _character(update, context, asker, callback.uuid(0))
    if character is None:
        return
    owner, cid = asker.user_id, character.id
    markup = kb.confirm(
        DELETE_YES.data(cid, owner=owner), DELETE_NO.data(cid, owner=owner), asker.lang
    )
    await toast(update)
    assert update.callback_query is not None
    await edit(
        update.callback_query, t("chars.delete_confirm", asker.lang, name=character.name), markup
    )


async def delete_yes(update: Update, context: Context) -> None:
    callback = await pressed(update, DELETE_YES)
    if callback is None:
        return
    asker = await who(update, context)
    character = await _character(update, context, asker, callback.uuid(0))
    if character is None:
        return
    try:
        await service_of(context).delete_character(asker.actor, character.id)
    except AnimeBotError as error:
        await report_error(update, error, asker.lang)
        return
    log.info("character deleted", character_id=str(character.id), owner=asker.user_id)
    await toast(update)
    assert update.callback_query is not None
    await edit(update.callback_query, t("chars.deleted", asker.lang, name=character.name))


async def delete_no(update: Update, context: Context) -> None:
    callback = await pressed(update, DELETE_NO)
    if callback is None:
        return
    asker = await who(update, context)
    character = await _character(update, context, asker, callback.uuid(0))
    if character is None:
        return
    await toast(update, t_plain("chars.kept", asker.lang))
    await _restore_card(update, asker, character)


# -- character sheet ------------------------------------------------------------------------------


async def _sheet_tiles(context: Context, asker: Who, character: Character) -> list[SheetTile]:
    service = service_of(context)
    label = t_plain("chars.sheet_reference", asker.lang)
    tiles = [SheetTile(p, label) for p in await _existing(await service.references(character.id))]
    recent = await service.character_images(asker.actor, character.id, limit=SHEET_TILES)
    for job, output in recent:
        caption = _shorten(job.prompt_typed, 40)
        tiles += [SheetTile(path, caption) for path in await _existing([Path(output.file_path)])]
    return tiles[:SHEET_TILES]


async def sheet(update: Update, context: Context) -> None:
    callback = await pressed(update, SHEET)
    if callback is None:
        return
    asker = await who(update, context)
    character = await _character(update, context, asker, callback.uuid(0))
    if character is None:
        return
    tiles = await _sheet_tiles(context, asker, character)
    if not tiles:
        await toast(update)
        await reply(update, t("chars.sheet_empty", asker.lang, name=character.name))
        return
    await toast(update, t_plain("chars.sheet_working", asker.lang))
    message = update.effective_message
    assert message is not None
    await message.reply_chat_action(ChatAction.UPLOAD_PHOTO)
    with tempfile.TemporaryDirectory(dir=_temp_dir(context)) as folder:
        try:
            path = await character_sheet(tiles, character.name, Path(folder) / "sheet.jpg")
        except AnimeBotError as error:
            await report_error(update, error, asker.lang)
            return
        await message.reply_photo(
            path,
            caption=t("chars.sheet_caption", asker.lang, name=character.name, count=len(tiles)),
            parse_mode=ParseMode.HTML,
            do_quote=False,
        )


# -- registration ---------------------------------------------------------------------------------


def conversation(cache: dialogs.DialogCache) -> dialogs.StoredConversation:
    """The steps of the dialog; its entry points are registered before it (see `register`)."""
    # dialogs.COMMAND also sees a caption's command: an audio captioned "/video ..." is no answer
    command = dialogs.COMMAND
    text = filters.TEXT & ~command
    other = ~command & ~filters.TEXT
    photo = (filters.PHOTO | filters.Document.IMAGE) & ~command
    cache.want(commands=("cancel", "skip"), buttons=(NEW_STYLE, NEW_OK, NEW_CANCEL))
    return dialogs.StoredConversation(
        cache,
        steps={
            Step.NAME: [MessageHandler(text, got_name), MessageHandler(other, got_name)],
            Step.APPEARANCE: [
                MessageHandler(text, got_appearance),
                MessageHandler(other, got_appearance),
            ],
            Step.STYLE: [
                CallbackQueryHandler(got_style, pattern=NEW_STYLE.pattern),
                MessageHandler(~command, style_needs_button),
            ],
            Step.PERSONALITY: [
                MessageHandler(text, got_personality),
                CommandHandler("skip", skip_personality),
                MessageHandler(other, got_personality),
            ],
            Step.REFERENCE: [
                MessageHandler(photo, got_reference),
                CommandHandler("skip", skip_reference),
                MessageHandler(~command, got_reference),
            ],
            Step.CONFIRM: [
                CallbackQueryHandler(create, pattern=NEW_OK.pattern),
                MessageHandler(~command, confirm_needs_button),
            ],
            Step.EDIT_TEXT: [
                MessageHandler(text, got_edit_text),
                MessageHandler(other, edit_needs_text),
            ],
            Step.EDIT_PHOTO: [
                MessageHandler(~command, got_edit_photo),
                CommandHandler("skip", cancel),  # its refusals end with "or /skip"
            ],
        },
        fallbacks=[
            CommandHandler("cancel", cancel, has_args=False),
            CallbackQueryHandler(cancel, pattern=NEW_CANCEL.pattern),
        ],
        ttl_s=CONVERSATION_TIMEOUT_S,
        notice_key=TIMEOUT_NOTICE,
    )


def register(app: Application[Any, Any, Any, Any, Any, Any]) -> None:
    # The entry points come first (they restart a dialog at any step), then the steps.
    app.add_handler(CommandHandler("newcharacter", new_character))
    app.add_handler(CallbackQueryHandler(edit_field, pattern=EDIT_FIELD.pattern))
    app.add_handler(conversation(dialogs.cache_of(app)))
    app.add_handler(CommandHandler("characters", list_characters))
    for action, callback in (
        (LIST, list_page),
        (OPEN, open_card),
        (BACK, back_to_card),
        (EDIT_MENU, edit_menu),
        (STYLE_MENU, style_menu),
        (SET_STYLE, set_style),
        (SHEET, sheet),
        (DELETE, delete),
        (DELETE_YES, delete_yes),
        (DELETE_NO, delete_no),
    ):
        app.add_handler(CallbackQueryHandler(callback, pattern=action.pattern))
