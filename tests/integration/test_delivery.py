"""TelegramDeliverer against the fake Bot API (real HTTP) with real PostgreSQL rows and files."""

from __future__ import annotations

import asyncio
import io
import subprocess
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import imageio_ffmpeg
import pytest
from PIL import Image
from telegram import Bot
from telegram.error import NetworkError, RetryAfter
from telegram.request import HTTPXRequest

from bot import delivery as delivery_mod
from bot.delivery import TelegramDeliverer
from bot.keyboards import decode
from bot.live import LiveProgress, live_for
from bot.progress import ProgressContent
from bot.render import ORIGINAL, REROLL, CaptionInfo, caption, result_markup
from core.db import characters as char_db
from core.db import generations as gen_db
from core.db import outputs as out_db
from core.db import people
from core.db.pool import Database
from core.events import EventBus, JobEvent
from core.jobs.delivery import DeliveredFile
from core.models import ChatType, Generation, JobKind, Operation, Output
from core.runtime import Runtime
from core.service import JobTicket, StudioService
from core.settings import Settings
from core.states import JobState
from tests.fakes.telegram import FakeChat, FakeTelegram, FakeUser, utf16_len

LONG_SCENE = (
    "Aiko 🌸 reads an old letter in a rainy café, steam rising from her tea, "
    "neon reflections on the window 👩‍👩‍👧 🇯🇵 "
) * 30


# -- fixtures --------------------------------------------------------------------------------------


def _jpeg(path: Path, size: tuple[int, int], color: tuple[int, int, int]) -> Path:
    Image.new("RGB", size, color).save(path, "JPEG", quality=85)
    return path


def _png(path: Path, size: tuple[int, int], color: tuple[int, int, int]) -> Path:
    Image.new("RGB", size, color).save(path, "PNG")
    return path


@pytest.fixture(scope="session")
def sample_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2 s H.264/AAC mp4, 320x240."""
    path = tmp_path_factory.mktemp("media") / "clip.mp4"
    subprocess.run(
        [
            imageio_ffmpeg.get_ffmpeg_exe(),
            "-loglevel",
            "error",
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=320x240:rate=10",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440",
            "-t",
            "2",
            "-c:v",
            "libx264",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
            "-shortest",
            "-movflags",
            "+faststart",
            str(path),
        ],
        check=True,
        timeout=60,
    )
    return path


@dataclass
class World:
    fake: FakeTelegram
    bot: Bot
    db: Database
    service: StudioService
    runtime: Runtime
    deliverer: TelegramDeliverer
    live: LiveProgress
    user: FakeUser
    chat: FakeChat
    tmp: Path

    async def job(
        self,
        *,
        kind: JobKind = JobKind.IMAGE,
        chat: FakeChat | None = None,
        thread_id: int | None = None,
        scene: str = "Aiko reading in a rainy café",
        request_message_id: int | None = None,
        character_names: tuple[str, ...] = ("Aiko",),
        operation: Operation = Operation.GENERATE,
    ) -> Generation:
        chat = chat or self.chat
        await people.upsert_chat(
            self.db.pool,
            chat.id,
            ChatType(chat.type),
            title=chat.title,
            is_forum=chat.is_forum,
        )
        ids = []
        for name in character_names:
            found = await char_db.find_by_name(self.db.pool, self.user.id, name)
            if found is None:
                found = await char_db.create_character(
                    self.db.pool,
                    owner_id=self.user.id,
                    chat_id=chat.id,
                    name=name,
                    appearance="silver hair",
                    base_seed=7,
                )
            ids.append(found.id)
        job, _alone = await gen_db.create_queued(
            self.db.pool,
            id=uuid.uuid4(),
            requester_id=self.user.id,
            chat_id=chat.id,
            thread_id=thread_id,
            request_message_id=request_message_id,
            kind=kind,
            operation=operation,
            prompt_typed=scene,
            workflow="txt2img_sd15" if kind is JobKind.IMAGE else "txt2video_wan",
            character_ids=ids,
            seed=123456789,
        )
        return job

    async def delivering(self, job: Generation) -> Generation:
        for state in (
            JobState.SUBMITTED,
            JobState.RUNNING,
            JobState.POSTPROCESSING,
            JobState.DELIVERING,
        ):
            job = await gen_db.transition(self.db.pool, job.id, state)
        return job

    async def image_output(
        self, job: Generation, *, size: tuple[int, int] = (768, 512), position: int = 0
    ) -> Output:
        folder = self.tmp / str(job.id)
        folder.mkdir(parents=True, exist_ok=True)
        original = _png(folder / f"{position:02d}_comfy.png", size, (200, 80, 120))
        photo = _jpeg(folder / f"{position:02d}_telegram.jpg", size, (200, 80, 120))
        return await out_db.save_output(
            self.db.pool,
            generation_id=job.id,
            position=position,
            kind=JobKind.IMAGE,
            file_path=str(original),
            delivery_path=str(photo),
            mime="image/png",
            size_bytes=original.stat().st_size,
            sha256="0" * 64,
            width=size[0],
            height=size[1],
        )

    async def video_output(self, job: Generation, video: Path) -> Output:
        folder = self.tmp / str(job.id)
        folder.mkdir(parents=True, exist_ok=True)
        thumb = _jpeg(folder / "thumb.jpg", (320, 240), (10, 10, 10))
        return await out_db.save_output(
            self.db.pool,
            generation_id=job.id,
            position=0,
            kind=JobKind.VIDEO,
            file_path=str(video),
            delivery_path=str(video),
            thumbnail_path=str(thumb),
            mime="video/mp4",
            size_bytes=video.stat().st_size,
            sha256="1" * 64,
            width=320,
            height=240,
            duration_s=2.0,
        )

    async def post_progress(self, job: Generation, reply_to: int | None = None) -> int:
        message = await self.live.post(JobTicket(job, 2, 40.0), lang="en", reply_to=reply_to)
        assert message is not None
        return message.message_id

    async def reload(self, job: Generation) -> Generation:
        return await self.service.job(job.id)


@pytest.fixture
async def world(fake_telegram: FakeTelegram, db: Database, tmp_path: Path) -> AsyncIterator[World]:
    settings = Settings(
        _env_file=None,
        comfyui_urls=["http://127.0.0.1:9"],
        data_dir=tmp_path,
    )
    events = EventBus()
    service = StudioService(settings, db, events)
    runtime = cast(
        Runtime,
        SimpleNamespace(settings=settings, service=service, events=events, extras={}),
    )
    bot = fake_telegram.make_bot(
        request=HTTPXRequest(connection_pool_size=8, read_timeout=5, write_timeout=5)
    )
    await bot.initialize()
    user = fake_telegram.user("Aiko's owner", username="owner", language_code="en")
    await people.upsert_user(db.pool, user.id, first_name=user.first_name, language_code="en")
    chat = fake_telegram.private_chat(user)
    live = live_for(runtime, bot)
    world = World(
        fake_telegram,
        bot,
        db,
        service,
        runtime,
        TelegramDeliverer(bot, runtime),
        live,
        user,
        chat,
        tmp_path,
    )
    try:
        yield world
    finally:
        await live.stop(max_wait=1)
        await bot.shutdown()


def callback_data(markup: dict[str, Any] | None) -> list[str]:
    assert markup is not None
    return [b["callback_data"] for row in markup["inline_keyboard"] for b in row]


# -- photos ----------------------------------------------------------------------------------------


async def test_photo_replaces_the_progress_message(world: World) -> None:
    request = world.fake.inject_message(world.chat, world.user, "/image Aiko in a café")
    assert request is not None
    request_id = request["message"]["message_id"]
    job = await world.job(scene=LONG_SCENE, request_message_id=request_id)
    progress_id = await world.post_progress(job, reply_to=request_id)
    job = await world.reload(await world.delivering(job))
    assert job.progress_message_id == progress_id
    output = await world.image_output(job)

    receipt = await world.deliverer.deliver(job, [output])

    assert receipt.error is None
    assert receipt.message_id == progress_id
    msg = world.fake.message(world.chat.id, progress_id)
    assert msg.media_kind == "photo" and not msg.deleted
    assert msg.reply_to is not None and msg.reply_to.message_id == request_id
    assert msg.history[-1].method == "editMessageMedia"
    assert msg.media_bytes == Path(output.delivery_path or "").read_bytes()
    [delivered] = receipt.files
    assert delivered.output_id == output.id and delivered.message_id == progress_id
    assert delivered.file_id == msg.media_file_id
    # caption: scene trimmed, characters, seed; within Telegram's limit
    assert msg.caption is not None and utf16_len(msg.caption) <= 1024
    lines = msg.caption.splitlines()
    assert lines[0].endswith("…") and lines[0].startswith("Aiko 🌸 reads an old letter")
    assert lines[1:] == ["👤 Aiko", "🎲 seed 123456789"]
    # buttons: short, decodable, owned by the requester
    data = callback_data(msg.reply_markup)
    assert len(data) == 6
    for item in data:
        assert len(item.encode()) <= 64
        decoded = decode(item)
        assert decoded is not None and decoded.owner == world.user.id
        assert decoded.uuid(0) == job.id
    assert not [c for c in world.fake.calls if c.error and "not modified" in c.error]


async def test_photo_without_progress_message_is_sent_as_a_reply(world: World) -> None:
    request = world.fake.inject_message(world.chat, world.user, "/image x")
    assert request is not None
    request_id = request["message"]["message_id"]
    job = await world.delivering(await world.job(request_message_id=request_id))
    output = await world.image_output(job)

    receipt = await world.deliverer.deliver(job, [output])

    assert receipt.message_id is not None
    msg = world.fake.message(world.chat.id, receipt.message_id)
    assert msg.history[0].method == "sendPhoto"
    assert msg.reply_to is not None and msg.reply_to.message_id == request_id
    assert decode(callback_data(msg.reply_markup)[0]) is not None


async def test_pending_progress_edits_never_overwrite_the_result(world: World) -> None:
    job = await world.job()
    progress_id = await world.post_progress(job)
    job = await world.reload(await world.delivering(job))
    output = await world.image_output(job)
    # A progress state queued right before delivery (the chat is paced: it waits).
    world.live.editor.submit(world.chat.id, progress_id, ProgressContent("📤 uploading…"))

    receipt = await world.deliverer.deliver(job, [output])
    await asyncio.sleep(2.0)  # longer than the private chat's edit interval

    msg = world.fake.message(world.chat.id, progress_id)
    assert receipt.message_id == progress_id
    assert msg.media_kind == "photo"
    assert msg.caption is not None and msg.caption.startswith("Aiko reading")
    assert msg.history[-1].method == "editMessageMedia"


async def test_progress_message_gone_sends_a_new_photo(world: World) -> None:
    job = await world.job()
    progress_id = await world.post_progress(job)
    world.fake.message(world.chat.id, progress_id).deleted = True  # the user deleted it
    job = await world.reload(await world.delivering(job))
    output = await world.image_output(job)

    receipt = await world.deliverer.deliver(job, [output])

    assert receipt.message_id not in (None, progress_id)
    assert world.fake.message(world.chat.id, receipt.message_id or 0).media_kind == "photo"


async def test_send_original_setting_adds_the_png_as_a_document(world: World) -> None:
    job = await world.delivering(await world.job())
    await world.service.update_chat_settings(world.chat.id, send_original=True)
    output = await world.image_output(job)

    receipt = await world.deliverer.deliver(job, [output])

    docs = [m for m in world.fake.bot_messages(world.chat.id) if m.media_kind == "document"]
    assert len(docs) == 1
    assert docs[0].reply_to is not None and docs[0].reply_to.message_id == receipt.message_id
    assert docs[0].media_bytes == Path(output.file_path).read_bytes()
    assert docs[0].caption == "Original file, 768×512"


# -- video -----------------------------------------------------------------------------------------


async def test_video_is_streamable_with_thumbnail_and_progress_is_deleted(
    world: World, sample_video: Path
) -> None:
    job = await world.job(kind=JobKind.VIDEO, scene="Aiko waving on a beach")
    progress_id = await world.post_progress(job)
    job = await world.reload(await world.delivering(job))
    output = await world.video_output(job, sample_video)

    receipt = await world.deliverer.deliver(job, [output])

    assert receipt.message_id is not None and receipt.message_id != progress_id
    assert world.fake.message(world.chat.id, progress_id).deleted
    msg = world.fake.message(world.chat.id, receipt.message_id)
    assert msg.media_kind == "video"
    call = world.fake.calls_of("sendVideo")[-1]
    assert call.params["supports_streaming"] is True
    assert (call.params["duration"], call.params["width"], call.params["height"]) == (2, 320, 240)
    assert str(call.params["thumbnail"]).startswith("attach://")
    assert "thumbnail" in msg.media  # the fake accepted it: JPEG <= 320 px, < 200 kB
    assert msg.media_bytes == sample_video.read_bytes()
    assert receipt.files[0].file_id == msg.media_file_id
    data = callback_data(msg.reply_markup)
    assert [decode(d).action for d in data if decode(d)] == [  # type: ignore[union-attr]
        REROLL,
        decode(data[1]).action,  # type: ignore[union-attr]
    ]
    assert all(decode(d).action is not ORIGINAL for d in data)  # type: ignore[union-attr]
    assert world.fake.chat_actions and world.fake.chat_actions[-1]["action"] == "upload_video"


# -- where it goes ---------------------------------------------------------------------------------


async def test_forum_topic_is_respected(world: World) -> None:
    forum = world.fake.forum("Studio", members=[world.user])
    topic = world.fake.add_topic(forum, "Renders")
    request = world.fake.inject_message(
        forum, world.user, "/image@AnimeStudioTestBot x", thread_id=topic
    )
    assert request is not None
    request_id = request["message"]["message_id"]
    job = await world.job(chat=forum, thread_id=topic, request_message_id=request_id)
    progress_id = await world.post_progress(job, reply_to=request_id)
    assert world.fake.message(forum.id, progress_id).thread_id == topic
    job = await world.reload(await world.delivering(job))
    video_job = await world.delivering(
        await world.job(
            chat=forum, thread_id=topic, request_message_id=request_id, kind=JobKind.VIDEO
        )
    )

    photo_receipt = await world.deliverer.deliver(job, [await world.image_output(job)])
    folder = world.tmp / "v"
    folder.mkdir()
    clip = folder / "c.mp4"
    clip.write_bytes(b"\x00\x00\x00\x18ftypmp42")  # a tiny mp4 header is enough for the fake
    video_receipt = await world.deliverer.deliver(
        video_job, [await world.video_output(video_job, clip)]
    )

    assert world.fake.message(forum.id, photo_receipt.message_id or 0).thread_id == topic
    assert world.fake.message(forum.id, video_receipt.message_id or 0).thread_id == topic
    assert world.fake.calls_of("sendVideo")[-1].params["message_thread_id"] == topic


async def test_blocked_user_gives_a_receipt_with_an_error(world: World) -> None:
    job = await world.job()
    await world.post_progress(job)
    job = await world.reload(await world.delivering(job))
    output = await world.image_output(job)
    world.fake.block(world.chat)

    receipt = await world.deliverer.deliver(job, [output])

    assert receipt.message_id is None and receipt.files == []
    assert receipt.error is not None and "blocked" in receipt.error


async def test_bot_removed_from_group_gives_a_receipt_with_an_error(world: World) -> None:
    group = world.fake.group("Gone", members=[world.user])
    job = await world.delivering(await world.job(chat=group))
    group.kicked = True

    receipt = await world.deliverer.deliver(job, [await world.image_output(job)])

    assert receipt.message_id is None and "kicked" in (receipt.error or "")


async def test_flood_wait_and_network_errors_are_raised_for_a_retry(world: World) -> None:
    job = await world.delivering(await world.job())
    output = await world.image_output(job)

    world.fake.fail_next("sendPhoto", kind=429, retry_after=3)
    with pytest.raises(RetryAfter):
        await world.deliverer.deliver(job, [output])
    world.fake.fail_next("sendPhoto", kind=502)
    with pytest.raises(NetworkError):
        await world.deliverer.deliver(job, [output])

    receipt = await world.deliverer.deliver(job, [output])  # the retry works
    assert receipt.message_id is not None and receipt.error is None


async def test_missing_file_is_not_retried_forever(world: World) -> None:
    job = await world.delivering(await world.job())
    output = await world.image_output(job)
    Path(output.delivery_path or "").unlink()

    receipt = await world.deliverer.deliver(job, [output])

    assert receipt.message_id is None and receipt.error


async def test_too_big_for_a_photo_goes_as_a_document(world: World) -> None:
    job = await world.delivering(await world.job())
    output = await world.image_output(job, size=(9000, 1200))  # width + height over 10000

    receipt = await world.deliverer.deliver(job, [output])

    msg = world.fake.message(world.chat.id, receipt.message_id or 0)
    assert msg.media_kind == "document"
    assert receipt.files[0].file_id == msg.media_file_id


# -- recorded as it goes (the kill -9 window) ------------------------------------------------------


@dataclass
class SnapshotLedger:
    """Records what the fake Bot API had done when each message was reported."""

    fake: FakeTelegram
    reports: list[tuple[DeliveredFile, bool, list[str]]] = field(default_factory=list)

    async def sent(self, file: DeliveredFile, *, main: bool) -> None:
        done = [c.method for c in self.fake.calls if c.method != "getUpdates"]
        self.reports.append((file, main, done))


async def _video_and_still(
    world: World, sample_video: Path
) -> tuple[Generation, int, Output, Output]:
    """A delivering video job with its progress message, its video and a second output."""
    job = await world.job(kind=JobKind.VIDEO, scene="Aiko waving on a beach")
    progress_id = await world.post_progress(job)
    job = await world.reload(await world.delivering(job))
    video = await world.video_output(job, sample_video)
    extra = await world.image_output(job, size=(320, 240), position=1)
    return job, progress_id, video, extra


async def test_main_result_is_reported_before_anything_else_is_sent(
    world: World, sample_video: Path
) -> None:
    job, progress_id, video, extra = await _video_and_still(world, sample_video)
    ledger = SnapshotLedger(world.fake)

    receipt = await world.deliverer.deliver(job, [video, extra], ledger)

    [(main, is_main, done_then), (second, second_main, _)] = ledger.reports
    assert is_main and main.output_id == video.id and main.message_id == receipt.message_id
    # Reported right after the upload: the progress message was still there, no extra sent.
    assert done_then[-1] == "sendVideo" and "deleteMessage" not in done_then
    assert not second_main and second.output_id == extra.id
    assert world.fake.message(world.chat.id, progress_id).deleted


async def test_an_interrupted_delivery_sends_only_what_is_missing(
    world: World, sample_video: Path
) -> None:
    """A previous process sent the main result (recorded) and died before the rest."""
    job, progress_id, video, extra = await _video_and_still(world, sample_video)
    first = await world.deliverer.bot.send_message(world.chat.id, "the result, sent before")
    assert await out_db.record_main_delivery(
        world.db.pool, job.id, video.id, message_id=first.message_id, file_id=None
    )
    job = await world.reload(job)
    outputs = await world.service.outputs(job.id)
    uploads_before = len(world.fake.calls_of("sendVideo")) + len(world.fake.calls_of("sendPhoto"))
    ledger = SnapshotLedger(world.fake)

    receipt = await world.deliverer.deliver(job, outputs, ledger)

    assert receipt.message_id == first.message_id
    assert len(world.fake.calls_of("sendVideo")) == 0  # the main result is never sent again
    assert len(world.fake.calls_of("sendPhoto")) == uploads_before + 1  # only the extra
    [(file, main, _)] = ledger.reports
    assert not main and file.output_id == extra.id
    sent = world.fake.message(world.chat.id, file.message_id)
    assert sent.reply_to is not None and sent.reply_to.message_id == first.message_id
    assert world.fake.message(world.chat.id, progress_id).deleted  # left by the dead process


# -- library link ----------------------------------------------------------------------------------


async def test_library_link_is_added_to_the_caption(world: World) -> None:
    job = await world.delivering(await world.job(scene=LONG_SCENE))
    output = await world.image_output(job)
    receipt = await world.deliverer.deliver(job, [output])
    assert receipt.message_id is not None
    await gen_db.record_delivery(world.db.pool, job.id, result_message_id=receipt.message_id)
    await out_db.record_telegram(
        world.db.pool, output.id, file_id=receipt.files[0].file_id, message_id=receipt.message_id
    )
    job = await world.reload(job)
    output = (await world.service.outputs(job.id))[0]
    link = "https://media.example.org/web/#/details?id=" + "a" * 32

    await world.deliverer.library_linked(job, output, link)
    await world.deliverer.library_linked(job, output, link)  # again: "not modified" is fine

    msg = world.fake.message(world.chat.id, receipt.message_id)
    assert msg.caption is not None and msg.caption.endswith("📚 Open in the library")
    assert utf16_len(msg.caption) <= 1024
    assert callback_data(msg.reply_markup) == callback_data(msg.history[0].reply_markup)
    expected = caption(CaptionInfo(LONG_SCENE, ["Aiko"], 123456789, link, JobKind.IMAGE), "en")
    call = world.fake.calls_of("editMessageCaption")[0]
    assert call.params["caption"] == expected
    assert link in call.params["caption"]


async def test_a_video_without_its_soundtrack_says_why_also_with_the_library_link(
    world: World, sample_video: Path
) -> None:
    """Post-processing sent the plain video (the preview could not be downloaded) and recorded
    why: the caption says so in place of the credit, and keeps saying so once the library link
    is added."""
    job = await world.delivering(await world.job(kind=JobKind.VIDEO, scene="Aiko waving"))
    output = await world.video_output(job, sample_video)
    plain = world.tmp / str(job.id) / "00_telegram.mp4"
    plain.write_bytes(sample_video.read_bytes())
    await world.db.pool.execute(
        "UPDATE outputs SET delivery_path = $2, without_music = 'download_failed' WHERE id = $1",
        output.id,
        str(plain),
    )
    song = {"source": "itunes", "key": "42", "title": "Sakura Song", "artist": "Hana"}
    with_song = {"soundtrack": song}
    job = (await world.reload(job)).model_copy(update=with_song)
    output = (await world.service.outputs(job.id))[0]
    note = "🔇 Sent without music: the song preview could not be downloaded."

    receipt = await world.deliverer.deliver(job, [output])

    assert receipt.message_id is not None
    msg = world.fake.message(world.chat.id, receipt.message_id)
    assert msg.caption is not None and msg.caption.splitlines()[-1] == note
    assert "Sakura" not in msg.caption
    await gen_db.record_delivery(world.db.pool, job.id, result_message_id=receipt.message_id)
    job = (await world.reload(job)).model_copy(update=with_song)
    await world.deliverer.library_linked(job, output, "https://media.example.org/x")
    assert msg.caption is not None
    assert msg.caption.splitlines()[-2:] == [note, "📚 Open in the library"]


async def test_library_link_survives_a_blocked_chat(world: World) -> None:
    job = await world.delivering(await world.job())
    output = await world.image_output(job)
    receipt = await world.deliverer.deliver(job, [output])
    await gen_db.record_delivery(world.db.pool, job.id, result_message_id=receipt.message_id)
    world.fake.block(world.chat)

    await world.deliverer.library_linked(await world.reload(job), output, "https://x/y")


async def test_library_link_retries_a_flood_wait(world: World) -> None:
    job = await world.delivering(await world.job())
    output = await world.image_output(job)
    receipt = await world.deliverer.deliver(job, [output])
    await gen_db.record_delivery(world.db.pool, job.id, result_message_id=receipt.message_id)
    world.fake.fail_next("editMessageCaption", kind=429, retry_after=1)

    await world.deliverer.library_linked(await world.reload(job), output, "https://x/y")

    msg = world.fake.message(world.chat.id, receipt.message_id or 0)
    assert msg.caption is not None and msg.caption.endswith("Open in the library")


# -- live progress ---------------------------------------------------------------------------------


async def test_live_progress_follows_events_and_previews(world: World) -> None:
    world.live.start()
    await world.live.wait_subscribed()
    job = await world.job()
    progress_id = await world.post_progress(job)
    events = world.runtime.events

    def publish(type_: str, status: str = "running", **kw: Any) -> None:
        events.publish(
            JobEvent(job_id=job.id, type=type_, status=status, chat_id=world.chat.id, **kw)
        )

    publish("state", "submitted")
    publish("state", "running")
    for step in range(1, 11):
        publish("progress", percent=step * 9.0, node="3", step=step, steps=10, eta_s=10.0 - step)
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (1, 2, 3)).save(buffer, "JPEG")
    publish("preview", preview=buffer.getvalue(), preview_mime="image/jpeg")

    msg = world.fake.message(world.chat.id, progress_id)
    await world.fake.wait_for(lambda: msg.media_kind == "photo", timeout=8, what="preview")
    await world.fake.wait_for(
        lambda: msg.caption is not None and "step 10/10" in msg.caption, timeout=8, what="step"
    )
    publish("state", "failed", message="The GPU ran out of memory.")
    await world.fake.wait_for(
        lambda: msg.caption is not None and "ran out of memory" in msg.caption,
        timeout=8,
        what="failed",
    )
    assert msg.reply_markup is None  # no Cancel button any more
    assert (msg.caption or "").startswith("❌ Image · failed")
    assert not [c for c in world.fake.calls if c.error and "not modified" in c.error]
    texts = [v.caption or v.text for v in msg.history]
    assert len(texts) == len(set(texts)) or msg.history[-2].media_file_id != msg.media_file_id
    assert world.live.errors == 0


async def test_live_progress_honours_429_and_keeps_the_final_state(world: World) -> None:
    world.live.start()
    await world.live.wait_subscribed()
    job = await world.job()
    progress_id = await world.post_progress(job)
    msg = world.fake.message(world.chat.id, progress_id)
    world.fake.fail_next("editMessageText", kind=429, retry_after=1)

    def publish(type_: str, status: str, **kw: Any) -> None:
        world.runtime.events.publish(
            JobEvent(job_id=job.id, type=type_, status=status, chat_id=world.chat.id, **kw)
        )

    publish("state", "running")
    publish("progress", "running", percent=30.0, step=3, steps=10)
    publish("state", "cancelled")
    await world.fake.wait_for(
        lambda: (msg.text or "").startswith("🚫 Image · cancelled"), timeout=8, what="final"
    )
    assert world.fake.calls_of("editMessageText")[0].status == 429
    assert msg.reply_markup is None
    # nothing is sent after the final state
    await asyncio.sleep(1.6)
    assert msg.text is not None and msg.text.startswith("🚫")
    assert world.live.errors == 0


async def test_live_progress_adopts_a_job_posted_before_a_restart(world: World) -> None:
    job = await world.job()
    sent = await world.bot.send_message(world.chat.id, "⏳ Image · waiting in line")
    await world.service.set_progress_message(job.id, sent.message_id)
    world.live.start()
    await world.live.wait_subscribed()

    world.runtime.events.publish(
        JobEvent(
            job_id=job.id,
            type="progress",
            status="running",
            chat_id=world.chat.id,
            percent=55.0,
            step=11,
            steps=20,
            eta_s=4.0,
        )
    )

    msg = world.fake.message(world.chat.id, sent.message_id)
    await world.fake.wait_for(
        lambda: "step 11/20" in (msg.text or ""), timeout=5, what="the adopted job's progress"
    )
    assert "55%" in (msg.text or "")
    data = callback_data(msg.reply_markup)
    decoded = decode(data[0])
    assert decoded is not None and decoded.owner == world.user.id and decoded.uuid(0) == job.id


async def test_live_progress_survives_a_broken_event(world: World) -> None:
    world.live.start()
    await world.live.wait_subscribed()
    world.runtime.events.publish(
        JobEvent(job_id=uuid.uuid4(), type="progress", status="running", chat_id=world.chat.id)
    )  # a job that does not exist: the lookup fails
    job = await world.job()
    progress_id = await world.post_progress(job)
    world.runtime.events.publish(
        JobEvent(
            job_id=job.id, type="state", status="failed", chat_id=world.chat.id, message="boom"
        )
    )
    msg = world.fake.message(world.chat.id, progress_id)
    await world.fake.wait_for(lambda: "boom" in (msg.text or ""), timeout=5, what="failed")
    assert world.live.errors == 1


async def test_progress_message_missed_by_delivery_is_removed(world: World) -> None:
    world.live.start()
    await world.live.wait_subscribed()
    job = await world.delivering(await world.job())
    stale = await world.reload(job)  # read by delivery before the progress message was stored
    progress_id = await world.post_progress(job)
    output = await world.image_output(job)

    receipt = await world.deliverer.deliver(stale, [output])
    await gen_db.record_delivery(world.db.pool, job.id, result_message_id=receipt.message_id)
    done = await gen_db.transition(world.db.pool, job.id, JobState.DONE)
    world.runtime.events.publish(
        JobEvent(job_id=done.id, type="state", status="done", chat_id=world.chat.id)
    )

    progress = world.fake.message(world.chat.id, progress_id)
    await world.fake.wait_for(lambda: progress.deleted, timeout=5, what="the stale progress gone")
    result = world.fake.message(world.chat.id, receipt.message_id or 0)
    assert result.media_kind == "photo" and not result.deleted


# -- read ahead (DeliveryPreparer) -----------------------------------------------------------------


def _count_reads(world: World, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The service reads a delivery may make, in order."""
    reads: list[str] = []
    for name in ("find_user", "character_names", "chat_settings"):
        real = getattr(world.service, name)

        async def counted(*args: Any, _real: Any = real, _name: str = name, **kwargs: Any) -> Any:
            reads.append(_name)
            return await _real(*args, **kwargs)

        monkeypatch.setattr(world.service, name, counted)
    return reads


async def _prepared(world: World, job: Generation) -> None:
    world.deliverer.prepare(job)
    await world.deliverer._prepared[job.id]


async def test_a_prepared_delivery_reads_nothing_after_comfyui(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = await world.job(character_names=("Aiko", "Mio"))
    await world.service.update_chat_settings(world.chat.id, send_original=True)
    progress_id = await world.post_progress(job)
    reads = _count_reads(world, monkeypatch)

    await _prepared(world, job)
    world.deliverer.prepare(job)  # once per job
    # The language is the progress message's: only the names and the chat setting are read.
    assert sorted(reads) == ["character_names", "chat_settings"]
    reads.clear()
    job = await world.reload(await world.delivering(job))
    output = await world.image_output(job)
    receipt = await world.deliverer.deliver(job, [output])

    assert reads == []
    assert receipt.message_id == progress_id and receipt.error is None
    msg = world.fake.message(world.chat.id, progress_id)
    assert msg.caption is not None
    assert msg.caption.splitlines()[1:] == ["👤 Aiko, Mio", "🎲 seed 123456789"]
    data = callback_data(msg.reply_markup)  # the usual buttons
    assert data == callback_data(
        result_markup(job.id, job.requester_id, JobKind.IMAGE, "en").to_dict()
    )
    docs = [m for m in world.fake.bot_messages(world.chat.id) if m.media_kind == "document"]
    assert len(docs) == 1  # send_original, as read ahead


async def test_read_ahead_without_a_progress_message_reads_the_language_and_is_taken_once(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    await people.upsert_user(world.db.pool, world.user.id, first_name="U", language_code="ru")
    job = await world.delivering(await world.job())
    output = await world.image_output(job)
    reads = _count_reads(world, monkeypatch)
    await _prepared(world, job)
    assert sorted(reads) == ["character_names", "chat_settings", "find_user"]
    # The user switches to English while the job runs: the result may keep the old language.
    await people.upsert_user(world.db.pool, world.user.id, first_name="U", language_code="en")
    reads.clear()

    world.fake.fail_next("sendPhoto", kind=502)
    with pytest.raises(NetworkError):
        await world.deliverer.deliver(job, [output])
    assert reads == []
    sent = world.fake.calls_of("sendPhoto")[-1]
    assert "🎲 сид" in str(sent.params["caption"])

    receipt = await world.deliverer.deliver(job, [output])  # the retry reads it all again
    assert receipt.message_id is not None
    assert sorted(reads) == ["character_names", "chat_settings", "find_user"]
    msg = world.fake.message(world.chat.id, receipt.message_id)
    assert msg.caption is not None and "🎲 seed" in msg.caption


async def test_a_failed_read_ahead_is_read_again_at_delivery(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = await world.delivering(await world.job())
    output = await world.image_output(job)

    async def down(*_args: Any, **_kwargs: Any) -> Any:
        raise ConnectionError("database down")

    monkeypatch.setattr(world.service, "character_names", down)
    await _prepared(world, job)
    monkeypatch.undo()
    reads = _count_reads(world, monkeypatch)

    receipt = await world.deliverer.deliver(job, [output])

    assert reads == ["character_names"]
    msg = world.fake.message(world.chat.id, receipt.message_id or 0)
    assert msg.caption is not None and "👤 Aiko" in msg.caption


async def test_preloaded_files_are_sent_without_reading_them_back(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = await world.job()
    progress_id = await world.post_progress(job)
    job = await world.reload(await world.delivering(job))
    output = await world.image_output(job)
    photo = Path(output.delivery_path or "")
    read: list[str | None] = []
    real_read = delivery_mod.read_file

    async def counted(path: str | None) -> bytes:
        read.append(path)
        return await real_read(path)

    monkeypatch.setattr(delivery_mod, "read_file", counted)
    world.deliverer.preload(job.id, {str(photo): photo.read_bytes()})

    world.fake.fail_next("editMessageMedia", kind=502)
    with pytest.raises(NetworkError):
        await world.deliverer.deliver(job, [output])
    assert read == []  # uploaded from memory

    receipt = await world.deliverer.deliver(job, [output])  # a retry reads the file
    assert read == [str(photo)]
    assert receipt.message_id == progress_id
    assert world.fake.message(world.chat.id, progress_id).media_bytes == photo.read_bytes()
