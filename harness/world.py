"""A small Discord: users, guilds, channels, threads and DMs with snowflake
ids, and messages with platform timestamps that only go forward.

Places are written the way a maintainer would in a scenario:

- ``#general``: a text channel of the default guild ``main``
- ``#general of other``: channel ``general`` of guild ``other``
- ``thread plans in #general``: thread ``plans`` under ``#general``
- ``a DM`` / ``DM``: the user's direct-message channel with the bot
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any

from core.ids import snowflake
from core.models import IncomingMessage

DEFAULT_GUILD = "main"
# Entity ids are snowflakes from a fixed moment, so they look like Discord's
# and never collide with message ids (which use the scenario clock).
ENTITY_EPOCH = 1_600_000_000.0

_PLACE = re.compile(
    r"^(?:thread (?P<thread>[\w-]+) in )?#(?P<channel>[\w-]+)(?: of (?P<guild>[\w-]+))?$"
)
_DM = re.compile(r"^(?:a |the |their |his |her )?(?:DM|DMs|direct messages?)$", re.IGNORECASE)


@dataclass
class User:
    name: str
    id: str
    permissions: set[str] = field(default_factory=set)
    is_owner: bool = False
    is_bot: bool = False


@dataclass(frozen=True)
class Place:
    """Where a message is said."""

    label: str
    channel_id: str
    guild_id: str | None = None
    thread_id: str | None = None
    is_dm: bool = False


class World:
    """Registry of everything with an id; names are created on first use."""

    def __init__(self) -> None:
        self.users: dict[str, User] = {}
        self.guilds: dict[str, str] = {}
        self.channels: dict[tuple[str, str], str] = {}
        self.threads: dict[tuple[str, str, str], str] = {}
        self.dms: dict[str, str] = {}
        self._names_by_id: dict[str, str] = {}

    def _new_id(self) -> str:
        return snowflake(ENTITY_EPOCH, worker=1)

    def user(self, name: str) -> User:
        name = name.strip()
        if name not in self.users:
            user = User(name, self._new_id())
            self.users[name] = user
            self._names_by_id[user.id] = name
        return self.users[name]

    def name_of(self, user_id: str) -> str | None:
        return self._names_by_id.get(user_id)

    def guild(self, name: str) -> str:
        if name not in self.guilds:
            self.guilds[name] = self._new_id()
        return self.guilds[name]

    def place(self, text: str, user: User) -> Place:
        """Parse a place as written in a scenario (see the module doc)."""
        text = text.strip()
        if _DM.match(text):
            if user.name not in self.dms:
                self.dms[user.name] = self._new_id()
            return Place(label=f"DM with {user.name}", channel_id=self.dms[user.name], is_dm=True)
        match = _PLACE.match(text)
        if not match:
            raise ValueError(
                f"cannot read the place {text!r}: write #channel, '#channel of guild', 'thread NAME in #channel' or 'a DM'"
            )
        guild_name = match["guild"] or DEFAULT_GUILD
        guild_id = self.guild(guild_name)
        key = (guild_name, match["channel"])
        if key not in self.channels:
            self.channels[key] = self._new_id()
        channel_id = self.channels[key]
        if match["thread"]:
            tkey = (guild_name, match["channel"], match["thread"])
            if tkey not in self.threads:
                self.threads[tkey] = self._new_id()
            thread_id = self.threads[tkey]
            # As in Discord, a message in a thread is in the thread's channel.
            return Place(label=text, channel_id=thread_id, guild_id=guild_id, thread_id=thread_id)
        return Place(label=text, channel_id=channel_id, guild_id=guild_id)

    def message(self, user: User, place: Place, content: str, timestamp: float, **extra: Any) -> IncomingMessage:
        """A message as the Discord transport would build it."""
        return IncomingMessage(
            id=snowflake(timestamp),
            author_id=user.id,
            author_name=user.name,
            channel_id=place.channel_id,
            content=content,
            timestamp=timestamp,
            transport="test",
            guild_id=place.guild_id,
            thread_id=place.thread_id,
            is_dm=place.is_dm,
            author_is_bot=user.is_bot,
            permissions=frozenset(user.permissions),
            is_owner=user.is_owner,
            **extra,
        )


def message_to_dict(message: IncomingMessage) -> dict[str, Any]:
    raw = dataclasses.asdict(message)
    raw["permissions"] = sorted(message.permissions)
    raw["author_roles"] = sorted(message.author_roles)
    raw["attachments"] = [a.to_dict() for a in message.attachments]
    return raw


def message_from_dict(raw: dict[str, Any]) -> IncomingMessage:
    from core.models import Attachment, Quote

    raw = dict(raw)
    raw["permissions"] = frozenset(raw.get("permissions") or ())
    raw["author_roles"] = frozenset(raw.get("author_roles") or ())
    raw["attachments"] = [Attachment.from_dict(a) for a in raw.get("attachments") or []]
    if raw.get("quoted"):
        raw["quoted"] = Quote(**raw["quoted"])
    return IncomingMessage(**raw)
