"""Edges of the soundtrack chooser (see test_bot_music.py for the main paths): a search that
shows nothing, a picker that cannot become the chooser, a forged result button, two
presses racing for one chooser, own audio Telegram will not send, a chooser that cannot be
closed, audio captioned /video with no scene or bad options, and an audio's own title and
performer. The real bot against the fake Bot API, the fake ComfyUI, the fake iTunes and a real
PostgreSQL."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from bot import dialogs as bot_dialogs
from bot.handlers.music import PICK
from tests.e2e import test_bot_music
from tests.e2e.harness import BotHarness, Sent, assert_no_crash, handled, send_without_size
from tests.e2e.test_bot_music import FALLBACK, labels, wait_video
from tests.e2e.test_bot_scenes import job_of, jobs_of, person
from tests.fakes.itunes import FakeITunes

STALE = "This button is no longer valid."
EXPIRED = "This music choice has expired; send the command again."
OCEAN = "📁 Ocean Waves · local"


# The fixtures of test_bot_music.py: video models, iTunes (nothing added) and a local music
# folder with "Ocean Waves"; a voice message and an mp3 of the user's own.
studio = test_bot_music.studio
music_files = test_bot_music.music_files


async def ocean_chooser(bot: BotHarness, scene: str = "a quiet sea") -> tuple[Any, ...]:
    """Alice (no characters) asks for a video with music: the chooser offering Ocean Waves."""
    alice, chat, _ = await person(bot, "Alice")
    sent = bot.send(chat, alice, f'/video {scene} --length 2s --music "ocean"')
    chooser = await bot.wait_reply(sent, contains="Pick the soundtrack")
    assert labels(chooser) == [OCEAN, *FALLBACK]
    return alice, chat, sent, chooser


# -- the chooser ----------------------------------------------------------------------------------


async def test_a_query_that_shows_nothing_gets_the_fallback(
    studio: BotHarness, fake_itunes: FakeITunes
) -> None:
    bot = studio
    alice, chat, _ = await person(bot, "Alice")
    sent = bot.send(chat, alice, '/video a quiet sea --music "\u3164"')  # a blank filler letter
    chooser = await bot.wait_reply(sent, contains="I found no music for")
    assert labels(chooser) == FALLBACK
    assert fake_itunes.search_calls == 0
    bot.click(chat, alice, chooser, "Cancel")
    await bot.wait_content(chooser, "Video cancelled.")
    assert await jobs_of(bot, alice) == []
    assert_no_crash(bot)


async def test_a_picker_that_cannot_be_edited_gets_a_new_chooser(studio: BotHarness) -> None:
    bot = studio
    alice, chat, (aiko, _ren) = await person(bot, "Alice", "Aiko", "Ren")
    sent = bot.send(chat, alice, '/video waves at night --length 2s --music "ocean"')
    picker = await bot.wait_reply(sent, contains="Who is in this scene?")
    bot.click(chat, alice, picker, "Aiko")
    await bot.fake.wait_for(lambda: "✅ Aiko" in labels(picker), what="the tick")
    await handled()

    bot.fake.fail_next(
        "editMessageText", kind=400, description="Bad Request: message can't be edited"
    )
    bot.click(chat, alice, picker, "Done")
    chooser = await bot.wait_reply(
        Sent(chat, alice, picker.message_id, True), contains="Pick the soundtrack"
    )
    assert labels(chooser) == [OCEAN, *FALLBACK]
    assert "Pick the soundtrack" not in (picker.content or "")
    # the draft stored for the picker was dropped: its (music) buttons choose nothing
    stale = bot.press(chat, alice, picker, PICK.data(0, owner=alice.id))
    assert await bot.wait_toast(stale) == EXPIRED
    assert await jobs_of(bot, alice) == []

    query = bot.click(chat, alice, chooser, "Ocean Waves")
    assert await bot.wait_toast(query) == "Started."
    video = await wait_video(bot, sent)
    assert "♪ Ocean Waves" in (video.caption or "").splitlines()
    job = await job_of(bot, chat, video)
    assert job.character_ids == [aiko.id]
    assert job.soundtrack is not None and job.soundtrack["source"] == "local"
    assert len(await jobs_of(bot, alice)) == 1
    assert_no_crash(bot)


async def test_a_forged_result_index_is_refused(studio: BotHarness) -> None:
    bot = studio
    alice, chat, sent, chooser = await ocean_chooser(bot)
    versions = len(chooser.history)

    # a result the chooser does not have (it shows one)
    forged = bot.press(chat, alice, chooser, PICK.data(5, owner=alice.id))
    assert await bot.wait_toast(forged) == STALE
    await bot.settle(0.1)
    assert len(chooser.history) == versions and await jobs_of(bot, alice) == []

    # the chooser still works
    started = bot.click(chat, alice, chooser, "Ocean Waves")
    assert await bot.wait_toast(started) == "Started."
    await wait_video(bot, sent)
    assert len(await jobs_of(bot, alice)) == 1
    assert_no_crash(bot)


def hold_first_lookup(monkeypatch: pytest.MonkeyPatch) -> tuple[asyncio.Event, asyncio.Event]:
    """The next chooser lookup (`dialogs.of_message`) finds its chooser, then waits for
    `release`: that press is handled as if it had arrived together with the next one."""
    entered, release = asyncio.Event(), asyncio.Event()
    original = bot_dialogs.of_message
    calls = 0

    async def of_message(*args: Any) -> Any:
        nonlocal calls
        calls += 1
        found = await original(*args)
        if calls == 1:
            entered.set()
            await release.wait()
        return found

    monkeypatch.setattr(bot_dialogs, "of_message", of_message)
    return entered, release


@pytest.mark.parametrize("late", ["Ocean Waves", "No music", "Cancel"])
async def test_a_press_that_loses_the_race_for_the_chooser_is_answered(
    studio: BotHarness, monkeypatch: pytest.MonkeyPatch, late: str
) -> None:
    """Two presses at once (a double tap, two bot processes): both find the chooser, one takes
    it. The other gets an answer (no endless spinner) and changes nothing."""
    bot = studio
    alice, chat, sent, chooser = await ocean_chooser(bot)
    entered, release = hold_first_lookup(monkeypatch)
    loser = bot.click(chat, alice, chooser, late)
    await asyncio.wait_for(entered.wait(), 5)
    winner = bot.click(chat, alice, chooser, "Ocean Waves")
    assert await bot.wait_toast(winner) == "Started."
    release.set()
    assert await bot.wait_toast(loser) == EXPIRED

    video = await wait_video(bot, sent)
    await handled()
    assert "♪ Ocean Waves" in (video.caption or "").splitlines()
    assert not [v for v in chooser.history if "cancelled" in (v.text or "")]
    (job,) = await jobs_of(bot, alice)
    assert job.soundtrack is not None and job.soundtrack["source"] == "local"
    assert_no_crash(bot)


# -- own audio ------------------------------------------------------------------------------------


async def test_own_audio_telegram_will_not_send_then_a_chooser_that_cannot_be_closed(
    studio: BotHarness, music_files: dict[str, Path]
) -> None:
    bot = studio
    alice, chat, _ = await person(bot, "Alice")
    sent = bot.send(chat, alice, '/video Aiko dancing --length 2s --music "zzz unknown"')
    chooser = await bot.wait_reply(sent, contains="I found no music for")
    bot.click(chat, alice, chooser, "Send my own audio")
    await bot.wait_content(chooser, "Send me the audio")

    # no file_size in the update: getFile refuses the download; the bot says why, still waits
    big = send_without_size(
        bot, chat, alice, document=b"\0" * (20 * 1024 * 1024 + 1), document_name="x.mp3"
    )
    refused = await bot.wait_reply(big, contains="too large")
    assert refused.content == "That file is too large (>20 MB): I can take audio of at most 20 MB."
    assert [c.error for c in bot.fake.calls_of("getFile")] == ["Bad Request: file is too big"]
    assert await jobs_of(bot, alice) == []

    # the chooser cannot be edited any more (deleted by the user): the video is made anyway
    bot.fake.fail_next(
        "editMessageText", kind=400, description="Bad Request: message to edit not found"
    )
    voice = bot.send(chat, alice, voice=music_files["voice"].read_bytes())
    video = await wait_video(bot, voice)
    assert "♪ Voice message" in (video.caption or "").splitlines()
    assert not any("Soundtrack:" in (v.text or "") for v in chooser.history)
    job = await job_of(bot, chat, video)
    assert job.soundtrack is not None and job.soundtrack["source"] == "upload"
    assert_no_crash(bot)


async def test_audio_captioned_video(studio: BotHarness, music_files: dict[str, Path]) -> None:
    bot = studio
    alice, chat, _ = await person(bot, "Alice")
    mp3 = music_files["mp3"].read_bytes()

    # no scene, bad options: said so before anything is downloaded
    usage = bot.send(chat, alice, caption="/video", audio=mp3)
    await bot.wait_reply(usage, contains="Describe the scene after the command")
    bad = bot.send(chat, alice, caption="/video a cat --length 99s", audio=mp3)
    await bot.wait_reply(bad, contains="--length must be seconds from")
    assert bot.fake.calls_of("getFile") == []
    assert await jobs_of(bot, alice) == []

    # an audio message (no file name) with the title and performer Telegram read from its tags
    update = bot.fake.inject_message(
        chat, alice, caption="/video a cat on a roof --length 2s", audio=mp3
    )
    assert update is not None
    update["message"]["audio"].update(title="Moon Theme", performer="Hana")
    video = await wait_video(bot, Sent(chat, alice, update["message"]["message_id"], True))
    assert "♪ Moon Theme — Hana" in (video.caption or "").splitlines()
    job = await job_of(bot, chat, video)
    assert job.soundtrack is not None
    assert (job.soundtrack["source"], job.soundtrack["title"], job.soundtrack["artist"]) == (
        "upload",
        "Moon Theme",
        "Hana",
    )
    assert_no_crash(bot)
