"""The Discord transport, through the real discord.py client, against the fake Discord."""

from __future__ import annotations

import pytest

from tests.fake_discord.inprocess import connected
from tests.fake_discord.server import FakeDiscord

pytestmark = pytest.mark.discord


def world(fake: FakeDiscord):
    guild = fake.add_guild("g")
    channel = fake.add_channel(guild, "general")
    alice = fake.make_user("alice")
    fake.add_member(guild, alice)
    return guild, channel, alice


def test_dm_gets_an_answer(run, make_bot, recorder):
    async def scenario():
        async with FakeDiscord() as fake:
            _guild, _channel, alice = world(fake)
            bot = make_bot()
            await bot.start()
            async with connected(bot, fake):
                dm = fake.dm_channel(alice)
                sent = await fake.send_user_message(dm["id"], alice, "hello there")
                reply = await fake.wait_for_reply_to(sent["id"])
            await bot.stop()
            assert reply[0]["content"] == "echo: hello there"
            assert recorder.seen[0].is_dm and recorder.seen[0].guild_id is None
            assert recorder.seen[0].id == sent["id"]
            assert fake.unknown_requests == []
    run(scenario())
