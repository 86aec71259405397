"""Core's refusals and a failed job's reason reach a Russian-speaking user in Russian (the real
bot, fake Telegram, fake ComfyUI, real PostgreSQL); an English-speaking user still reads core's
English words."""

from __future__ import annotations

from tests.e2e.harness import BotHarness
from tests.fakes.comfyui import FakeComfyUI


async def test_core_refusal_in_the_users_language(studio: BotHarness) -> None:
    bot = studio
    ivan = bot.fake.user("Иван", language_code="ru")
    alice = bot.fake.user("Alice")
    ru_chat, en_chat = bot.fake.private_chat(ivan), bot.fake.private_chat(alice)

    sent = bot.send(ru_chat, ivan, "/image a cat on a roof --bogus 3")
    answer = await bot.wait_reply(sent, contains="Неизвестный параметр --bogus. Известные: --ar")
    assert "Unknown option" not in (answer.content or "")
    sent = bot.send(ru_chat, ivan, "/image a cat on a roof --steps 5000")
    await bot.wait_reply(sent, contains="--steps — целое число от 1 до")

    sent = bot.send(en_chat, alice, "/image a cat on a roof --bogus 3")
    await bot.wait_reply(sent, contains="Unknown option --bogus. Known: --ar")
    assert not bot.fake.internal_errors


async def test_failed_job_reason_in_the_users_language(
    studio: BotHarness, fake_comfy: FakeComfyUI
) -> None:
    bot = studio
    ivan = bot.fake.user("Иван", language_code="ru")
    chat = bot.fake.private_chat(ivan)
    fake_comfy.fail_next(None, "Out of <memory> & time", "torch.OutOfMemoryError")

    progress = await bot.wait_reply(bot.send(chat, ivan, "/image a quiet shrine at dawn"))
    await bot.fake.wait_for(
        lambda: "не получилось" in (progress.content or ""), timeout=20, what="the failed job"
    )
    text = progress.content or ""
    assert "Ошибка генерации в " in text, text
    assert "(узел " in text and "OutOfMemoryError: Out of <memory> & time" in text, text
    assert "Generation failed" not in text
