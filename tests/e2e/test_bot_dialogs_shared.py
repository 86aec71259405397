"""Dialogs live in PostgreSQL: two bot processes (in-process applications in webhook mode behind
a test "load balancer") share one database and one fake Bot API, and the updates of one dialog
alternate between them; a dialog continues on a bot started after another one stopped; the
timeout message of a dialog is sent once although every bot sweeps expired dialogs."""

from __future__ import annotations

import asyncio
import io
import json
from collections import deque
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from PIL import Image

from bot import dialogs as bot_dialogs
from core.db.pool import connect
from core.models import Generation
from core.service import Actor, CharacterDraft
from tests.e2e.harness import BotHarness, Sent, button_data, buttons, harness_settings
from tests.e2e.test_bot_music import tone
from tests.e2e.test_bot_scenes import jobs_of
from tests.engine import install_models
from tests.fakes.comfyui import FakeComfyUI
from tests.fakes.telegram import FakeChat, FakeTelegram, FakeUser, StoredMessage
from tests.fault.procs import free_port

SECRET = "dialogs-test-secret_0123456789"
PATH = "telegram"
BOT = "@AnimeStudioTestBot"


class Balancer:
    """The load balancer in front of the bots: each update goes to the bot the test chose for
    it (in the order the updates were sent; a retried update goes to the same bot)."""

    def __init__(self) -> None:
        self.plan: deque[int] = deque()
        self.assigned: dict[int, int] = {}
        self.handled: list[tuple[int, int]] = []  # (update id, port) answered 200
        self.url = ""
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post(f"/{PATH}", self._forward)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}/{PATH}"
        self._session = aiohttp.ClientSession()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _forward(self, request: web.Request) -> web.Response:
        assert self._session is not None
        body = await request.read()
        update_id = int(json.loads(body)["update_id"])
        if update_id not in self.assigned:
            if not self.plan:
                return web.Response(status=500, text="no bot chosen for this update")
            self.assigned[update_id] = self.plan.popleft()
        port = self.assigned[update_id]
        headers = {
            k: v
            for k, v in request.headers.items()
            if k.lower() in ("content-type", "x-telegram-bot-api-secret-token")
        }
        try:
            async with self._session.post(
                f"http://127.0.0.1:{port}/{PATH}", data=body, headers=headers
            ) as answer:
                status = answer.status
        except aiohttp.ClientError:
            status = 502  # that bot is still starting: Telegram retries
        if status == 200:
            self.handled.append((update_id, port))
        return web.Response(status=status)


def port_of(bot: BotHarness) -> int:
    return bot.settings.telegram_webhook_port


class Cluster:
    """Bots sharing the fake Bot API, the database and DATA_DIR, behind the balancer."""

    def __init__(self, fake: FakeTelegram, comfy_url: str, dsn: str, data_dir: Path) -> None:
        self.fake, self.comfy_url, self.dsn, self.data_dir = fake, comfy_url, dsn, data_dir
        self.balancer = Balancer()
        self.bots: list[BotHarness] = []

    async def start_bot(self) -> BotHarness:
        settings = harness_settings(
            self.fake,
            self.comfy_url,
            self.dsn,
            self.data_dir,
            telegram_webhook_url=self.balancer.url,
            telegram_webhook_listen="127.0.0.1",
            telegram_webhook_port=free_port(),
            telegram_webhook_secret=SECRET,
        )
        bot = BotHarness(self.fake, settings)
        registered = len([c for c in self.fake.calls_of("setWebhook") if c.ok])
        await bot.start()
        self.bots.append(bot)
        await self.fake.wait_for(
            lambda: len([c for c in self.fake.calls_of("setWebhook") if c.ok]) > registered,
            10,
            what="the new bot's setWebhook",
        )
        return bot

    async def stop_bot(self, bot: BotHarness) -> None:
        self.bots.remove(bot)
        await bot.close()

    async def close(self) -> None:
        for bot in reversed(self.bots):
            await bot.close()
        await self.balancer.close()

    # -- users acting, each update through the chosen bot ------------------------------------------
    def send(
        self, via: BotHarness, chat: FakeChat, user: FakeUser, text: str | None = None, **kw: Any
    ) -> Sent:
        self.balancer.plan.append(port_of(via))
        sent = via.send(chat, user, text, **kw)
        if not sent.visible:
            self.balancer.plan.pop()
        return sent

    def press(
        self, via: BotHarness, chat: FakeChat, user: FakeUser, message: StoredMessage, data: str
    ) -> str:
        self.balancer.plan.append(port_of(via))
        return via.press(chat, user, message, data)

    def click(
        self, via: BotHarness, chat: FakeChat, user: FakeUser, message: StoredMessage, label: str
    ) -> str:
        return self.press(via, chat, user, message, button_data(message, label))

    def handled_by(self, bot: BotHarness) -> int:
        return len([1 for _, port in self.balancer.handled if port == port_of(bot)])


@pytest.fixture
async def cluster(
    fake_telegram: FakeTelegram,
    fake_comfy: FakeComfyUI,
    pg_dsn: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[Cluster]:
    install_models(fake_comfy)
    monkeypatch.setattr(bot_dialogs, "SWEEP_INTERVAL_S", 0.05)  # every bot sweeps, often
    cluster = Cluster(fake_telegram, fake_comfy.base_url, pg_dsn, tmp_path / "data")
    await cluster.balancer.start()
    try:
        yield cluster
    finally:
        await cluster.close()


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
