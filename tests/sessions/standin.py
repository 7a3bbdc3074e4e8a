"""An in-memory stand-in for the memory plugin, so the sessions plugin is
tested on its own: it implements exactly the storage hooks sessions uses
(and export/forget/health for the commands), faithfully to their contracts.

One :class:`Store` may back several bots: that is how a test restarts the
bot or runs two instances "on the same backends".
"""

from __future__ import annotations

import asyncio
import copy
from dataclasses import dataclass, field
from typing import Any

from core.bot import Bot
from core.clock import ManualClock
from core.ids import snowflake
from core.models import Context, HealthReport, IncomingMessage, MessageRecord, Reply, Sent, Session
from core.plugins import hookimpl
from core.storage import StorageBase
from core.settings import BotSection, EnvSettings, Settings

import plugins.sessions

T0 = 1_700_000_000.0


class Store(StorageBase):
    """Sessions and messages, as memory would hold them (copies in and out,
    as a real store serialises)."""

    @hookimpl
    def register_storage(self, register: Any) -> None:
        register(self)

    def __init__(self) -> None:
        self.sessions: dict[str, Session] = {}
        self.messages: dict[str, MessageRecord] = {}
        self.saves = 0

    def store_message(self, record: MessageRecord) -> bool:
        self.messages.setdefault(record.id, copy.deepcopy(record))
        return True

    def load_messages(self, session: Session, limit: int) -> list[MessageRecord]:
        found = sorted((m for m in self.messages.values() if m.session_id == session.id), key=lambda m: m.sort_key)
        return copy.deepcopy(found[-limit:]) if limit > 0 else []

    def load_session(self, scope_key: str) -> Session | None:
        found = [s for s in self.sessions.values() if s.scope_key == scope_key]
        return copy.deepcopy(max(found, key=lambda s: s.opened_at)) if found else None

    def save_session(self, session: Session) -> None:
        self.saves += 1
        self.sessions[session.id] = copy.deepcopy(session)

    def list_sessions(self, user_id: str, limit: int) -> list[Session]:
        found = [s for s in self.sessions.values() if s.user_id == user_id]
        return copy.deepcopy(sorted(found, key=lambda s: s.opened_at, reverse=True)[:limit])

    @hookimpl
    def export_user(self, user_id: str) -> dict[str, Any]:
        return {
            "messages": [m.to_dict() for m in self.messages.values() if m.author_id == user_id],
            "sessions": [s.id for s in self.sessions.values() if s.user_id == user_id],
        }

    @hookimpl
    def forget_user(self, user_id: str) -> dict[str, int]:
        gone = [k for k, m in self.messages.items() if m.author_id == user_id]
        # The bot's replies to a forgotten user's messages go with them.
        answers = [k for k, m in self.messages.items() if m.reply_to_id in set(gone)]
        sessions = [k for k, s in self.sessions.items() if s.user_id == user_id]
        for key in gone + answers:
            del self.messages[key]
        for key in sessions:
            del self.sessions[key]
        return {"messages": len(gone) + len(answers), "sessions": len(sessions)}

    @hookimpl
    def health(self) -> HealthReport:
        return HealthReport("standin-store", True, "in memory", {"outbox": 0})


class Recorder:
    """A reply plugin that answers ``ok`` and keeps every context it saw."""

    def __init__(self) -> None:
        self.contexts: list[Context] = []

    @hookimpl
    def generate_reply(self, context: Context) -> Reply:
        self.contexts.append(context)
        return Reply(f"ok {len(context.messages)}")

    @property
    def last(self) -> Context:
        return self.contexts[-1]

    def texts(self) -> list[str]:
        return [m.content for m in self.last.messages]


@dataclass
class EntryPoint:
    name: str
    obj: Any
    value: str = "test"
    dist: Any = None

    def load(self) -> Any:
        return self.obj


@dataclass
class Harness:
    """One bot (sessions + stand-in store + recorder) on a manual clock."""

    store: Store
    clock: ManualClock
    sessions_config: dict[str, Any] = field(default_factory=dict)
    bot_config: dict[str, Any] = field(default_factory=dict)
    data_dir: Any = None
    instance: str = "A"
    with_store: bool = True

    def __post_init__(self) -> None:
        self.recorder = Recorder()
        self.loop = asyncio.new_event_loop()
        settings = Settings(
            env=EnvSettings(data_dir=self.data_dir, instance_id=self.instance),
            bot=BotSection(**self.bot_config),
            sections={"sessions": self.sessions_config},
        )
        eps = [EntryPoint("sessions", plugins.sessions), EntryPoint("recorder", self.recorder)]
        if self.with_store:
            eps.append(EntryPoint("standin", self.store))
        self.bot = Bot(settings, clock=self.clock, entry_points=eps)
        self.run(self.bot.start())

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(asyncio.wait_for(coro, 10))

    def close(self) -> None:
        self.run(self.bot.stop())
        self.loop.close()

    def message(self, text: str, user: str = "alice", channel: str = "c1", guild: str | None = "g1", **extra: Any) -> IncomingMessage:
        now = self.clock.now()
        return IncomingMessage(
            id=extra.pop("id", None) or snowflake(now),
            author_id=user,
            author_name=user,
            channel_id=channel,
            guild_id=guild,
            is_dm=guild is None,
            content=text,
            timestamp=now,
            **extra,
        )

    def say(self, text: str, **kwargs: Any) -> Reply:
        """Send a message; return the one reply (the clock ticks a second)."""
        sent: list[Reply] = []

        async def send(reply: Reply) -> Sent:
            sent.append(reply)
            return Sent(timestamp=self.clock.now() + 0.5)

        self.run(self.bot.handle(self.message(text, **kwargs), send))
        self.clock.advance(1)
        assert len(sent) == 1, sent
        return sent[0]
