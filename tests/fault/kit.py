"""What the fault tests share: requests through the fake Telegram, reading the jobs back from
PostgreSQL, and counting what reached the chats.

Every request is `/image <scene> <marker> --steps N` with a marker unique to the request; the
result's caption repeats the scene, so each result message (and each result uploaded into an
edited message) in the fake Telegram is attributed to exactly one request. Progress previews are
photos too: only captions with the seed line (`RESULT_MARK`) count as results.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from core.settings import Settings
from tests.engine import install_models
from tests.fakes.comfyui import FakeComfyUI
from tests.fakes.telegram import FakeChat, FakeTelegram, FakeUser, StoredMessage
from tests.fault.procs import Animebot, child_env

FINAL = ("done", "failed", "cancelled")
MEDIA_KINDS = frozenset({"photo", "video", "document", "animation"})
MEDIA_METHODS = frozenset(
    {"sendPhoto", "sendVideo", "sendDocument", "sendAnimation", "editMessageMedia"}
)
RESULT_MARK = "🎲 seed"  # in every result caption; progress previews (photos too) lack it


def prepare_comfy(fake: FakeComfyUI, step_delay_s: float) -> None:
    """List our model names (as a real server with the files would) and slow the steps down."""
    install_models(fake, Settings(_env_file=None))
    fake.step_delay_s = step_delay_s


@dataclass(frozen=True)
class Request:
    marker: str
    user: FakeUser
    chat: FakeChat
    message_id: int


def make_users(fake: FakeTelegram, count: int) -> list[tuple[FakeUser, FakeChat]]:
    people = []
    for index in range(count):
        user = fake.user(f"User{index:02d}", username=f"user{index:02d}")
        people.append((user, fake.private_chat(user)))
    return people


def inject_image(
    fake: FakeTelegram, user: FakeUser, chat: FakeChat, marker: str, steps: int
) -> Request:
    """`user` writes `/image ...` (long polling picks it up, or the webhook gets it POSTed)."""
    fake.inject_message(chat, user, f"/image a quiet street at dusk {marker} --steps {steps}")
    mine = [m for m in fake.messages.values() if m.chat.id == chat.id and not m.from_bot]
    return Request(marker, user, chat, max(m.message_id for m in mine))


def marker_of(index: int) -> str:
    return f"mk{index:03d}q"


# -- the chat side --------------------------------------------------------------------------------


def visible_results(fake: FakeTelegram, marker: str) -> list[StoredMessage]:
    """Media messages showing the result of request `marker` now (deleted ones excluded)."""
    return [
        m
        for m in fake.bot_messages()
        if not m.deleted
        and m.media_kind in MEDIA_KINDS
        and marker in (m.caption or "")
        and RESULT_MARK in (m.caption or "")
    ]


def media_deliveries(fake: FakeTelegram) -> Counter[str]:
    """How many times Telegram accepted a result upload, per caption (sendPhoto & co. and
    editMessageMedia, including uploads whose answer the bot never saw)."""
    counts: Counter[str] = Counter()
    for message in fake.bot_messages():
        for version in message.history:
            if version.method in MEDIA_METHODS and RESULT_MARK in (version.caption or ""):
                counts[version.caption or ""] += 1
    return counts


def deliveries_of(counts: Counter[str], marker: str) -> int:
    return sum(n for caption, n in counts.items() if marker in caption)


# -- the database side ----------------------------------------------------------------------------


async def jobs(dsn: str) -> list[dict[str, Any]]:
    """Every generation, with how often it was marked done and the ids its outputs record."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT g.id, g.status, g.error, g.prompt_typed, g.chat_id, g.request_message_id,"
            " g.progress_message_id, g.result_message_id, g.delivery_error, g.attempts,"
            " (SELECT count(*) FROM generation_events e WHERE e.generation_id = g.id"
            "  AND e.to_status = 'done') AS done_events,"
            " (SELECT array_agg(o.telegram_message_id ORDER BY o.position) FROM outputs o"
            "  WHERE o.generation_id = g.id) AS output_messages"
            " FROM generations g ORDER BY g.created_at"
        )
    finally:
        await conn.close()
    return [dict(row) for row in rows]


async def wait_jobs(
    dsn: str,
    predicate: Callable[[list[dict[str, Any]]], bool],
    timeout: float,
    what: str,
    *,
    check: Callable[[], Awaitable[None]] | None = None,
) -> list[dict[str, Any]]:
    """Poll the generations until `predicate(rows)`; `check` may raise (e.g. a process died)."""
    deadline = time.monotonic() + timeout
    while True:
        rows = await jobs(dsn)
        if predicate(rows):
            return rows
        if check is not None:
            await check()
        if time.monotonic() > deadline:
            states = Counter(r["status"] for r in rows)
            raise AssertionError(f"timed out after {timeout} s waiting for {what}: {dict(states)}")
        await asyncio.sleep(0.2)


def all_final(count: int) -> Callable[[list[dict[str, Any]]], bool]:
    return lambda rows: len(rows) == count and all(r["status"] in FINAL for r in rows)


def marker_in(row: dict[str, Any], markers: list[str]) -> str:
    found = [m for m in markers if m in row["prompt_typed"]]
    assert len(found) == 1, (row["prompt_typed"], found)
    return found[0]


def prompt_posts(*fakes: FakeComfyUI) -> Counter[str]:
    """POST /prompt bodies received per prompt_id (the job id), over every backend."""
    counts: Counter[str] = Counter()
    for fake in fakes:
        for body in fake.prompt_posts:
            if isinstance(body, dict) and body.get("prompt_id"):
                counts[str(body["prompt_id"])] += 1
    return counts


def check_delivered_once(
    fake: FakeTelegram, rows: list[dict[str, Any]], markers: list[str]
) -> Counter[str]:
    """Every job done, marked done once, its recorded message showing its result, exactly one
    visible result message per request. Returns the upload count per marker (measured)."""
    counts = media_deliveries(fake)
    failed = [(r["prompt_typed"], r["error"]) for r in rows if r["status"] != "done"]
    assert not failed, f"jobs not done: {failed}"
    uploads: Counter[str] = Counter()
    for row in rows:
        marker = marker_in(row, markers)
        assert row["done_events"] == 1, (marker, row["done_events"])
        assert row["delivery_error"] is None, (marker, row["delivery_error"])
        assert row["result_message_id"] is not None, marker
        assert row["output_messages"] == [row["result_message_id"]], (marker, row)
        shown = visible_results(fake, marker)
        assert len(shown) == 1, f"{len(shown)} results shown for {marker}\n" + chat_story(fake, row)
        assert (shown[0].chat.id, shown[0].message_id) == (
            row["chat_id"],
            row["result_message_id"],
        ), marker
        uploads[marker] = deliveries_of(counts, marker)
        assert uploads[marker] >= 1, marker
    by_request = Counter((r["chat_id"], r["request_message_id"]) for r in rows)
    assert max(by_request.values()) == 1, "a request made two jobs"
    return uploads


def chat_story(fake: FakeTelegram, row: dict[str, Any]) -> str:
    """Every version of every bot message about one job, and the calls on them (failures)."""
    ids = {row["progress_message_id"], row["result_message_id"]}
    lines = [f"job {row['id']} {row['status']} progress/result message {sorted(map(str, ids))}"]
    for message in fake.bot_messages(row["chat_id"]):
        if message.message_id not in ids and (
            message.reply_to is None or message.reply_to.message_id != row["request_message_id"]
        ):
            continue
        for version in message.history:
            shown = (version.caption or version.text or "").replace("\n", " | ")[:90]
            lines.append(f"  {message.message_id} {version.method}: {shown}")
    for call in fake.calls:
        if call.chat_id in (row["chat_id"], str(row["chat_id"])) and str(
            call.params.get("message_id")
        ) in {str(i) for i in ids}:
            lines.append(f"  call {call.method} -> {call.status} {call.error or ''}")
    return "\n".join(lines)


# -- the bot process ------------------------------------------------------------------------------


def bot_env(
    fake: FakeTelegram, comfies: list[FakeComfyUI], dsn: str, data_dir: Path, **settings: Any
) -> dict[str, str]:
    """Environment of an `animebot run` on the fakes (long polling unless a webhook is set)."""
    return child_env(
        telegram_bot_token=fake.token,
        telegram_api_base_url=fake.api_url,
        telegram_file_base_url=fake.file_url,
        database_url=dsn,
        data_dir=data_dir,
        comfyui_urls=",".join(c.base_url for c in comfies),
        **settings,
    )


async def wait_polling(fake: FakeTelegram, bot: Animebot, timeout: float = 45.0) -> float:
    """Seconds from the process start to its first getUpdates (its engine is started by then)."""
    started = bot.started_at

    def polling() -> bool:
        if not bot.running:
            raise AssertionError(f"{bot.name} exited during start-up:\n{bot.text()[-3000:]}")
        return any(c.at > started for c in fake.calls_of("getUpdates"))

    await fake.wait_for(polling, timeout, what=f"{bot.name} polling")
    return time.monotonic() - started


async def wait_upload(fake: FakeTelegram, timeout: float) -> bool:
    """Until Telegram accepts one more result upload than now; False on timeout."""
    before = sum(media_deliveries(fake).values())
    try:
        await fake.wait_for(
            lambda: sum(media_deliveries(fake).values()) > before, timeout, what="a result upload"
        )
    except AssertionError:
        return False
    return True


def alive(*procs: Animebot) -> Callable[[], Awaitable[None]]:
    """A `check` for wait_jobs: fails as soon as one of `procs` has exited."""

    async def check() -> None:
        for proc in procs:
            if not proc.running:
                raise AssertionError(f"{proc.name} exited:\n{proc.text()[-3000:]}")

    return check


def request_all(
    fake: FakeTelegram, people: list[tuple[FakeUser, FakeChat]], per_user: int, steps: int
) -> list[str]:
    """`per_user` requests from each person, round-robin; returns their markers in order."""
    markers = []
    for turn in range(per_user):
        for index, (user, chat) in enumerate(people):
            marker = marker_of(turn * len(people) + index)
            inject_image(fake, user, chat, marker, steps)
            markers.append(marker)
    return markers


def story(fake: FakeTelegram, row: dict[str, Any], *procs: Animebot) -> str:
    """The chat side and the log lines of one job (for a failure message)."""
    lines = [chat_story(fake, row)]
    for proc in procs:
        for record in proc.records():
            if record.get("job_id") == str(row["id"]):
                lines.append(
                    f"  {proc.name} run {record['_run']} {record.get('timestamp', '')[11:23]}: "
                    f"{record.get('event')} {record.get('error', '')}"
                )
    return "\n".join(lines)
