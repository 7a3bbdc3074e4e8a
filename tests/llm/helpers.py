"""Bots for the reply plugin's tests: the real core and the real llm plugin,
plus a small recording store standing in for memory + sessions."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from core.bot import Bot
from core.clock import ManualClock
from core.models import Context, IncomingMessage, MessageRecord, Reply, Sent, Session
from core.plugins import hookimpl
from core.storage import StorageBase
from core.settings import BotSection, EnvSettings, PluginsSection, Settings

T = TypeVar("T")
SYSTEM_PROMPT = "You are the test persona."


def run(coro: Awaitable[T], timeout: float = 30.0) -> T:
    """Drive ``coro`` on a fresh event loop, bounded so nothing hangs."""

    async def bounded() -> T:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


@dataclass
class EntryPoint:
    name: str
    plugin: Any
    value: str = "test"
    dist: Any = None

    def load(self) -> Any:
        return self.plugin


class RecordingStore(StorageBase):
    """Stores every record it is given (``stored``) and builds the context
    from the last ``window`` records of the session, like memory + sessions."""

    @hookimpl
    def register_storage(self, register: Any) -> None:
        register(self)

    def __init__(self, window: int = 50) -> None:
        self.window = window
        self.stored: list[MessageRecord] = []
        self.contexts: list[Context] = []

    def store_message(self, record: MessageRecord, session: Session) -> bool:
        if all(r.id != record.id for r in self.stored):
            self.stored.append(record)
        return True

    @hookimpl
    def build_context(self, session: Session, message: IncomingMessage, bot: Any) -> Context:
        mine = sorted((r for r in self.stored if r.session_id == session.id), key=lambda r: r.sort_key)
        context = Context(session, bot.settings.bot.system_prompt, mine[-self.window :])
        self.contexts.append(context)
        return context


def make_bot(
    tmp_path: Path,
    llm: dict[str, Any] | None = None,
    *,
    store: RecordingStore | None = None,
    extra: dict[str, Any] | None = None,
) -> Bot:
    """A bot with the real llm plugin (and ``store`` when given)."""
    plugins: dict[str, Any] = {"llm": __import__("plugins.llm", fromlist=["x"])}
    if store is not None:
        plugins["recorder"] = store
    plugins.update(extra or {})
    settings = Settings(
        env=EnvSettings(data_dir=tmp_path, instance_id="A"),
        bot=BotSection(system_prompt=SYSTEM_PROMPT, name="testbot"),
        plugins=PluginsSection(enabled=list(plugins)),
        sections={"llm": llm or {}},
    )
    return Bot(settings, clock=ManualClock(), entry_points=[EntryPoint(n, p) for n, p in plugins.items()])


_ids = itertools.count(1)


@dataclass
class Chat:
    """Sends messages to a started bot as one user; collects the replies."""

    bot: Bot
    author: str = "alice"
    channel: str = "general"
    guild: str | None = "guild-1"
    replies: list[Reply] = field(default_factory=list)

    def message(self, text: str, **extra: Any) -> IncomingMessage:
        n = next(_ids)
        return IncomingMessage(
            id=f"{1_000_000 + n}",
            author_id=self.author,
            author_name=self.author.title(),
            channel_id=self.channel,
            guild_id=self.guild,
            content=text,
            # The platform's time follows the bot's clock (sessions are judged
            # at it); the counter keeps each message after the reply before it
            # (stamped 1 ms after its message when the clock stands still).
            timestamp=self.bot.clock.now() + n * 0.01,
            **extra,
        )

    async def say(self, text: str, **extra: Any) -> Reply:
        got: list[Reply] = []

        async def send(reply: Reply) -> Sent:
            got.append(reply)
            return Sent()

        await self.bot.handle(self.message(text, **extra), send)
        assert len(got) == 1, got
        self.replies.append(got[0])
        return got[0]


class TinyMemory(StorageBase):
    """An in-process store of messages and sessions, enough for the real
    sessions plugin to build context windows on top of."""

    @hookimpl
    def register_storage(self, register: Any) -> None:
        register(self)

    def __init__(self) -> None:
        self.stored: list[MessageRecord] = []
        self.sessions: dict[str, Session] = {}

    def store_message(self, record: MessageRecord) -> bool:
        if all(r.id != record.id for r in self.stored):
            self.stored.append(record)
        return True

    def load_messages(self, session: Session, limit: int) -> list[MessageRecord]:
        mine = sorted((r for r in self.stored if r.session_id == session.id), key=lambda r: r.sort_key)
        return mine[-limit:] if limit > 0 else []

    def load_session(self, scope_key: str) -> Session | None:
        return self.sessions.get(scope_key)

    def save_session(self, session: Session) -> None:
        self.sessions[session.scope_key] = session
