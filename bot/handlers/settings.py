"""/settings: the chat's defaults (style preset, aspect ratio, video length, original file).

Everyone may look; in groups only the group's administrators may change them (checked with
getChatMember on every press, so a demoted admin cannot keep using an old keyboard).
"""

from __future__ import annotations

from typing import Any

from telegram import InlineKeyboardMarkup, Update
from telegram.ext import Application, CallbackQueryHandler, CommandHandler

from bot import keyboards as kb
from bot.context import (
    Context,
    Who,
    edit,
    is_chat_admin,
    pressed,
    reply,
    report_error,
    service_of,
    toast,
    who,
)
from bot.texts import t, t_plain
from core.director import STYLE_PRESETS
from core.errors import AnimeBotError
from core.logs import get_logger
from core.models import Chat

log = get_logger(__name__)

ASPECTS = ("1:1", "4:3", "3:4", "3:2", "2:3", "16:9", "9:16")
SECONDS = ("2", "3", "5", "8", "10")
STYLES = tuple(STYLE_PRESETS)
MENUS = ("main", "style", "aspect", "seconds")
FIELDS = ("style", "aspect", "seconds", "original")
_VALUES = frozenset((*ASPECTS, *SECONDS, *STYLES, "0", "1"))

MENU = kb.action("stm", kb.word_arg(MENUS))
SET = kb.action("sts", kb.word_arg(FIELDS), kb.word_arg(_VALUES))


def settings_text(chat: Chat, lang: str, *, can_change: bool) -> str:
    text = t(
        "settings.title",
        lang,
        style=chat.style_preset,
        aspect=chat.aspect_ratio,
        seconds=chat.video_seconds,
        original=t_plain("common.on" if chat.send_original else "common.off", lang),
    )
    return text if can_change else text + "\n\n" + t("settings.readonly", lang)


def main_markup(chat: Chat, owner: int, lang: str) -> InlineKeyboardMarkup:
    state = t_plain("common.on" if chat.send_original else "common.off", lang)
    flip = "0" if chat.send_original else "1"
    return InlineKeyboardMarkup(
        [
            [
                kb.button(t_plain("settings.btn_style", lang), MENU.data("style", owner=owner)),
                kb.button(t_plain("settings.btn_aspect", lang), MENU.data("aspect", owner=owner)),
            ],
            [
                kb.button(t_plain("settings.btn_seconds", lang), MENU.data("seconds", owner=owner)),
                kb.button(
                    t_plain("settings.btn_original", lang, state=state),
                    SET.data("original", flip, owner=owner),
                ),
            ],
        ]
    )


def submenu(chat: Chat, menu: str, owner: int, lang: str) -> tuple[str, InlineKeyboardMarkup]:
    back = [[kb.button(t_plain("common.back", lang), MENU.data("main", owner=owner))]]
    options: list[tuple[str, str]]
    if menu == "style":
        options, current, per_row = [(s, s) for s in STYLES], chat.style_preset, 2
    elif menu == "aspect":
        options, current, per_row = [(a, a) for a in ASPECTS], chat.aspect_ratio, 4
    else:
        options = [(s, t_plain("settings.seconds_label", lang, seconds=s)) for s in SECONDS]
        current, per_row = str(chat.video_seconds), 5
    markup = kb.choice(
        options,
        current,
        lambda value: SET.data(menu, value, owner=owner),
        per_row=per_row,
        extra=back,
    )
    return t(f"settings.pick_{menu}", lang), markup


def _changes(field: str, value: str) -> dict[str, Any]:
    """The update_chat_settings arguments for a (validated) field and value."""
    if field == "style":
        return {"style_preset": value}
    if field == "aspect":
        return {"aspect_ratio": value}
    if field == "seconds":
        return {"video_seconds": int(value)}
    return {"send_original": value == "1"}


def _valid(field: str, value: str) -> bool:
    allowed = {"style": STYLES, "aspect": ASPECTS, "seconds": SECONDS, "original": ("0", "1")}
    return value in allowed[field]


async def _chat(update: Update, context: Context, asker: Who) -> Chat | None:
    try:
        return await service_of(context).chat_settings(asker.chat_id)
    except AnimeBotError as error:
        await report_error(update, error, asker.lang)
        return None


async def show_settings(update: Update, context: Context) -> None:
    asker = await who(update, context)
    chat = await _chat(update, context, asker)
    if chat is None:
        return
    can_change = await is_chat_admin(update, context)
    markup = main_markup(chat, asker.user_id, asker.lang) if can_change else None
    await reply(update, settings_text(chat, asker.lang, can_change=can_change), markup=markup)


async def _allowed(update: Update, context: Context, asker: Who) -> bool:
    if await is_chat_admin(update, context):
        return True
    log.info("settings change refused: not a group admin", user_id=asker.user_id)
    await toast(update, t_plain("settings.admins_only", asker.lang), alert=True)
    return False


async def open_menu(update: Update, context: Context) -> None:
    callback = await pressed(update, MENU)
    if callback is None:
        return
    asker = await who(update, context)
    if not await _allowed(update, context, asker):
        return
    chat = await _chat(update, context, asker)
    if chat is None:
        return
    menu = callback.word(0)
    query = update.callback_query
    assert query is not None
    await toast(update)
    if menu == "main":
        text = settings_text(chat, asker.lang, can_change=True)
        await edit(query, text, main_markup(chat, asker.user_id, asker.lang))
    else:
        await edit(query, *submenu(chat, menu, asker.user_id, asker.lang))


async def set_value(update: Update, context: Context) -> None:
    callback = await pressed(update, SET)
    if callback is None:
        return
    field, value = callback.word(0), callback.word(1)
    asker = await who(update, context)
    if not _valid(field, value):
        log.info("settings value does not fit its field", field=field, value=value)
        await toast(update, t_plain("common.stale_button", asker.lang))
        return
    if not await _allowed(update, context, asker):
        return
    changes = _changes(field, value)
    try:
        chat = await service_of(context).update_chat_settings(asker.chat_id, **changes)
    except AnimeBotError as error:
        await report_error(update, error, asker.lang)
        return
    log.info("chat settings changed", chat_id=asker.chat_id, by=asker.user_id, **changes)
    await toast(update, t_plain("settings.saved", asker.lang))
    query = update.callback_query
    assert query is not None
    text = settings_text(chat, asker.lang, can_change=True)
    await edit(query, text, main_markup(chat, asker.user_id, asker.lang))


def register(app: Application[Any, Any, Any, Any, Any, Any]) -> None:
    app.add_handler(CommandHandler("settings", show_settings))
    app.add_handler(CallbackQueryHandler(open_menu, pattern=MENU.pattern))
    app.add_handler(CallbackQueryHandler(set_value, pattern=SET.pattern))
