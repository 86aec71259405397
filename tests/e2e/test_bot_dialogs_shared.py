"""Dialogs live in PostgreSQL: two bot processes (in-process applications in webhook mode behind
a test "load balancer") share one database and one fake Bot API, and the updates of one dialog
alternate between them; a dialog continues on a bot started after another one stopped; the
timeout message of a dialog is sent once although every bot sweeps expired dialogs."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

from bot import dialogs as bot_dialogs
from core.db.pool import connect
from core.models import Generation
from core.service import Actor, CharacterDraft
from tests.e2e.harness import BotHarness, Cluster, Sent, buttons
from tests.e2e.test_bot_music import tone
from tests.e2e.test_bot_scenes import jobs_of
from tests.fakes.telegram import FakeUser, StoredMessage

BOT = "@AnimeStudioTestBot"


@pytest.fixture(autouse=True)
def _sweep_often(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bot_dialogs, "SWEEP_INTERVAL_S", 0.05)  # every bot sweeps, often


def png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (90, 140, 220)).save(out, "PNG")
    return out.getvalue()


def labels(message: StoredMessage) -> list[str]:
    return [label for label, _ in buttons(message)]


async def job_where(
    bot: BotHarness, user: FakeUser, found: Callable[[Generation], bool]
) -> Generation:
    """The user's job matching `found` (jobs are recorded right after the update)."""
    for _ in range(200):
        for job in await jobs_of(bot, user):
            if found(job):
                return job
        await asyncio.sleep(0.025)
    raise AssertionError(f"no such job: {await jobs_of(bot, user)}")


async def test_the_updates_of_one_dialog_alternate_between_two_bots(
    cluster: Cluster, tmp_path: Path
) -> None:
    a, b = await cluster.start_bot(), await cluster.start_bot()
    alice = cluster.fake.user("Alice")
    chat = cluster.fake.private_chat(alice)
    actor = Actor(alice.id, chat.id)

    # /newcharacter: each step on the other bot, the reference photo and the buttons included
    await a.wait_reply(cluster.send(a, chat, alice, "/newcharacter"), contains="their name")
    await a.wait_reply(cluster.send(b, chat, alice, "Aiko"), contains="How does Aiko look")
    style = await a.wait_reply(cluster.send(a, chat, alice, "pink hair"), contains="Which style")
    cluster.click(b, chat, alice, style, "chibi")
    asked = await a.wait_reply(Sent(chat, alice, style.message_id, True), contains="personality")
    await a.wait_reply(cluster.send(a, chat, alice, "cheerful"), contains="reference photo")
    photo = cluster.send(b, chat, alice, photo=png(600, 800))
    confirm = await a.wait_reply(photo, contains="Create this character?")
    assert "Reference photo: Yes" in (confirm.content or "")
    assert asked.message_id < confirm.message_id
    cluster.click(a, chat, alice, confirm, "Create")
    await a.wait_reply(Sent(chat, alice, confirm.message_id, True), contains="Aiko is ready")
    (aiko,), _ = await a.service.list_characters(alice.id)
    assert (aiko.style, aiko.personality, aiko.appearance) == ("chibi", "cheerful", "pink hair")
    (reference,) = await b.service.references(aiko.id)
    with Image.open(reference) as stored:
        assert stored.size == (600, 800)

    # editing a field: the card's buttons and the answer on different bots
    listing = cluster.send(b, chat, alice, "/characters")
    listing_message = await a.wait_reply(listing, contains="Your characters")
    cluster.click(a, chat, alice, listing_message, "Aiko")
    card = await a.wait_reply(listing, where=lambda m: m.media_kind == "photo")
    cluster.click(b, chat, alice, card, "Edit")
    await a.wait_content(card, "What do you want to change")
    cluster.click(a, chat, alice, card, "Personality")
    await a.wait_reply(Sent(chat, alice, card.message_id, True), contains="Send the new")
    saved = cluster.send(b, chat, alice, "calm and wise")
    await a.wait_reply(saved, contains="Saved")
    new_card = await a.wait_reply(saved, where=lambda m: m.media_kind == "photo")
    assert (await a.service.get_character(actor, aiko.id)).personality == "calm and wise"

    # "what happens in the scene?" asked by one bot, answered through the other
    cluster.click(a, chat, alice, new_card, "Use in a scene")
    await a.wait_reply(saved, contains="What happens in the scene with")
    answer = cluster.send(b, chat, alice, "she reads on a rooftop")
    await a.wait_reply(answer, contains="waiting in line")
    await job_where(a, alice, lambda job: job.request_message_id == answer.message_id)
    assert (await jobs_of(a, alice))[0].character_ids == [aiko.id]

    # the picker: two toggles at once on both bots, Done on the other one
    ren = await a.service.create_character(actor, CharacterDraft(name="Ren", appearance="coat"))
    request = cluster.send(a, chat, alice, "/image two friends at a festival")
    picker = await a.wait_reply(request, contains="Who is in this scene?")
    toggles = [
        cluster.click(a, chat, alice, picker, "Aiko"),
        cluster.click(b, chat, alice, picker, "Ren"),
    ]
    for query in toggles:
        await a.wait_toast(query)
    await cluster.fake.wait_for(
        lambda: {"✅ Aiko", "✅ Ren"} <= set(labels(picker)), what="both characters ticked"
    )
    done = cluster.click(b, chat, alice, picker, "Done")
    assert await a.wait_toast(done) == "Started."
    job = await job_where(a, alice, lambda job: job.request_message_id == request.message_id)
    assert job.character_ids == [aiko.id, ren.id]

    # "send your own audio": asked on one bot, the voice message taken by the other
    video = cluster.send(b, chat, alice, '/video Aiko dancing --length 2s --music "city pop"')
    chooser = await a.wait_reply(video, contains="only your own audio can be used")
    cluster.click(a, chat, alice, chooser, "Send my own audio")
    await a.wait_content(chooser, "Send me the audio")
    voice = tone(tmp_path / "voice.ogg", 1.0, "libopus", 330).read_bytes()
    cluster.send(b, chat, alice, voice=voice)
    await a.wait_content(chooser, "Soundtrack: Voice message")
    job = await job_where(a, alice, lambda job: job.request_message_id == video.message_id)
    assert job.soundtrack is not None and job.soundtrack["source"] == "upload"

    assert not cluster.balancer.plan  # every update went where the test sent it
    assert cluster.handled_by(a) >= 10 and cluster.handled_by(b) >= 10


async def test_a_dialog_continues_on_a_bot_started_after_another_stopped(cluster: Cluster) -> None:
    first = await cluster.start_bot()
    alice = cluster.fake.user("Alice")
    chat = cluster.fake.private_chat(alice)
    actor = Actor(alice.id, chat.id)
    await first.service.seen(actor)
    aiko = await first.service.create_character(actor, CharacterDraft(name="Aiko", appearance="x"))

    await first.wait_reply(cluster.send(first, chat, alice, "/newcharacter"), contains="name")
    await first.wait_reply(cluster.send(first, chat, alice, "Mio"), contains="How does Mio")
    style = await first.wait_reply(cluster.send(first, chat, alice, "red scarf"), contains="style")
    cluster.click(first, chat, alice, style, "anime")
    await first.wait_content(style, "Tap one. anime")
    await first.wait_reply(cluster.send(first, chat, alice, "/skip"), contains="reference photo")
    photo = cluster.send(first, chat, alice, photo=png(300, 300))
    confirm = await first.wait_reply(photo, contains="Create this character?")
    request = cluster.send(first, chat, alice, "/image a walk in the park")
    picker = await first.wait_reply(request, contains="Who is in this scene?")

    await cluster.stop_bot(first)
    second = await cluster.start_bot()

    cluster.click(second, chat, alice, confirm, "Create")
    await second.wait_reply(Sent(chat, alice, confirm.message_id, True), contains="Mio is ready")
    mio = next(c for c in (await second.service.list_characters(alice.id))[0] if c.name == "Mio")
    assert len(await second.service.references(mio.id)) == 1
    cluster.click(second, chat, alice, picker, "Aiko")
    await cluster.fake.wait_for(lambda: "✅ Aiko" in labels(picker), what="the tick")
    cluster.click(second, chat, alice, picker, "Done")
    job = await job_where(second, alice, lambda job: job.request_message_id == request.message_id)
    assert job.character_ids == [aiko.id]


async def test_the_timeout_message_is_sent_once_with_two_bots(
    cluster: Cluster, pg_dsn: str
) -> None:
    a, b = await cluster.start_bot(), await cluster.start_bot()
    alice = cluster.fake.user("Alice")
    group = cluster.fake.group("Friends", members=[alice])
    ask = await a.wait_reply(cluster.send(a, group, alice, f"/newcharacter{BOT}"), contains="name")
    answer = cluster.send(b, group, alice, "Aiko", reply_to=ask)
    look = await a.wait_reply(answer, contains="How does Aiko look")

    conn = await connect(pg_dsn)  # 30 minutes later
    try:
        await conn.execute("UPDATE dialogs SET expires_at = now() - interval '1 second'")
    finally:
        await conn.close()
    told = await a.wait_reply(answer, contains="I stopped waiting for your answer")
    assert told.reply_to is not None and told.reply_to.message_id == answer.message_id
    await a.settle()  # both bots swept several times meanwhile
    timeouts = [
        m for m in cluster.fake.bot_messages(group.id) if "I stopped waiting" in (m.content or "")
    ]
    assert len(timeouts) == 1

    late = cluster.send(a, group, alice, "pink hair", reply_to=look)  # the dialog is over
    await a.settle()
    assert not a.replies_after(late)


async def test_two_answers_at_once_on_two_bots_lose_nothing(cluster: Cluster) -> None:
    """Two messages of one dialog handled at the same time by two bots: both are taken, one
    after the other (the one that loses the compare-and-set is handled again on the new step)."""
    a, b = await cluster.start_bot(), await cluster.start_bot()
    alice = cluster.fake.user("Alice")
    chat = cluster.fake.private_chat(alice)
    await a.wait_reply(cluster.send(a, chat, alice, "/newcharacter"), contains="their name")
    first = cluster.send(a, chat, alice, "Aiko")
    cluster.send(b, chat, alice, "Mio")
    style = await a.wait_reply(first, contains="Which style")
    (asked,) = [m for m in a.replies_after(first) if "How does" in (m.content or "")]
    name = "Aiko" if "Aiko" in (asked.content or "") else "Mio"
    assert f"Which style suits {name}?" in (style.content or "")
    cluster.click(a, chat, alice, style, "anime")
    await a.wait_reply(Sent(chat, alice, style.message_id, True), contains="personality")
    await a.wait_reply(cluster.send(b, chat, alice, "/skip"), contains="reference photo")
    confirm = await a.wait_reply(cluster.send(a, chat, alice, "/skip"), contains="Create this")
    other = "Mio" if name == "Aiko" else "Aiko"
    assert f"Appearance: {other}\n" in (confirm.content or "")

    # Create tapped on both bots at once: one character; the other tap is told it is stale
    taps = [
        cluster.click(a, chat, alice, confirm, "Create"),
        cluster.click(b, chat, alice, confirm, "Create"),
    ]
    toasts = sorted([await a.wait_toast(query) for query in taps])
    assert toasts[0] == "" and "no longer valid" in toasts[1]
    await a.wait_reply(Sent(chat, alice, confirm.message_id, True), contains=f"{name} is ready")
    created, total = await a.service.list_characters(alice.id)
    assert total == 1 and created[0].name == name
