"""Dialog state for the handlers, kept in PostgreSQL (`core.dialogs`): consecutive updates of one
dialog may be handled by different bot processes, and a restart loses nothing.

- `load` runs before the handlers (group -1, after the gate). For an update that can be part of
  a per-user dialog it reads that user's dialogs in that chat with one query and caches them for
  this update only, so that synchronous filters and `check_update`s see them
  (`DialogCache.of(update)`); `forget` (the last group) drops the entry. Plain messages are
  always loaded for; commands and buttons only when a handler module declared that it needs
  them (`DialogCache.want`). Writes go to PostgreSQL at once; nothing is kept in memory.
- `StoredConversation` stands in for PTB's ConversationHandler (per chat and user): the step
  comes from the stored `CharacterDialog`. It takes only the updates meant for the dialog
  (`takes`): the answers to its question (`asked` records the message that asks, or carries
  the buttons) and its commands, not a reply to another question of the bot. Before a step
  runs, the dialog is read again and its expiry pushed (and the update kept as its timeout
  notice); a step that loses the compare-and-set to a concurrent update (`DialogChanged`) runs
  again on the new state.
- `of_message` reads the dialog of a message whose button was pressed (a picker, a chooser).
  Such a dialog is stored just after its message is sent, so a press on a message shown
  moments ago may arrive first (another bot process, a slow database): it is looked for during
  STORE_GRACE_S before the button is called expired.
- `Sweeper` (every bot process) deletes expired dialogs every SWEEP_INTERVAL_S and answers the
  notice of each (e.g. "the dialog timed out"); the delete gives each row to one process only.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from telegram import Bot, Message, MessageEntity, Update
from telegram.error import TelegramError
from telegram.ext import Application, BaseHandler, filters

from bot import keyboards as kb
from bot.context import Context, language_of, reply, service_of, stale_button
from bot.texts import t
from core.dialogs import CharacterDialog, Dialog, DialogState, UserDialogs
from core.logs import get_logger
from core.service import StudioService

log = get_logger(__name__)

App = Application[Any, Any, Any, Any, Any, Any]
Handlers = Sequence[BaseHandler[Update, Any, Any]]

CACHE_KEY = "dialogs.cache"
CACHE_MAX = 4096  # updates in flight at most (a safety net: `forget` drops each entry)
SWEEP_INTERVAL_S = 30.0
SWEEP_BATCH = 100
STEP_ATTEMPTS = 3
_CURRENT = "_animebot_dialog"
_NONE = UserDialogs()
# A button pressed within FRESH_MESSAGE_S of its message being shown may arrive before the
# message's dialog is stored; it is looked for during STORE_GRACE_S before "expired".
FRESH_MESSAGE_S = 10.0
STORE_GRACE_S = 1.0

S = TypeVar("S", bound=DialogState)


class DialogChanged(Exception):
    """Another update changed or ended the dialog first: this update is handled again."""


def command_of(message: Message) -> str | None:
    """The leading /command of a text or caption (lower case, without @bot)."""
    for entity in message.entities or ():
        if entity.type == MessageEntity.BOT_COMMAND and entity.offset == 0:
            return message.parse_entity(entity)[1:].partition("@")[0].lower()
    for entity in message.caption_entities or ():
        if entity.type == MessageEntity.BOT_COMMAND and entity.offset == 0:
            return message.parse_caption_entity(entity)[1:].partition("@")[0].lower()
    return None


class DialogCache:
    """The per-user dialogs read for each update being handled (by update id)."""

    def __init__(self) -> None:
        self.commands: set[str] = set()
        self.buttons: set[str] = set()
        self._entries: OrderedDict[int, UserDialogs] = OrderedDict()

    def want(self, *, commands: Iterable[str] = (), buttons: Iterable[kb.Action] = ()) -> None:
        """Declare commands and buttons whose handlers read the user's dialogs."""
        self.commands.update(commands)
        self.buttons.update(action.name for action in buttons)

    def wants(self, update: Update) -> bool:
        """Can this update be part of a per-user dialog? (Cheap; no query.)"""
        if update.callback_query is not None:
            callback = kb.decode(update.callback_query.data)
            return callback is not None and callback.name in self.buttons
        if update.message is None:
            return False
        command = command_of(update.message)
        return command is None or command in self.commands

    def put(self, update: Update, dialogs: UserDialogs) -> None:
        self._entries[update.update_id] = dialogs
        while len(self._entries) > CACHE_MAX:
            self._entries.popitem(last=False)

    def of(self, update: Update) -> UserDialogs:
        return self._entries.get(update.update_id, _NONE)

    def drop(self, update: Update) -> None:
        self._entries.pop(update.update_id, None)


def answers_question(update: Update, question_id: int, *, others: Collection[int] = ()) -> bool:
    """Does this message answer the bot's question `question_id`? A reply to it does. In a
    private chat any other message of the user does too (people do not always use "reply"),
    except a reply to one of `others`: questions of the user's other dialogs, whose answer it
    is. In a group only a reply to the question (privacy mode lets it through; a reply to
    another message of the bot is no answer)."""
    message = update.message
    if message is None:
        return False
    replied = message.reply_to_message
    if replied is not None and replied.message_id == question_id:
        return True
    if message.chat.type == "private":
        return replied is None or replied.message_id not in others
    return False


def questions_of(dialogs: UserDialogs) -> set[int]:
    """The messages of the bot that the scene and audio waits among `dialogs` await a reply to."""
    asked: set[int] = set()
    if dialogs.scene_wait is not None:
        asked.add(dialogs.scene_wait.state.prompt_message_id)
    if dialogs.audio_wait is not None:
        asked.add(dialogs.audio_wait.state.chooser_message_id)
    return asked


class _Command(filters.MessageFilter):
    """A message starting with a /command: in its text or (unlike filters.COMMAND) its caption,
    e.g. an audio captioned "/video ..."."""

    def filter(self, message: Message) -> bool:
        return command_of(message) is not None


COMMAND = _Command(name="dialogs.COMMAND")


class UpdateTest(filters.UpdateFilter):
    """A PTB filter from a test of the update (e.g. on the dialogs `load` read for it)."""

    def __init__(self, name: str, test: Callable[[Update], bool]) -> None:
        super().__init__(name=name)
        self.test = test

    def filter(self, update: Update) -> bool:
        return self.test(update)


async def of_message(context: Context, kind: type[S], message: Message) -> Dialog[S] | None:
    """The dialog tied to `message` (a picker, a chooser) whose button was pressed. For a
    message sent or edited moments ago, a dialog not stored yet is waited for a little: the
    handler that sent the message stores it right after, maybe in another bot process."""
    shown = message.edit_date or message.date
    age_s = (datetime.now(UTC) - shown).total_seconds()
    wait_s = STORE_GRACE_S if age_s < FRESH_MESSAGE_S else 0.0
    return await service_of(context).dialogs.get(
        kind, message.chat_id, message.message_id, wait_s=wait_s
    )


def cache_of(app: App) -> DialogCache:
    cache = app.bot_data.get(CACHE_KEY)
    if not isinstance(cache, DialogCache):
        cache = app.bot_data[CACHE_KEY] = DialogCache()
    return cache


async def read(update: Update, context: Context) -> UserDialogs | None:
    """The user's dialogs in this chat (one query), for an update a dialog can take; None for
    the others. The gate (bot/gate.py) calls it and puts the result in the cache."""
    cache = cache_of(context.application)
    chat, user = update.effective_chat, update.effective_user
    if chat is None or user is None or not cache.wants(update):
        return None
    return await service_of(context).dialogs.of_user(chat.id, user.id)


async def forget(update: object, context: Context) -> None:
    """The last group: this update is handled."""
    if isinstance(update, Update):
        cache_of(context.application).drop(update)


# -- the character dialog -------------------------------------------------------------------


def notice(update: Update, text_key: str) -> dict[str, Any]:
    """What the sweeper answers when the dialog expires: `text_key`, as a reply to `update`."""
    return {"update": update.to_dict(), "text": text_key}


def _chat_user(update: Update) -> tuple[int, int]:
    chat, user = update.effective_chat, update.effective_user
    if chat is None or user is None:
        raise ValueError("update without a chat or user")
    return chat.id, user.id


async def begin(
    update: Update, context: Context, state: CharacterDialog, *, ttl_s: float, notice_key: str
) -> None:
    """Start (or restart) the user's character dialog in this chat; it becomes the `current`
    one of this update (its first question is then recorded with `asked`)."""
    chat_id, user_id = _chat_user(update)
    dialog = await service_of(context).dialogs.start(
        chat_id, user_id, user_id, state, ttl_s=ttl_s, notice=notice(update, notice_key)
    )
    setattr(context, _CURRENT, dialog)


async def end(update: Update, context: Context) -> None:
    """End the user's character dialog in this chat, whatever its step."""
    chat_id, user_id = _chat_user(update)
    await service_of(context).dialogs.discard(CharacterDialog, chat_id, user_id)


def current(context: Context) -> Dialog[CharacterDialog]:
    """The dialog of the step being handled (read just before the step ran)."""
    dialog = getattr(context, _CURRENT, None)
    if not isinstance(dialog, Dialog):
        raise RuntimeError("no dialog for this update")
    return dialog


async def advance(
    context: Context, state: CharacterDialog, *, attachment: bytes | bool | None = False
) -> None:
    """Store the dialog's next state; DialogChanged when another update changed it first."""
    saved = await service_of(context).dialogs.save(current(context), state, attachment=attachment)
    if saved is None:
        raise DialogChanged
    setattr(context, _CURRENT, saved)


async def asked(context: Context, question: Message) -> None:
    """Record `question`, just sent, as the message whose reply answers the current dialog (or
    whose buttons it takes). Stored after the message is sent (its id is known only then), so
    an answer arriving in between finds no question yet (see `takes`). When another update
    changed the dialog meanwhile, that update asked its own question: nothing is recorded."""
    dialog = current(context)
    state = dialog.state.model_copy(update={"question_id": question.message_id})
    saved = await service_of(context).dialogs.save(dialog, state)
    if saved is None:
        log.info("dialog changed before its question was recorded", message_id=question.message_id)
        return
    setattr(context, _CURRENT, saved)


def takes(update: Update, dialog: Dialog[CharacterDialog], dialogs: UserDialogs) -> bool:
    """Is this update for the character dialog (and not for another question of the bot)?

    - A button: only under the dialog's question message (not under an abandoned draft's).
    - A message replying to the question of the user's scene or audio wait: never (it is that
      wait's answer).
    - A /command (its step's /skip, /cancel; text only, see COMMAND): wherever it is sent.
    - Any other message when it answers the dialog's question (`answers_question`, as the
      scene and audio waits): in a private chat any message, in a group a reply to it.
    A question not recorded (None: being sent right now, or a dialog stored by an older
    version) takes a button of any message, and in a group a reply to any bot message."""
    question = dialog.state.question_id
    query = update.callback_query
    if query is not None:
        shown = query.message
        return question is None or (shown is not None and shown.message_id == question)
    message = update.message
    if message is None:
        return False
    others = questions_of(dialogs) - {question}
    replied = message.reply_to_message
    if replied is not None and replied.message_id in others:
        return False
    if command_of(message) is not None:
        return True
    if question is not None:
        return answers_question(update, question)
    if message.chat.type == "private":
        return True
    return replied is not None and replied.from_user is not None and replied.from_user.is_bot


async def finish(context: Context) -> Dialog[CharacterDialog]:
    """End the dialog and return it with its attachment; DialogChanged when another update
    changed or ended it first."""
    dialog = current(context)
    taken = await service_of(context).dialogs.take(
        CharacterDialog, dialog.chat_id, dialog.key, version=dialog.version
    )
    if taken is None:
        raise DialogChanged
    return taken


async def _not_called(update: Update, context: Context) -> None:
    raise RuntimeError("StoredConversation runs the handlers of its steps")


class StoredConversation(BaseHandler[Update, Context, None]):
    """The character dialog's handler: like a ConversationHandler per chat and user, whose
    entry points are ordinary handlers registered before it (they call `begin`)."""

    def __init__(
        self,
        cache: DialogCache,
        steps: Mapping[str, Handlers],
        fallbacks: Handlers,
        *,
        ttl_s: float,
        notice_key: str,
    ) -> None:
        super().__init__(_not_called)
        self.cache = cache
        self.steps = steps
        self.fallbacks = fallbacks
        self.ttl_s = ttl_s
        self.notice_key = notice_key

    def _match(
        self, step: str, update: Update
    ) -> tuple[BaseHandler[Update, Any, Any], object] | None:
        """The first handler of the step (then of the fallbacks) that takes the update."""
        for handler in (*self.steps.get(step, ()), *self.fallbacks):
            check = handler.check_update(update)
            if check is not None and check is not False:
                return handler, check
        return None

    def _take(
        self, update: Update, dialog: Dialog[CharacterDialog] | None
    ) -> tuple[BaseHandler[Update, Any, Any], object] | None:
        """The handler of the dialog's step for the update, if the update is for the dialog."""
        if dialog is None or not takes(update, dialog, self.cache.of(update)):
            return None
        return self._match(dialog.state.step, update)

    def check_update(self, update: object) -> object | None:
        if not isinstance(update, Update):
            return None
        return self._take(update, self.cache.of(update).character)

    async def _fresh(self, update: Update, context: Context) -> Dialog[CharacterDialog] | None:
        """The stored dialog now, its expiry pushed and this update kept for its notice."""
        chat_id, user_id = _chat_user(update)
        return await service_of(context).dialogs.touch(
            CharacterDialog,
            chat_id,
            user_id,
            ttl_s=self.ttl_s,
            notice=notice(update, self.notice_key),
        )

    async def handle_update(
        self,
        update: Update,
        application: Application[Any, Context, Any, Any, Any, Any],
        check_result: object,
        context: Context,
    ) -> None:
        for attempt in range(STEP_ATTEMPTS):
            dialog = await self._fresh(update, context)
            matched = self._take(update, dialog)
            if dialog is None or matched is None:
                log.info("dialog moved on before this update", update_id=update.update_id)
                if update.callback_query is not None:
                    await stale_button(update)  # e.g. Create tapped twice
                return
            handler, check = matched
            setattr(context, _CURRENT, dialog)
            try:
                await handler.handle_update(update, application, check, context)
                return
            except DialogChanged:
                log.info("dialog changed meanwhile, handling again", attempt=attempt + 1)
        log.warning("dialog kept changing, update dropped", update_id=update.update_id)


# -- expiry ---------------------------------------------------------------------------------------


async def _tell(bot: Bot, payload: dict[str, Any]) -> None:
    """Send an expired dialog's notice (a text key, answering the update it keeps)."""
    try:
        update = Update.de_json(payload["update"], bot)
        key = str(payload["text"])
    except (KeyError, TypeError, ValueError) as error:
        log.warning("unreadable dialog notice", error=str(error))
        return
    if update.effective_message is None:
        return
    try:
        await reply(update, t(key, language_of(update)))
    except TelegramError as error:
        log.info("dialog notice not sent", error=str(error))


async def sweep(app: App) -> int:
    """Remove the expired dialogs and send their notices; how many were removed."""
    removed = 0
    while True:
        service: StudioService = app.bot_data["service"]
        expired = await service.dialogs.sweep(limit=SWEEP_BATCH)
        for item in expired:
            if item.notice is not None:
                await _tell(app.bot, item.notice)
        removed += len(expired)
        if expired:
            log.info("expired dialogs removed", count=len(expired))
        if len(expired) < SWEEP_BATCH:
            return removed


class Sweeper:
    """Runs `sweep` every SWEEP_INTERVAL_S until stopped."""

    def __init__(self, app: App) -> None:
        self.app = app
        self._task: asyncio.Task[None] | None = None

    def start(self) -> Sweeper:
        self._task = asyncio.create_task(self._run(), name="dialog sweeper")
        return self

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_INTERVAL_S)
            try:
                await sweep(self.app)
            except Exception as error:  # the store is down, ...: try again next time
                log.warning("dialog sweep failed", error=str(error))
