"""Commands sent on behalf of a chat: an anonymous group admin (from @GroupAnonymousBot, with
`sender_chat` the group itself) or a member writing as a channel (from @Channel_Bot). Telegram
does not say who sent them, so nothing can run for them: each command is answered with how to
be seen, everything else is ignored."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import MakeBot
from tests.e2e.groups_kit import BOT
from tests.e2e.harness import BotHarness, Sent
from tests.fakes.telegram import FakeChat, FakeTelegram, FakeUser

ANONYMOUS_ADMIN_ID = 1087968824  # @GroupAnonymousBot: the sender of an anonymous admin's message
CHANNEL_BOT_ID = 136817688  # @Channel_Bot: the sender of a message written as a channel
HOW_TO_BE_SEEN = "write from your own account"


def send_as_chat(bot: BotHarness, group: FakeChat, text: str, *, channel: bool) -> Sent:
    """A message of `group` sent on behalf of the group itself, or of a channel."""
    if channel:
        sender = FakeUser(CHANNEL_BOT_ID, "Channel", username="Channel_Bot", is_bot=True)
        sender_chat = {"id": -1001234567890, "type": "channel", "title": "Fan channel"}
    else:
        sender = FakeUser(ANONYMOUS_ADMIN_ID, "Group", username="GroupAnonymousBot", is_bot=True)
        sender_chat = group.to_api()
    update = bot.fake.inject_message(group, sender, text)
    assert update is not None
    update["message"]["sender_chat"] = sender_chat  # nothing awaited since the injection
    return Sent(group, sender, update["message"]["message_id"], True)


@pytest.mark.parametrize("channel", [False, True], ids=["anonymous-admin", "as-a-channel"])
async def test_a_command_sent_on_behalf_of_a_chat_is_told_how_to_be_seen(
    bot_harness: BotHarness, channel: bool
) -> None:
    bot = bot_harness
    ada = bot.fake.user("Ada")
    group = bot.fake.supergroup("Studio", admins=[ada])
    sent = send_as_chat(bot, group, f"/settings{BOT}", channel=channel)
    answer = await bot.wait_reply(sent, contains=HOW_TO_BE_SEEN)
    assert "Remain anonymous" in (answer.content or "")
    assert len(bot.replies_after(sent)) == 1

    # Chatter and commands for other bots from such a sender stay unanswered (seen by the bot
    # with privacy mode off, as when it is a group admin).
    bot.fake.privacy_mode = False
    for text in ("hello everyone", "/settings@OtherBot"):
        quiet = send_as_chat(bot, group, text, channel=channel)
        await bot.settle()
        assert not bot.replies_after(quiet), text


async def test_a_chat_outside_allowed_chat_ids_gets_nothing(
    make_bot: MakeBot, fake_telegram: FakeTelegram
) -> None:
    """Not even how to be seen: the bot says nothing where it is not enabled."""
    allowed = fake_telegram.supergroup("Allowed")
    bot = await make_bot(allowed_chat_ids=[allowed.id])
    other = bot.fake.supergroup("Elsewhere")
    sent = send_as_chat(bot, other, f"/settings{BOT}", channel=False)
    await bot.settle()
    assert not bot.replies_after(sent)
    listed = send_as_chat(bot, allowed, f"/settings{BOT}", channel=False)
    await bot.wait_reply(listed, contains=HOW_TO_BE_SEEN)
