"""What a finished job's delivery does when something goes wrong, as the user and the job see it.

The real engine (Runtime + Orchestrator, real PostgreSQL) delivers through the real
`TelegramDeliverer` to the fake Bot API over real HTTP. Each test writes a finished job straight
into the `delivering` state (job, progress message and outputs in one transaction, so the engine
sees it only complete), with its files prepared on disk; the engine adopts it and delivers it like
any job whose delivery is retried or resumed. The test then checks what reached the chat, the
job's final row and, where the user sees nothing, the log line that says why.
"""

from __future__ import annotations

import asyncio
import io
import json
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest
from PIL import Image
from telegram import Bot, ReplyParameters
from telegram.request import HTTPXRequest

from bot import delivery as delivery_mod
from bot.delivery import PHOTO_MAX_BYTES, UPLOAD_MAX_BYTES, TelegramDeliverer
from bot.keyboards import decode
from bot.live import live_for
from bot.render import ORIGINAL
from core.db import generations as gen_db
from core.db import outputs as out_db
from core.db import people
from core.db.types import Executor
from core.logs import configure_logging
from core.models import ChatType, Generation, JobKind, Output
from core.runtime import Runtime
from core.states import JobState
from tests.conftest import TEST_LOG_LEVEL
from tests.engine import engine_settings, wait_status
from tests.fakes.telegram import (
    ERR_FILE_TOO_BIG,
    ERR_THREAD_NOT_FOUND,
    ApiError,
    FakeChat,
    FakeTelegram,
    FakeUser,
    StoredMessage,
)
from tests.integration.engine_kit import fast_engine

MP4_HEADER = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom"  # enough for the fake


def _jpeg(path: Path, size: tuple[int, int] = (768, 512)) -> Path:
    Image.new("RGB", size, (200, 80, 120)).save(path, "JPEG", quality=85)
    return path


def _png(path: Path, size: tuple[int, int] = (768, 512)) -> Path:
    Image.new("RGB", size, (200, 80, 120)).save(path, "PNG")
    return path


def _grow(path: Path, size: int) -> Path:
    """`path` padded with zeros to `size` bytes (sparse: instant; a JPEG stays readable)."""
    with path.open("r+b") as file:
        file.truncate(size)
    return path


def actions(message: StoredMessage) -> list[Any]:
    """What the message's buttons do (their decoded callback data)."""
    markup = message.reply_markup or {}
    found = [decode(b["callback_data"]) for row in markup.get("inline_keyboard", []) for b in row]
    return [data.action for data in found if data is not None]


@dataclass
class Made:
    """A file an output will point to (written before the job is visible to the engine)."""

    kind: JobKind
    file_path: Path
    delivery_path: Path
    thumbnail_path: Path | None = None
    width: int = 768
    height: int = 512


@dataclass
class Desk:
    fake: FakeTelegram
    bot: Bot
    runtime: Runtime
    deliverer: TelegramDeliverer
    user: FakeUser
    chat: FakeChat
    tmp: Path
    log: io.StringIO
    _seq: int = field(default=0)

    # -- files ----------------------------------------------------------------------------------
    def folder(self) -> Path:
        self._seq += 1
        path = self.tmp / "outputs" / f"{self._seq:03d}"
        path.mkdir(parents=True)
        return path

    def image(self, size: tuple[int, int] = (768, 512)) -> Made:
        folder = self.folder()
        return Made(
            JobKind.IMAGE,
            _png(folder / "comfy.png", size),
            _jpeg(folder / "telegram.jpg", size),
            width=size[0],
            height=size[1],
        )

    def video(self) -> Made:
        folder = self.folder()
        clip = folder / "clip.mp4"
        clip.write_bytes(MP4_HEADER)
        thumb = _jpeg(folder / "thumb.jpg", (320, 240))
        return Made(JobKind.VIDEO, clip, clip, thumb, width=320, height=240)

    # -- chat -----------------------------------------------------------------------------------
    def say(
        self, chat: FakeChat, text: str = "/image a rooftop", thread_id: int | None = None
    ) -> int:
        """The user writes in `chat`; the message's id."""
        self.fake.inject_message(chat, self.user, text, thread_id=thread_id)
        mine = [m.message_id for m in self.fake.messages.values() if m.chat.id == chat.id]
        return max(mine)

    def request(self, chat: FakeChat | None = None, thread_id: int | None = None) -> int:
        """The user's request message; its id."""
        return self.say(chat or self.chat, thread_id=thread_id)

    async def progress(
        self,
        chat: FakeChat | None = None,
        reply_to: int | None = None,
        thread_id: int | None = None,
    ) -> int:
        """The job's progress message, as the bot posted it."""
        chat = chat or self.chat
        sent = await self.bot.send_message(
            chat.id,
            "⏳ Image · sending",
            message_thread_id=thread_id,
            reply_parameters=ReplyParameters(reply_to) if reply_to else None,
        )
        return sent.message_id

    # -- the job --------------------------------------------------------------------------------
    async def delivering(
        self,
        files: list[Made],
        *,
        chat: FakeChat | None = None,
        thread_id: int | None = None,
        request_id: int | None = None,
        progress_id: int | None = None,
    ) -> tuple[Generation, list[Output]]:
        """A job that finished with `files` (in that order), handed to the engine's delivery."""
        chat = chat or self.chat
        pool = self.runtime.database.pool
        await people.upsert_chat(pool, chat.id, ChatType(chat.type), title=chat.title)
        kind = files[0].kind if files else JobKind.IMAGE
        async with pool.acquire() as proxy, proxy.transaction():
            conn = cast(Executor, proxy)
            job, _ = await gen_db.create_queued(
                conn,
                id=uuid.uuid4(),
                requester_id=self.user.id,
                chat_id=chat.id,
                thread_id=thread_id,
                request_message_id=request_id,
                kind=kind,
                prompt_typed="Aiko on a rooftop",
                workflow="txt2img_sd15" if kind is JobKind.IMAGE else "txt2video_wan",
                seed=123456789,
            )
            if progress_id is not None:
                await gen_db.set_progress_message(conn, job.id, progress_id)
            for state in (JobState.SUBMITTED, JobState.RUNNING, JobState.POSTPROCESSING):
                await gen_db.transition(conn, job.id, state)
            outputs = [
                await out_db.save_output(
                    conn,
                    generation_id=job.id,
                    position=position,
                    kind=made.kind,
                    file_path=str(made.file_path),
                    delivery_path=str(made.delivery_path),
                    thumbnail_path=str(made.thumbnail_path) if made.thumbnail_path else None,
                    mime="image/png" if made.kind is JobKind.IMAGE else "video/mp4",
                    size_bytes=made.file_path.stat().st_size if made.file_path.exists() else 1,
                    sha256="0" * 64,
                    width=made.width,
                    height=made.height,
                    duration_s=2.0 if made.kind is JobKind.VIDEO else None,
                )
                for position, made in enumerate(files)
            ]
            job = await gen_db.transition(conn, job.id, JobState.DELIVERING)
        return job, outputs

    async def done(self, job: Generation) -> Generation:
        """The job once the engine has finished its delivery."""
        return await wait_status(self.runtime, job.id, {JobState.DONE}, timeout=10)

    async def outputs(self, job: Generation) -> list[Output]:
        return await self.runtime.service.outputs(job.id)

    # -- what happened --------------------------------------------------------------------------
    def sent(self, chat: FakeChat | None = None) -> list[StoredMessage]:
        """The bot's messages in the chat, oldest first (deleted ones included)."""
        return self.fake.bot_messages((chat or self.chat).id)

    def calls(self, method: str) -> int:
        return len(self.fake.calls_of(method))

    def logged(self, event: str) -> list[dict[str, Any]]:
        lines = [json.loads(line) for line in self.log.getvalue().splitlines() if line.strip()]
        return [line for line in lines if line.get("event") == event]


@pytest.fixture
async def desk(
    fake_telegram: FakeTelegram, pg_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Desk]:
    fast_engine(monkeypatch)
    log = io.StringIO()
    configure_logging("INFO", "json", stream=log)
    settings = engine_settings(pg_dsn, tmp_path / "data", ["http://127.0.0.1:9"])
    runtime = await Runtime.start(settings)
    bot = fake_telegram.make_bot(
        request=HTTPXRequest(connection_pool_size=8, read_timeout=5, write_timeout=5)
    )
    await bot.initialize()
    live = live_for(runtime, bot)
    deliverer = TelegramDeliverer(bot, runtime)
    try:
        await runtime.start_engine(deliverer=deliverer)
        user = fake_telegram.user("Aiko's owner", username="owner", language_code="en")
        pool = runtime.database.pool
        await people.upsert_user(pool, user.id, first_name=user.first_name, language_code="en")
        chat = fake_telegram.private_chat(user)
        yield Desk(fake_telegram, bot, runtime, deliverer, user, chat, tmp_path, log)
    finally:
        try:
            await runtime.stop()
            await live.stop(max_wait=1)
            await bot.shutdown()
        finally:
            configure_logging(TEST_LOG_LEVEL, "console")  # as tests/conftest.py set it


# -- sizes over Telegram's limits ----------------------------------------------------------------


async def test_an_image_over_10_mb_is_sent_as_a_document_in_place_of_the_progress(
    desk: Desk,
) -> None:
    request_id = desk.request()
    progress_id = await desk.progress(reply_to=request_id)
    image = desk.image()
    _grow(image.delivery_path, PHOTO_MAX_BYTES + 1)
    job, _ = await desk.delivering([image], request_id=request_id, progress_id=progress_id)

    done = await desk.done(job)

    # A photo over 10 MB is never offered to Telegram as a photo: neither edited in nor sent.
    assert desk.calls("editMessageMedia") == 0 and desk.calls("sendPhoto") == 0
    progress, result = desk.sent()[-2:]
    assert progress.message_id == progress_id and progress.deleted
    assert result.media_kind == "document" and not result.deleted
    assert result.media_bytes == image.delivery_path.read_bytes()
    assert result.reply_to is not None and result.reply_to.message_id == request_id
    assert (result.caption or "").startswith("Aiko on a rooftop")
    assert len(actions(result)) == 6  # the result's buttons
    assert done.result_message_id == result.message_id and done.delivery_error is None
    [output] = await desk.outputs(job)
    assert output.telegram_file_id == result.media_file_id


async def test_a_video_over_50_mb_ends_the_job_with_the_reason_without_uploading(
    desk: Desk,
) -> None:
    progress_id = await desk.progress()
    video = desk.video()
    _grow(video.delivery_path, UPLOAD_MAX_BYTES + 1)
    job, _ = await desk.delivering([video], progress_id=progress_id)

    done = await desk.done(job)

    # Telegram would refuse it: nothing is uploaded, and the job ends instead of retrying.
    assert desk.calls("sendVideo") == desk.calls("sendDocument") == 0
    assert [m.message_id for m in desk.sent()] == [progress_id]  # no result message
    assert (done.result_message_id, done.delivery_error) == (None, "video over 50 MB")
    [line] = desk.logged("result not deliverable")
    assert line["error"] == "video over 50 MB" and line["job_id"] == str(job.id)
    # and the progress message says so (it no longer says "sending", its buttons are gone)
    assert_explained(desk, progress_id, TOO_BIG)


TOO_BIG = (
    "⚠️ The result is ready, but it is larger than the 50 MB Telegram lets a bot send, so it "
    "cannot be shown here."
)
REFUSED = "⚠️ The result is ready, but Telegram would not take it, so it cannot be shown here."


def assert_explained(desk: Desk, progress_id: int, why: str) -> None:
    """The progress message became the explanation: done, the scene, why; no buttons."""
    message = desk.fake.message(desk.chat.id, progress_id)
    content = message.content or ""
    assert content.startswith("✅") and "Aiko on a rooftop" in content, content
    assert content.endswith(why), content
    assert not (message.reply_markup or {}).get("inline_keyboard")


# -- what only decorates the result ---------------------------------------------------------------


async def test_a_video_is_sent_without_its_lost_thumbnail_or_a_failed_upload_action(
    desk: Desk,
) -> None:
    progress_id = await desk.progress()
    video = desk.video()
    assert video.thumbnail_path is not None
    video.thumbnail_path.unlink()
    desk.fake.fail_next("sendChatAction", kind=502)
    job, _ = await desk.delivering([video], progress_id=progress_id)

    done = await desk.done(job)

    [call] = desk.fake.calls_of("sendVideo")
    assert "thumbnail" not in call.params
    result = desk.sent()[-1]
    assert result.media_kind == "video" and "thumbnail" not in result.media
    assert result.media_bytes == MP4_HEADER
    assert desk.fake.message(desk.chat.id, progress_id).deleted
    assert done.result_message_id == result.message_id and done.delivery_error is None
    assert [c.status for c in desk.fake.calls_of("sendChatAction")] == [502]
    assert desk.logged("video thumbnail missing") and desk.logged("chat action failed")


def _original_gone(desk: Desk, image: Made) -> None:
    image.file_path.unlink()


def _original_too_big(desk: Desk, image: Made) -> None:
    _grow(image.file_path, UPLOAD_MAX_BYTES + 1)


def _document_refused(desk: Desk, image: Made) -> None:
    desk.fake.fail_next("sendDocument", kind=400, description=ERR_FILE_TOO_BIG)


def _document_network_error(desk: Desk, image: Made) -> None:
    desk.fake.fail_next("sendDocument", kind=502)


@pytest.mark.parametrize(
    ("spoil", "uploads", "error"),
    [
        (_original_gone, 0, "original gone"),
        (_original_too_big, 0, "original too big"),
        (_document_refused, 1, "File is too big"),
        (_document_network_error, 1, "Bad Gateway"),
    ],
    ids=["gone", "over-50-mb", "refused", "network-error"],
)
async def test_the_original_file_failing_never_costs_or_repeats_the_result(
    desk: Desk, spoil: Callable[[Desk, Made], None], uploads: int, error: str
) -> None:
    progress_id = await desk.progress()
    await people.upsert_chat(desk.runtime.database.pool, desk.chat.id, ChatType.PRIVATE)
    await desk.runtime.service.update_chat_settings(desk.chat.id, send_original=True)
    image = desk.image()
    spoil(desk, image)
    job, _ = await desk.delivering([image], progress_id=progress_id)

    done = await desk.done(job)

    assert desk.calls("sendDocument") == uploads
    assert not [m for m in desk.sent() if m.media_kind == "document"]
    [edit] = desk.fake.calls_of("editMessageMedia")  # the result, once
    assert edit.ok and desk.calls("sendPhoto") == 0
    result = desk.fake.message(desk.chat.id, progress_id)
    assert result.media_kind == "photo"
    assert (done.result_message_id, done.delivery_error) == (progress_id, None)
    assert ORIGINAL in actions(result)  # the user can still ask for it
    [line] = desk.logged("original not sent")
    assert error in line["error"]


async def test_unreadable_language_and_chat_settings_do_not_hold_the_result(
    desk: Desk, monkeypatch: pytest.MonkeyPatch
) -> None:
    pool = desk.runtime.database.pool
    await people.upsert_user(pool, desk.user.id, first_name="U", language_code="ru")
    await people.upsert_chat(pool, desk.chat.id, ChatType.PRIVATE)
    await desk.runtime.service.update_chat_settings(desk.chat.id, send_original=True)

    async def down(*_args: Any, **_kwargs: Any) -> Any:
        raise ConnectionError("database down")

    monkeypatch.setattr(desk.runtime.service, "find_user", down)
    monkeypatch.setattr(desk.runtime.service, "chat_settings", down)
    progress_id = await desk.progress()
    job, _ = await desk.delivering([desk.image()], progress_id=progress_id)

    done = await desk.done(job)

    result = desk.fake.message(desk.chat.id, progress_id)
    assert result.media_kind == "photo"
    assert (result.caption or "").splitlines()[-1] == "🎲 seed 123456789"  # the default language
    assert desk.calls("sendDocument") == 0  # the setting is unknown: no original
    assert (done.result_message_id, done.delivery_error) == (progress_id, None)
    assert desk.logged("language of user unknown") and desk.logged("chat settings unknown")


# -- where the result goes -------------------------------------------------------------------------


def _delete_topic(desk: Desk, forum: FakeChat, topic: int) -> None:
    """An admin deletes the forum topic, and with it every message in it."""
    del forum.topics[topic]
    for message in desk.fake.messages.values():
        if message.chat.id == forum.id and message.thread_id == topic:
            message.deleted = True


async def test_a_deleted_forum_topic_gets_the_result_in_the_general_chat(desk: Desk) -> None:
    forum = desk.fake.forum("Studio", members=[desk.user])
    topic = desk.fake.add_topic(forum, "Renders")
    request_id = desk.request(forum, thread_id=topic)
    progress_id = await desk.progress(forum, reply_to=request_id, thread_id=topic)
    _delete_topic(desk, forum, topic)
    job, _ = await desk.delivering(
        [desk.image()], chat=forum, thread_id=topic, request_id=request_id, progress_id=progress_id
    )

    done = await desk.done(job)

    first, second = desk.fake.calls_of("sendPhoto")
    assert first.params["message_thread_id"] == topic and not first.ok
    assert "message_thread_id" not in second.params and second.ok
    assert desk.calls("sendDocument") == 0  # not mistaken for a photo Telegram refused
    result = desk.sent(forum)[-1]
    assert result.media_kind == "photo" and not result.deleted
    assert result.thread_id is None and result.reply_to is None
    assert (result.caption or "").startswith("Aiko on a rooftop")
    assert (done.result_message_id, done.delivery_error) == (result.message_id, None)
    assert desk.logged("forum topic gone; sending to the chat")


async def test_a_refused_video_ends_the_job_with_the_reason(desk: Desk) -> None:
    progress_id = await desk.progress()
    desk.fake.fail_next("sendVideo", kind=400, description=ERR_FILE_TOO_BIG)
    job, _ = await desk.delivering([desk.video()], progress_id=progress_id)

    done = await desk.done(job)

    assert desk.calls("sendVideo") == 1  # not retried: Telegram will not take it
    assert [m.message_id for m in desk.sent()] == [progress_id]
    assert (done.result_message_id, done.delivery_error) == (
        None,
        "telegram refused: File is too big",
    )
    assert desk.logged("result not deliverable")
    assert_explained(desk, progress_id, TOO_BIG)


async def test_a_result_refused_without_a_progress_message_is_explained_in_a_reply(
    desk: Desk,
) -> None:
    request_id = desk.request()
    desk.fake.fail_next(
        "sendVideo", kind=400, description="Bad Request: VIDEO_CONTENT_TYPE_INVALID"
    )
    job, _ = await desk.delivering([desk.video()], request_id=request_id)

    done = await desk.done(job)

    assert done.delivery_error == "telegram refused: Video_content_type_invalid"  # as PTB puts it
    [reply] = desk.sent()
    assert reply.reply_to is not None and reply.reply_to.message_id == request_id
    assert (reply.content or "").endswith(REFUSED)
    assert "Aiko on a rooftop" in (reply.content or "")


async def test_a_progress_message_that_cannot_be_edited_any_more_is_only_logged(
    desk: Desk,
) -> None:
    progress_id = await desk.progress()
    desk.fake.fail_next("sendVideo", kind=400, description=ERR_FILE_TOO_BIG)
    desk.fake.fail_next(
        "editMessageText", kind=400, description="Bad Request: message to edit not found"
    )
    job, _ = await desk.delivering([desk.video()], progress_id=progress_id)

    done = await desk.done(job)

    assert done.delivery_error == "telegram refused: File is too big"
    assert [m.message_id for m in desk.sent()] == [progress_id]  # nothing else was sent
    [line] = desk.logged("could not say why the result is missing")
    assert line["job_id"] == str(job.id) and line["error"] == "Message to edit not found"


async def test_a_video_refused_after_its_topic_was_deleted_ends_the_job(desk: Desk) -> None:
    """Regression: the refusal of the upload retried without the topic escaped as a BadRequest,
    which core takes for a passing failure: the job stayed `delivering` and was uploaded again
    every few seconds for as long as Telegram refused it."""
    forum = desk.fake.forum("Studio", members=[desk.user])
    topic = desk.fake.add_topic(forum, "Renders")
    request_id = desk.request(forum, thread_id=topic)
    progress_id = await desk.progress(forum, reply_to=request_id, thread_id=topic)
    _delete_topic(desk, forum, topic)
    desk.fake.fail_next("sendVideo", kind=400, description=ERR_THREAD_NOT_FOUND)
    desk.fake.fail_next("sendVideo", kind=400, description=ERR_FILE_TOO_BIG)
    job, _ = await desk.delivering(
        [desk.video()], chat=forum, thread_id=topic, request_id=request_id, progress_id=progress_id
    )

    done = await desk.done(job)

    in_topic, in_chat = desk.fake.calls_of("sendVideo")
    assert in_topic.params["message_thread_id"] == topic
    assert "message_thread_id" not in in_chat.params
    assert (done.result_message_id, done.delivery_error) == (
        None,
        "telegram refused: File is too big",
    )
    assert not desk.logged("delivery failed; will retry")


class _Migrated(ApiError):
    """Telegram's answer to any call to a group that became a supergroup."""

    def __init__(self, new_chat_id: int) -> None:
        super().__init__(400, "Bad Request: group chat was upgraded to a supergroup chat")
        self.new_chat_id = new_chat_id

    def body(self) -> dict[str, Any]:
        return {**super().body(), "parameters": {"migrate_to_chat_id": self.new_chat_id}}


async def test_a_group_that_became_a_supergroup_gets_the_result_there(
    desk: Desk, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression (the reply): the result sent to the supergroup replied to the old group's
    request id there, i.e. to whichever unrelated message has that id in the supergroup."""
    group = desk.fake.group("Studio", members=[desk.user])
    request_id = desk.request(group)
    progress_id = await desk.progress(group, reply_to=request_id)
    await people.upsert_chat(desk.runtime.database.pool, group.id, ChatType.GROUP)
    await desk.runtime.service.update_chat_settings(group.id, send_original=True)
    # The group is upgraded; someone writes in the supergroup, whose ids start again at 1.
    supergroup = desk.fake.supergroup("Studio", members=[desk.user])
    unrelated = desk.say(supergroup, "hello")
    assert unrelated == request_id
    real_chat = desk.fake._chat

    def chat(params: Any) -> FakeChat:
        found = real_chat(params)
        if found.id == group.id:
            raise _Migrated(supergroup.id)
        return found

    monkeypatch.setattr(desk.fake, "_chat", chat)
    job, _ = await desk.delivering(
        [desk.image()], chat=group, request_id=request_id, progress_id=progress_id
    )

    done = await desk.done(job)

    [edit] = desk.fake.calls_of("editMessageMedia")
    assert edit.params["chat_id"] == group.id and edit.status == 400
    [result, original] = desk.sent(supergroup)
    assert result.media_kind == "photo" and (result.caption or "").startswith("Aiko")
    assert result.reply_to is None  # not a reply to whatever has the request's id there
    assert len(actions(result)) == 6
    assert original.media_kind == "document"
    assert original.reply_to is not None and original.reply_to.message_id == result.message_id
    assert [m.message_id for m in desk.sent(group)] == [progress_id]  # nothing more there
    assert (done.result_message_id, done.delivery_error) == (result.message_id, None)
    assert desk.logged("group became a supergroup")


# -- several outputs -------------------------------------------------------------------------------


def _extra_file_gone(desk: Desk, extra: Made) -> None:
    extra.delivery_path.unlink()


def _extra_forbidden(desk: Desk, extra: Made) -> None:
    desk.fake.fail_next("sendPhoto", kind=403)


@pytest.mark.parametrize("spoil", [_extra_file_gone, _extra_forbidden], ids=["gone", "forbidden"])
async def test_an_extra_output_that_can_never_be_sent_is_skipped(
    desk: Desk, spoil: Callable[[Desk, Made], None]
) -> None:
    progress_id = await desk.progress()
    main, extra = desk.image(), desk.image((320, 240))
    spoil(desk, extra)
    job, _ = await desk.delivering([main, extra], progress_id=progress_id)

    done = await desk.done(job)

    assert desk.fake.message(desk.chat.id, progress_id).media_kind == "photo"
    assert [m.message_id for m in desk.sent()] == [progress_id]
    assert (done.result_message_id, done.delivery_error) == (progress_id, None)
    first, second = await desk.outputs(job)
    assert first.telegram_message_id == progress_id and second.telegram_message_id is None
    assert desk.logged("extra output not delivered")


@pytest.mark.parametrize("kind", [429, 502], ids=["flood-wait", "network-error"])
async def test_an_extra_output_hit_by_a_passing_failure_is_sent_on_the_retry(
    desk: Desk, kind: int
) -> None:
    """Regression: a flood wait or a network error on a further output was logged and dropped;
    the job was marked done and that output never reached the chat."""
    progress_id = await desk.progress()
    desk.fake.fail_next("sendPhoto", kind=kind, retry_after=1)
    job, _ = await desk.delivering([desk.image(), desk.image((320, 240))], progress_id=progress_id)

    done = await desk.done(job)

    assert desk.calls("editMessageMedia") == 1  # the main result is never sent again
    failed, sent = desk.fake.calls_of("sendPhoto")
    assert failed.status == kind and sent.ok
    result, extra = desk.sent()
    assert result.message_id == progress_id and result.media_kind == "photo"
    assert extra.media_kind == "photo" and extra.reply_to is result
    assert "caption" not in sent.params  # no caption at all: PTB would send "" as "[]"
    assert (done.result_message_id, done.delivery_error) == (progress_id, None)
    first, second = await desk.outputs(job)
    assert (first.telegram_message_id, second.telegram_message_id) == (
        progress_id,
        extra.message_id,
    )
    assert desk.logged("delivery failed; will retry")


async def test_a_job_without_outputs_ends_with_the_reason(desk: Desk) -> None:
    progress_id = await desk.progress()
    job, _ = await desk.delivering([], progress_id=progress_id)

    done = await desk.done(job)

    assert (done.result_message_id, done.delivery_error) == (None, "the job has no outputs")
    sent = [c.method for c in desk.fake.calls if c.method not in ("getMe", "sendMessage")]
    assert sent == []  # the chat is not touched
    assert desk.logged("nothing to deliver")


# -- a blocked chat, and the library link afterwards ----------------------------------------------


async def test_a_chat_that_blocked_the_bot_ends_the_job_and_gets_no_library_link(
    desk: Desk,
) -> None:
    progress_id = await desk.progress()
    desk.fake.block(desk.chat)
    job, _ = await desk.delivering([desk.image()], progress_id=progress_id)

    done = await desk.done(job)

    [edit] = desk.fake.calls_of("editMessageMedia")  # tried once, not retried
    assert edit.status == 403
    assert done.result_message_id is None
    assert (done.delivery_error or "").startswith("forbidden:")
    assert "blocked" in (done.delivery_error or "")
    [output] = await desk.outputs(job)
    assert output.telegram_message_id is None

    await desk.deliverer.library_linked(done, output, "https://media.example.org/x")

    assert desk.calls("editMessageCaption") == 0
    assert desk.logged("library link not shown: the result was not delivered")


async def _delivered(desk: Desk) -> tuple[Generation, Output, StoredMessage]:
    job, _ = await desk.delivering([desk.image()])
    done = await desk.done(job)
    [output] = await desk.outputs(job)
    assert done.result_message_id is not None
    return done, output, desk.fake.message(desk.chat.id, done.result_message_id)


async def test_a_library_link_for_a_deleted_result_is_given_up_at_once(desk: Desk) -> None:
    job, output, result = await _delivered(desk)
    result.deleted = True  # the user deleted the result

    await desk.deliverer.library_linked(job, output, "https://media.example.org/x")

    [call] = desk.fake.calls_of("editMessageCaption")
    assert call.status == 400
    [line] = desk.logged("library link not shown")
    assert line["error"] == "Message to edit not found"


class _NoWait:
    """bot.delivery's `asyncio`, with its sleeps recorded instead of waited."""

    def __init__(self) -> None:
        self.slept: list[float] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(asyncio, name)

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        await asyncio.sleep(0)


async def test_a_library_link_is_added_after_a_network_error(
    desk: Desk, monkeypatch: pytest.MonkeyPatch
) -> None:
    job, output, result = await _delivered(desk)
    no_wait = _NoWait()
    monkeypatch.setattr(delivery_mod, "asyncio", no_wait)
    desk.fake.fail_next("editMessageCaption", kind=502)

    await desk.deliverer.library_linked(job, output, "https://media.example.org/x")

    assert [c.status for c in desk.fake.calls_of("editMessageCaption")] == [502, 200]
    assert no_wait.slept == [2.0]
    assert (result.caption or "").endswith("Open in the library")
    assert desk.logged("library link edit failed")
