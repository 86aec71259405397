"""Per-update helpers: who is asking (Actor, language), access, ownership, replies.

Handlers call `await who(update, context)` for the `Who` of an update (the Actor core wants,
the stored user and chat, the language); the first call records the user via `service.seen`
(raising `AccessDenied` for banned users and chats outside ALLOWED_CHAT_IDS) and the result is
cached for the rest of the update. The gate (bot/gate.py) calls it first, before any handler.
"""

from __future__ import annotations

import contextlib
import re
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from html import escape as escape_html
from html import unescape as unescape_html
from typing import Any

from telegram import (
    CallbackQuery,
    ForceReply,
    InlineKeyboardMarkup,
    Message,
    Update,
)
from telegram import User as TelegramUser
from telegram.constants import ChatMemberStatus, ChatType, ParseMode
from telegram.error import BadRequest, Forbidden, TelegramError
from telegram.ext import Application, ContextTypes

from bot.keyboards import NOOP, Action, Callback, decode
from bot.render import isolate
from bot.texts import core_text, pick_language, t, t_plain
from core.errors import AnimeBotError
from core.logs import bind_context, get_logger
from core.models import Chat as StoredChat
from core.models import ChatType as CoreChatType
from core.models import User as StoredUser
from core.runtime import Runtime
from core.service import Actor, StudioService

log = get_logger(__name__)

Context = ContextTypes.DEFAULT_TYPE
ReplyMarkup = InlineKeyboardMarkup | ForceReply

_WHO_KEY = "_animebot_who"
_HTML_TAG = re.compile(r"<[^>]*>")  # in our HTML texts every "<" of a value is escaped
MENTION_NAME_MAX = 64  # characters of a first name (Telegram allows 64)


# -- app data ------------------------------------------------------------------------------------


def runtime_of(context: Context) -> Runtime:
    runtime: Runtime = context.bot_data["runtime"]
    return runtime


def service_of(context: Context) -> StudioService:
    service: StudioService = context.bot_data["service"]
    return service


# -- who is asking -------------------------------------------------------------------------------


def language_of(update: Update) -> str:
    user = update.effective_user
    return pick_language(user.language_code if user else None)


def actor_of(update: Update) -> Actor:
    user = update.effective_user
    chat = update.effective_chat
    if user is None or chat is None:
        raise ValueError("update without a user or chat")
    message = update.effective_message
    thread_id = message.message_thread_id if message and message.is_topic_message else None
    return Actor(
        user_id=user.id,
        chat_id=chat.id,
        chat_type=CoreChatType(chat.type),
        first_name=user.first_name,
        username=user.username,
        language_code=user.language_code,
        chat_title=chat.title,
        is_forum=bool(chat.is_forum),
        thread_id=thread_id,
    )


@dataclass(frozen=True)
class Who:
    actor: Actor
    user: StoredUser
    chat: StoredChat
    lang: str
    is_admin: bool

    @property
    def user_id(self) -> int:
        return self.actor.user_id

    @property
    def chat_id(self) -> int:
        return self.actor.chat_id

    @property
    def in_group(self) -> bool:
        return self.actor.chat_type in (CoreChatType.GROUP, CoreChatType.SUPERGROUP)


async def who(update: Update, context: Context) -> Who:
    """The asker of this update (cached per update); raises AccessDenied when not allowed."""
    cached = getattr(context, _WHO_KEY, None)
    if isinstance(cached, Who) and cached.actor == actor_of(update):
        return cached
    service = service_of(context)
    actor = actor_of(update)
    # Every log line written while handling this update carries the chat and the user.
    bind_context(chat_id=actor.chat_id, user_id=actor.user_id)
    user, chat = await service.seen(actor)
    result = Who(actor, user, chat, language_of(update), service.is_admin(user))
    setattr(context, _WHO_KEY, result)
    return result


def is_group(update: Update) -> bool:
    chat = update.effective_chat
    return chat is not None and chat.type in (ChatType.GROUP, ChatType.SUPERGROUP)


# -- replies ---------------------------------------------------------------------------------------


async def reply(
    update: Update,
    text: str,
    *,
    markup: ReplyMarkup | None = None,
    html: bool = True,
    quote: bool | None = None,
) -> Message:
    """Answer in the same chat and forum topic; quote the user's message in groups.

    A selective ForceReply only opens the reply box of the users the message @mentions and of
    the sender of the message it replies to (Bot API, ForceReply.selective). A question that
    does not quote the user's own message (one asked after a button press) would target nobody,
    so in a group it starts with a mention of the user (`addressed`)."""
    message = update.effective_message
    if message is None:
        raise ValueError("nothing to reply to")
    from_user = update.callback_query is None
    do_quote = quote if quote is not None else (from_user and is_group(update))
    user = update.effective_user
    if (
        isinstance(markup, ForceReply)
        and markup.selective
        and is_group(update)
        and user is not None
        and not (from_user and do_quote)
    ):
        text, html = addressed(user, text if html else escape_html(text)), True
    return await message.reply_text(
        text,
        parse_mode=ParseMode.HTML if html else None,
        reply_markup=markup,
        do_quote=do_quote,
    )


def mention(user: TelegramUser) -> str:
    """An HTML mention of `user` by id (it works without a username): their first name,
    linked to tg://user?id=... (PTB's `User.mention_html`, which escapes it)."""
    return user.mention_html(
        isolate(user.first_name.strip()[:MENTION_NAME_MAX] or user.username or str(user.id))
    )


def addressed(user: TelegramUser, text: str) -> str:
    """The HTML `text` addressed to `user` ("Alice, ..."): the mention makes a selective
    ForceReply open the reply box for them."""
    return f"{mention(user)}, {text}"


def ask_markup(update: Update, placeholder: str | None = None) -> ForceReply | None:
    """In groups, ask for an answer as a (selective) reply so privacy mode lets it through."""
    if not is_group(update):
        return None
    return ForceReply(selective=True, input_field_placeholder=placeholder)


def _shows(message: Message, text: str, markup: InlineKeyboardMarkup | None) -> bool:
    """The message already shows this HTML `text` (formatting aside) and these buttons."""
    has_media = message.photo or message.video or message.document or message.animation
    current = (message.caption if has_media else message.text) or ""
    plain = unescape_html(_HTML_TAG.sub("", text))
    return current.strip() == plain.strip() and message.reply_markup == markup


async def edit(query: CallbackQuery, text: str, markup: InlineKeyboardMarkup | None = None) -> None:
    """Edit the message under the buttons (its text, or its caption for a photo); nothing is
    sent when it already shows that (a double tap), which Telegram would refuse."""
    message = query.message
    if not isinstance(message, Message) or _shows(message, text, markup):
        return
    try:
        if message.photo or message.video or message.document or message.animation:
            await query.edit_message_caption(
                caption=text, parse_mode=ParseMode.HTML, reply_markup=markup
            )
        else:
            await query.edit_message_text(text, parse_mode=ParseMode.HTML, reply_markup=markup)
    except BadRequest as error:
        if "not modified" not in error.message.lower():
            raise


async def toast(update: Update, text: str | None = None, *, alert: bool = False) -> None:
    """Answer the callback query with a short notice (never raises for a stale query). An
    empty `text` is sent as no text: with `Defaults` set, python-telegram-bot 22 sends an
    empty string parameter as `[]`, which Telegram would show as the toast "[]"."""
    query = update.callback_query
    if query is None:
        return
    try:
        await query.answer(text or None, show_alert=alert)
    except BadRequest as error:
        log.info("callback answer failed", error=error.message)


async def check_owner(update: Update, callback: Callback) -> bool:
    """True when the presser owns the buttons; otherwise answers 'this is not your request'."""
    user = update.effective_user
    if callback.owner is None or (user is not None and user.id == callback.owner):
        return True
    await toast(update, t_plain("common.not_yours", language_of(update)))
    log.info("button of another user", action=callback.name, by=user.id if user else None)
    return False


async def stale_button(update: Update) -> None:
    data = update.callback_query.data if update.callback_query else None
    log.info("stale or forged button", data=(data or "")[:64])
    await toast(update, t_plain("common.stale_button", language_of(update)))


async def report_error(update: Update, error: AnimeBotError, lang: str | None = None) -> None:
    """Show a core error's user message in `lang` (toast for buttons, reply for messages) and
    log it."""
    lang = lang or language_of(update)
    log.info("request refused", error=str(error), kind=type(error).__name__)
    message = core_text(error.user_message, lang)
    if update.callback_query is not None:
        await toast(update, message, alert=len(message) > 60)
    elif update.effective_message is not None:
        await reply(update, t("common.failed", lang, message=message))


async def is_chat_admin(update: Update, context: Context) -> bool:
    """Private chats: always; groups: the user is an administrator or the creator."""
    chat, user = update.effective_chat, update.effective_user
    if chat is None or user is None:
        return False
    if chat.type == ChatType.PRIVATE:
        return True
    try:
        member = await context.bot.get_chat_member(chat.id, user.id)
    except TelegramError as error:
        log.warning("admin check failed", chat_id=chat.id, error=str(error))
        return False
    return member.status in (ChatMemberStatus.ADMINISTRATOR, ChatMemberStatus.OWNER)


def bot_data_defaults(runtime: Runtime) -> dict[str, Any]:
    return {"runtime": runtime, "service": runtime.service}


def install(app: Application[Any, Any, Any, Any, Any, Any], runtime: Runtime) -> None:
    app.bot_data.update(bot_data_defaults(runtime))


# -- the global error handler ---------------------------------------------------------------


def new_reference() -> str:
    return secrets.token_hex(4)


async def on_error(update: object, context: Context) -> None:
    """Every exception a handler let through: one friendly line for the user, a trace in the log."""
    error = context.error
    if not isinstance(update, Update):
        log.warning("telegram error outside an update", error=repr(error))
        return
    if isinstance(error, Forbidden):
        log.info("cannot write to the chat (blocked or removed)", error=str(error))
        return
    if isinstance(error, AnimeBotError):
        with contextlib.suppress(TelegramError):
            await report_error(update, error)
        return
    ref = new_reference()
    log.error(
        "update failed",
        ref=ref,
        update_id=update.update_id,
        chat_id=update.effective_chat.id if update.effective_chat else None,
        user_id=update.effective_user.id if update.effective_user else None,
        exc_info=error,
    )
    lang = language_of(update)
    with contextlib.suppress(TelegramError):
        if update.callback_query is not None:
            await toast(update, t_plain("common.error", lang, ref=ref), alert=True)
        elif update.effective_message is not None:
            await reply(update, t("common.error", lang, ref=ref))


async def pressed(update: Update, expected: Action) -> Callback | None:
    """The decoded callback of a button of `expected` pressed by its owner, else None
    (after answering a toast: stale/forged data, or another user's buttons)."""
    query = update.callback_query
    callback = decode(query.data if query else None)
    if callback is None or callback.action != expected:
        await stale_button(update)
        return None
    if not await check_owner(update, callback):
        return None
    return callback


PageView = Callable[[Context, "Who", int], Awaitable[tuple[str, InlineKeyboardMarkup | None]]]
Handler = Callable[[Update, Context], Awaitable[None]]


def paged_list(action: Action, view: PageView) -> tuple[Handler, Handler]:
    """The command showing page 0 of a list, and the handler of its page buttons (`action`,
    whose first argument is the page), both rendered by `view(context, asker, page)`."""

    async def first_page(update: Update, context: Context) -> None:
        asker = await who(update, context)
        text, markup = await view(context, asker, 0)
        await reply(update, text, markup=markup)

    async def turn_page(update: Update, context: Context) -> None:
        callback = await pressed(update, action)
        if callback is None:
            return
        asker = await who(update, context)
        text, markup = await view(context, asker, callback.int(0))
        await toast(update)
        assert update.callback_query is not None
        await edit(update.callback_query, text, markup)

    return first_page, turn_page


async def any_button(update: Update, context: Context) -> None:
    """Fallback for buttons no handler took: not the presser's, outdated or forged."""
    callback = decode(update.callback_query.data if update.callback_query else None)
    if callback is not None and callback.action == NOOP:
        await toast(update)
        return
    if callback is not None and not await check_owner(update, callback):
        return
    await stale_button(update)
