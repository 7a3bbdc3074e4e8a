"""Per-server settings changed at run time, and who the bot listens to.

Rules (``docs/SECURITY.md``, "Authority"; the README's "Settings per server"):

1. A server's administrators (and the bot's owners) change their server's
   settings with ``/settings``; only owners change the bot-wide ones
   (``dms``). Every value is checked before it is stored.
2. Values are stored durably as bot state (``plugins.settings.<guild>``,
   ``plugins.settings.bot``), read with the plugin switches in one query,
   so every instance follows a change within ``[bot] plugin_state_refresh``
   seconds (at once on the instance that made it).
3. A value set here wins over the config file for that server; unset, the
   config applies.
4. Who the bot listens to: in a server with ``channels`` set, only those
   channels (and threads under them); never a ``blocked_users`` member or
   anyone with a ``blocked_roles`` role; with ``allowed_roles`` set, only
   people with one of them; direct messages only while ``dms`` is on. The
   bot's owners and the server's administrators are never shut out (they
   must be able to undo a mistake). Messages from people shut out are
   ignored silently.
5. ``forget_on_leave`` (off unless set): a member leaving the server (or
   removed from it) has what they said there deleted from memory, by the
   path of a bulk delete (docs/MEMORY.md, E6).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from core.models import IncomingMessage
from core.switches import guild_key

SETTINGS_PREFIX = "plugins.settings."
BOT_SCOPE = "bot"
_ID = re.compile(r"^\d{1,20}$")
_MODEL = re.compile(r"^[A-Za-z0-9._:/@+-]{1,100}$")


def _text(limit: int) -> Callable[[str], Any]:
    def parse(raw: str) -> Any:
        text = raw.strip()
        if not text:
            raise ValueError("give a value (or use reset)")
        if len(text) > limit:
            raise ValueError(f"at most {limit:,} characters")
        return text

    return parse


def _model(raw: str) -> Any:
    if not _MODEL.fullmatch(raw.strip()):
        raise ValueError("a model name: letters, digits and . _ : / @ + - (at most 100)")
    return raw.strip()


def _scope(raw: str) -> Any:
    value = raw.strip().lower()
    if value not in ("user_channel", "channel", "thread"):
        raise ValueError("one of user_channel, channel, thread")
    return value


def _window(raw: str) -> Any:
    try:
        value = int(raw.strip())
    except ValueError:
        raise ValueError("a whole number of messages") from None
    if not 1 <= value <= 500:
        raise ValueError("between 1 and 500")
    return value


def _ids(raw: str) -> Any:
    """Discord ids, mentions (<#1>, <@2>, <@&3>) or a list of them."""
    found = [re.sub(r"^<[#@]?[!&]?(\d+)>$", r"\1", w) for w in re.split(r"[\s,]+", raw.strip()) if w]
    bad = [w for w in found if not _ID.fullmatch(w)]
    if bad or not found:
        raise ValueError("ids or mentions, separated by spaces or commas")
    return sorted(set(found), key=int)


def _switch(raw: str) -> Any:
    value = raw.strip().lower()
    if value in ("on", "true", "yes", "allow", "allowed"):
        return True
    if value in ("off", "false", "no", "deny", "denied"):
        return False
    raise ValueError("on or off")


@dataclass(frozen=True, slots=True)
class Setting:
    name: str
    help: str
    parse: Callable[[str], Any]
    bot_wide: bool = False
    # What applies while unset, when it is not the config file's value.
    unset: str = "(config)"


SETTINGS = {
    s.name: s
    for s in (
        Setting("system_prompt", "the bot's persona in this server", _text(4000)),
        Setting("model", "the model replies are generated with (llm plugin)", _model),
        Setting("scope", "who shares a conversation: user_channel, channel or thread", _scope),
        Setting("window_messages", "messages in a reply's context window (1-500)", _window),
        Setting("channels", "the only channels the bot answers in (ids or #mentions)", _ids),
        Setting("blocked_users", "people the bot ignores (ids or @mentions)", _ids),
        Setting("blocked_roles", "roles whose members the bot ignores", _ids),
        Setting("allowed_roles", "if set, only members with one of these roles are answered", _ids),
        Setting("dms", "whether the bot answers direct messages (owners, bot-wide): on or off", _switch, True),
        Setting("forget_on_leave", "delete what a member said in this server when they leave it: on or off",
                _switch, unset="off"),
    )
}


@dataclass(slots=True)
class GuildSettings:
    """Every scope's values, as last read from the store (or just set)."""

    values: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def from_states(cls, states: dict[str, Any]) -> GuildSettings:
        found = cls()
        for key, raw in states.items():
            if key.startswith(SETTINGS_PREFIX) and isinstance(raw, dict):
                known = {k: v for k, v in raw.items() if k in SETTINGS}
                if known:
                    found.values[key[len(SETTINGS_PREFIX):]] = known
        return found

    def get(self, guild_id: str | None, name: str, default: Any = None) -> Any:
        """The value set at run time for ``guild_id`` (bot-wide settings:
        any guild), or ``default``."""
        setting = SETTINGS[name]
        scope = BOT_SCOPE if setting.bot_wide else guild_id
        return self.values.get(scope or "", {}).get(name, default)

    def listens_to(self, message: IncomingMessage) -> bool:
        """Rule 4: whether the bot answers ``message`` at all."""
        if message.is_owner or "administrator" in message.permissions:
            return True
        if message.guild_id is None:
            return bool(self.get(None, "dms", True))
        values = self.values.get(message.guild_id)
        if not values:
            return True
        channels = values.get("channels")
        if channels and message.channel_id not in channels and message.thread_id not in channels:
            return False
        if message.author_id in values.get("blocked_users", ()):
            return False
        roles = message.author_roles
        if roles & set(values.get("blocked_roles", ())):
            return False
        allowed = values.get("allowed_roles")
        return not allowed or bool(roles & set(allowed))


def forgets_leavers(settings: GuildSettings, guild_id: str) -> bool:
    """Rule 5: whether ``guild_id`` deletes what a member said there when
    they leave (docs/MEMORY.md, E6). Off unless its administrators said so:
    leaving a server is not a request to erase, and a moderator's kick
    must not silently destroy the record a server may need."""
    return settings.get(guild_id, "forget_on_leave", False) is True


def guild_export(states: dict[str, Any], guild_id: str) -> dict[str, Any]:
    """One guild's run-time settings and plugin switches, from the stored
    bot state ``states`` (every ``plugins.`` key): what a guild export
    holds of the core's. Nothing of another guild, nor the bot-wide
    values."""
    settings = GuildSettings.from_states(states).values.get(guild_id, {})
    raw_switches = states.get(guild_key(guild_id))
    switches = raw_switches.get("switches", {}) if isinstance(raw_switches, dict) else {}
    return {"guild_settings": dict(settings), "plugin_switches": dict(switches) if isinstance(switches, dict) else {}}


def scope_key(guild_id: str | None, name: str) -> str:
    """The stored key of ``name``'s values for ``guild_id``."""
    return SETTINGS_PREFIX + (BOT_SCOPE if SETTINGS[name].bot_wide or guild_id is None else guild_id)


def describe(settings: GuildSettings, guild_id: str | None, prefix: str) -> str:
    """What ``/settings`` shows: every setting, its value here or "(config)"."""
    lines = []
    for setting in SETTINGS.values():
        value = settings.get(guild_id, setting.name)
        if value is None:
            shown = setting.unset
        elif isinstance(value, list):
            shown = ", ".join(value)
        elif isinstance(value, bool):
            shown = "on" if value else "off"
        else:
            shown = str(value)
        lines.append(f"{setting.name}: {shown}  - {setting.help}{' [owners]' if setting.bot_wide else ''}")
    where = "this server" if guild_id else "the whole bot"
    usage = f"{prefix}settings set NAME VALUE | {prefix}settings reset NAME"
    return f"Settings of {where} ({usage}):\n" + "\n".join(lines)
