"""bot.dialogs.DialogCache: which updates need the user's dialogs read (no query otherwise)."""

from __future__ import annotations

from typing import Any

from telegram import Update

from bot import keyboards as kb
from bot.dialogs import DialogCache, command_of
from core.dialogs import CharacterDialog, CharacterStep, Dialog, UserDialogs

USER = {"id": 7, "is_bot": False, "first_name": "Alice"}
CHAT = {"id": 7, "type": "private"}
BUTTON = kb.action("tdc_btn")
OTHER_BUTTON = kb.action("tdc_other")


def message_update(update_id: int = 1, **message: Any) -> Update:
    body = {"message_id": 3, "date": 0, "chat": CHAT, "from": USER, **message}
    return Update.de_json({"update_id": update_id, "message": body}, None)


def command(text: str, **extra: Any) -> Update:
    name = text.split()[0]
    entities = [{"type": "bot_command", "offset": 0, "length": len(name)}]
    return message_update(text=text, entities=entities, **extra)


def button(data: str) -> Update:
    query = {"id": "q", "from": USER, "chat_instance": "c", "data": data}
    return Update.de_json({"update_id": 2, "callback_query": query}, None)


def test_command_of_text_and_caption() -> None:
    assert command_of(command("/Skip@AnimeStudioTestBot now").message) == "skip"  # type: ignore[arg-type]
    caption = message_update(
        caption="/video a walk",
        caption_entities=[{"type": "bot_command", "offset": 0, "length": 6}],
        voice={"file_id": "v", "file_unique_id": "u", "duration": 1},
    )
    assert command_of(caption.message) == "video"  # type: ignore[arg-type]
    assert command_of(message_update(text="just text").message) is None  # type: ignore[arg-type]


def test_only_updates_that_can_be_in_a_dialog_are_loaded_for() -> None:
    cache = DialogCache()
    cache.want(commands=("skip", "video"), buttons=(BUTTON,))
    assert cache.wants(message_update(text="Aiko"))  # any plain message may answer a question
    assert cache.wants(
        message_update(photo=[{"file_id": "p", "file_unique_id": "u", "width": 9, "height": 9}])
    )
    assert cache.wants(command("/skip"))
    assert not cache.wants(command("/start"))
    assert not cache.wants(command("/characters"))
    assert cache.wants(button(BUTTON.data(owner=7)))
    assert not cache.wants(button(OTHER_BUTTON.data(owner=7)))
    assert not cache.wants(button("forged"))
    assert not cache.wants(Update.de_json({"update_id": 4}, None))


def test_entries_live_for_one_update() -> None:
    cache = DialogCache()
    update = message_update(update_id=11, text="x")
    assert cache.of(update) == UserDialogs()
    dialog = Dialog(7, 7, 7, CharacterDialog(step=CharacterStep.NAME), 1, None)  # type: ignore[arg-type]
    cache.put(update, UserDialogs(character=dialog))
    assert cache.of(update).character is dialog
    assert cache.of(message_update(update_id=12, text="x")).character is None
    cache.drop(update)
    assert cache.of(update) == UserDialogs()
