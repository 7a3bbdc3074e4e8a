"""core/guild_settings.py: values checked before they are stored, and who
the bot listens to in a server (rule 4)."""

from __future__ import annotations

import pytest

from core.guild_settings import SETTINGS, GuildSettings, describe, forgets_leavers, guild_export, scope_key
from core.models import IncomingMessage


@pytest.mark.parametrize(
    "name, raw, value",
    [
        ("channels", "<#12> 34,56", ["12", "34", "56"]),
        ("blocked_users", "<@!7> <@8>", ["7", "8"]),
        ("blocked_roles", "<@&9>", ["9"]),
        ("window_messages", " 12 ", 12),
        ("scope", "Channel", "channel"),
        ("dms", "off", False),
        ("model", "llama3.1:8b", "llama3.1:8b"),
        ("system_prompt", "  Be brief. ", "Be brief."),
        ("forget_on_leave", "on", True),
    ],
)
def test_values_are_parsed(name: str, raw: str, value: object) -> None:
    assert SETTINGS[name].parse(raw) == value


@pytest.mark.parametrize(
    "name, raw, why",
    [
        ("channels", "general", "ids or mentions"),
        ("window_messages", "0", "between 1 and 500"),
        ("window_messages", "lots", "a whole number"),
        ("scope", "guild", "one of user_channel"),
        ("dms", "maybe", "on or off"),
        ("model", "a b", "a model name"),
        ("system_prompt", "x" * 4001, "at most 4,000"),
    ],
)
def test_bad_values_are_refused_with_the_reason(name: str, raw: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        SETTINGS[name].parse(raw)


def message(author: str = "1", channel: str = "10", *, guild: str | None = "100", roles: frozenset[str] = frozenset(),
            admin: bool = False, owner: bool = False, thread: str | None = None) -> IncomingMessage:
    return IncomingMessage("m", author, channel, "hi", 0.0, guild_id=guild, is_dm=guild is None, thread_id=thread,
                           author_roles=roles, permissions=frozenset({"administrator"}) if admin else frozenset(),
                           is_owner=owner)


SET = GuildSettings.from_states({
    "plugins.settings.100": {"channels": ["10", "11"], "blocked_users": ["2"], "blocked_roles": ["66"],
                             "allowed_roles": ["77", "78"], "unknown": 1},
    "plugins.settings.bot": {"dms": False},
    "plugins.guild.100": {"switches": {}},
})


@pytest.mark.parametrize(
    "msg, heard",
    [
        (message(roles=frozenset({"77"})), True),
        (message(roles=frozenset({"77"}), channel="12"), False),
        (message(roles=frozenset({"77"}), channel="5", thread="11"), True),
        (message(author="2", roles=frozenset({"77"})), False),
        (message(roles=frozenset({"77", "66"})), False),
        (message(roles=frozenset()), False),
        (message(author="2", channel="12", admin=True), True),
        (message(author="2", channel="12", owner=True), True),
        (message(guild=None), False),
        (message(guild=None, owner=True), True),
        (message(guild="200"), True),
    ],
)
def test_who_the_bot_listens_to(msg: IncomingMessage, heard: bool) -> None:
    assert SET.listens_to(msg) is heard


def test_what_is_stored_where_and_shown() -> None:
    assert scope_key("100", "channels") == "plugins.settings.100"
    assert scope_key("100", "dms") == "plugins.settings.bot"
    assert "unknown" not in SET.values["100"]
    shown = describe(SET, "100", "/")
    assert "channels: 10, 11" in shown and "dms: off" in shown and "model: (config)" in shown


def test_a_server_forgets_its_leavers_only_when_it_said_so() -> None:
    states = {"plugins.settings.100": {"forget_on_leave": True}, "plugins.settings.200": {"forget_on_leave": False}}
    found = GuildSettings.from_states(states)
    assert forgets_leavers(found, "100")
    assert not forgets_leavers(found, "200")
    assert not forgets_leavers(found, "300"), "unset is off"
    assert "forget_on_leave: off" in describe(found, "300", "/")


def test_a_guild_export_holds_that_guild_s_settings_and_switches_only() -> None:
    states = {
        "plugins.settings.100": {"window_messages": 3, "system_prompt": "Be a pirate."},
        "plugins.settings.200": {"system_prompt": "other guild's secret persona"},
        "plugins.settings.bot": {"dms": False},
        "plugins.guild.100": {"version": 2, "switches": {"images": {"enabled": False, "by": "9", "at": 1.0}}},
        "plugins.guild.200": {"version": 2, "switches": {"recall": {"enabled": False, "by": "8", "at": 2.0}}},
        "plugins.runtime": {"version": 2, "switches": {"llm": {"enabled": False, "by": "1", "at": 3.0}}},
    }
    exported = guild_export(states, "100")
    assert exported == {
        "guild_settings": {"window_messages": 3, "system_prompt": "Be a pirate."},
        "plugin_switches": {"images": {"enabled": False, "by": "9", "at": 1.0}},
    }
    assert guild_export(states, "300") == {"guild_settings": {}, "plugin_switches": {}}
