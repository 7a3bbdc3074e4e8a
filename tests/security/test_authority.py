"""Who may do what: admin-only commands and the permission levels, checked
through the assembled bot as a transport would call it."""

from __future__ import annotations

import importlib

import asyncio
import itertools
import types
from pathlib import Path
from typing import Any

import pytest

from core.bot import Bot
from core.commands import is_allowed
from core.models import Command, IncomingMessage, Reply
from core.plugins import hookimpl
from core.settings import BotSection, EnvSettings, Settings
from tests.core.helpers import FakeEntryPoint, only_reply

_ids = itertools.count(1)
OWNER = "owner-1"


def msg(text: str, author: str = "mallory", **extra: Any) -> IncomingMessage:
    return IncomingMessage(
        id=f"auth{next(_ids)}",
        author_id=author,
        author_name=author,
        channel_id="c1",
        guild_id=extra.pop("guild_id", "g1"),
        content=text,
        timestamp=1_700_000_000.0,
        **extra,
    )


def _toggle_plugin() -> types.ModuleType:
    module = types.ModuleType("toy")

    def generate_reply() -> Reply:
        return Reply("toy answers")

    module.generate_reply = hookimpl(tryfirst=True)(generate_reply)  # type: ignore[attr-defined]

    def register_commands(register: Any) -> None:
        register(Command("owneronly", "owners only", lambda inv: Reply("owner ran it"), permission="owner"))
        register(Command("adminonly", "admins only", lambda inv: Reply("admin ran it"), permission="admin"))
        register(Command("modonly", "moderators", lambda inv: Reply("mod ran it"), permission="manage_messages"))

    module.register_commands = hookimpl(register_commands)  # type: ignore[attr-defined]
    return module


@pytest.fixture
def bot(tmp_path: Path) -> Any:
    settings = Settings(env=EnvSettings(data_dir=tmp_path, instance_id="A"), bot=BotSection(owner_ids=[OWNER]))
    instance = Bot(settings, entry_points=[FakeEntryPoint("toy", _toggle_plugin())])
    loop = asyncio.new_event_loop()
    loop.run_until_complete(instance.start())
    instance._test_loop = loop
    yield instance
    loop.run_until_complete(instance.stop())
    loop.close()


def say(bot: Any, message: IncomingMessage) -> str:
    return only_reply(bot, message, bot._test_loop).content


@pytest.mark.parametrize(
    ("who", "refusal"),
    [
        ({}, "Only this server's administrators"),
        ({"permissions": frozenset({"manage_messages"})}, "Only this server's administrators"),
        ({"permissions": frozenset({"manage_guild", "kick_members"})}, "Only this server's administrators"),
        ({"is_dm": True, "guild_id": None}, "Only the bot's owners can switch a plugin for the whole bot"),
    ],
    ids=["member", "moderator", "other-perms", "in-dm"],
)
def test_plugins_disable_is_refused_for_a_non_admin(bot: Any, who: dict[str, Any], refusal: str) -> None:
    reply = say(bot, msg("/plugins disable toy", **who))
    assert refusal in reply
    assert "toy" in bot.plugins.enabled()
    assert say(bot, msg("hello")) == "toy answers"


@pytest.mark.parametrize(
    "who",
    [{"permissions": frozenset({"administrator"})}, {"author": OWNER}, {"is_owner": True}],
    ids=["administrator", "configured-owner-id", "transport-owner"],
)
def test_plugins_disable_and_enable_in_a_server_are_allowed_for_admins_and_owners(
    bot: Any, who: dict[str, Any]
) -> None:
    assert say(bot, msg("/plugins disable toy", **who)) == "plugin 'toy' switched off in this server"
    assert say(bot, msg("hello")) != "toy answers"
    assert say(bot, msg("hello", guild_id="g2")) == "toy answers"
    assert say(bot, msg("/plugins enable toy", **who)) == "plugin 'toy' switched on in this server"
    assert say(bot, msg("hello")) == "toy answers"


@pytest.mark.parametrize("who", [{"author": OWNER}, {"is_owner": True}], ids=["configured-owner-id", "transport-owner"])
def test_only_owners_switch_plugins_for_the_whole_bot(bot: Any, who: dict[str, Any]) -> None:
    admin = {"permissions": frozenset({"administrator"})}
    assert "Only the bot's owners" in say(bot, msg("/plugins disable toy everywhere", **admin))
    assert say(bot, msg("/plugins disable toy everywhere", **who)) == "plugin 'toy' switched off for the whole bot"
    assert "toy" not in bot.plugins.enabled()
    assert say(bot, msg("hello", guild_id="g2")) != "toy answers"
    assert say(bot, msg("/plugins enable toy everywhere", **who)) == "plugin 'toy' switched on for the whole bot"
    assert say(bot, msg("hello", guild_id="g2")) == "toy answers"


def test_listing_plugins_is_open_to_everyone(bot: Any) -> None:
    assert say(bot, msg("/plugins")).startswith("Plugins:")


def test_the_core_plugin_cannot_be_disabled_even_by_an_owner(bot: Any) -> None:
    assert "essential" in say(bot, msg("/plugins disable core", author=OWNER))


@pytest.mark.parametrize(
    ("command", "who", "allowed"),
    [
        ("owneronly", {}, False),
        ("owneronly", {"permissions": frozenset({"administrator"})}, False),
        ("owneronly", {"author": OWNER}, True),
        ("adminonly", {"permissions": frozenset({"manage_messages"})}, False),
        ("adminonly", {"permissions": frozenset({"administrator"})}, True),
        ("adminonly", {"author": OWNER}, True),
        ("modonly", {}, False),
        ("modonly", {"permissions": frozenset({"manage_messages"})}, True),
        ("modonly", {"permissions": frozenset({"administrator"})}, True),
    ],
)
def test_permission_levels(bot: Any, command: str, who: dict[str, Any], allowed: bool) -> None:
    reply = say(bot, msg(f"/{command}", **who))
    assert (reply.endswith("ran it")) is allowed, reply
    if not allowed:
        assert "do not have permission" in reply


def test_an_unknown_permission_level_is_refused_at_registration() -> None:
    with pytest.raises(ValueError):
        Command("x", "x", lambda inv: Reply("x"), permission="moderator")


def test_is_allowed_never_grants_owner_level_from_guild_permissions() -> None:
    command = Command("x", "x", lambda inv: Reply("x"), permission="owner")
    everything = frozenset({"administrator", "manage_messages", "manage_guild"})
    assert not is_allowed(command, msg("/x", permissions=everything), owner_ids=[OWNER])


def test_replies_do_not_ping_mentions_by_default() -> None:
    """Model output must not @everyone or ping roles: the transport sends
    with mentions disabled unless a plugin deliberately allows them."""
    assert Reply("@everyone hello <@&123>").allow_mentions is False


def test_the_discord_transport_sends_replies_with_no_pings() -> None:
    client = importlib.import_module("plugins.discord.client")
    silent = client.allowed_mentions(Reply("@everyone <@&42> <@7>")).to_dict()
    assert silent["parse"] == [] and not silent.get("replied_user") and not silent.get("roles")
    # Even a plugin that allows mentions never gets @everyone or role pings.
    allowed = client.allowed_mentions(Reply("hi <@7>", allow_mentions=True)).to_dict()
    assert "everyone" not in allowed["parse"] and "roles" not in allowed["parse"]
