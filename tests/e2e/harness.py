"""The real bot, in-process, against the fake Bot API, the fake ComfyUI and a real PostgreSQL.

    bot = await make_bot(admin_user_ids=[admin.id])     # or the `bot_harness` fixture
    alice = bot.fake.user("Alice"); chat = bot.fake.private_chat(alice)
    sent = bot.send(chat, alice, "/start")
    answer = await bot.wait_reply(sent, contains="Anime Studio")
    query = bot.click(chat, alice, answer, "Delete")   # press the button whose label matches
    await bot.wait_toast(query)

`run_bot` runs in a task with a stop event, exactly as `animebot run` runs it; `close()` sets the
event and waits for a clean shutdown (and fails the test if the bot crashed).

A test acts as a person would: `wait_reply` and `wait_content` return once the bots have also
finished handling the updates they were handling (at most HANDLED_WAIT_S more), so the next
action never races the bot's own bookkeeping after its message (a picker's or a question's
dialog is stored just after the message is sent; no human answers within those milliseconds;
tests/e2e/test_bot_scenes.py tests the press that does: `until_handled=False`). The updates being
handled are tracked by `track_handling` (an autouse fixture in conftest.py).

`Cluster` (the `cluster` fixture) runs several bots in webhook mode behind a test load balancer,
sharing the fake Bot API, one database and DATA_DIR; the test picks the bot of every update:
`cluster.send(bot_a, chat, user, "/start")`.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from telegram import Update
from telegram.ext import Application

from bot.app import run_bot
from core.runtime import Runtime
from core.settings import Settings, load_settings
from tests.fakes.balancer import Planned
from tests.fakes.telegram import FakeChat, FakeTelegram, FakeUser, JSONDict, StoredMessage
from tests.webhook import free_port

STARTUP_TIMEOUT_S = 20.0
SHUTDOWN_TIMEOUT_S = 20.0
HANDLED_WAIT_S = 2.0  # a handler still busy after this keeps going while the test acts

_HANDLING: set[int] = set()  # ids of the updates the bots of this process are handling


def track_handling(monkeypatch: pytest.MonkeyPatch) -> None:
    """Record which updates PTB's `Application.process_update` is handling (see the module)."""
    original = Application.process_update

    async def process_update(self: Any, update: object) -> None:
        update_id = update.update_id if isinstance(update, Update) else None
        if update_id is not None:
            _HANDLING.add(update_id)
        try:
            await original(self, update)
        finally:
            if update_id is not None:
                _HANDLING.discard(update_id)

    monkeypatch.setattr(Application, "process_update", process_update)


async def handled() -> None:
    """Until no update is being handled (at most HANDLED_WAIT_S)."""
    deadline = asyncio.get_running_loop().time() + HANDLED_WAIT_S
    while _HANDLING and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.005)


@dataclass(frozen=True)
class Sent:
    """A message a test user wrote (visible: the bot receives it despite privacy mode)."""

    chat: FakeChat
    user: FakeUser
    message_id: int
    visible: bool
    thread_id: int | None = None


def harness_settings(
    fake: FakeTelegram, comfy_url: str, dsn: str, data_dir: Path, **overrides: Any
) -> Settings:
    values: dict[str, Any] = {
        "telegram_bot_token": fake.token,
        "telegram_api_base_url": fake.api_url,
        "telegram_file_base_url": fake.file_url,
        "database_url": dsn,
        "data_dir": data_dir,
        "comfyui_urls": comfy_url,
        "admin_user_ids": [],
        "allowed_chat_ids": [],
        "jellyfin_url": None,
        "music_dir": None,
        "itunes_enabled": False,
        "status_port": 0,
        "telegram_webhook_url": None,
    }
    values.update(overrides)
    return load_settings(**values)


class BotHarness:
    def __init__(self, fake: FakeTelegram, settings: Settings) -> None:
        self.fake = fake
        self.settings = settings
        self.stop_event = asyncio.Event()
        self.runtime: Runtime | None = None
        self.task: asyncio.Task[None] | None = None

    # -- life cycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        self.runtime = await Runtime.start(self.settings, role="run")
        self.task = asyncio.create_task(
            run_bot(self.settings, self.runtime, self.stop_event), name="run_bot"
        )
        receiving = "setWebhook" if self.settings.telegram_webhook_url else "getUpdates"

        def ready() -> bool:
            assert self.task is not None
            if self.task.done():
                self.task.result()  # raises what stopped the bot
                raise AssertionError("run_bot returned during start-up")
            return bool(
                [c for c in self.fake.calls_of(receiving) if receiving == "getUpdates" or c.ok]
            )

        await self.fake.wait_for(ready, STARTUP_TIMEOUT_S, what=f"the bot calling {receiving}")

    async def close(self) -> None:
        self.stop_event.set()
        try:
            if self.task is not None:
                await asyncio.wait_for(self.task, SHUTDOWN_TIMEOUT_S)
        finally:
            if self.runtime is not None:
                await self.runtime.stop()

    @property
    def service(self) -> Any:
        assert self.runtime is not None
        return self.runtime.service

    # -- acting as users --------------------------------------------------------------------------
    def send(
        self,
        chat: FakeChat,
        user: FakeUser,
        text: str | None = None,
        *,
        reply_to: StoredMessage | int | None = None,
        thread_id: int | None = None,
        **kwargs: Any,
    ) -> Sent:
        """`user` writes in `chat` (photo=..., document=..., caption=... as in inject_message)."""
        reply_id = reply_to.message_id if isinstance(reply_to, StoredMessage) else reply_to
        update = self.fake.inject_message(
            chat, user, text, reply_to=reply_id, thread_id=thread_id, **kwargs
        )
        mine = [m for m in self.fake.messages.values() if m.chat.id == chat.id and not m.from_bot]
        message = max(mine, key=lambda m: m.message_id)
        return Sent(chat, user, message.message_id, update is not None, message.thread_id)

    def press(self, chat: FakeChat, user: FakeUser, message: StoredMessage | int, data: str) -> str:
        """`user` presses a button with callback `data` under `message`; returns the query id."""
        message_id = message.message_id if isinstance(message, StoredMessage) else message
        update = self.fake.inject_callback(chat, user, message_id, data)
        query: JSONDict = update["callback_query"]
        return str(query["id"])

    def click(self, chat: FakeChat, user: FakeUser, message: StoredMessage, label: str) -> str:
        """Press the (only) button of `message` whose label contains `label`."""
        return self.press(chat, user, message, button_data(message, label))

    # -- waiting for the bot ----------------------------------------------------------------------
    async def wait_reply(
        self,
        after: Sent,
        *,
        contains: str | None = None,
        where: Callable[[StoredMessage], bool] | None = None,
        timeout: float = 5.0,
        until_handled: bool = True,
    ) -> StoredMessage:
        """The first bot message in the chat of `after`, sent after it, matching the filters
        (and then, unless `until_handled` is False, until the bots finished handling)."""

        def find() -> StoredMessage | None:
            for message in self.fake.bot_messages(after.chat.id):
                if message.message_id <= after.message_id or message.deleted:
                    continue
                if contains is not None and contains not in (message.content or ""):
                    continue
                if where is not None and not where(message):
                    continue
                return message
            return None

        reply = await self.fake.wait_for(
            find, timeout, what=f"a reply containing {contains!r} in chat {after.chat.id}"
        )
        if until_handled:
            await handled()
        return reply

    async def wait_toast(self, query_id: str, timeout: float = 5.0) -> str:
        """The text of the answer to callback query `query_id` ('' when answered silently), as
        the user sees it: a text sent as anything but a string (PTB turns "" into `[]` when
        `Defaults` are set) shows as its JSON, e.g. "[]"."""
        answer = await self.fake.wait_for(
            lambda: self.fake.callback_answers.get(query_id), timeout, what="a callback answer"
        )
        text = answer.get("text")
        if text is None:
            return ""
        return text if isinstance(text, str) else json.dumps(text)

    async def wait_content(
        self, message: StoredMessage, contains: str, timeout: float = 5.0
    ) -> StoredMessage:
        """Wait until `message` (e.g. after an edit) shows `contains` (and, as `wait_reply`,
        until the bots finished handling their updates)."""
        shown = await self.fake.wait_for(
            lambda: message if contains in (message.content or "") else None,
            timeout,
            what=f"message {message.message_id} to show {contains!r}",
        )
        await handled()
        return shown

    async def settle(self, seconds: float = 0.3) -> None:
        """Give the bot time to (not) react, for negative assertions."""
        await asyncio.sleep(seconds)

    def replies_after(self, after: Sent) -> list[StoredMessage]:
        return [
            m
            for m in self.fake.bot_messages(after.chat.id)
            if m.message_id > after.message_id and not m.deleted
        ]


def buttons(message: StoredMessage) -> list[tuple[str, str]]:
    """(label, callback_data) of every inline button of the message, row by row."""
    markup = message.reply_markup or {}
    return [
        (str(b.get("text")), str(b.get("callback_data")))
        for row in markup.get("inline_keyboard", [])
        for b in row
        if "callback_data" in b
    ]


def button_data(message: StoredMessage, label: str) -> str:
    found = [data for text, data in buttons(message) if label in text]
    if len(found) != 1:
        raise AssertionError(f"{len(found)} buttons match {label!r}: {buttons(message)}")
    return found[0]


def job_prefix(text: str) -> list[str]:
    """The short job ids shown in a /queue answer."""
    return re.findall(r"\b[0-9a-f]{8}\b", text)


def shown_texts(bot: BotHarness) -> list[str]:
    """Every text the bot showed: each version of each message, and every toast."""
    shown = [v.text or v.caption or "" for m in bot.fake.bot_messages() for v in m.history]
    return shown + [str(a.get("text") or "") for a in bot.fake.callback_answers.values()]


def assert_no_crash(bot: BotHarness) -> None:
    """No update ended in the global error handler, nothing internal leaked into the chat."""
    for text in shown_texts(bot):
        assert "went wrong on my side" not in text, text
        assert "Traceback" not in text, text
    assert not bot.fake.internal_errors


def send_without_size(bot: BotHarness, chat: FakeChat, user: FakeUser, **kwargs: Any) -> Sent:
    """`user` sends a file whose update has no `file_size` (optional in the Bot API). The update
    is changed before the bot can fetch it: nothing awaits between the two."""
    update = bot.fake.inject_message(chat, user, **kwargs)
    assert update is not None
    message = update["message"]
    for kind in ("document", "audio", "voice"):
        if kind in message:
            del message[kind]["file_size"]
    return Sent(chat, user, message["message_id"], True)


class Logs:
    """The bot's log lines (JSON) written while the `logs` fixture (conftest.py) is active."""

    def __init__(self, stream: io.StringIO) -> None:
        self.stream = stream

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.stream.getvalue().splitlines() if line.strip()]

    def of(self, event: str) -> list[dict[str, Any]]:
        return [line for line in self.lines() if line.get("event") == event]

    def crashes(self) -> list[dict[str, Any]]:
        """Updates that ended in the global error handler (an exception a handler let out)."""
        return self.of("update failed")


# -- several bots behind a load balancer (webhook mode, one database) ---------------------------

WEBHOOK_SECRET = "cluster-test-secret_0123456789"
WEBHOOK_PATH = "telegram"


def port_of(bot: BotHarness) -> int:
    return bot.settings.telegram_webhook_port


class Cluster:
    """Bots sharing the fake Bot API, the database and DATA_DIR, behind the balancer."""

    def __init__(self, fake: FakeTelegram, comfy_url: str, dsn: str, data_dir: Path) -> None:
        self.fake, self.comfy_url, self.dsn, self.data_dir = fake, comfy_url, dsn, data_dir
        self.balancer = Planned(WEBHOOK_PATH)
        self.bots: list[BotHarness] = []

    async def start_bot(self, **overrides: Any) -> BotHarness:
        """Start one more bot (settings `overrides` as in `make_bot`) and wait until it has
        registered its webhook."""
        settings = harness_settings(
            self.fake,
            self.comfy_url,
            self.dsn,
            self.data_dir,
            telegram_webhook_url=self.balancer.url,
            telegram_webhook_listen="127.0.0.1",
            telegram_webhook_port=free_port(),
            telegram_webhook_secret=WEBHOOK_SECRET,
            **overrides,
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
