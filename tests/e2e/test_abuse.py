"""The bad-input corpus against the real bot (fake Telegram, fake ComfyUI, real PostgreSQL).

Huge and empty prompts, control, zero-width and bidi characters, right-to-left and emoji text,
10k-character messages, forged and stale callback data, other users' buttons, non-image and
bomb images, oversized files, commands for other bots, a flood of commands and abusive options.
Every case gets a clear answer (a stable phrase of bot/texts or of core's user message); and
after each group of cases: no Telegram call of the bot failed (too long, not modified, bad
button data...), no message or toast shows a traceback or the token, no job is left unfinished,
and the bot still answers /start. The pure rules are in tests/unit/test_abuse_inputs.py.
"""

from __future__ import annotations

import asyncio
import io
import json
import random
import time
import uuid
from typing import Any

from PIL import Image

from bot import keyboards as kb
from bot.handlers.characters import LIST, OPEN
from bot.handlers.queue import CANCEL as QUEUE_CANCEL
from bot.render import CANCEL, PICK_TOGGLE, REROLL
from core.models import Character, ChatType
from core.service import Actor, CharacterDraft
from tests.e2e.harness import BotHarness, Sent, button_data, buttons
from tests.fakes.comfyui import FakeComfyUI
from tests.fakes.telegram import FakeChat, FakeUser, StoredMessage
from tests.unit.test_abuse_inputs import bomb_png, text_as_jpeg, truncated_jpeg

BOT = "@AnimeStudioTestBot"
FINAL = frozenset({"done", "failed", "cancelled"})
FSI, PDI = "\u2068", "\u2069"

NOT_YOURS = "This is not your request."
STALE = "This button is no longer valid."
TOO_FAST = "too fast"


# -- checks shared by every case -------------------------------------------------------------------


def png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 120, 160)).save(out, "PNG")
    return out.getvalue()


def bot_texts(bot: BotHarness) -> list[str]:
    """Every text the bot showed: each version of each message, and every toast."""
    texts = [
        version.text or version.caption or ""
        for message in bot.fake.bot_messages()
        for version in message.history
    ]
    texts += [str(answer.get("text") or "") for answer in bot.fake.callback_answers.values()]
    return texts


def assert_clean(bot: BotHarness) -> None:
    """No Telegram error caused by the bot, no leak of internals in what users saw."""
    failed = [
        (call.method, call.status, call.error)
        for call in bot.fake.calls
        if call.method != "getUpdates" and call.status not in (None, 200)
    ]
    assert not failed, failed
    assert not bot.fake.internal_errors
    secret = bot.fake.token.split(":", 1)[1]
    for text in bot_texts(bot):
        assert secret not in text and bot.fake.token not in text
        assert "Traceback" not in text and 'File "' not in text, text[:300]
        assert "went wrong on my side" not in text, text  # an unhandled exception
    for answer in bot.fake.callback_answers.values():
        assert len(str(answer.get("text") or "")) <= 200


async def generations(bot: BotHarness) -> list[dict[str, Any]]:
    assert bot.runtime is not None
    rows = await bot.runtime.database.pool.fetch(
        "SELECT id, requester_id, status, prompt_typed, character_ids FROM generations"
    )
    return [dict(row) for row in rows]


async def assert_no_stuck_jobs(bot: BotHarness, timeout: float = 30.0) -> list[dict[str, Any]]:
    """Wait for the queue to drain; every job ends done, failed or cancelled."""
    deadline = time.monotonic() + timeout
    while True:
        jobs = await generations(bot)
        stuck = [(str(j["id"])[:8], j["status"]) for j in jobs if j["status"] not in FINAL]
        if not stuck:
            return jobs
        if time.monotonic() > deadline:
            raise AssertionError(f"jobs left unfinished: {stuck}")
        await asyncio.sleep(0.1)


async def still_answers(bot: BotHarness, chat: FakeChat, user: FakeUser) -> None:
    command = "/start" if chat.type == "private" else f"/start{BOT}"
    await bot.wait_reply(bot.send(chat, user, command), contains="Anime Studio")


async def finish(bot: BotHarness, *people: tuple[FakeChat, FakeUser]) -> list[dict[str, Any]]:
    jobs = await assert_no_stuck_jobs(bot)
    for chat, user in people:
        await still_answers(bot, chat, user)
    assert_clean(bot)
    return jobs


async def says(
    bot: BotHarness, chat: FakeChat, user: FakeUser, text: str | None, expect: str, **kw: Any
) -> StoredMessage:
    """`user` writes; the bot answers with a message containing `expect`."""
    return await bot.wait_reply(bot.send(chat, user, text, **kw), contains=expect)


def is_result(message: StoredMessage) -> bool:
    return message.media_kind == "photo" and "seed" in (message.caption or "")


async def render(bot: BotHarness, chat: FakeChat, user: FakeUser, text: str) -> StoredMessage:
    """A scene command that is queued and delivered; its result message."""
    sent = bot.send(chat, user, text)
    await bot.wait_reply(sent, contains="waiting in line", timeout=10)
    return await bot.wait_reply(sent, where=is_result, timeout=30)


async def job_of_result(bot: BotHarness, chat: FakeChat, message: StoredMessage) -> Any:
    for _ in range(100):
        job = await bot.service.job_for_message(chat.id, message.message_id)
        if job is not None and job.status.final:
            return job
        await asyncio.sleep(0.05)
    raise AssertionError(f"no finished job for message {message.message_id}")


def utf16(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


async def person(bot: BotHarness, user: FakeUser, chat: FakeChat, *names: str) -> list[Character]:
    actor = Actor(user.id, chat.id, chat_type=ChatType(chat.type), first_name=user.first_name)
    await bot.service.seen(actor)
    return [
        await bot.service.create_character(actor, CharacterDraft(name=n, appearance="red hair"))
        for n in names
    ]


# -- scene text ------------------------------------------------------------------------------------


async def test_scene_text_abuse(studio: BotHarness, fake_comfy: FakeComfyUI) -> None:
    bot = studio
    alice, olga = bot.fake.user("Alice"), bot.fake.user("Olga")
    chat, olga_chat = bot.fake.private_chat(alice), bot.fake.private_chat(olga)

    # empty prompts, and prompts that only look like something
    for text, expect in [
        ("/image", "Describe the scene after the command"),
        ("/image        ", "Describe the scene after the command"),
        ("/video", "/video @Aiko waving"),
        ("/image --seed 5", "Describe the scene to draw."),
        ("/image \x00\x07\x1b", "Describe the scene to draw."),
        ("/image \u200b\u2060\u200e\u202e", "Describe the scene to draw."),
        ("/image \u3164 \u2800", "Describe the scene to draw."),
    ]:
        await says(bot, chat, alice, text, expect)

    # abusive options: one clear message each, nothing queued
    for text, expect in [
        ("/image a cat --ar 100:1", "--ar must look like 16:9, between 1:4 and 4:1"),
        ("/image a cat --seed -1", "--seed must be a whole number from 0 to 4294967295"),
        ("/image a cat --steps 100000", "--steps must be a whole number from 1 to 100"),
        ("/image a cat --cfg nan", "--cfg must be a number from 1 to 30"),
        ("/image a cat --flag", "Unknown option --flag. Known: --ar"),
        ('/image a cat --music "unterminated', "--music needs a quoted search"),
        ("/image a cat --seed 1 --seed 2", "--seed is given twice"),
        ("/video a cat --length 999s", "--length must be seconds from 0.5 to 10"),
    ]:
        await says(bot, olga_chat, olga, text, expect)
    assert await generations(bot) == []

    # commands for other bots: ignored, even in a private chat
    ignored = bot.send(chat, alice, "/image@OtherBot a cat on a roof")
    ignored_start = bot.send(chat, alice, "/start@OtherBot")
    await bot.settle(0.5)
    assert not bot.replies_after(ignored) and not bot.replies_after(ignored_start)
    assert await generations(bot) == []

    # a 10k-character scene: bounded, rendered, the caption within 1024
    words = "sunset over a quiet harbour with fishing boats " * 220
    assert len(words) > 10_000
    result = await render(bot, chat, alice, "/image " + words)
    shown = result.caption or ""
    assert utf16(shown) <= 1024
    assert shown.splitlines()[0].endswith("…")
    job = await job_of_result(bot, chat, result)
    assert 1000 < len(job.prompt_typed) <= 2000
    assert words.startswith(job.prompt_typed)

    # 10k characters of emoji joined sequences: counted in UTF-16, never cut inside one
    family = "🌸👩‍👩‍👧 " * 1430
    assert len(family) >= 10_000
    result = await render(bot, chat, alice, "/image " + family)
    first = (result.caption or "").splitlines()[0]
    assert utf16(result.caption or "") <= 1024
    assert first.endswith("…") and first.rstrip("…").rstrip().endswith("👩‍👩‍👧")

    # control, zero-width and bidi characters vanish from the scene
    result = await render(bot, chat, alice, "/image a gi\x00rl\x07 in\u202e the\u2066 rain")
    assert (result.caption or "").splitlines()[0] == "a girl in the rain"

    # right-to-left and emoji text round-trip, isolated so it cannot reorder the caption
    for scene in ("فتاة تقرأ في مقهى ممطر 🌧️☕", "ילדה קוראת 👩‍👩‍👧 🇯🇵 👋🏽"):
        result = await render(bot, chat, alice, f"/image {scene} --ar 3:2")
        lines = (result.caption or "").splitlines()
        assert lines[0] == f"{FSI}{scene}{PDI}"
        assert lines[1].startswith("🎲 seed ")
        assert (await job_of_result(bot, chat, result)).prompt_typed == scene

    # SQL and JSON look-alikes, HTML and format placeholders are data, shown verbatim
    posts_before = len(fake_comfy.prompt_posts)
    sql = "Robert'); DROP TABLE users; -- on a rooftop"
    result = await render(bot, chat, alice, f"/image {sql}")
    assert (result.caption or "").splitlines()[0] == sql
    assert (await job_of_result(bot, chat, result)).prompt_typed == sql
    payload = '{"prompt": {"9": {"class_type": "SaveImage"}}} <b>bold</b> & <script>x</script> {0}'
    result = await render(bot, chat, alice, f"/image {payload} %s")
    assert (result.caption or "").splitlines()[0] == f"{payload} %s"
    assert (await job_of_result(bot, chat, result)).prompt_typed == f"{payload} %s"
    sql_post, json_post = fake_comfy.prompt_posts[posts_before:]
    assert sorted(sql_post["prompt"]) == sorted(json_post["prompt"])  # same nodes: no injection
    values = [
        value
        for node in json_post["prompt"].values()
        for value in node["inputs"].values()
        if isinstance(value, str)
    ]
    assert any('"class_type": "SaveImage"' in value for value in values)
    assert json.dumps(json_post)  # still a plain JSON document

    jobs = await finish(bot, (chat, alice), (olga_chat, olga))
    assert len(jobs) == 7 and {j["status"] for j in jobs} == {"done"}
    assert bot.runtime is not None
    users = await bot.runtime.database.pool.fetchval("SELECT count(*) FROM users")
    assert users == 2  # the DROP TABLE was only ever text


# -- /newcharacter, names and reference photos -----------------------------------------------------


async def test_character_dialog_abuse(studio: BotHarness) -> None:
    bot = studio
    alice = bot.fake.user("Alice")
    chat = bot.fake.private_chat(alice)
    huge = "x" * 10_000

    await says(bot, chat, alice, "/newcharacter", "What is their name?")
    for text, expect in [
        (huge, "too long (10000 characters, at most 64)"),
        ("\u200b\u202e\u2066", "may use letters, digits"),
        ("\u3164", "may use letters, digits"),
        ("Aiko 🌸", "may use letters, digits"),
        ("Robert'); DROP TABLE characters;--", "may use letters, digits"),
    ]:
        await says(bot, chat, alice, text, expect)
    await says(bot, chat, alice, None, "name is empty", photo=png(100, 100))
    name = "لَيْلَى"  # Arabic, with its vowel marks; control and bidi characters around it
    await says(bot, chat, alice, f"\x00{name}\u202e", f"How does {name} look")

    await says(bot, chat, alice, huge, "too long (10000 characters, at most 2000)")
    await says(bot, chat, alice, "\u200b\u2060", "The appearance is empty")
    appearance = "'); DROP TABLE characters; --\nsilver hair, 👩‍💻 hoodie, <i>tall</i> {0}"
    style = await says(bot, chat, alice, appearance, "Which style")

    await says(bot, chat, alice, huge, "tap one of the style buttons")
    forged = bot.press(chat, alice, style, f"v1|ncs|{alice.id}|disco")
    assert await bot.wait_toast(forged) == STALE
    bot.click(chat, alice, style, "anime")
    await bot.wait_reply(Sent(chat, alice, style.message_id, True), contains="personality")

    await says(bot, chat, alice, huge, "too long (10000 characters, at most 1000)")
    await says(bot, chat, alice, "/skip", "reference photo")

    # reference photos: what is not a usable image is refused, saying why
    getfile_before = len(bot.fake.calls_of("getFile"))
    for document, file_name, mime, expect in [
        (text_as_jpeg(), "photo.jpg", "image/jpeg", "not an image I can read"),
        (bomb_png(), "bomb.png", "image/png", "far too many pixels"),
        (bomb_png(8000, 8000), "big.png", "image/png", "too large (8000x8000)"),
        (truncated_jpeg(), "cut.jpg", "image/jpeg", "damaged or incomplete"),
        (b"%PDF-1.7 not a photo", "scan.pdf", "application/pdf", "not a photo"),
    ]:
        sent = bot.send(chat, alice, document=document, document_name=file_name, document_mime=mime)
        await bot.wait_reply(sent, contains=expect)
    assert len(bot.fake.calls_of("getFile")) == getfile_before + 4  # the PDF is not fetched

    oversized = b"\x89PNG\r\n\x1a\n" + bytes(21 * 1024 * 1024)
    sent = bot.send(
        chat, alice, document=oversized, document_name="huge.png", document_mime="image/png"
    )
    await bot.wait_reply(sent, contains="too big (21.0 MB)")
    big_file = bot.fake.message(chat.id, sent.message_id).media_file_id
    assert all(c.params.get("file_id") != big_file for c in bot.fake.calls_of("getFile"))

    await says(bot, chat, alice, None, "too long and thin (2000x100)", photo=png(2000, 100))
    await says(bot, chat, alice, huge, "not a photo")
    await says(bot, chat, alice, None, "not a photo", audio=b"ID3\x03\x00\x00\x00 not music")

    confirm = await says(bot, chat, alice, None, "Create this character?", photo=png(600, 800))
    summary = confirm.content or ""
    assert name in summary and appearance in summary  # escaped for HTML, shown verbatim
    await says(bot, chat, alice, huge, "Tap Create or Cancel")
    bot.click(chat, alice, confirm, "Create")
    await bot.wait_reply(Sent(chat, alice, confirm.message_id, True), contains=f"{name} is ready")
    (stored,), _ = await bot.service.list_characters(alice.id)
    assert stored.name == name and stored.appearance == appearance

    # an edit with 10k characters, then nothing visible
    listing = await says(bot, chat, alice, "/characters", "Your characters")
    bot.click(chat, alice, listing, name)
    card = await bot.wait_reply(
        Sent(chat, alice, listing.message_id, True), where=lambda m: m.media_kind == "photo"
    )
    assert appearance in (card.caption or "")
    bot.click(chat, alice, card, "Edit")
    await bot.wait_content(card, "What do you want to change")
    bot.click(chat, alice, card, "Personality")
    await bot.wait_reply(Sent(chat, alice, card.message_id, True), contains="Send the new")
    await says(bot, chat, alice, huge, "too long (10000 characters, at most 1000)")
    await says(bot, chat, alice, "\u202e\u200b  shy 🙈\u2066", "Saved")
    (stored,), _ = await bot.service.list_characters(alice.id)
    assert stored.personality == "shy 🙈"

    # the RTL name round-trips into the caption of a scene
    result = await render(bot, chat, alice, f"/image {name} تقرأ في مقهى")
    lines = (result.caption or "").splitlines()
    assert lines[0] == f"{FSI}{name} تقرأ في مقهى{PDI}"
    assert lines[1] == f"👤 {FSI}{name}{PDI}"

    # a 10k scene naming nobody: the picker shows a bounded excerpt
    picker = await says(bot, chat, alice, "/image " + "rain " * 2000, "Who is in this scene?")
    assert utf16(picker.content or "") < 1000
    bot.click(chat, alice, picker, "Cancel")
    await bot.wait_content(picker, "Scene cancelled.")

    await finish(bot, (chat, alice))


# -- buttons: forged, stale, somebody else's -------------------------------------------------------


async def test_forged_stale_and_foreign_buttons(studio: BotHarness) -> None:
    bot = studio
    alice, bob = bot.fake.user("Alice"), bot.fake.user("Bob")
    group = bot.fake.group("Studio", members=[alice, bob])
    aiko, ren = await person(bot, alice, group, "Aiko", "Ren")

    sent = bot.send(group, alice, f"/image{BOT} Aiko on a roof")
    await bot.wait_reply(sent, contains="waiting in line")
    result = await bot.wait_reply(sent, where=is_result, timeout=30)
    job = await job_of_result(bot, group, result)
    listing = await says(bot, group, alice, f"/characters{BOT}", "Your characters")
    watched = {m.message_id: len(m.history) for m in (result, listing)}

    async def toast(user: FakeUser, message: StoredMessage, data: str) -> str:
        return await bot.wait_toast(bot.press(group, user, message, data))

    # forged data: a toast, nothing else (pressed by passers-by: Alice's rate stays intact)
    rng = random.Random(5)
    valid = OPEN.data(aiko.id, owner=alice.id)
    for index, data in enumerate(
        [
            rng.randbytes(40).decode("latin-1"),
            rng.randbytes(30).decode("utf-8", "replace"),
            "\x00\u202e💥",
            valid + "A" * 100,  # oversized
            "v2" + valid[2:],  # another version
            f"v1|zzz|{alice.id}|1",  # unknown action
            f"v1|cho|{alice.id}|not-a-uuid",  # a known action, a broken argument
            f"v1|cho|{alice.id}",  # an argument missing
            f"v1|sc_cancel|{alice.id}|{kb.uuid_to_text(job.id)}|x",  # one too many
            "",
        ]
    ):
        passer_by = bot.fake.user(f"Passer{index}")
        assert await toast(passer_by, listing, data) == STALE, repr(data)

    # every owned button of the bot, pressed by somebody else: "not your request"
    owned = [a for a in kb.known_actions().values() if a.owned]
    assert len(owned) > 20
    for index, declared in enumerate(owned):
        stranger = bot.fake.user(f"Mallory{index}")  # fresh users: no rate limit in the way
        args: list[kb.ArgValue] = []
        for spec in declared.args:
            if spec.kind is kb.ArgKind.UUID:
                of_job = declared.name.startswith(("rs_", "sc_cancel", "qc"))
                args.append(job.id if of_job and declared.name != "rs_refto" else aiko.id)
            elif spec.kind is kb.ArgKind.INT:
                args.append(0)
            else:
                assert spec.choices is not None
                args.append(sorted(spec.choices)[0])
        data = declared.data(*args, owner=alice.id)
        target = result if declared.name.startswith(("rs_", "sc_")) else listing
        assert await toast(stranger, target, data) == NOT_YOURS, declared.name
    # and the owner pressing a button made for somebody else
    assert await toast(alice, result, REROLL.data(job.id, owner=bob.id)) == NOT_YOURS
    # the real buttons, pressed by Bob
    for label in ("Reroll", "Upscale", "Original"):
        assert await toast(bob, result, button_data(result, label)) == NOT_YOURS

    assert {m.message_id: len(m.history) for m in (result, listing)} == watched  # no edits
    assert len(await generations(bot)) == 1
    _, total = await bot.service.list_characters(alice.id)
    assert total == 2

    # stale: a deleted character, a finished job, a picker that is gone, a page past the end
    await bot.service.delete_character(Actor(alice.id, group.id), ren.id)
    gone = "That character does not exist (any more)."
    assert await toast(alice, listing, OPEN.data(ren.id, owner=alice.id)) == gone
    assert await toast(alice, listing, kb.SCENE.data(ren.id, owner=alice.id)) == gone
    assert await toast(alice, result, CANCEL.data(job.id, owner=alice.id)) == (
        "That job is already done."
    )
    assert await toast(alice, result, QUEUE_CANCEL.data(job.id, owner=alice.id)) == (
        "That job is already done."
    )
    assert await toast(alice, result, REROLL.data(uuid.uuid4(), owner=alice.id)) == (
        "That job does not exist."
    )
    assert await toast(alice, result, PICK_TOGGLE.data(aiko.id, owner=alice.id)) == (
        "This request has expired; send the command again."
    )
    await toast(alice, listing, LIST.data(9999, owner=alice.id))
    await bot.wait_content(listing, "Your characters (1)")
    assert [label for label, _ in buttons(listing)] == ["Aiko"]
    edits = len(listing.history)
    await toast(alice, listing, LIST.data(9999, owner=alice.id))  # a double tap: same page
    await toast(alice, listing, LIST.data(0, owner=alice.id))
    await bot.settle(0.2)
    assert len(listing.history) == edits

    await finish(bot, (group, alice), (group, bob))


# -- flood, other bots in a group --------------------------------------------------------------


async def test_flood_and_commands_for_other_bots(
    studio: BotHarness, fake_comfy: FakeComfyUI
) -> None:
    bot = studio
    alice, bob, carol = bot.fake.user("Alice"), bot.fake.user("Bob"), bot.fake.user("Carol")
    group = bot.fake.group("Chatty", members=[alice, bob])
    bot.fake.set_admins(group, [bot.fake.bot_user])  # an admin bot sees every message

    # commands for other bots and plain chatter: not a word
    quiet = [
        bot.send(group, alice, "/image@OtherBot a cat"),
        bot.send(group, alice, "/start@OtherBot"),
        bot.send(group, bob, "/newcharacter@SomeOtherBot"),
        bot.send(group, bob, "hello everyone, " + "blah " * 2000),
    ]
    assert all(sent.visible for sent in quiet)
    await bot.settle(0.5)
    assert not [m for sent in quiet for m in bot.replies_after(sent)]
    await says(bot, group, alice, "/start@animestudiotestbot", "Anime Studio")

    # 40 scene commands in 2 s from one user, GPU busy: one polite warning, bounded answers
    fake_comfy.hold()
    chat, bob_chat = bot.fake.private_chat(alice), bot.fake.private_chat(bob)
    first = bot.send(chat, alice, "/image a cat number 0")
    bob_asks = None
    for number in range(1, 40):
        await asyncio.sleep(0.05)
        bot.send(chat, alice, f"/image a cat number {number}")
        if number == 20:
            bob_asks = bot.send(bob_chat, bob, "/start")
    assert bob_asks is not None
    await bot.wait_reply(first, contains=TOO_FAST)
    await bot.wait_reply(bob_asks, contains="Anime Studio")  # others are served meanwhile
    await bot.settle(1.0)
    replies = [m.content or "" for m in bot.replies_after(first)]
    assert sum(TOO_FAST in text for text in replies) == 1
    queued = [text for text in replies if "Image · " in text]  # waiting, or starting already
    refused = [text for text in replies if "You already have 5 jobs" in text]
    assert len(queued) == 5
    assert len(replies) == len(queued) + len(refused) + 1
    assert 20 <= len(replies) - 1 <= 24  # the burst and the refill of about 2 s, no more

    # a flood of button presses: every query is answered, the surplus with a short toast
    anchor = await says(bot, group, carol, f"/help{BOT}", "/newcharacter")
    presses = [bot.press(group, carol, anchor, kb.NOOP.data()) for _ in range(30)]
    toasts = [await bot.wait_toast(query) for query in presses]
    assert toasts.count("Too fast, wait a moment.") >= 8
    assert set(toasts) <= {"", "Too fast, wait a moment."}

    fake_comfy.release()
    jobs = await assert_no_stuck_jobs(bot, timeout=40)
    assert len(jobs) == 5 and {j["status"] for j in jobs} == {"done"}
    await bot.settle(1.0)  # a token back for the flooder
    await finish(bot, (chat, alice), (bob_chat, bob), (group, bob))
