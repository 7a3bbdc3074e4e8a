"""Fixtures for driving the real discord.py transport against the fake Discord.

pytest here has no asyncio plugin: each test runs one coroutine through
``run`` (a fresh event loop, bounded by a timeout so nothing hangs).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from core.bot import Bot
from core.models import Attachment, Command, Context, IncomingMessage, MessageRecord, Reply, Session
from core.plugins import hookimpl
from core.storage import StorageBase
from core.settings import BotSection, EnvSettings, Settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's DISCORD_* / BOT_* variables must not leak into tests."""
    for name in list(os.environ):
        if name.startswith(("DISCORD_", "BOT_")) or name in ("DATABASE_URL", "REDIS_URL"):
            monkeypatch.delenv(name)


@pytest.fixture
def run() -> Callable[[Coroutine[Any, Any, Any]], Any]:
    def run(coro: Coroutine[Any, Any, Any], timeout: float = 60.0) -> Any:
        return asyncio.run(asyncio.wait_for(coro, timeout))

    return run


@dataclass
class Recorder(StorageBase):
    """A reply plugin for transport tests: records what reached the core and
    answers predictably (``long`` → 4,500 chars, ``file`` → a file,
    ``ping`` → text with @everyone, else ``echo: <text>``)."""

    @hookimpl
    def register_storage(self, register: Any) -> None:
        register(self)

    seen: list[IncomingMessage] = field(default_factory=list)
    stored: list[MessageRecord] = field(default_factory=list)
    # /slow answers only once this is set (a test sets it when it has seen
    # what must happen while a command is still running).
    slow_done: asyncio.Event = field(default_factory=asyncio.Event)

    def store_message(self, record: MessageRecord, session: Session) -> bool:
        self.stored.append(record)
        return True

    @hookimpl
    def generate_reply(self, context: Context, message: IncomingMessage) -> Reply:
        self.seen.append(message)
        text = message.content
        if text.startswith("long"):
            paragraph = ("This sentence is part of a long reply. " * 20).strip()
            return Reply("\n\n".join(f"{i}: {paragraph}" for i in range(6)))
        if text.startswith("file"):
            return Reply("here is a file", attachments=[Attachment("out.txt", "text/plain", 5, data=b"hello")])
        if text.startswith("ping"):
            return Reply("@everyone <@&1> look")
        names = ",".join(f"{a.filename}:{len(a.data or b'')}" for a in message.attachments)
        return Reply(f"echo: {text}" + (f" [{names}]" if names else ""))

    @hookimpl
    def register_commands(self, register: Any) -> None:
        register(Command("whoami", "who you are to the bot", self._whoami))
        register(Command("modonly", "a moderators' command", lambda inv: Reply("mod ok"), permission="manage_messages"))
        register(Command("adminonly", "an admins' command", lambda inv: Reply("admin ok"), permission="admin"))
        register(Command("say", "repeat text", lambda inv: Reply(f"said: {inv.args}"),
                         options={"text": "what to say", "more": "more"}))
        register(Command("slow", "takes a while", self._slow))
        register(Command("lorem", "a long answer", lambda inv: Reply("\n".join(f"line {i} " + "x" * 80 for i in range(50)))))
        register(Command("secret", "an ephemeral answer", lambda inv: Reply("only you", ephemeral=True)))

    async def _slow(self, inv: Any) -> Reply:
        await asyncio.wait_for(self.slow_done.wait(), 10)
        return Reply("done slowly")

    def _whoami(self, inv: Any) -> Reply:
        m = inv.message
        return Reply(f"user={m.author_id} guild={m.guild_id} dm={m.is_dm} perms={sorted(m.permissions)} owner={m.is_owner}")


class _EntryPoint:
    def __init__(self, name: str, obj: Any) -> None:
        self.name, self.value, self.dist, self._obj = name, name, None, obj

    def load(self) -> Any:
        return self._obj


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def make_bot(tmp_path: Path, recorder: Recorder) -> Callable[..., Bot]:
    def make(extra_plugins: dict[str, Any] | None = None, **bot_section: Any) -> Bot:
        settings = Settings(env=EnvSettings(_env_file=None, data_dir=tmp_path, instance_id="A"), bot=BotSection(**bot_section))
        extra = [_EntryPoint(name, obj) for name, obj in (extra_plugins or {}).items()]
        return Bot(settings, entry_points=[_EntryPoint("recorder", recorder), *extra])

    return make
