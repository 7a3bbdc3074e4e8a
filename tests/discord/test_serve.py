"""``serve``: the transport as the CLI runs it (token from DISCORD_TOKEN,
endpoints from DISCORD_API_BASE / DISCORD_GATEWAY_URL), and its clear
failures."""

from __future__ import annotations

import asyncio

import pytest
from discord import gateway, http

from core.bot import Bot
from core.errors import ConfigError
from core.settings import EnvSettings, Settings
from plugins.discord.client import serve
from tests.discord.conftest import _EntryPoint
from tests.fake_discord.server import FakeDiscord

pytestmark = pytest.mark.discord


def point_env_at(monkeypatch: pytest.MonkeyPatch, fake: FakeDiscord, token: str | None = None) -> None:
    monkeypatch.setenv("DISCORD_TOKEN", token if token is not None else fake.token)
    monkeypatch.setenv("DISCORD_API_BASE", fake.api_base)
    monkeypatch.setenv("DISCORD_GATEWAY_URL", fake.gateway_url)
    monkeypatch.setenv("DISCORD_GUILD_READY_TIMEOUT", "0.05")


def make_bot(tmp_path, recorder) -> Bot:
    return Bot(Settings(env=EnvSettings(_env_file=None, data_dir=tmp_path, instance_id="A")),
               entry_points=[_EntryPoint("recorder", recorder)])


def test_serve_uses_the_env_endpoints_then_restores_discord_py(run, tmp_path, recorder, monkeypatch):
    original = (http.Route.BASE, gateway.DiscordWebSocket.DEFAULT_GATEWAY)

    async def scenario():
        async with FakeDiscord() as fake:
            guild = fake.add_guild()
            alice = fake.make_user("alice")
            fake.add_member(guild, alice)
            point_env_at(monkeypatch, fake)
            bot = make_bot(tmp_path, recorder)
            await bot.start()
            task = asyncio.create_task(serve(bot))
            await fake.wait_ready()
            assert http.Route.BASE == fake.api_base
            sent = await fake.send_user_message(fake.dm_channel(alice)["id"], alice, "via serve")
            assert (await fake.wait_for_reply_to(sent["id"]))[0]["content"] == "echo: via serve"
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await bot.stop()
        assert (http.Route.BASE, gateway.DiscordWebSocket.DEFAULT_GATEWAY) == original

    run(scenario())


def test_missing_token_is_a_config_error(run, tmp_path, recorder):
    with pytest.raises(ConfigError, match="DISCORD_TOKEN is not set"):
        run(serve(make_bot(tmp_path, recorder)))


def test_refused_token_is_a_config_error(run, tmp_path, recorder, monkeypatch):
    async def scenario():
        async with FakeDiscord() as fake:
            point_env_at(monkeypatch, fake, token="wrong-" + "y" * 12)
            with pytest.raises(ConfigError, match="refused DISCORD_TOKEN") as err:
                await serve(make_bot(tmp_path, recorder))
            assert "wrong-" not in str(err.value)

    run(scenario())


def test_message_content_intent_missing_in_portal_is_explained(run, tmp_path, recorder, monkeypatch):
    async def scenario():
        async with FakeDiscord(privileged_intents=0) as fake:
            point_env_at(monkeypatch, fake)
            with pytest.raises(ConfigError, match="developer portal"):
                await serve(make_bot(tmp_path, recorder))

    run(scenario())


def test_the_plugin_registers_the_discord_transport(tmp_path):
    import plugins.discord

    bot = Bot(Settings(env=EnvSettings(_env_file=None, data_dir=tmp_path)), entry_points=[_EntryPoint("discord", plugins.discord)])
    asyncio.run(bot.start())
    assert "discord" in bot.transports
    asyncio.run(bot.stop())


def test_bad_discord_variable_is_a_config_error(run, tmp_path, recorder, monkeypatch):
    monkeypatch.setenv("DISCORD_TOKEN", "x" * 10)
    monkeypatch.setenv("DISCORD_CHANNELS", "12,13")  # lists are JSON: [12, 13]
    with pytest.raises(ConfigError, match=r"\[discord\]"):
        run(serve(make_bot(tmp_path, recorder)))
