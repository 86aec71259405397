"""Video soundtracks end to end: `/video ... --music "query"` with the chooser (iTunes previews
and a local MUSIC_DIR), the user's own audio (voice message, mp3 document, captioned
`/video`), refusals (not audio, busy iTunes, music on /image) and the caption credit; the real
bot against the fake Bot API, the fake ComfyUI, the fake iTunes and a real PostgreSQL."""

from __future__ import annotations

import subprocess
from io import BytesIO
from pathlib import Path

import imageio_ffmpeg
import pytest
from PIL import Image

from bot import dialogs as bot_dialogs
from bot.handlers.music import NO_MUSIC, PICK
from bot.keyboards import decode
from core.media.probe import probe
from core.models import Generation, JobKind
from core.service import Actor
from tests.e2e.conftest import MakeBot
from tests.e2e.harness import BotHarness, Logs, Sent, buttons
from tests.e2e.test_bot_scenes import (
    job_of,
    jobs_of,
    no_not_modified,
    person,
    slow_dialog_starts,
)
from tests.engine import install_models
from tests.fakes.comfyui import FakeComfyUI
from tests.fakes.itunes import FakeITunes
from tests.fakes.telegram import FakeChat, FakeUser, StoredMessage

FALLBACK = ["🎤 Send my own audio", "🔇 No music", "Cancel"]


def tone(path: Path, seconds: float, codec: str = "libmp3lame", hz: int = 440) -> Path:
    """A real audio file (sine tone) made with ffmpeg."""
    subprocess.run(
        [
            imageio_ffmpeg.get_ffmpeg_exe(),
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            f"sine=frequency={hz}:duration={seconds}",
            "-c:a",
            codec,
            str(path),
        ],
        check=True,
        timeout=60,
    )
    return path


@pytest.fixture(scope="session")
def music_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("music")
    library = folder / "library"
    library.mkdir()
    return {
        "library": library,
        "ocean": tone(library / "Ocean Waves.mp3", 4.0),
        "voice": tone(folder / "voice.ogg", 1.5, "libopus", 330),
        "mp3": tone(folder / "my theme.mp3", 1.5, hz=550),
    }


@pytest.fixture
async def studio(
    make_bot: MakeBot,
    fake_comfy: FakeComfyUI,
    fake_itunes: FakeITunes,
    music_files: dict[str, Path],
) -> BotHarness:
    """The bot with video models, a local music folder and (opt-in) iTunes previews."""
    install_models(fake_comfy)
    return await make_bot(
        music_dir=music_files["library"], itunes_enabled=True, itunes_base_url=fake_itunes.url
    )


def labels(message: StoredMessage) -> list[str]:
    return [label for label, _ in buttons(message)]


async def wait_video(bot: BotHarness, sent: Sent) -> StoredMessage:
    return await bot.wait_reply(sent, where=lambda m: m.media_kind == "video", timeout=40)


async def assert_has_aac(bot: BotHarness, video: StoredMessage, tmp_path: Path) -> None:
    assert video.media_file_id is not None
    path = tmp_path / f"delivered-{video.message_id}.mp4"
    path.write_bytes(bot.fake.file_bytes(video.media_file_id))
    info = await probe(path)
    assert info.video_codec == "h264" and info.audio_codec == "aac", info


async def finished_job(bot: BotHarness, chat: FakeChat, video: StoredMessage) -> Generation:
    job = await job_of(bot, chat, video)
    assert job.kind is JobKind.VIDEO
    return job


async def nothing_queued(bot: BotHarness, user: FakeUser) -> None:
    await bot.settle()
    assert await jobs_of(bot, user) == []


async def test_pick_an_itunes_preview_credits_it_in_the_caption(
    studio: BotHarness, fake_itunes: FakeITunes, tmp_path: Path
) -> None:
    bot = studio
    fake_itunes.add(
        "sakura",
        fake_itunes.song(42, "Sakura Song", "Hana"),
        fake_itunes.song(43, "Petal Rain", "Yuki"),
        fake_itunes.song(44, "No Preview", "Nobody", preview=False),
    )
    alice, chat, (aiko,) = await person(bot, "Alice", "Aiko")
    mallory = bot.fake.user("Mallory")

    sent = bot.send(chat, alice, '/video @Aiko petals falling --length 2s --music "sakura"')
    chooser = await bot.wait_reply(sent, contains="Pick the soundtrack")
    assert "sakura" in (chooser.text or "") and "petals falling" in (chooser.text or "")
    assert labels(chooser) == [
        "🎵 Sakura Song — Hana · iTunes",
        "🎵 Petal Rain — Yuki · iTunes",
        *FALLBACK,
    ]
    for _, data in buttons(chooser):
        callback = decode(data)
        assert callback is not None and callback.owner == alice.id and len(data.encode()) <= 64
    assert fake_itunes.last_query["term"] == "sakura"

    # only the requester may choose
    query = bot.click(chat, mallory, chooser, "Sakura Song")
    assert await bot.wait_toast(query) == "This is not your request."
    assert await jobs_of(bot, alice) == []

    query = bot.click(chat, alice, chooser, "Sakura Song")
    assert await bot.wait_toast(query) == "Started."
    await bot.wait_content(chooser, "Video")  # the chooser became the progress message
    video = await wait_video(bot, sent)
    lines = (video.caption or "").splitlines()
    assert lines[0] == "Aiko petals falling"
    assert "♪ Sakura Song — Hana" in lines
    assert "Listen on Apple Music" in lines
    call = bot.fake.calls_of("sendVideo")[-1]
    store_link = '<a href="https://music.apple.com/us/album/x/42?i=42">Listen on Apple Music</a>'
    assert store_link in call.params["caption"]
    await assert_has_aac(bot, video, tmp_path)
    job = await finished_job(bot, chat, video)
    assert job.soundtrack is not None and job.soundtrack["source"] == "itunes"
    assert job.soundtrack["key"] == "42" and job.character_ids == [aiko.id]
    assert fake_itunes.preview_calls == 1

    assert chooser.deleted  # a progress message makes way for the video
    no_not_modified(bot)


async def test_local_file_after_the_character_picker(
    studio: BotHarness, fake_itunes: FakeITunes, tmp_path: Path
) -> None:
    bot = studio
    alice, chat, (aiko, _ren) = await person(bot, "Alice", "Aiko", "Ren")

    sent = bot.send(chat, alice, '/video waves at night --length 2s --music "ocean"')
    picker = await bot.wait_reply(sent, contains="Who is in this scene?")
    assert await jobs_of(bot, alice) == []  # no search before the characters are known
    assert fake_itunes.search_calls == 0
    query = bot.click(chat, alice, picker, "Aiko")
    await bot.wait_toast(query)
    await bot.fake.wait_for(lambda: "✅ Aiko" in labels(picker), what="the tick")
    done = bot.click(chat, alice, picker, "Done")
    await bot.wait_content(picker, "Pick the soundtrack")  # the picker became the chooser
    assert await bot.wait_toast(done) == ""  # answered silently, not with a "[]" toast
    assert labels(picker) == ["📁 Ocean Waves · local", *FALLBACK]

    query = bot.click(chat, alice, picker, "Ocean Waves")
    assert await bot.wait_toast(query) == "Started."
    video = await wait_video(bot, sent)
    caption = video.caption or ""
    assert "♪ Ocean Waves" in caption.splitlines() and "Apple Music" not in caption
    await assert_has_aac(bot, video, tmp_path)
    job = await finished_job(bot, chat, video)
    assert job.character_ids == [aiko.id]
    assert job.soundtrack is not None and job.soundtrack["source"] == "local"


async def test_a_soundtrack_deleted_before_the_mix_sends_the_video_without_music(
    make_bot: MakeBot,
    fake_comfy: FakeComfyUI,
    fake_itunes: FakeITunes,
    tmp_path: Path,
    logs: Logs,
) -> None:
    """The picked file is deleted before the video is mixed: the user still gets the video,
    whose caption says it is sent without music and why (in the user's language) instead of
    crediting the song; the warning names the job. Before, the job failed."""
    install_models(fake_comfy)
    library = tmp_path / "music"
    library.mkdir()
    song = tone(library / "Fading Echo.mp3", 3.0)
    bot = await make_bot(music_dir=library, itunes_enabled=True, itunes_base_url=fake_itunes.url)
    boris = bot.fake.user("Boris", language_code="ru")
    for user, note in (
        (bot.fake.user("Alice"), "🔇 Sent without music: the music file is no longer available."),
        (boris, "🔇 Отправлено без музыки: файла с музыкой больше нет."),
    ):
        _, chat, _ = await person(bot, user.first_name, user=user)
        tone(song, 3.0)  # (again, for the second user)
        sent = bot.send(chat, user, '/video echo in a canyon --length 2s --music "fading"')
        chooser = await bot.wait_reply(sent, where=lambda m: bool(buttons(m)))
        song.unlink()  # picked from the chooser, gone before the video is made
        query = bot.click(chat, user, chooser, "Fading Echo")
        await bot.wait_toast(query)
        video = await wait_video(bot, sent)
        lines = (video.caption or "").splitlines()
        assert lines[0] == "echo in a canyon" and lines[-1] == note
        assert not any("Fading Echo" in line for line in lines)
        job = await finished_job(bot, chat, video)
        assert job.soundtrack is not None and job.soundtrack["title"] == "Fading Echo"
        [out] = await bot.service.outputs(job.id)
        assert Path(out.delivery_path or "").name == "00_telegram.mp4"  # the unmixed video
        assert video.media_file_id is not None
        assert (
            bot.fake.file_bytes(video.media_file_id) == Path(out.delivery_path or "").read_bytes()
        )
        [line] = [
            x for x in logs.of("video sent without its soundtrack") if x["job_id"] == str(job.id)
        ]
        assert line["level"] == "warning" and line["reason"] == "gone"
    assert not logs.crashes()


async def test_the_chooser_is_stored_before_it_is_shown(
    studio: BotHarness, fake_itunes: FakeITunes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The picker becomes the music chooser: its draft is stored before the edit shows the
    new buttons, so a press right after the edit finds it even without waiting for it."""
    bot = studio
    alice, chat, _ = await person(bot, "Alice", "Aiko", "Ren")
    monkeypatch.setattr(bot_dialogs, "STORE_GRACE_S", 0.0)
    sent = bot.send(chat, alice, '/video waves at night --length 2s --music "ocean"')
    picker = await bot.wait_reply(sent, contains="Who is in this scene?")
    bot.click(chat, alice, picker, "Nobody, just the scene")
    slow_dialog_starts(bot, monkeypatch, 0.3)
    # not waiting for the bot's handler to finish (to store the draft)
    await bot.wait_reply(sent, contains="Pick the soundtrack", until_handled=False)
    query = bot.click(chat, alice, picker, "Ocean Waves")  # at once
    assert await bot.wait_toast(query) == "Started."
    await wait_video(bot, sent)


async def test_own_audio_when_nothing_is_found(
    studio: BotHarness, fake_itunes: FakeITunes, music_files: dict[str, Path], tmp_path: Path
) -> None:
    bot = studio
    alice, chat, _ = await person(bot, "Alice", "Aiko")

    sent = bot.send(chat, alice, '/video Aiko dancing --length 2s --music "zzz unknown"')
    chooser = await bot.wait_reply(sent, contains="I found no music for")
    assert labels(chooser) == FALLBACK
    assert fake_itunes.search_calls == 1

    query = bot.click(chat, alice, chooser, "Send my own audio")
    assert await bot.wait_toast(query) == ""
    await bot.wait_content(chooser, "Send me the audio")
    assert labels(chooser) == ["🔇 No music", "Cancel"]

    # something that is not audio: a clear message, nothing queued, still waiting
    junk = bot.send(chat, alice, document=b"just some notes\n" * 50, document_name="notes.txt")
    await bot.wait_reply(junk, contains="not an audio file")
    photo = bot.send(chat, alice, photo=png())
    await bot.wait_reply(photo, contains="That is not an audio file")
    big = bot.send(chat, alice, document=b"\0" * (20 * 1024 * 1024 + 1), document_name="x.mp3")
    await bot.wait_reply(big, contains="That file is too large (20.0 MB)")
    assert len(bot.fake.calls_of("getFile")) == 1  # the size is checked before downloading
    await nothing_queued(bot, alice)

    voice = bot.send(chat, alice, voice=music_files["voice"].read_bytes())
    await bot.wait_content(chooser, "Soundtrack: Voice message")
    assert not buttons(chooser)
    video = await wait_video(bot, voice)
    assert video.reply_to is not None and video.reply_to.message_id == sent.message_id
    assert "♪ Voice message" in (video.caption or "").splitlines()
    await assert_has_aac(bot, video, tmp_path)
    job = await finished_job(bot, chat, video)
    assert job.soundtrack is not None and job.soundtrack["source"] == "upload"

    # the wait is over: more audio is not taken for anything
    again = bot.send(chat, alice, voice=music_files["voice"].read_bytes())
    await bot.settle()
    assert bot.replies_after(again) == []


async def test_busy_itunes_and_music_on_an_image(
    studio: BotHarness, fake_itunes: FakeITunes
) -> None:
    bot = studio
    alice, chat, _ = await person(bot, "Alice", "Aiko")

    sent = bot.send(chat, alice, '/image Aiko on a roof --music "city pop"')
    await bot.wait_reply(sent, contains="Music is only for videos")
    await nothing_queued(bot, alice)
    assert fake_itunes.search_calls == 0

    fake_itunes.mode = "429"
    sent = bot.send(chat, alice, '/video Aiko on a roof --length 2s --music "city pop"')
    busy = await bot.wait_reply(sent, contains="music search is busy right now")
    assert labels(busy) == FALLBACK
    assert fake_itunes.search_calls == 1
    await nothing_queued(bot, alice)

    query = bot.press(chat, alice, busy, NO_MUSIC.data(owner=alice.id))
    assert await bot.wait_toast(query) == "Started."
    video = await wait_video(bot, sent)
    assert "♪" not in (video.caption or "")
    job = await finished_job(bot, chat, video)
    assert job.soundtrack is None

    fake_itunes.mode = "403"
    sent = bot.send(chat, alice, '/video Aiko again --music "more"')
    cancel = await bot.wait_reply(sent, contains="busy")
    bot.click(chat, alice, cancel, "Cancel")
    await bot.wait_content(cancel, "Video cancelled.")
    assert not buttons(cancel)
    stale = bot.press(chat, alice, cancel, PICK.data(0, owner=alice.id))
    assert await bot.wait_toast(stale) == "This music choice has expired; send the command again."
    assert len(await jobs_of(bot, alice)) == 1


async def test_without_music_sources_only_own_audio(
    make_bot: MakeBot,
    fake_comfy: FakeComfyUI,
    fake_itunes: FakeITunes,
    music_files: dict[str, Path],
    tmp_path: Path,
) -> None:
    install_models(fake_comfy)
    bot = await make_bot(itunes_base_url=fake_itunes.url)  # ITUNES_ENABLED off, no MUSIC_DIR
    fake_itunes.add("sakura", fake_itunes.song(42, "Sakura Song", "Hana"))
    alice, chat, _ = await person(bot, "Alice")

    sent = bot.send(chat, alice, '/video petals --music "sakura"')
    answer = await bot.wait_reply(sent, contains="only your own audio can be used")
    assert labels(answer) == FALLBACK
    assert fake_itunes.search_calls == 0
    bot.click(chat, alice, answer, "Cancel")
    await bot.wait_content(answer, "Video cancelled.")

    # audio captioned /image, a non-audio document captioned /video: refused, nothing queued
    mp3 = music_files["mp3"].read_bytes()
    wrong = bot.send(chat, alice, caption="/image a cat", audio=mp3)
    await bot.wait_reply(wrong, contains="Music is only for videos")
    text = bot.send(
        chat, alice, caption="/video a cat", document=b"%PDF-1.4 nope", document_name="a.pdf"
    )
    await bot.wait_reply(text, contains="not an audio file")
    await nothing_queued(bot, alice)

    # an mp3 document captioned /video: queued directly with it
    sent = bot.send(
        chat,
        alice,
        caption="/video petals in the wind --length 2s",
        document=mp3,
        document_name="my theme.mp3",
    )
    video = await wait_video(bot, sent)
    assert "♪ my theme" in (video.caption or "").splitlines()
    await assert_has_aac(bot, video, tmp_path)
    job = await finished_job(bot, chat, video)
    assert job.soundtrack is not None and job.soundtrack["title"] == "my theme"
    assert fake_itunes.search_calls == 0 and fake_itunes.preview_calls == 0
    assert await bot.service.my_queue(Actor(alice.id, chat.id)) == []


async def test_itunes_disabled_is_never_called(
    make_bot: MakeBot, fake_itunes: FakeITunes, music_files: dict[str, Path]
) -> None:
    bot = await make_bot(music_dir=music_files["library"], itunes_base_url=fake_itunes.url)
    fake_itunes.add("ocean", fake_itunes.song(7, "Ocean Drive", "Duke"))
    alice, chat, _ = await person(bot, "Alice")

    sent = bot.send(chat, alice, '/video a quiet sea --music "ocean"')
    chooser = await bot.wait_reply(sent, contains="Pick the soundtrack")
    assert labels(chooser) == ["📁 Ocean Waves · local", *FALLBACK]
    sent = bot.send(chat, alice, '/video a quiet sea --music "sakura"')
    await bot.wait_reply(sent, contains="I found no music for")
    assert fake_itunes.search_calls == 0
    await nothing_queued(bot, alice)


def png() -> bytes:
    out = BytesIO()
    Image.new("RGB", (64, 48), (200, 80, 120)).save(out, format="PNG")
    return out.getvalue()
