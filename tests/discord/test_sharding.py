"""Sharding: ``shard_count`` / ``shard_ids`` split the guilds between
gateway connections (and processes); each guild's messages reach one shard."""

from __future__ import annotations

import time

import pytest

from tests.fake_discord.inprocess import connected
from tests.fake_discord.server import FakeDiscord

pytestmark = pytest.mark.discord


@pytest.fixture(autouse=True)
def _no_identify_pause(monkeypatch):
    """discord.py waits 5 s between two shards' IDENTIFYs (Discord's
    identify rate limit); the fake has no such limit."""
    async def no_pause(self, shard_id, *, initial=False):
        return None

    monkeypatch.setattr("plugins.discord.client.ShardedDiscordBot.before_identify_hook", no_pause)


def guilds_on_each_shard(fake: FakeDiscord, shards: int) -> dict[int, object]:
    """Guilds until every shard has one ((guild_id >> 22) % shards picks it)."""
    found: dict[int, object] = {}
    while len(found) < shards:
        guild = fake.add_guild(f"g{len(fake.guilds)}")
        found.setdefault((int(guild.id) >> 22) % shards, guild)
        time.sleep(0.001)
    return found


def test_two_shards_in_one_process(run, make_bot, recorder):
    async def scenario():
        async with FakeDiscord() as fake:
            guilds = guilds_on_each_shard(fake, 2)
            alice = fake.make_user("alice")
            channels = {}
            for shard, guild in guilds.items():
                fake.add_member(guild, alice)
                channels[shard] = fake.add_channel(guild, "general")
            bot = make_bot()
            await bot.start()
            async with connected(bot, fake, shard_count=2) as client:
                assert sorted(tuple(i["shard"]) for i in fake.identifies) == [(0, 2), (1, 2)]
                assert client.shard_count == 2
                for shard, channel in channels.items():
                    sent = await fake.send_user_message(channel["id"], alice, f"to shard {shard}", mention_bot=True)
                    assert (await fake.wait_for_reply_to(sent["id"]))[0]["content"] == f"echo: to shard {shard}"
                dm = fake.dm_channel(alice)
                sent = await fake.send_user_message(dm["id"], alice, "dm goes to shard 0")
                await fake.wait_for_reply_to(sent["id"])
                assert len(fake.bot_messages) == 3
            await bot.stop()

    run(scenario())


def test_shard_ids_pick_this_process_share(run, make_bot, recorder):
    async def scenario():
        async with FakeDiscord() as fake:
            guilds = guilds_on_each_shard(fake, 2)
            alice = fake.make_user("alice")
            channels = {}
            for shard, guild in guilds.items():
                fake.add_member(guild, alice)
                channels[shard] = fake.add_channel(guild, "general")
            bot = make_bot()
            await bot.start()
            async with connected(bot, fake, shard_count=2, shard_ids=[1]) as client:
                assert [tuple(i["shard"]) for i in fake.identifies] == [(1, 2)]
                # Every guild of shard 1, not only the first one found: the
                # search may have made others on it (flaky before).
                on_shard_1 = {gid for gid in fake.guilds if (int(gid) >> 22) % 2 == 1}
                assert guilds[1].id in on_shard_1
                assert {str(g.id) for g in client.guilds} == on_shard_1
                mine = await fake.send_user_message(channels[1]["id"], alice, "mine", mention_bot=True)
                await fake.wait_for_reply_to(mine["id"])
            await bot.stop()
        assert [m.content for m in recorder.seen] == ["mine"]

    run(scenario())


@pytest.mark.parametrize("bad", [{"shard_ids": [0]}, {"shard_count": 2, "shard_ids": [2]}, {"shard_count": 0}])
def test_inconsistent_shard_settings_are_refused(bad):
    from core.errors import ConfigError
    from core.settings import load_plugin_settings
    from plugins.discord.settings import DiscordSettings

    with pytest.raises(ConfigError) as err:
        load_plugin_settings(DiscordSettings, bad, where="bot.toml [discord]")
    assert "bot.toml [discord]" in str(err.value) and "shard" in str(err.value)
