"""bot.dialogs.takes: which updates the character dialog takes (its own question's answers, its
commands, its own message's buttons), and how a dialog stored without `question_id` behaves."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

import pytest
from telegram import Update

from bot.dialogs import COMMAND, answers_question, takes
from core.dialogs import AudioWait, CharacterDialog, CharacterStep, Dialog, SceneWait, UserDialogs

USER = {"id": 7, "is_bot": False, "first_name": "Alice"}
BOT = {"id": 99, "is_bot": True, "first_name": "Studio", "username": "AnimeStudioTestBot"}
PRIVATE = {"id": 7, "type": "private"}
GROUP = {"id": -100, "type": "supergroup", "title": "Studio"}
QUESTION, SCENE_QUESTION, CHOOSER, OTHER = 10, 20, 30, 40
WHEN = datetime(2025, 1, 1, tzinfo=UTC)


def dialog(question: int | None = QUESTION) -> Dialog[CharacterDialog]:
    state = CharacterDialog(step=CharacterStep.NAME, question_id=question)
    return Dialog(7, 7, 7, state, 1, WHEN)


WAITS = UserDialogs(
    scene_wait=Dialog(
        7, 7, 7, SceneWait(character_id=uuid4(), prompt_message_id=SCENE_QUESTION), 1, WHEN
    ),
    audio_wait=Dialog(7, 7, 7, AudioWait(chooser_message_id=CHOOSER), 1, WHEN),
)


def message(
    chat: dict[str, Any], text: str = "Aiko", *, reply_to: int | None = None, by_bot: bool = True
) -> Update:
    body: dict[str, Any] = {"message_id": 50, "date": 0, "chat": chat, "from": USER, "text": text}
    if text.startswith("/"):
        body["entities"] = [{"type": "bot_command", "offset": 0, "length": len(text.split()[0])}]
    if reply_to is not None:
        sender = BOT if by_bot else USER
        body["reply_to_message"] = {"message_id": reply_to, "date": 0, "chat": chat, "from": sender}
    return Update.de_json({"update_id": 1, "message": body}, None)


def button(under: int) -> Update:
    shown = {"message_id": under, "date": 0, "chat": PRIVATE, "from": BOT, "text": "Create?"}
    query = {"id": "q", "from": USER, "chat_instance": "c", "data": "x", "message": shown}
    return Update.de_json({"update_id": 2, "callback_query": query}, None)


def test_only_the_buttons_of_the_dialogs_message() -> None:
    assert takes(button(QUESTION), dialog(), UserDialogs())
    assert not takes(button(OTHER), dialog(), UserDialogs())  # an abandoned draft's message
    assert takes(button(OTHER), dialog(None), UserDialogs())  # stored without its message


@pytest.mark.parametrize(
    ("chat", "reply_to", "taken"),
    [
        (PRIVATE, None, True),  # people do not always use "reply"
        (PRIVATE, QUESTION, True),
        (PRIVATE, OTHER, True),  # a message of the bot that asks nothing
        (PRIVATE, SCENE_QUESTION, False),  # the scene wait's answer
        (PRIVATE, CHOOSER, False),  # the audio wait's
        (GROUP, None, False),
        (GROUP, QUESTION, True),
        (GROUP, OTHER, False),  # e.g. "Thanks" to the /help message
        (GROUP, SCENE_QUESTION, False),
    ],
)
def test_messages_answer_the_dialogs_question(
    chat: dict[str, Any], reply_to: int | None, taken: bool
) -> None:
    assert takes(message(chat, reply_to=reply_to), dialog(), WAITS) is taken


def test_commands_are_taken_unless_they_answer_another_question() -> None:
    for chat in (PRIVATE, GROUP):
        assert takes(message(chat, "/skip"), dialog(), WAITS)
        assert takes(message(chat, "/cancel", reply_to=OTHER), dialog(), WAITS)
        assert not takes(message(chat, "/video a walk", reply_to=SCENE_QUESTION), dialog(), WAITS)


def test_a_dialog_stored_without_its_question() -> None:
    old = CharacterDialog.model_validate({"step": "name", "name": "", "style": "anime"})
    assert old.question_id is None
    legacy = dialog(None)
    assert takes(message(PRIVATE), legacy, WAITS)
    assert not takes(message(PRIVATE, reply_to=SCENE_QUESTION), legacy, WAITS)
    assert takes(message(GROUP, reply_to=OTHER), legacy, WAITS)  # a reply to the bot
    assert not takes(message(GROUP, reply_to=OTHER, by_bot=False), legacy, WAITS)
    assert not takes(message(GROUP), legacy, WAITS)
    assert not takes(message(GROUP, reply_to=SCENE_QUESTION), legacy, WAITS)


def test_answers_question_as_the_waits_use_it() -> None:
    assert answers_question(message(PRIVATE, reply_to=SCENE_QUESTION), QUESTION)
    assert not answers_question(message(PRIVATE, reply_to=SCENE_QUESTION), QUESTION, others=[20])
    assert answers_question(message(PRIVATE, reply_to=SCENE_QUESTION), SCENE_QUESTION, others=[20])
    assert answers_question(message(GROUP, reply_to=QUESTION), QUESTION)
    assert not answers_question(message(GROUP), QUESTION)
    assert not answers_question(button(QUESTION), QUESTION)


def test_the_command_filter_sees_captions() -> None:
    voice = {"file_id": "v", "file_unique_id": "u", "duration": 1}
    body = {
        "message_id": 3,
        "date": 0,
        "chat": PRIVATE,
        "from": USER,
        "voice": voice,
        "caption": "/video a walk",
        "caption_entities": [{"type": "bot_command", "offset": 0, "length": 6}],
    }
    captioned = Update.de_json({"update_id": 3, "message": body}, None)
    assert COMMAND.check_update(captioned)
    assert COMMAND.check_update(message(PRIVATE, "/skip"))
    assert not COMMAND.check_update(message(PRIVATE, "Aiko"))
