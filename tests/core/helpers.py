"""Small helpers for core tests: bots assembled from given plugin modules."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from core.bot import Bot
from core.ids import snowflake
from core.models import IncomingMessage, Reply, Sent
from core.settings import EnvSettings, PluginsSection, Settings


@dataclass
class FakeEntryPoint:
    """Stands in for importlib.metadata.EntryPoint where a test wants to name
    its own modules as plugins."""

    name: str
    module: Any
    value: str = "test"
    dist: Any = None

    def load(self) -> Any:
        if isinstance(self.module, Exception):
            raise self.module
        return self.module


def make_settings(tmp_path: Any, **plugins: Any) -> Settings:
    return Settings(env=EnvSettings(data_dir=tmp_path, instance_id="test"), plugins=PluginsSection(**plugins))


def make_bot(tmp_path: Any, modules: dict[str, ModuleType | Exception], **plugins: Any) -> Bot:
    eps = [FakeEntryPoint(name, module) for name, module in modules.items()]
    return Bot(make_settings(tmp_path, **plugins), entry_points=eps)


def message(text: str, author: str = "alice", channel: str = "general", **extra: Any) -> IncomingMessage:
    return IncomingMessage(
        id=snowflake(1_700_000_000.0),
        author_id=author,
        author_name=author,
        channel_id=channel,
        guild_id=extra.pop("guild_id", "guild"),
        content=text,
        timestamp=1_700_000_000.0,
        **extra,
    )


def say(bot: Bot, text: str, **kwargs: Any) -> list[Reply]:
    """Send one message through the pipeline; return what the bot sent."""
    sent: list[Reply] = []

    async def send(reply: Reply) -> Sent:
        sent.append(reply)
        return Sent()

    async def go() -> None:
        if not bot.started:
            await bot.start()
        await bot.handle(message(text, **kwargs), send)

    asyncio.run(go())
    return sent


def only_reply(bot: Any, incoming: IncomingMessage, loop: asyncio.AbstractEventLoop) -> Reply:
    """Handle ``incoming`` on ``loop`` (the bot's own); the one reply sent."""
    sent: list[Reply] = []

    async def send(reply: Reply) -> Sent:
        sent.append(reply)
        return Sent()

    loop.run_until_complete(asyncio.wait_for(bot.handle(incoming, send), 10))
    assert len(sent) == 1, [r.content for r in sent]
    return sent[0]
