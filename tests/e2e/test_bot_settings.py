"""/settings: the chat's defaults; in groups only group admins may change them."""

from __future__ import annotations

from tests.e2e.harness import BotHarness, buttons


async def test_private_chat_settings(bot_harness: BotHarness) -> None:
    bot = bot_harness
    alice = bot.fake.user("Alice")
    chat = bot.fake.private_chat(alice)
    panel = await bot.wait_reply(
        bot.send(chat, alice, "/settings"), contains="Settings of this chat"
    )
    text = panel.content or ""
    assert "Style: anime" in text and "Aspect ratio: 1:1" in text and "Video length: 3 s" in text

    bot.click(chat, alice, panel, "Style")
    await bot.wait_content(panel, "Choose the default style")
    assert "• anime" in [label for label, _ in buttons(panel)]
    saved = bot.click(chat, alice, panel, "chibi")
    assert await bot.wait_toast(saved) == "Saved."
    await bot.wait_content(panel, "Style: chibi")

    bot.click(chat, alice, panel, "Aspect ratio")
    await bot.wait_content(panel, "aspect ratio")
    bot.click(chat, alice, panel, "16:9")
    await bot.wait_content(panel, "Aspect ratio: 16:9")

    bot.click(chat, alice, panel, "Video length")
    await bot.wait_content(panel, "video length")
    bot.click(chat, alice, panel, "8 s")
    await bot.wait_content(panel, "Video length: 8 s")

    bot.click(chat, alice, panel, "Original file: off")
    await bot.wait_content(panel, "Also send the original file: on")

    stored = await bot.service.chat_settings(chat.id)
    assert (stored.style_preset, stored.aspect_ratio, stored.video_seconds) == ("chibi", "16:9", 8)
    assert stored.send_original is True

    # a forged value for a field is refused, nothing changes
    forged = bot.press(chat, alice, panel, f"v1|sts|{alice.id}|aspect|chibi")
    assert "no longer valid" in await bot.wait_toast(forged)
    assert (await bot.service.chat_settings(chat.id)).aspect_ratio == "16:9"


async def test_group_settings_need_a_group_admin(bot_harness: BotHarness) -> None:
    bot = bot_harness
    admin, member = bot.fake.user("Ada"), bot.fake.user("Max")
    group = bot.fake.supergroup("Studio", members=[member], admins=[admin])

    readonly = await bot.wait_reply(
        bot.send(group, member, "/settings@AnimeStudioTestBot"), contains="Settings"
    )
    assert "Only group admins can change these." in (readonly.content or "")
    assert not buttons(readonly)

    panel = await bot.wait_reply(
        bot.send(group, admin, "/settings@AnimeStudioTestBot"), contains="Settings"
    )
    assert buttons(panel)
    # the member presses the admin's buttons
    other = bot.click(group, member, panel, "Style")
    assert await bot.wait_toast(other) == "This is not your request."
    # the admin changes a value
    bot.click(group, admin, panel, "Aspect ratio")
    await bot.wait_content(panel, "aspect ratio")
    bot.click(group, admin, panel, "9:16")
    await bot.wait_content(panel, "Aspect ratio: 9:16")
    # demoted meanwhile: the old keyboard no longer works
    bot.fake.set_admins(group, [])
    refused = bot.click(group, admin, panel, "Video length")
    assert await bot.wait_toast(refused) == "Only group admins can change the settings."
    assert (await bot.service.chat_settings(group.id)).aspect_ratio == "9:16"
