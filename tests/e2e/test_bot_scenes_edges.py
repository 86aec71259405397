"""Edges of the character picker and of "use in a scene" (see test_bot_scenes.py for the main
paths): Done refused by core while the picker was open, a picker Telegram no longer lets the
bot edit (Cancel, Done), forged picker and scene buttons, a character that is not in the
picker, redraws that Telegram answers "not modified" or "message to edit not found", a toggle
stored while the redraw was on its way, a double tap on Done, a toggle racing Done, and two
answers racing for one "what happens in the scene?" question. The real bot against the fake
Bot API, the fake ComfyUI and a real PostgreSQL.

Races are made deterministic by holding one update inside a `service.dialogs` call until the
other update reached the same point (the bot handles updates concurrently, as in production).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from bot.keyboards import SCENE
from bot.render import PICK_TOGGLE
from core.dialogs import PickerDraft, SceneWait
from core.service import Actor, CharacterDraft
from tests.e2e.conftest import MakeBot
from tests.e2e.harness import BotHarness, Logs, Sent, buttons, handled
from tests.e2e.test_bot_scenes import job_of, jobs_of, person, wait_result
from tests.fakes.telegram import (
    ERR_CANT_EDIT,
    ERR_EDIT_NOT_FOUND,
    ERR_NOT_MODIFIED,
    FakeChat,
    FakeUser,
    StoredMessage,
)
from tests.webhook import free_port

STALE = "This button is no longer valid."
EXPIRED = "This request has expired; send the command again."
QUOTA_USED = "You have used today's quota. It resets at midnight (UTC)."
PICKER = "Who is in this scene?"
BARRIER_S = 5.0  # a held update gives up waiting after this (the test then fails)


# -- shared helpers (test_bot_results_edges.py and test_bot_misc_edges.py use them too; the
# `logs` fixture is in conftest.py) ---------------------------------------------------------------


def labels(message: StoredMessage) -> list[str]:
    return [label for label, _ in buttons(message)]


def failed_answers(bot: BotHarness) -> list[str | None]:
    """answerCallbackQuery calls Telegram refused (e.g. a second answer to one press)."""
    return [c.error for c in bot.fake.calls_of("answerCallbackQuery") if not c.ok]


def assert_no_crash(bot: BotHarness, logs: Logs) -> None:
    assert not logs.crashes(), logs.crashes()
    assert not failed_answers(bot), failed_answers(bot)
    shown = [v.text or v.caption or "" for m in bot.fake.bot_messages() for v in m.history]
    toasts = [str(a.get("text") or "") for a in bot.fake.callback_answers.values()]
    assert "[]" not in toasts  # PTB 22 with Defaults sends an empty text "" as "[]"
    for text in shown + toasts:
        assert "went wrong on my side" not in text and "Traceback" not in text, text
    assert not bot.fake.internal_errors


def dead_url() -> str:
    return f"http://127.0.0.1:{free_port()}"  # nobody listens: jobs stay queued


async def open_picker(
    bot: BotHarness, chat: FakeChat, user: FakeUser, text: str = "/image an empty beach at dawn"
) -> tuple[Sent, StoredMessage]:
    sent = bot.send(chat, user, text)
    return sent, await bot.wait_reply(sent, contains=PICKER)


async def picker_draft(bot: BotHarness, picker: StoredMessage) -> PickerDraft | None:
    found = await bot.service.dialogs.get(PickerDraft, picker.chat_id, picker.message_id)
    return None if found is None else found.state


# -- Done refused, pickers Telegram cannot edit --------------------------------------------------


async def test_done_refused_by_the_daily_quota_closes_the_picker_with_the_reason(
    make_bot: MakeBot, logs: Logs
) -> None:
    """The quota is used up while the picker is open: Done shows core's reason in the picker
    (no buttons left) and as the toast; nothing is queued and the draft is gone."""
    bot = await make_bot(comfyui_urls=dead_url(), daily_quota=1)
    alice, chat, (aiko,) = await person(bot, "Alice", "Aiko")
    _, picker = await open_picker(bot, chat, alice)
    named = bot.send(chat, alice, "/image Aiko waving")  # the day's one job, meanwhile
    await bot.wait_reply(named, contains="waiting in line")

    query = bot.click(chat, alice, picker, "Nobody")
    assert await bot.wait_toast(query) == QUOTA_USED
    await bot.wait_content(picker, QUOTA_USED)
    assert picker.content == QUOTA_USED and not buttons(picker)
    [job] = await jobs_of(bot, alice)
    assert job.character_ids == [aiko.id]
    assert await picker_draft(bot, picker) is None
    assert [line["reason"] for line in logs.of("scene refused")] == ["daily quota used"]
    assert_no_crash(bot, logs)


async def test_cancel_on_a_picker_telegram_no_longer_lets_edit(
    make_bot: MakeBot, logs: Logs
) -> None:
    """Cancel still ends the draft when the picker cannot be edited any more (too old); the
    press is answered and the refusal logged, Done afterwards says the request expired."""
    bot = await make_bot(comfyui_urls=dead_url())
    alice, chat, _ = await person(bot, "Alice", "Aiko")
    _, picker = await open_picker(bot, chat, alice)
    bot.fake.fail_next("editMessageText", kind=400, description=ERR_CANT_EDIT, chat_id=chat.id)

    query = bot.click(chat, alice, picker, "Cancel")
    assert await bot.wait_toast(query) == ""
    await bot.fake.wait_for(lambda: logs.of("picker not closed"), what="the log line")
    assert "can't be edited" in logs.of("picker not closed")[0]["error"]
    assert PICKER in (picker.content or "")  # Telegram refused the edit
    assert await picker_draft(bot, picker) is None

    again = bot.click(chat, alice, picker, "Nobody")
    assert await bot.wait_toast(again) == EXPIRED
    await handled()  # every update handled: nothing more comes
    assert await jobs_of(bot, alice) == []
    assert_no_crash(bot, logs)


async def test_done_on_a_picker_that_is_gone_posts_a_new_progress_message(
    studio: BotHarness, logs: Logs
) -> None:
    """Done when the picker cannot become the progress message (deleted meanwhile): the
    scene is queued all the same, with a new progress message replying to the request, and
    the result arrives there."""
    bot = studio
    alice, chat, _ = await person(bot, "Alice", "Aiko")
    sent, picker = await open_picker(bot, chat, alice)
    bot.fake.fail_next("editMessageText", kind=400, description=ERR_EDIT_NOT_FOUND, chat_id=chat.id)

    query = bot.click(chat, alice, picker, "Nobody")
    assert await bot.wait_toast(query) == "Started."
    progress = await bot.wait_reply(
        sent, where=lambda m: m.message_id > picker.message_id and "Image" in (m.content or "")
    )
    assert progress.reply_to is not None and progress.reply_to.message_id == sent.message_id
    await wait_result(bot, progress)
    job = await job_of(bot, chat, progress)
    assert job.progress_message_id == progress.message_id == job.result_message_id
    assert job.request_message_id == sent.message_id and job.character_ids == []
    assert len(await jobs_of(bot, alice)) == 1
    assert logs.of("message not reusable for progress")
    assert_no_crash(bot, logs)


# -- forged and stale buttons ------------------------------------------------------------------


async def test_forged_picker_and_scene_buttons_and_a_character_not_in_the_picker(
    make_bot: MakeBot, logs: Logs
) -> None:
    bot = await make_bot(comfyui_urls=dead_url())
    alice, chat, (aiko,) = await person(bot, "Alice", "Aiko")
    _, picker = await open_picker(bot, chat, alice)
    versions = len(picker.history)
    # a character made after the picker was shown (or one of another picker)
    mio = await bot.service.create_character(
        Actor(alice.id, chat.id), CharacterDraft(name="Mio", appearance="green eyes")
    )

    for data in (
        f"v1|sc_tog|{alice.id}|not-a-uuid",  # the picker's actions, arguments broken
        f"v1|sc_go|{alice.id}|extra",
        f"v1|sc_stop|{alice.id}|1|2",
        f"v1|scene|{alice.id}|{'A' * 21}!",  # "use in a scene" with a broken character id
        PICK_TOGGLE.data(mio.id, owner=alice.id),  # well formed, not in this picker
    ):
        query = bot.press(chat, alice, picker, data)
        assert await bot.wait_toast(query) == STALE, data

    assert len(picker.history) == versions  # never redrawn
    draft = await picker_draft(bot, picker)
    assert draft is not None and draft.selected == frozenset()
    assert len(logs.of("stale or forged button")) == 5
    # the picker still works
    bot.click(chat, alice, picker, "Aiko")
    await bot.fake.wait_for(lambda: "✅ Aiko" in labels(picker), what="the tick")
    assert (await picker_draft(bot, picker)).selected == {aiko.id}  # type: ignore[union-attr]
    assert await jobs_of(bot, alice) == []
    assert_no_crash(bot, logs)


# -- redraws Telegram refuses ------------------------------------------------------------------


async def test_a_toggle_whose_redraw_is_not_modified_keeps_the_selection(
    make_bot: MakeBot, logs: Logs
) -> None:
    """Telegram answers "message is not modified" (the picker already shows it, e.g. after
    a double tap handled by another process): the selection is stored, nothing breaks."""
    bot = await make_bot(comfyui_urls=dead_url())
    alice, chat, (aiko, ren) = await person(bot, "Alice", "Aiko", "Ren")
    _, picker = await open_picker(bot, chat, alice)
    bot.fake.fail_next(
        "editMessageReplyMarkup", kind=400, description=ERR_NOT_MODIFIED, chat_id=chat.id
    )

    query = bot.click(chat, alice, picker, "Aiko")
    assert await bot.wait_toast(query) == ""
    await bot.fake.wait_for(
        lambda: any(not c.ok for c in bot.fake.calls_of("editMessageReplyMarkup")),
        what="the refused redraw",
    )
    assert (await picker_draft(bot, picker)).selected == {aiko.id}  # type: ignore[union-attr]
    bot.click(chat, alice, picker, "Ren")
    await bot.fake.wait_for(lambda: {"✅ Aiko", "✅ Ren"} <= set(labels(picker)), what="both ticks")
    assert (await picker_draft(bot, picker)).selected == {aiko.id, ren.id}  # type: ignore[union-attr]
    assert_no_crash(bot, logs)


async def test_a_toggle_on_a_picker_deleted_meanwhile(make_bot: MakeBot, logs: Logs) -> None:
    """The picker was deleted while the press was on its way ("message to edit not found"):
    the press was answered, the refusal is logged as such, not as a failed update."""
    bot = await make_bot(comfyui_urls=dead_url())
    alice, chat, (aiko,) = await person(bot, "Alice", "Aiko")
    _, picker = await open_picker(bot, chat, alice)
    bot.fake.fail_next(
        "editMessageReplyMarkup", kind=400, description=ERR_EDIT_NOT_FOUND, chat_id=chat.id
    )

    query = bot.click(chat, alice, picker, "Aiko")
    assert await bot.wait_toast(query) == ""
    await bot.fake.wait_for(lambda: logs.of("picker not redrawn"), what="the log line")
    assert "not found" in logs.of("picker not redrawn")[0]["error"]
    await handled()  # every update handled: nothing more comes
    assert (await picker_draft(bot, picker)).selected == {aiko.id}  # type: ignore[union-attr]
    assert_no_crash(bot, logs)


async def test_a_toggle_stored_while_the_redraw_was_on_its_way_is_drawn_too(
    make_bot: MakeBot, monkeypatch: pytest.MonkeyPatch, logs: Logs
) -> None:
    """Another press (maybe on another bot process) stores a newer selection while this
    press's edit is on its way: the picker is drawn again, so it ends showing both."""
    bot = await make_bot(comfyui_urls=dead_url())
    alice, chat, (aiko, ren) = await person(bot, "Alice", "Aiko", "Ren")
    _, picker = await open_picker(bot, chat, alice)
    dialogs = bot.service.dialogs
    get = dialogs.get
    concurrent = [0]

    async def get_after_a_concurrent_toggle(kind: Any, chat_id: int, key: int, **kw: Any) -> Any:
        if kind is PickerDraft and "wait_s" not in kw and not concurrent[0]:  # the redraw's
            concurrent[0] += 1
            await dialogs.update(
                PickerDraft,
                chat_id,
                key,
                lambda d: d.model_copy(update={"selected": d.selected | {ren.id}}),
            )
        return await get(kind, chat_id, key, **kw)

    monkeypatch.setattr(dialogs, "get", get_after_a_concurrent_toggle)
    query = bot.click(chat, alice, picker, "Aiko")
    assert await bot.wait_toast(query) == ""
    await bot.fake.wait_for(lambda: {"✅ Aiko", "✅ Ren"} <= set(labels(picker)), what="both ticks")
    assert concurrent[0] == 1
    edits = [c for c in bot.fake.calls_of("editMessageReplyMarkup") if c.ok]
    assert len(edits) == 2  # Aiko alone, then both
    assert labels(picker)[:2] == ["✅ Aiko", "✅ Ren"] and "Done" in labels(picker)
    assert (await picker_draft(bot, picker)).selected == {aiko.id, ren.id}  # type: ignore[union-attr]
    assert_no_crash(bot, logs)


# -- presses racing each other ------------------------------------------------------------------


def hold_first_until_second(
    monkeypatch: pytest.MonkeyPatch, owner: Any, name: str, kind: type
) -> dict[str, int]:
    """`owner.<name>(kind, ...)`: the first call waits until a second call arrives, runs, then
    lets the second run. Each sees the store as if both presses landed at the same moment."""
    real = getattr(owner, name)
    second_in, first_done = asyncio.Event(), asyncio.Event()
    calls = {"n": 0}

    async def held(of: Any, *args: Any, **kwargs: Any) -> Any:
        if of is not kind:
            return await real(of, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 1:
            await asyncio.wait_for(second_in.wait(), BARRIER_S)
            try:
                return await real(of, *args, **kwargs)
            finally:
                first_done.set()
        if calls["n"] == 2:
            second_in.set()
            await asyncio.wait_for(first_done.wait(), BARRIER_S)
        return await real(of, *args, **kwargs)

    monkeypatch.setattr(owner, name, held)
    return calls


async def test_a_double_tap_on_done_queues_the_scene_once(
    make_bot: MakeBot, monkeypatch: pytest.MonkeyPatch, logs: Logs
) -> None:
    bot = await make_bot(comfyui_urls=dead_url())
    alice, chat, _ = await person(bot, "Alice", "Aiko")
    sent, picker = await open_picker(bot, chat, alice)
    calls = hold_first_until_second(monkeypatch, bot.service.dialogs, "take", PickerDraft)

    first = bot.click(chat, alice, picker, "Nobody")
    second = bot.click(chat, alice, picker, "Nobody")
    toasts = sorted([await bot.wait_toast(first), await bot.wait_toast(second)])
    assert toasts == sorted(["Started.", EXPIRED])
    assert calls["n"] == 2
    await bot.wait_content(picker, "waiting in line")
    [job] = await jobs_of(bot, alice)
    assert job.progress_message_id == picker.message_id
    assert job.request_message_id == sent.message_id
    assert logs.of("picker expired")
    assert_no_crash(bot, logs)


async def test_a_toggle_racing_done_is_told_the_picker_expired(
    make_bot: MakeBot, monkeypatch: pytest.MonkeyPatch, logs: Logs
) -> None:
    """A character tapped just as Done is handled: Done wins with the selection it read, the
    tap is answered "expired" and does not redraw the picker that became a progress message."""
    bot = await make_bot(comfyui_urls=dead_url())
    alice, chat, _ = await person(bot, "Alice", "Aiko")
    _, picker = await open_picker(bot, chat, alice)
    dialogs = bot.service.dialogs
    update, take = dialogs.update, dialogs.take
    done_took = asyncio.Event()

    async def update_after_done(kind: Any, *args: Any, **kwargs: Any) -> Any:
        if kind is PickerDraft:
            await asyncio.wait_for(done_took.wait(), BARRIER_S)
        return await update(kind, *args, **kwargs)

    async def take_then_signal(kind: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return await take(kind, *args, **kwargs)
        finally:
            if kind is PickerDraft:
                done_took.set()

    monkeypatch.setattr(dialogs, "update", update_after_done)
    monkeypatch.setattr(dialogs, "take", take_then_signal)
    tap = bot.click(chat, alice, picker, "Aiko")
    done = bot.click(chat, alice, picker, "Nobody")
    assert await bot.wait_toast(done) == "Started."
    assert await bot.wait_toast(tap) == EXPIRED
    await bot.wait_content(picker, "waiting in line")
    [job] = await jobs_of(bot, alice)
    assert job.character_ids == []
    assert not [c for c in bot.fake.calls_of("editMessageReplyMarkup")]
    assert_no_crash(bot, logs)


async def test_two_answers_racing_for_one_scene_question_start_one_scene(
    make_bot: MakeBot, monkeypatch: pytest.MonkeyPatch, logs: Logs
) -> None:
    """Two messages answer "what happens in the scene with Aiko?" at the same moment: the
    question is answered once (one scene), the other message is left alone."""
    bot = await make_bot(comfyui_urls=dead_url())
    alice, chat, (aiko,) = await person(bot, "Alice", "Aiko")
    anchor = bot.send(chat, alice, "/start")
    card = await bot.wait_reply(anchor, contains="Anime Studio")
    bot.press(chat, alice, card, SCENE.data(aiko.id, owner=alice.id))
    await bot.wait_reply(anchor, contains="What happens in the scene with")
    calls = hold_first_until_second(monkeypatch, bot.service.dialogs, "take", SceneWait)

    one = bot.send(chat, alice, "she reads on a rooftop")
    two = bot.send(chat, alice, "she sings in the rain")
    progress = await bot.wait_reply(one, contains="waiting in line")
    await bot.settle(0.3)
    assert calls["n"] == 2
    assert [m.message_id for m in bot.replies_after(one)] == [progress.message_id]
    [job] = await jobs_of(bot, alice)
    assert job.character_ids == [aiko.id]
    assert job.prompt_typed in ("she reads on a rooftop", "she sings in the rain")
    answered = one if job.prompt_typed == "she reads on a rooftop" else two
    assert progress.reply_to is not None and progress.reply_to.message_id == answered.message_id
    assert (await bot.service.dialogs.of_user(chat.id, alice.id)).scene_wait is None
    assert_no_crash(bot, logs)


async def test_the_picker_of_a_video_refused_when_done(make_bot: MakeBot, logs: Logs) -> None:
    """The same refusal for a /video picker (the soundtrack check runs first, then core)."""
    bot = await make_bot(comfyui_urls=dead_url(), max_queued_per_user=1)
    alice, chat, _ = await person(bot, "Alice", "Aiko")
    _, picker = await open_picker(bot, chat, alice, "/video two friends waving --length 2s")
    await bot.wait_reply(bot.send(chat, alice, "/image Aiko waving"), contains="waiting in line")

    query = bot.click(chat, alice, picker, "Nobody")
    refusal = "You already have 1 jobs waiting or running; wait for one to finish or /cancel one."
    assert await bot.wait_toast(query) == refusal
    await bot.wait_content(picker, refusal)
    assert not buttons(picker)
    assert len(await jobs_of(bot, alice)) == 1
    assert_no_crash(bot, logs)
