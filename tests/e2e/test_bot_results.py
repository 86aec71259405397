"""Buttons under results and progress messages, end to end: reroll, variations, upscale,
animate, use as reference, original, cancel; other users and forged data get a toast."""

from __future__ import annotations

import uuid

from bot.keyboards import decode
from bot.render import CANCEL, REROLL
from core.models import ChatType, JobKind, Operation
from core.service import Actor
from core.states import JobState
from tests.e2e.harness import BotHarness, Sent, button_data, buttons
from tests.e2e.test_bot_scenes import (
    RESULT_LABELS,
    is_result,
    job_of,
    jobs_of,
    no_not_modified,
    person,
    wait_result,
)
from tests.fakes.comfyui import FakeComfyUI
from tests.fakes.telegram import FakeChat, FakeUser, StoredMessage


async def first_result(
    bot: BotHarness, chat: FakeChat, user: FakeUser, text: str = "/image Aiko on a rooftop"
) -> tuple[Sent, StoredMessage]:
    sent = bot.send(chat, user, text)
    message = await bot.wait_reply(sent)
    await wait_result(bot, message)
    await job_of(bot, chat, message)
    return sent, message


async def new_progress(bot: BotHarness, result: StoredMessage, contains: str) -> StoredMessage:
    chat = result.chat
    return await bot.wait_reply(
        Sent(chat, result.sender, result.message_id, True),
        contains=contains,
        where=lambda m: m.reply_to is not None and m.reply_to.message_id == result.message_id,
    )


async def test_reroll_and_variations_make_new_jobs_with_new_seeds(studio: BotHarness) -> None:
    bot = studio
    alice, chat, (aiko,) = await person(bot, "Alice", "Aiko")
    _, result = await first_result(bot, chat, alice)
    parent = await job_of(bot, chat, result)

    query = bot.click(chat, alice, result, "Reroll")
    assert await bot.wait_toast(query) == "Started."
    progress = await new_progress(bot, result, "Reroll")
    await wait_result(bot, progress)
    reroll = await job_of(bot, chat, progress)
    assert reroll.operation is Operation.REROLL and reroll.parent_id == parent.id
    assert reroll.seed != parent.seed and reroll.character_ids == [aiko.id]
    assert reroll.prompt_typed == parent.prompt_typed
    assert "🎲 seed" in (progress.caption or "") and "Reroll" in (progress.caption or "")
    assert [label for label, _ in buttons(progress)] == RESULT_LABELS

    query = bot.click(chat, alice, result, "Variations")
    await bot.wait_toast(query)
    variation_progress = await new_progress(bot, result, "Variation")
    await wait_result(bot, variation_progress)
    variation = await job_of(bot, chat, variation_progress)
    assert variation.operation is Operation.VARIATION and variation.seed not in (
        parent.seed,
        reroll.seed,
    )
    no_not_modified(bot)


async def test_upscale_and_animate_buttons(studio: BotHarness) -> None:
    bot = studio
    alice, chat, _ = await person(bot, "Alice", "Aiko")
    _, result = await first_result(bot, chat, alice)
    parent = await job_of(bot, chat, result)

    bot.click(chat, alice, result, "Upscale")
    progress = await new_progress(bot, result, "Upscale")
    await wait_result(bot, progress)
    upscaled = await job_of(bot, chat, progress)
    assert upscaled.operation is Operation.UPSCALE and upscaled.parent_id == parent.id

    bot.click(chat, alice, result, "Animate")
    progress = await new_progress(bot, result, "Animation")
    video = await bot.wait_reply(
        Sent(chat, alice, progress.message_id, True),
        where=lambda m: m.media_kind == "video",
        timeout=40,
    )
    animated = await job_of(bot, chat, video)
    assert animated.kind is JobKind.VIDEO and animated.operation is Operation.ANIMATE
    assert animated.parent_id == parent.id


async def test_cancel_by_the_owner_queued_and_running(
    studio: BotHarness, fake_comfy: FakeComfyUI
) -> None:
    bot = studio
    alice, chat, _ = await person(bot, "Alice", "Aiko")
    fake_comfy.hold()  # the GPU takes jobs but does not start them
    bob = bot.fake.user("Bob")
    first = await bot.wait_reply(bot.send(chat, alice, "/image Aiko one"), contains="Image")
    second = await bot.wait_reply(bot.send(chat, alice, "/image Aiko two"), contains="Image")
    third = await bot.wait_reply(bot.send(chat, alice, "/image Aiko three"), contains="Image")
    await bot.fake.wait_for(lambda: len(fake_comfy.pending_ids) >= 2, what="two submitted")
    jobs = {j.prompt_typed: j for j in await jobs_of(bot, alice)}
    assert jobs["Aiko three"].status is JobState.QUEUED  # two slots per GPU server

    # only the requester may cancel
    query = bot.click(chat, bob, third, "Cancel")
    assert await bot.wait_toast(query) == "This is not your request."

    query = bot.click(chat, alice, third, "Cancel")
    assert await bot.wait_toast(query) == "Cancelled."
    await bot.wait_content(third, "cancelled")
    assert not buttons(third)
    assert (await bot.service.job(jobs["Aiko three"].id)).status is JobState.CANCELLED

    query = bot.click(chat, alice, first, "Cancel")
    assert await bot.wait_toast(query) in ("Stopping…", "Cancelled.")
    await bot.wait_content(first, "cancelled", timeout=15)
    assert not buttons(first)
    assert (await bot.service.job(jobs["Aiko one"].id)).status is JobState.CANCELLED

    # pressing Cancel again on a finished job: the stale data is answered, nothing breaks
    data = CANCEL.data(jobs["Aiko one"].id, owner=alice.id)
    query = bot.press(chat, alice, first, data)
    assert "already cancelled" in await bot.wait_toast(query)

    fake_comfy.release()
    await wait_result(bot, second)
    no_not_modified(bot)


async def test_other_users_and_forged_buttons_get_a_toast(studio: BotHarness) -> None:
    bot = studio
    alice = bot.fake.user("Alice")
    bob = bot.fake.user("Bob")
    group = bot.fake.group("Studio", members=[alice, bob])
    await person(bot, "Alice", "Aiko", user=alice, chat=group)
    await bot.service.seen(Actor(bob.id, group.id, chat_type=ChatType.GROUP))
    _, result = await first_result(bot, group, alice, "/image@AnimeStudioTestBot Aiko waves")
    before = len(await jobs_of(bot, alice))

    for label in ("Reroll", "Upscale", "Use as reference", "Original"):
        query = bot.click(group, bob, result, label)
        assert await bot.wait_toast(query) == "This is not your request."

    reroll = decode(button_data(result, "Reroll"))
    assert reroll is not None and reroll.action is REROLL
    job_text = button_data(result, "Reroll").rsplit("|", 1)[1]
    forged = [
        "garbage",
        "v1|rs_reroll",
        f"v1|rs_reroll|{alice.id}|{job_text[:-1]}!",
        f"v9|rs_reroll|{alice.id}|{job_text}",
        f"v1|rs_nope|{alice.id}|{job_text}",
        f"v1|rs_reroll|{alice.id}|{job_text}|extra",
    ]
    for data in forged:
        query = bot.press(group, alice, result, data)
        assert await bot.wait_toast(query) == "This button is no longer valid."

    unknown = REROLL.data(uuid.uuid4(), owner=alice.id)
    query = bot.press(group, alice, result, unknown)
    assert await bot.wait_toast(query) == "That job does not exist."
    await bot.settle()
    assert len(await jobs_of(bot, alice)) == before
    assert not bot.fake.internal_errors


async def test_use_as_reference_and_original(studio: BotHarness) -> None:
    bot = studio
    alice, chat, (aiko, ren) = await person(bot, "Alice", "Aiko", "Ren")
    _, result = await first_result(bot, chat, alice)
    job = await job_of(bot, chat, result)

    query = bot.click(chat, alice, result, "Use as reference")
    assert "Which character" in await bot.wait_toast(query)
    await bot.fake.wait_for(
        lambda: [label for label, _ in buttons(result)] == ["Aiko", "Ren", "‹ Back"],
        what="the character choice",
    )
    query = bot.click(chat, alice, result, "Ren")
    assert await bot.wait_toast(query) == "Added as a reference of Ren."
    await bot.fake.wait_for(
        lambda: [label for label, _ in buttons(result)] == RESULT_LABELS, what="result buttons"
    )
    assert len(await bot.service.references(ren.id)) == 1
    assert await bot.service.references(aiko.id) == []

    bot.click(chat, alice, result, "Use as reference")
    await bot.fake.wait_for(lambda: "‹ Back" in [lb for lb, _ in buttons(result)], what="list")
    bot.click(chat, alice, result, "Back")
    await bot.fake.wait_for(
        lambda: [label for label, _ in buttons(result)] == RESULT_LABELS, what="back"
    )

    query = bot.click(chat, alice, result, "Original")
    await bot.wait_toast(query)
    document = await bot.wait_reply(
        Sent(chat, alice, result.message_id, True), where=lambda m: m.media_kind == "document"
    )
    assert document.reply_to is not None and document.reply_to.message_id == result.message_id
    [output] = await bot.service.outputs(job.id)
    with open(output.file_path, "rb") as original:
        assert document.media_bytes == original.read()
    assert (document.caption or "").startswith("Original file, ")
    assert is_result(result)
    no_not_modified(bot)
