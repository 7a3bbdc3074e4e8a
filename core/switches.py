"""Plugins switched on and off at run time: the stored state and its rules.

The rules (``docs/SECURITY.md``, "Authority") are:

1. A switch has a scope: the whole bot, or one guild. Bot-wide switches are
   stored under :data:`BOT_KEY`; each guild's under ``GUILD_PREFIX + id``, so
   two guilds switching at once never overwrite each other.
2. Only configured owners switch a plugin for the whole bot. A guild's
   administrators (and owners) switch plugins for that guild only.
3. Essential plugins (the core, every plugin that stores messages, the
   transport this instance runs on) are never switched off at run time.
   Transports and plugins that declare ``SWITCHED_BY_OWNERS_ONLY = True``
   (``limits``) are never switched per guild.
4. What a plugin does follows one function of typed state: config, then
   the bot-wide switch if there is one; per guild, a guild switch can only
   turn off what is on. Every instance reads the same stored state, so an
   instance follows every change, in both directions, whoever made it.

The stored value is a plain JSON object (``{"version": 2, "switches":
{name: {"enabled": bool, "by": id, "at": epoch}}}``). The old form,
``{"disabled": [...]}``, is read as bot-wide "off" switches.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("core.switches")

STATE_PREFIX = "plugins."
BOT_KEY = "plugins.runtime"
GUILD_PREFIX = "plugins.guild."
STATE_VERSION = 2


@dataclass(frozen=True, slots=True)
class Switch:
    """One stored choice: plugin on or off, who chose it and when."""

    enabled: bool
    by: str = ""
    at: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"enabled": self.enabled, "by": self.by, "at": self.at}

    @classmethod
    def from_dict(cls, raw: Any) -> Switch | None:
        if not isinstance(raw, dict) or not isinstance(raw.get("enabled"), bool):
            return None
        at = raw.get("at", 0.0)
        return cls(raw["enabled"], str(raw.get("by", "")), float(at) if isinstance(at, (int, float)) else 0.0)


@dataclass(slots=True)
class SwitchBoard:
    """The switches of one scope (the whole bot, or one guild), by plugin."""

    switches: dict[str, Switch] = field(default_factory=dict)

    def to_stored(self) -> dict[str, Any]:
        return {"version": STATE_VERSION, "switches": {n: s.to_dict() for n, s in sorted(self.switches.items())}}

    @classmethod
    def from_stored(cls, raw: Any, where: str = BOT_KEY) -> SwitchBoard:
        """Read a stored value; anything unreadable is logged and skipped,
        never guessed at."""
        if raw is None:
            return cls()
        if isinstance(raw, dict) and "switches" not in raw and isinstance(raw.get("disabled"), list):
            # The form written before switches had a scope and an author.
            return cls({str(n): Switch(False, "(stored before switches were typed)") for n in raw["disabled"]})
        if not isinstance(raw, dict) or not isinstance(raw.get("switches"), dict):
            log.warning("stored plugin state %s is not readable; ignored", where)
            return cls()
        board = cls()
        for name, value in raw["switches"].items():
            switch = Switch.from_dict(value)
            if switch is None:
                log.warning("stored plugin state %s: switch for %r is not readable; ignored", where, name)
                continue
            board.switches[str(name)] = switch
        return board

    def off(self) -> set[str]:
        return {n for n, s in self.switches.items() if not s.enabled}


def guild_key(guild_id: str) -> str:
    return GUILD_PREFIX + guild_id


@dataclass(slots=True)
class StoredSwitches:
    """Every scope's switches, as last read from the store."""

    bot: SwitchBoard = field(default_factory=SwitchBoard)
    guilds: dict[str, SwitchBoard] = field(default_factory=dict)

    @classmethod
    def from_states(cls, states: dict[str, Any]) -> StoredSwitches:
        found = cls(SwitchBoard.from_stored(states.get(BOT_KEY)))
        for key, value in states.items():
            if key.startswith(GUILD_PREFIX) and len(key) > len(GUILD_PREFIX):
                board = SwitchBoard.from_stored(value, key)
                if board.switches:
                    found.guilds[key[len(GUILD_PREFIX):]] = board
        return found

    def off_in(self, guild_id: str | None) -> set[str]:
        board = self.guilds.get(guild_id) if guild_id else None
        return board.off() if board else set()


def guild_of(kwargs: dict[str, Any]) -> str | None:
    """The guild a hook call concerns, from the message, session, record or
    context it carries; ``None`` for DMs and calls that concern no guild
    (start-up, export, forget)."""
    for key in ("message", "session", "record"):
        guild = getattr(kwargs.get(key), "guild_id", None)
        if guild:
            return str(guild)
    context = kwargs.get("context")
    if context is not None:
        guild = getattr(getattr(context, "session", None), "guild_id", None)
        return str(guild) if guild else None
    return None
