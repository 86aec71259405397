"""/image, /video, /animate, the character picker and "use in a scene", end to end:
the real bot against the fake Bot API, the fake ComfyUI and a real PostgreSQL."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from bot.keyboards import SCENE, decode
from bot.render import CANCEL, PICK_TOGGLE, REROLL
from core.db import generations as gen_db
from core.jobs import orchestrator
from core.models import Character, ChatType, Generation, JobKind, Operation
from core.service import Actor, CharacterDraft
from tests.e2e.conftest import MakeBot
from tests.e2e.harness import BotHarness, Sent, button_data, buttons
from tests.engine import install_models
from tests.fakes.comfyui import FakeComfyUI
from tests.fakes.telegram import FakeChat, FakeUser, StoredMessage
from tests.sql_statements import DbStatements

RESULT_LABELS = [
    "🔁 Reroll",
    "🎲 Variations",
    "🔍 Upscale",
    "🎬 Animate",
    "📌 Use as reference",
    "📄 Original",
]


async def person(
    bot: BotHarness,
    name: str = "Alice",
    *characters: str,
    user: FakeUser | None = None,
    chat: FakeChat | None = None,
) -> tuple[FakeUser, FakeChat, list[Character]]:
    user = user or bot.fake.user(name)
    chat = chat or bot.fake.private_chat(user)
    kind = ChatType(chat.type)
    actor = Actor(user.id, chat.id, chat_type=kind, first_name=name, is_forum=chat.is_forum)
    await bot.service.seen(actor)
    made = [
        await bot.service.create_character(actor, CharacterDraft(name=c, appearance="silver hair"))
        for c in characters
    ]
    return user, chat, made


def is_result(message: StoredMessage) -> bool:
    return message.media_kind in ("photo", "video") and "seed" in (message.caption or "")


async def wait_result(bot: BotHarness, message: StoredMessage, timeout: float = 20) -> None:
    await bot.fake.wait_for(lambda: is_result(message), timeout, what="the result")


async def job_of(bot: BotHarness, chat: FakeChat, message: StoredMessage) -> Generation:
    """The job whose result is `message` (recorded just after the message is sent)."""
    for _ in range(100):
        job = await bot.service.job_for_message(chat.id, message.message_id)
        if job is not None and job.status.final:
            return job  # type: ignore[no-any-return]
        await asyncio.sleep(0.05)
    raise AssertionError(f"no finished job for message {message.message_id}")


async def jobs_of(bot: BotHarness, user: FakeUser) -> list[Generation]:
    assert bot.runtime is not None
    return await gen_db.list_for_user(bot.runtime.database.pool, user.id)


def no_not_modified(bot: BotHarness) -> None:
    errors = [c for c in bot.fake.calls if c.error and "not modified" in c.error]
    assert not errors, errors


async def test_image_with_a_named_character_lives_in_one_message(
    studio: BotHarness, fake_comfy: FakeComfyUI
) -> None:
    bot = studio
    fake_comfy.step_delay_s = 0.25  # about 5 s of sampling: progress and previews are seen
    bot.fake.enable_flood_model()
    alice, chat, (aiko,) = await person(bot, "Alice", "Aiko")

    sent = bot.send(chat, alice, "/image @Aiko reading in a rainy café --ar 3:2")
    progress = await bot.wait_reply(sent, contains="waiting in line")
    assert progress.reply_to is not None and progress.reply_to.message_id == sent.message_id
    ((label, data),) = buttons(progress)
    assert label == "✖️ Cancel" and decode(data) is not None
    assert decode(data).action is CANCEL  # type: ignore[union-attr]

    await bot.fake.wait_for(
        lambda: "step" in (progress.content or "") and "%" in (progress.content or ""),
        timeout=15,
        what="a running state",
    )
    await bot.fake.wait_for(
        lambda: any(v.method == "editMessageMedia" for v in progress.history),
        timeout=15,
        what="a preview",
    )
    await wait_result(bot, progress)

    assert not progress.deleted
    assert [label for label, _ in buttons(progress)] == RESULT_LABELS
    lines = (progress.caption or "").splitlines()
    assert lines[0] == "Aiko reading in a rainy café"
    assert lines[1] == "👤 Aiko"
    assert lines[2].startswith("🎲 seed ")
    running = [v for v in progress.history if "▰" in (v.caption or v.text or "")]
    assert running, [v.caption or v.text for v in progress.history]
    previews = [v for v in progress.history[:-1] if v.media_kind == "photo"]
    assert previews, "a preview image was shown while running"
    job = await job_of(bot, chat, progress)
    assert job.character_ids == [aiko.id]
    assert job.progress_message_id == progress.message_id == job.result_message_id
    assert job.params.get("width", 3) != job.params.get("height", 3)
    no_not_modified(bot)
    assert not [v for v in bot.fake.flood_violations if v.rule != "global"]
    for _, data in buttons(progress):
        assert len(data.encode()) <= 64


async def test_picker_when_no_character_is_named(studio: BotHarness) -> None:
    bot = studio
    alice, chat, (aiko, ren) = await person(bot, "Alice", "Aiko", "Ren")
    mallory = bot.fake.user("Mallory")

    sent = bot.send(chat, alice, "/image two friends at a summer festival")
    picker = await bot.wait_reply(sent, contains="Who is in this scene?")
    labels = [label for label, _ in buttons(picker)]
    assert labels == ["▫️ Aiko", "▫️ Ren", "Nobody, just the scene", "Cancel"]

    # somebody else may not pick
    query = bot.click(chat, mallory, picker, "Aiko")
    assert await bot.wait_toast(query) == "This is not your request."

    query = bot.click(chat, alice, picker, "Ren")
    await bot.wait_toast(query)
    await bot.fake.wait_for(lambda: "✅ Ren" in [lb for lb, _ in buttons(picker)], what="tick")
    query = bot.click(chat, alice, picker, "Aiko")
    await bot.wait_toast(query)
    await bot.fake.wait_for(lambda: "✅ Aiko" in [lb for lb, _ in buttons(picker)], what="tick")
    query = bot.click(chat, alice, picker, "Done")
    assert await bot.wait_toast(query) == "Started."

    # the picker became the progress message, then the result
    await wait_result(bot, picker)
    job = await job_of(bot, chat, picker)
    assert job.character_ids == [aiko.id, ren.id]
    assert job.request_message_id == sent.message_id
    assert "👤 Aiko, Ren" in (picker.caption or "")
    no_not_modified(bot)

    # a picker button pressed after the picker is gone: a toast, nothing else
    stale = bot.press(chat, alice, picker, PICK_TOGGLE.data(aiko.id, owner=alice.id))
    assert await bot.wait_toast(stale) == "This request has expired; send the command again."


def slow_dialog_starts(bot: BotHarness, monkeypatch: pytest.MonkeyPatch, delay_s: float) -> None:
    """Every dialog is stored `delay_s` late (a slow database, or another bot process)."""
    dialogs = bot.service.dialogs
    start = dialogs.start

    async def slow_start(*args: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(delay_s)
        return await start(*args, **kwargs)

    monkeypatch.setattr(dialogs, "start", slow_start)


async def test_a_picker_pressed_before_its_dialog_is_stored(
    studio: BotHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The picker's buttons can be pressed in the moment between the picker being sent and
    its dialog being stored: the press waits for the dialog instead of calling it expired."""
    bot = studio
    alice, chat, _ = await person(bot, "Alice", "Aiko", "Ren")
    slow_dialog_starts(bot, monkeypatch, 0.3)

    sent = bot.send(chat, alice, "/image two friends at a summer festival")
    # not waiting for the bot's handler to finish (to store the dialog)
    picker = await bot.wait_reply(sent, contains="Who is in this scene?", until_handled=False)
    query = bot.click(chat, alice, picker, "Aiko")  # at once: the dialog is not stored yet
    assert await bot.wait_toast(query) != "This request has expired; send the command again."
    await bot.fake.wait_for(lambda: "✅ Aiko" in [lb for lb, _ in buttons(picker)], what="tick")


async def test_picker_nobody_and_cancel(studio: BotHarness) -> None:
    bot = studio
    alice, chat, _ = await person(bot, "Alice", "Aiko")

    sent = bot.send(chat, alice, "/image an empty beach at dawn")
    picker = await bot.wait_reply(sent, contains="Who is in this scene?")
    bot.click(chat, alice, picker, "Cancel")
    await bot.wait_content(picker, "Scene cancelled.")
    assert not buttons(picker)

    sent = bot.send(chat, alice, "/image an empty beach at dawn")
    picker = await bot.wait_reply(sent, contains="Who is in this scene?")
    bot.click(chat, alice, picker, "Nobody")
    await wait_result(bot, picker)
    job = await job_of(bot, chat, picker)
    assert job.character_ids == []
    assert "👤" not in (picker.caption or "")


async def test_bad_options_and_usage_get_a_clear_message(studio: BotHarness) -> None:
    bot = studio
    alice, chat, _ = await person(bot, "Alice", "Aiko")

    sent = bot.send(chat, alice, "/image Aiko on a roof --bogus 3")
    answer = await bot.wait_reply(sent, contains="Unknown option --bogus")
    assert "--ar" in (answer.content or "")
    sent = bot.send(chat, alice, "/image Aiko on a roof --steps 5000")
    await bot.wait_reply(sent, contains="--steps")
    sent = bot.send(chat, alice, "/image Aiko waving --length 3s")
    await bot.wait_reply(sent, contains="only for videos")
    sent = bot.send(chat, alice, "/image")
    await bot.wait_reply(sent, contains="Describe the scene after the command")
    sent = bot.send(chat, alice, "/video")
    await bot.wait_reply(sent, contains="/video @Aiko waving")
    await bot.settle()
    assert await bot.service.my_queue(Actor(alice.id, chat.id)) == []
    assert not bot.fake.internal_errors


async def test_video_is_delivered_as_a_streaming_video(studio: BotHarness) -> None:
    bot = studio
    alice, chat, _ = await person(bot, "Alice", "Aiko")

    sent = bot.send(chat, alice, "/video Aiko waving on a beach --length 2s")
    progress = await bot.wait_reply(sent, contains="Video")
    result = await bot.wait_reply(sent, where=lambda m: m.media_kind == "video", timeout=40)
    await bot.fake.wait_for(lambda: progress.deleted, what="the progress message deleted")
    assert result.reply_to is not None and result.reply_to.message_id == sent.message_id
    call = bot.fake.calls_of("sendVideo")[-1]
    assert call.params["supports_streaming"] is True
    assert [label for label, _ in buttons(result)][:2] == ["🔁 Reroll", "🎲 Variations"]
    assert "👤 Aiko" in (result.caption or "")
    job = await job_of(bot, chat, result)
    assert job.kind is JobKind.VIDEO
    no_not_modified(bot)


async def test_animate_a_delivered_image(studio: BotHarness) -> None:
    bot = studio
    alice, chat, _ = await person(bot, "Alice", "Aiko")
    sent = bot.send(chat, alice, "/image Aiko smiling")
    picture = await bot.wait_reply(sent)
    await wait_result(bot, picture)

    usage = bot.send(chat, alice, "/animate")
    await bot.wait_reply(usage, contains="Reply /animate to one of my pictures")
    not_mine = bot.send(chat, alice, "/animate", reply_to=sent.message_id)
    await bot.wait_reply(not_mine, contains="is not one of my pictures")

    bad = bot.send(chat, alice, "/animate she waves --steps 0", reply_to=picture)
    await bot.wait_reply(bad, contains="--steps")
    request = bot.send(chat, alice, "/animate she turns and waves", reply_to=picture)
    progress = await bot.wait_reply(request, contains="Animation")
    assert progress.reply_to is not None and progress.reply_to.message_id == request.message_id
    video = await bot.wait_reply(request, where=lambda m: m.media_kind == "video", timeout=40)
    job = await job_of(bot, chat, video)
    parent = await job_of(bot, chat, picture)
    assert job.operation is Operation.ANIMATE and job.parent_id == parent.id
    assert job.prompt_typed == "she turns and waves"
    assert "Animation" in (video.caption or "")


async def test_use_in_a_scene_button_preselects_the_character(studio: BotHarness) -> None:
    bot = studio
    alice, chat, (aiko, _ren) = await person(bot, "Alice", "Aiko", "Ren")
    anchor = bot.send(chat, alice, "/start")
    card = await bot.wait_reply(anchor)

    bot.press(chat, alice, card, SCENE.data(aiko.id, owner=alice.id))
    question = await bot.wait_reply(anchor, contains="What happens in the scene with")
    assert "Aiko" in (question.content or "")

    answer = bot.send(chat, alice, "she reads on a rooftop at night")
    progress = await bot.wait_reply(answer, contains="waiting in line")
    await wait_result(bot, progress)
    job = await job_of(bot, chat, progress)
    assert job.character_ids == [aiko.id]
    assert job.kind is JobKind.IMAGE

    # the question is answered once: the next plain text is not a scene
    later = bot.send(chat, alice, "thanks!")
    await bot.settle()
    assert not [m for m in bot.replies_after(later) if "waiting in line" in (m.content or "")]


async def test_use_in_a_scene_in_a_group_takes_a_reply_and_video(
    studio: BotHarness,
) -> None:
    bot = studio
    alice = bot.fake.user("Alice")
    bob = bot.fake.user("Bob")
    group = bot.fake.group("Studio", members=[alice, bob])
    _, _, (mio, _ren) = await person(bot, "Alice", "Mio", "Ren", user=alice, chat=group)
    anchor = bot.send(group, alice, "/help@AnimeStudioTestBot")
    help_message = await bot.wait_reply(anchor)

    query = bot.press(group, bob, help_message, SCENE.data(mio.id, owner=alice.id))
    assert await bot.wait_toast(query) == "This is not your request."
    bot.press(group, alice, help_message, SCENE.data(mio.id, owner=alice.id))
    question = await bot.wait_reply(anchor, contains="What happens in the scene with")
    assert question.reply_markup is not None and question.reply_markup.get("force_reply")

    # plain chatter of the group is not the scene; a reply with /video is
    chatter = bot.send(group, alice, "brb")
    assert not chatter.visible
    request = bot.send(
        group, alice, "/video@AnimeStudioTestBot dancing in the rain", reply_to=question
    )
    await bot.wait_reply(request, contains="Video")
    [job] = await jobs_of(bot, alice)
    assert job.character_ids == [mio.id] and job.kind is JobKind.VIDEO
    assert job.prompt_typed == "dancing in the rain"


async def test_forum_topic_from_request_to_result(studio: BotHarness) -> None:
    bot = studio
    alice = bot.fake.user("Alice")
    forum = bot.fake.forum("Studio", members=[alice])
    topic = bot.fake.add_topic(forum, "Renders")
    _, _, (aiko,) = await person(bot, "Alice", "Aiko", user=alice, chat=forum)

    sent = bot.send(forum, alice, "/image@AnimeStudioTestBot Aiko in the rain", thread_id=topic)
    progress = await bot.wait_reply(sent, contains="waiting in line")
    assert progress.thread_id == topic
    await wait_result(bot, progress)
    assert progress.thread_id == topic
    data = button_data(progress, "Reroll")
    assert decode(data) is not None and decode(data).action is REROLL  # type: ignore[union-attr]

    # a reroll from the topic stays in the topic
    bot.press(forum, alice, progress, data)
    again = await bot.wait_reply(Sent(forum, alice, progress.message_id, True), contains="Reroll")
    assert again.thread_id == topic
    job = await job_of(bot, forum, progress)
    assert job.thread_id == topic and job.character_ids == [aiko.id]


async def test_failing_edits_never_block_the_job(
    studio: BotHarness, fake_comfy: FakeComfyUI
) -> None:
    bot = studio
    alice, chat, _ = await person(bot, "Alice", "Aiko")
    fake_comfy.step_delay_s = 0.1
    cant = "Bad Request: message can't be edited"
    for method in ("editMessageText", "editMessageCaption", "editMessageMedia"):
        bot.fake.fail_next(method, n=1000, kind=400, description=cant)

    sent = bot.send(chat, alice, "/image Aiko under cherry blossoms")
    progress = await bot.wait_reply(sent, contains="waiting in line")
    result = await bot.wait_reply(sent, where=is_result, timeout=20)

    assert result.message_id != progress.message_id
    assert result.reply_to is not None and result.reply_to.message_id == sent.message_id
    await bot.fake.wait_for(lambda: progress.deleted, what="the progress message deleted")
    job = await job_of(bot, chat, result)
    assert job.status.value == "done" and job.delivery_error is None
    assert [label for label, _ in buttons(result)] == RESULT_LABELS


async def test_an_image_request_reads_the_characters_and_the_chat_once(
    make_bot: MakeBot, fake_comfy: FakeComfyUI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The handler path of `/image` costs few round trips: the user's characters are read once
    (named ones and the picker's from the same list), the chat's settings come from the gate's
    `seen`, and a job queued into an empty queue is claimed by this process without a
    dispatch round or a queue-position round reading the queue."""
    # no timed round (dispatch's fallback every IDLE_WAKE_S, the queue positions' every
    # QUEUE_EVENTS_INTERVAL_S) while the test counts: on a loaded machine the request can
    # take a while
    monkeypatch.setattr(orchestrator, "IDLE_WAKE_S", 3600.0)
    monkeypatch.setattr(orchestrator, "QUEUE_EVENTS_INTERVAL_S", 3600.0)
    reading = [0]  # queue reads under way
    queue_head = gen_db.queue_head

    async def counted_queue_head(*args: Any, **kwargs: Any) -> Any:
        reading[0] += 1
        try:
            return await queue_head(*args, **kwargs)
        finally:
            reading[0] -= 1

    monkeypatch.setattr(gen_db, "queue_head", counted_queue_head)
    install_models(fake_comfy)
    bot = await make_bot()
    alice, chat, _ = await person(bot, "Alice")
    # nor a round left from start-up, due or under way (slow on a loaded machine)
    engine = bot.runtime.orchestrator

    def settled() -> bool:
        due = engine.dispatch_due or engine.queue_changed.is_set()
        return bool(engine.backends.usable()) and not due and not reading[0]

    for _ in range(2):  # (a round decided a moment ago reads just after)
        await bot.fake.wait_for(settled, what="a settled engine")
        await bot.settle()
    with DbStatements() as statements:
        sent = bot.send(chat, alice, "/image a lighthouse at dusk")
        await bot.wait_reply(sent)
        await bot.fake.wait_for(lambda: len(fake_comfy.prompt_posts) == 1, 10, what="the prompt")
    by_sql = statements.by_sql

    def count(prefix: str) -> int:
        return sum(n for sql, n in by_sql.items() if sql.startswith(prefix))

    assert count("SELECT * FROM characters WHERE owner_id") == 1, by_sql
    assert count("SELECT count(*) FROM characters") == 0, by_sql
    # Not by the handler (it has them from `seen`); the delivery, preparing the result's
    # caption while ComfyUI works, may read them once.
    assert count("SELECT * FROM chats") <= 1, by_sql
    assert count("SELECT * FROM characters WHERE id = ANY") == 0, by_sql  # none named
    assert count("SELECT g.id, g.chat_id, g.kind, g.workflow FROM") == 0, by_sql  # queue head
