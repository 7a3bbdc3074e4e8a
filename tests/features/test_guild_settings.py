"""Scenarios of features/guild_settings.feature: per-server settings changed
at run time, followed by every instance (core/guild_settings.py)."""

from __future__ import annotations

from pytest_bdd import scenarios, then, when

from tests.harness.harness import Harness, HarnessError
from tests.harness.steps import p

scenarios("guild_settings.feature")


def _guild(harness: Harness, place: str) -> str:
    user = harness.world.user("alice")
    guild = harness.world.place(place, user).guild_id
    if guild is None:
        raise HarnessError(f"{place} is not in a server")
    return guild


@when(p("{user:Name} blocks {other:Name} in the server of {place:Place}"))
def when_blocks(harness: Harness, user: str, other: str, place: str) -> None:
    """``/settings set blocked_users <@other>`` said by ``user`` in ``place``."""
    harness.say(user, place, f"/settings set blocked_users <@{harness.world.user(other).id}>")


@when(p("{user:Name} limits the bot to {channel:Place} in the server of {place:Place}"))
def when_limits(harness: Harness, user: str, channel: str, place: str) -> None:
    """``/settings set channels <#channel>``: a channel of another server
    here, so none of this server's channels is allowed."""
    target = harness.world.place(channel, harness.world.user(user)).channel_id
    harness.say(user, place, f"/settings set channels <#{target}>")


@when(p("eventually every instance follows the settings of the server of {place:Place}"))
@then(p("eventually every instance follows the settings of the server of {place:Place}"))
def when_followed(harness: Harness, place: str) -> None:
    """Every in-process instance's run-time settings for that server are
    what the store holds (each follows every ``plugin_state_refresh``)."""
    guild = _guild(harness, place)
    stored = harness.db("SELECT value FROM bot_state WHERE {0} = ?".format('"key"'), (f"plugins.settings.{guild}",))
    if not stored:
        raise HarnessError("no settings are stored for that server")
    import json

    want = json.loads(stored[0][0])

    def followed() -> None:
        bots = [getattr(i, "bot", None) for i in harness.instances.values()]
        seen = [b.guild_settings.values.get(guild, {}) if b is not None else None for b in bots]
        assert all(s == want for s in seen), f"the instances hold {seen}, the store {want}"

    harness.wait_until(followed, "every instance following the server's settings")


@then(p('nobody replied to "{text}" and it is not stored'))
def then_ignored(harness: Harness, text: str) -> None:
    message = harness.message_said(text)
    assert harness.replies_to(message) == [], f"replies: {harness.replies_to(message)}"
    assert harness.db("SELECT count(*) FROM messages WHERE message_id = ?", (message.id,))[0][0] == 0
