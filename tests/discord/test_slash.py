"""Slash commands: synced from the core's commands, run through the core with
the caller's Discord permissions, answered through the interaction API."""

from __future__ import annotations

from typing import Any

import pytest

from core.models import Command, Reply
from core.plugins import hookimpl

from tests.discord.test_chat import build_world, discord_world
from tests.fake_discord.inprocess import connected
from tests.fake_discord.server import FakeDiscord

pytestmark = pytest.mark.discord


def content(responses: list[dict]) -> str:
    return "\n".join(r["content"] for r in responses if r["content"])


def test_commands_are_synced_globally_with_string_options(run, make_bot):
    async def scenario():
        async with discord_world(make_bot) as w:
            synced = {c["name"]: c for c in w.fake.commands[None]}
        assert {"help", "plugins", "whoami", "modonly", "adminonly", "say"} <= set(synced)
        options = synced["say"]["options"]
        assert [(o["name"], o["type"], o.get("required", False)) for o in options] == [("text", 3, False), ("more", 3, False)]
        assert synced["adminonly"]["default_member_permissions"] == "8"
        assert synced["whoami"].get("default_member_permissions") is None

    run(scenario())


def test_commands_are_synced_to_configured_guilds(run, make_bot):
    async def scenario():
        async with discord_world(make_bot, configure=lambda w: {"guild_ids": [int(w.guild.id)]}) as w:
            assert None not in w.fake.commands
            assert "whoami" in {c["name"] for c in w.fake.commands[w.guild.id]}
            interaction = await w.fake.send_interaction("whoami", w.alice, w.channel["id"])
            assert "dm=False" in content(await w.fake.wait_for_interaction_response(interaction["id"]))

    run(scenario())


def test_caller_permissions_and_owner_reach_the_core(run, make_bot):
    async def scenario():
        async with discord_world(make_bot) as w:
            answers = {}
            for who in ("alice", "mod", "admin"):
                interaction = await w.fake.send_interaction("whoami", getattr(w, who), w.channel["id"])
                answers[who] = content(await w.fake.wait_for_interaction_response(interaction["id"]))
            in_dm = await w.fake.send_interaction("whoami", w.alice, w.dm["id"])
            answers["dm"] = content(await w.fake.wait_for_interaction_response(in_dm["id"]))
            # The application's owner (from GET /oauth2/applications/@me) is a bot owner.
            owner_dm = w.fake.dm_channel(w.fake.owner_user)
            by_owner = await w.fake.send_interaction("whoami", w.fake.owner_user, owner_dm["id"])
            answers["owner"] = content(await w.fake.wait_for_interaction_response(by_owner["id"]))
        assert "perms=[] owner=False" in answers["alice"] and "dm=False" in answers["alice"]
        assert "perms=['manage_messages']" in answers["mod"]
        assert "'administrator'" in answers["admin"] and "'manage_messages'" in answers["admin"]
        assert "dm=True" in answers["dm"] and "guild=None" in answers["dm"]
        assert "owner=True" in answers["owner"]

    run(scenario())


def test_permission_checks_refuse_and_allow(run, make_bot):
    async def scenario():
        async with discord_world(make_bot) as w:
            async def ask(name, user):
                interaction = await w.fake.send_interaction(name, user, w.channel["id"])
                return content(await w.fake.wait_for_interaction_response(interaction["id"]))

            assert "do not have permission" in await ask("modonly", w.alice)
            assert await ask("modonly", w.mod) == "mod ok"
            assert "do not have permission" in await ask("adminonly", w.mod)
            assert await ask("adminonly", w.admin) == "admin ok"

    run(scenario())


def test_configured_owner_may_run_admin_commands(run, make_bot):
    async def scenario():
        async with FakeDiscord() as fake:
            w = build_world(fake)
            bot = make_bot(owner_ids=[w.alice["id"]])
            await bot.start()
            async with connected(bot, fake):
                interaction = await fake.send_interaction("adminonly", w.alice, w.channel["id"])
                assert content(await fake.wait_for_interaction_response(interaction["id"])) == "admin ok"
            await bot.stop()

    run(scenario())


def test_options_become_the_arguments(run, make_bot):
    async def scenario():
        async with discord_world(make_bot) as w:
            interaction = await w.fake.send_interaction("say", w.alice, w.channel["id"], {"text": "hello", "more": "world"})
            assert content(await w.fake.wait_for_interaction_response(interaction["id"])) == "said: hello world"

    run(scenario())


def test_unknown_slash_command_gets_a_clear_ephemeral_answer(run, make_bot):
    async def scenario():
        async with discord_world(make_bot) as w:
            interaction = await w.fake.send_interaction("nosuch", w.alice, w.channel["id"])
            [response] = await w.fake.wait_for_interaction_response(interaction["id"])
        assert response["type"] == 4 and response["flags"] & 64
        assert response["content"].startswith("Unknown command /nosuch")

    run(scenario())


def test_slow_command_is_deferred_then_followed_up(run, make_bot, recorder, monkeypatch):
    monkeypatch.setattr("plugins.discord.client.DEFER_AFTER", 0.05)

    async def scenario():
        async with discord_world(make_bot) as w:
            interaction = await w.fake.send_interaction("slow", w.alice, w.channel["id"])
            await w.fake.wait_for_interaction_response(interaction["id"])  # deferred while /slow still runs
            recorder.slow_done.set()
            responses = await w.fake.wait_for_interaction_response(interaction["id"], count=2)
        assert responses[0]["type"] == 5  # deferred: "bot is thinking"
        assert responses[1]["type"] == "followup" and responses[1]["content"] == "done slowly"

    run(scenario())


def test_long_and_ephemeral_answers(run, make_bot):
    async def scenario():
        async with discord_world(make_bot) as w:
            interaction = await w.fake.send_interaction("lorem", w.alice, w.channel["id"])
            long = await w.fake.wait_for_interaction_response(interaction["id"], count=3)
            secret = await w.fake.send_interaction("secret", w.alice, w.channel["id"])
            [hidden] = await w.fake.wait_for_interaction_response(secret["id"])
        assert [r["type"] for r in long] == [4, "followup", "followup"]
        assert all(len(r["content"]) <= 2000 for r in long) and long[2]["content"].endswith("x" * 80)
        assert hidden["flags"] & 64 and hidden["content"] == "only you"

    run(scenario())


class Toy:
    """A plugin to switch: the recorder stores messages, so it is essential."""

    @hookimpl
    def register_commands(self, register: Any) -> None:
        register(Command("toy", "the toy's command", lambda inv: Reply("toy ok")))


def with_toy(make_bot: Any) -> Any:
    return lambda **options: make_bot(extra_plugins={"toy": Toy()}, **options)


def test_admin_switches_a_plugin_off_in_their_server_only(run, make_bot):
    async def scenario():
        async with discord_world(with_toy(make_bot)) as w:
            async def ask(who, options=None, name="plugins", channel=None):
                sent = await w.fake.send_interaction(name, who, channel or w.channel["id"], options or {})
                return content(await w.fake.wait_for_interaction_response(sent["id"]))

            refused = await ask(w.alice, {"action": "disable", "name": "toy"})
            assert refused.startswith("Only this server's administrators")
            assert await ask(w.admin, {"action": "disable", "name": "toy"}) == "plugin 'toy' switched off in this server"
            # The slash command stays (it is global); in this server it says why it does nothing.
            assert await ask(w.alice, name="toy") == "/toy is switched off in this server (plugin 'toy')."
            assert "toy: enabled (switched off in this server" in await ask(w.alice)
            everywhere = await ask(w.admin, {"action": "disable", "name": "toy", "scope": "everywhere"})
            assert everywhere.startswith("Only the bot's owners can switch a plugin for the whole bot")
            assert await ask(w.admin, {"action": "enable", "name": "toy"}) == "plugin 'toy' switched on in this server"
            assert await ask(w.alice, name="toy") == "toy ok"

    run(scenario())


def test_owner_switches_a_plugin_off_everywhere_and_its_commands_leave_discord(run, make_bot):
    async def scenario():
        async with discord_world(with_toy(make_bot)) as w:
            owner, owner_dm = w.fake.owner_user, w.fake.dm_channel(w.fake.owner_user)["id"]

            async def ask(options=None, name="plugins", who=owner, channel=owner_dm):
                sent = await w.fake.send_interaction(name, who, channel, options or {})
                return content(await w.fake.wait_for_interaction_response(sent["id"]))

            assert "essential" in await ask({"action": "disable", "name": "recorder"})  # it stores the messages
            assert await ask({"action": "disable", "name": "toy"}) == "plugin 'toy' switched off for the whole bot"
            await w.fake.wait_until(lambda: "toy" not in {c["name"] for c in w.fake.commands[None]},
                                    what="the commands to be resynced")
            # A user whose Discord still shows the old command gets told.
            stale = await ask(name="toy", who=w.alice, channel=w.channel["id"])
            assert stale.startswith("Unknown command /toy")
            assert "toy: disabled" in await ask(who=w.alice, channel=w.channel["id"])
            assert await ask({"action": "enable", "name": "toy"}) == "plugin 'toy' switched on for the whole bot"
            await w.fake.wait_until(lambda: "toy" in {c["name"] for c in w.fake.commands[None]},
                                    what="the commands to come back")

    run(scenario())


def test_interaction_replayed_on_resume_is_answered_once(run, make_bot):
    async def scenario():
        async with discord_world(make_bot, fake_options={"resume_overlap": 5}) as w:
            interaction = await w.fake.send_interaction("whoami", w.alice, w.channel["id"])
            await w.fake.wait_for_interaction_response(interaction["id"])
            await w.fake.drop_connections()
            sent = await w.fake.send_user_message(w.dm["id"], w.alice, "after resume")
            await w.fake.wait_for_reply_to(sent["id"], timeout=20)
            assert w.fake.resumes, "the client did not resume"
            assert len(w.fake.interaction_responses[interaction["id"]]) == 1
            callbacks = [s for m, p, s in w.fake.requests if p.endswith("/callback")]
            assert callbacks == [200]

    run(scenario())
