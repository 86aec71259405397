"""Audit of groups, forum topics and concurrency: the real bot against the fake Bot API, the fake
ComfyUI and a real PostgreSQL.

Pinned down here: the original of a result whose forum topic was deleted, replies outside
topics, and a group upgraded to a supergroup (both service messages in either order, once or
repeated; ALLOWED_CHAT_IDS; jobs queued before the upgrade; ChatMigrated on delivery).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import pytest

from core.models import JobKind
from core.states import JobState
from tests.e2e.conftest import MakeBot
from tests.e2e.groups_kit import BOT
from tests.e2e.harness import BotHarness, Logs, Sent, handled
from tests.e2e.test_bot_scenes import job_of, jobs_of, person, wait_result
from tests.e2e.test_bot_scenes_edges import assert_no_crash, dead_url
from tests.fakes.comfyui import FakeComfyUI
from tests.fakes.telegram import (
    ERR_THREAD_NOT_FOUND,
    ApiError,
    FakeChat,
    FakeTelegram,
    FakeUser,
    JSONDict,
    StoredMessage,
)


def delete_topic(fake: FakeTelegram, chat: FakeChat, thread_id: int) -> None:
    """What Telegram does when a topic is deleted: the topic and all its messages are gone."""
    del chat.topics[thread_id]
    for message in fake.messages.values():
        if message.chat.id == chat.id and message.thread_id == thread_id:
            message.deleted = True


async def test_original_of_a_result_whose_topic_was_deleted(
    studio: BotHarness, fake_comfy: FakeComfyUI
) -> None:
    bot = studio
    forum, alice, result = await result_in_a_deleted_topic(bot, fake_comfy)
    query = bot.click(forum, alice, result, "Original")
    toast = await bot.wait_toast(query)
    await handled()
    documents = [c for c in bot.fake.calls_of("sendDocument") if c.ok]
    assert documents, f"no original; the toast said {toast!r}"


@pytest.mark.parametrize("forum", [False, True], ids=["plain-supergroup", "forum-general"])
async def test_a_reply_chain_outside_a_topic_is_answered_without_a_thread(
    make_bot: MakeBot, forum: bool
) -> None:
    """A reply in a supergroup without topics, or in a forum's General topic, carries
    `message_thread_id` (the root of its reply chain) but no `is_topic_message`: the answers
    must not name that thread (Telegram: "message thread not found")."""
    bot = await make_bot(comfyui_urls=dead_url())
    alice = bot.fake.user("Alice")
    group = bot.fake.supergroup("Studio", members=[alice], forum=forum)
    await person(bot, "Alice", "Aiko", user=alice, chat=group)
    root = bot.send(group, alice, f"/help{BOT}")
    await bot.wait_reply(root, contains="/image")
    update = bot.fake.inject_message(
        group, alice, f"/image{BOT} Aiko on a bridge", reply_to=root.message_id
    )
    assert update is not None
    update["message"]["message_thread_id"] = root.message_id  # as Telegram sends it
    sent = Sent(group, alice, update["message"]["message_id"], True)
    progress = await bot.wait_reply(sent, contains="waiting in line")
    assert progress.thread_id is None
    assert progress.reply_to is not None and progress.reply_to.message_id == sent.message_id
    assert all(c.error is None for c in bot.fake.calls if c.method == "sendMessage")
    [job] = await jobs_of(bot, alice)
    assert job.thread_id is None and job.kind is JobKind.IMAGE


def migrate(
    fake: FakeTelegram,
    old: FakeChat,
    new: FakeChat,
    user: FakeUser,
    signals: Sequence[str] = ("to", "from"),
) -> None:
    """The service messages Telegram sends when a group is upgraded to a supergroup: "to"
    (`migrate_to_chat_id`, in the old group) and "from" (`migrate_from_chat_id`, in the new
    supergroup), in the order given."""
    now = int(time.time())
    fields = {"to": (old, "migrate_to_chat_id", new), "from": (new, "migrate_from_chat_id", old)}
    for signal in signals:
        chat, field, other = fields[signal]
        fake.inject_update(
            {
                "message": {
                    "message_id": len(fake.messages) + 10_000,
                    "from": user.to_api(),
                    "chat": chat.to_api(),
                    "date": now,
                    field: other.id,
                }
            }
        )


async def test_group_settings_survive_the_upgrade_to_a_supergroup(bot_harness: BotHarness) -> None:
    bot = bot_harness
    ada = bot.fake.user("Ada")
    group = bot.fake.group("Studio", admins=[ada])
    panel = await bot.wait_reply(bot.send(group, ada, f"/settings{BOT}"), contains="Settings")
    bot.click(group, ada, panel, "Style")
    await bot.wait_content(panel, "Choose the default style")
    bot.click(group, ada, panel, "chibi")
    await bot.wait_content(panel, "Style: chibi")

    supergroup = bot.fake.supergroup("Studio", admins=[ada])
    migrate(bot.fake, group, supergroup, ada)
    await bot.settle()
    after = await bot.wait_reply(bot.send(supergroup, ada, f"/settings{BOT}"), contains="Settings")
    assert "Style: chibi" in (after.content or ""), after.content


class _Migrated(ApiError):
    """Telegram's answer to a call into a group upgraded to a supergroup."""

    def __init__(self, new_id: int) -> None:
        super().__init__(400, "Bad Request: group chat was upgraded to a supergroup chat")
        self.new_id = new_id

    def body(self) -> JSONDict:
        body = super().body()
        body["parameters"] = {"migrate_to_chat_id": self.new_id}
        return body


async def test_buttons_of_a_result_delivered_after_the_upgrade_to_a_supergroup(
    studio: BotHarness, fake_comfy: FakeComfyUI, monkeypatch: pytest.MonkeyPatch
) -> None:
    bot = studio
    alice = bot.fake.user("Alice")
    group = bot.fake.group("Studio", members=[alice])
    await person(bot, "Alice", "Aiko", user=alice, chat=group)
    fake_comfy.hold()
    sent = bot.send(group, alice, f"/image{BOT} Aiko in the rain")
    await bot.wait_reply(sent, contains="waiting in line")

    supergroup = bot.fake.supergroup("Studio", members=[alice])
    refuse_the_old_group(bot, monkeypatch, group, supergroup)
    fake_comfy.release()
    result = await result_in(bot, supergroup)
    await wait_result(bot, result)
    query = bot.click(supergroup, alice, result, "Reroll")
    assert await bot.wait_toast(query) == "Started."


# -- the original of a result whose topic is gone ----------------------------------------------


async def result_in_a_deleted_topic(
    bot: BotHarness, fake_comfy: FakeComfyUI, *, send_original: bool = False
) -> tuple[FakeChat, FakeUser, StoredMessage]:
    """A forum image whose topic is deleted while it renders: the result goes to General."""
    alice = bot.fake.user("Alice")
    forum = bot.fake.forum("Studio", members=[alice])
    topic = bot.fake.add_topic(forum, "Renders")
    await person(bot, "Alice", "Aiko", user=alice, chat=forum)
    if send_original:
        await bot.service.update_chat_settings(forum.id, send_original=True)
    fake_comfy.hold()
    sent = bot.send(forum, alice, f"/image{BOT} Aiko in the rain", thread_id=topic)
    await bot.wait_reply(sent, contains="waiting in line")
    delete_topic(bot.fake, forum, topic)
    fake_comfy.release()
    result = await bot.fake.wait_for(
        lambda: next(
            (
                m
                for m in bot.fake.bot_messages(forum.id)
                if not m.deleted and m.media_kind == "photo" and "seed" in (m.caption or "")
            ),
            None,
        ),
        20,
        what="the result in the chat",
    )
    assert result.thread_id is None
    return forum, alice, result


async def test_the_send_original_setting_follows_a_result_whose_topic_was_deleted(
    studio: BotHarness, fake_comfy: FakeComfyUI, logs: Logs
) -> None:
    bot = studio
    forum, _alice, result = await result_in_a_deleted_topic(bot, fake_comfy, send_original=True)
    document = await bot.fake.wait_for(
        lambda: next((m for m in bot.fake.bot_messages(forum.id) if m.media_kind == "document"), 0),
        5,
        what="the original",
    )
    assert document.thread_id is None
    assert document.reply_to is not None and document.reply_to.message_id == result.message_id
    assert all(c.ok for c in bot.fake.calls_of("sendDocument"))  # not tried in the topic first
    assert not logs.of("original not sent")
    assert_no_crash(bot, logs)


async def test_the_original_goes_to_the_chat_when_the_results_topic_is_gone(
    studio: BotHarness, logs: Logs
) -> None:
    """The Original button of a result in a topic Telegram no longer knows (deleted, say, while
    the press was on its way): the document goes to the chat, as results do."""
    bot = studio
    alice = bot.fake.user("Alice")
    forum = bot.fake.forum("Studio", members=[alice])
    topic = bot.fake.add_topic(forum, "Renders")
    await person(bot, "Alice", "Aiko", user=alice, chat=forum)
    sent = bot.send(forum, alice, f"/image{BOT} Aiko in the rain", thread_id=topic)
    result = await bot.wait_reply(sent, contains="waiting in line")
    await wait_result(bot, result)
    bot.fake.fail_next("sendDocument", kind=400, description=ERR_THREAD_NOT_FOUND)

    query = bot.click(forum, alice, result, "Original")
    assert await bot.wait_toast(query) == ""
    await handled()
    in_topic, in_chat = bot.fake.calls_of("sendDocument")
    assert in_topic.params["message_thread_id"] == topic and in_topic.error is not None
    assert "message_thread_id" not in in_chat.params and in_chat.ok
    assert "reply_parameters" not in in_chat.params  # the result is in the topic too
    assert logs.of("forum topic gone; sending the original to the chat")
    assert_no_crash(bot, logs)


# -- a group upgraded to a supergroup ------------------------------------------------------------


async def group_with_settings(bot: BotHarness, admin: FakeUser) -> FakeChat:
    """A group the bot knows, with settings of its own (chibi, originals sent)."""
    group = bot.fake.group("Studio", admins=[admin])
    await bot.wait_reply(bot.send(group, admin, f"/settings{BOT}"), contains="Settings")
    await bot.service.update_chat_settings(group.id, style_preset="chibi", send_original=True)
    return group


async def style_of(bot: BotHarness, chat: FakeChat) -> str | None:
    try:
        return str((await bot.service.chat_settings(chat.id)).style_preset)
    except Exception:  # not recorded (yet)
        return None


@pytest.mark.parametrize(
    "signals",
    [("to", "from"), ("from", "to"), ("to",), ("from",), ("from", "from", "to", "to")],
    ids=["to-from", "from-to", "to-only", "from-only", "repeated"],
)
async def test_every_signal_of_the_upgrade_moves_the_settings_once(
    bot_harness: BotHarness, logs: Logs, signals: tuple[str, ...]
) -> None:
    bot = bot_harness
    ada = bot.fake.user("Ada")
    group = await group_with_settings(bot, ada)
    supergroup = bot.fake.supergroup("Studio", admins=[ada])

    migrate(bot.fake, group, supergroup, ada, signals)
    await bot.fake.wait_for(
        lambda: len(logs.of("group upgraded to a supergroup")) == len(signals), what="the signals"
    )
    settings = await bot.service.chat_settings(supergroup.id)
    assert (settings.style_preset, settings.send_original, settings.type.value) == (
        "chibi",
        True,
        "supergroup",
    )
    moves = logs.of("group upgraded to a supergroup")
    assert sorted(line["first"] for line in moves) == [False] * (len(signals) - 1) + [True]
    assert {(line["old_chat_id"], line["new_chat_id"]) for line in moves} == {
        (group.id, supergroup.id)
    }
    # Changed in the supergroup, then a late signal: the group's settings do not come back.
    await bot.service.update_chat_settings(supergroup.id, style_preset="cyberpunk")
    migrate(bot.fake, group, supergroup, ada, ("to", "from"))
    await bot.fake.wait_for(
        lambda: len(logs.of("group upgraded to a supergroup")) == len(signals) + 2,
        what="the late signals",
    )
    assert await style_of(bot, supergroup) == "cyberpunk"
    assert not bot.fake.bot_messages(supergroup.id)  # nothing said about it
    assert_no_crash(bot, logs)


async def test_the_upgrade_copies_over_a_supergroup_seen_first(
    bot_harness: BotHarness, logs: Logs
) -> None:
    """Someone used the supergroup before the upgrade's service message was handled: the bot
    recorded it with the default settings; the group's replace them."""
    bot = bot_harness
    ada = bot.fake.user("Ada")
    group = await group_with_settings(bot, ada)
    supergroup = bot.fake.supergroup("Studio", admins=[ada])
    panel = await bot.wait_reply(bot.send(supergroup, ada, f"/settings{BOT}"), contains="Settings")
    assert "Style: anime" in (panel.content or "")

    migrate(bot.fake, group, supergroup, ada, ("from",))
    await bot.fake.wait_for(lambda: logs.of("group upgraded to a supergroup"), what="the upgrade")

    after = await bot.wait_reply(bot.send(supergroup, ada, f"/settings{BOT}"), contains="Settings")
    assert "Style: chibi" in (after.content or ""), after.content
    assert_no_crash(bot, logs)


async def test_a_listed_group_upgraded_to_a_supergroup_stays_allowed(
    make_bot: MakeBot, fake_telegram: FakeTelegram, logs: Logs
) -> None:
    """ALLOWED_CHAT_IDS lists the group: its supergroup is allowed as the upgraded group (the
    operator is told to add the new id); a supergroup of an unlisted group is not."""
    ada = fake_telegram.user("Ada")
    group = fake_telegram.group("Studio", admins=[ada])
    stranger = fake_telegram.group("Elsewhere", admins=[ada])
    bot = await make_bot(allowed_chat_ids=[group.id])
    await bot.wait_reply(bot.send(group, ada, f"/settings{BOT}"), contains="Settings")
    supergroup = bot.fake.supergroup("Studio", admins=[ada])
    refused = await bot.wait_reply(bot.send(supergroup, ada, f"/settings{BOT}"))
    assert "not enabled in this chat" in (refused.content or "")

    # Only the supergroup's service message: handled before the access check refuses it.
    migrate(bot.fake, group, supergroup, ada, ("from",))
    other_supergroup = bot.fake.supergroup("Elsewhere", admins=[ada])
    migrate(bot.fake, stranger, other_supergroup, ada, ("from",))
    await bot.fake.wait_for(
        lambda: len(logs.of("group upgraded to a supergroup")) == 2, what="the upgrades"
    )

    await bot.wait_reply(bot.send(supergroup, ada, f"/settings{BOT}"), contains="Settings")
    still = await bot.wait_reply(bot.send(other_supergroup, ada, f"/settings{BOT}"))
    assert "not enabled in this chat" in (still.content or "")
    [told] = logs.of(
        "an allowed group became a supergroup with a new id: add it to ALLOWED_CHAT_IDS"
        " (until then it is allowed as the upgraded group)"
    )
    assert (told["level"], told["new_chat_id"]) == ("warning", supergroup.id)
    [allowed] = logs.of(
        "chat allowed as the supergroup of an allowed group: add its id to ALLOWED_CHAT_IDS"
    )
    assert (allowed["chat_id"], allowed["migrated_from"]) == (supergroup.id, group.id)
    assert_no_crash(bot, logs)


async def result_in(bot: BotHarness, supergroup: FakeChat) -> StoredMessage:
    """The result photo, once the bot has sent it to `supergroup`."""
    return await bot.fake.wait_for(
        lambda: next(
            (m for m in bot.fake.bot_messages(supergroup.id) if m.media_kind == "photo"), None
        ),
        20,
        what="the result in the supergroup",
    )


def refuse_the_old_group(
    bot: BotHarness, monkeypatch: pytest.MonkeyPatch, group: FakeChat, supergroup: FakeChat
) -> None:
    """From now on Telegram answers every call into `group` with ChatMigrated."""
    original_chat = bot.fake._chat

    def upgraded(p: Any) -> FakeChat:
        if p.integer("chat_id") == group.id:
            raise _Migrated(supergroup.id)
        return original_chat(p)

    monkeypatch.setattr(bot.fake, "_chat", upgraded)


async def test_a_job_queued_before_the_upgrade_is_delivered_to_the_supergroup(
    studio: BotHarness, fake_comfy: FakeComfyUI, monkeypatch: pytest.MonkeyPatch, logs: Logs
) -> None:
    """The service messages move the job (not delivered yet) to the supergroup: its result goes
    there, with working buttons. A result delivered in the group before keeps working there."""
    bot = studio
    alice = bot.fake.user("Alice")
    group = bot.fake.group("Studio", members=[alice])
    await person(bot, "Alice", "Aiko", user=alice, chat=group)
    before = await bot.wait_reply(
        bot.send(group, alice, f"/image{BOT} Aiko at dawn"), contains="waiting in line"
    )
    await wait_result(bot, before)
    fake_comfy.hold()
    queued = await bot.wait_reply(
        bot.send(group, alice, f"/image{BOT} Aiko in the rain"), contains="waiting in line"
    )
    supergroup = bot.fake.supergroup("Studio", members=[alice])
    refuse_the_old_group(bot, monkeypatch, group, supergroup)
    migrate(bot.fake, group, supergroup, alice)
    await bot.fake.wait_for(
        lambda: len(logs.of("group upgraded to a supergroup")) == 2, what="the upgrade"
    )
    job = next(j for j in await jobs_of(bot, alice) if j.status is not JobState.DONE)
    assert (job.chat_id, job.progress_message_id, job.request_message_id) == (
        supergroup.id,
        None,
        None,
    )

    fake_comfy.release()
    result = await result_in(bot, supergroup)
    await wait_result(bot, result)
    assert result.reply_to is None  # the request is in the group
    assert queued.media_kind is None  # the group's progress message could not be touched
    query = bot.click(supergroup, alice, result, "Reroll")
    assert await bot.wait_toast(query) == "Started."
    monkeypatch.undo()  # (the old group's result is pressed there: the fake lets it be)
    query = bot.click(group, alice, before, "Variations")
    assert await bot.wait_toast(query) == "Started."
    # ... and would be one of this chat if Telegram sent its press from the supergroup.
    assert await bot.service.same_chat(group.id, supergroup.id)
    assert await bot.service.same_chat(supergroup.id, group.id)
    assert not await bot.service.same_chat(group.id, bot.fake.group("Other").id)
    assert_no_crash(bot, logs)


async def test_chat_migrated_on_delivery_moves_the_chat(
    studio: BotHarness, fake_comfy: FakeComfyUI, monkeypatch: pytest.MonkeyPatch, logs: Logs
) -> None:
    """No service message was handled; the delivery learns of the upgrade from Telegram's
    ChatMigrated: the chat's settings and the job follow, so the result's library link edit
    and its buttons find it in the supergroup."""
    bot = studio
    alice = bot.fake.user("Alice")
    group = bot.fake.group("Studio", members=[alice])
    await person(bot, "Alice", "Aiko", user=alice, chat=group)
    await bot.service.update_chat_settings(group.id, style_preset="chibi")
    fake_comfy.hold()
    sent = bot.send(group, alice, f"/image{BOT} Aiko in the rain")
    await bot.wait_reply(sent, contains="waiting in line")
    supergroup = bot.fake.supergroup("Studio", members=[alice])
    refuse_the_old_group(bot, monkeypatch, group, supergroup)
    fake_comfy.release()

    result = await result_in(bot, supergroup)
    await wait_result(bot, result)
    done = await job_of(bot, supergroup, result)  # found by its result in the supergroup
    assert (done.chat_id, done.status) == (supergroup.id, JobState.DONE)
    assert await style_of(bot, supergroup) == "chibi"
    [moved] = logs.of("group upgraded to a supergroup")
    assert moved["first"] and moved["jobs"] == 1
    # Filed in the library afterwards: the link is added to the result in the supergroup.
    [output] = await bot.service.outputs(done.id)
    assert bot.runtime is not None and bot.runtime.orchestrator is not None
    deliverer = bot.runtime.orchestrator.deliverer
    assert deliverer is not None
    await deliverer.library_linked(done, output, "https://media.example.org/x")
    [edit] = bot.fake.calls_of("editMessageCaption")
    assert (edit.params["chat_id"], edit.params["message_id"]) == (supergroup.id, result.message_id)
    assert edit.ok and "https://media.example.org/x" in str(edit.params["caption"])
    assert_no_crash(bot, logs)
