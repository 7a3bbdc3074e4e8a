"""A bot for plugin authors' tests: assemble it with your plugin, send it
messages, read its replies. Like errbot's ``testbot``, on the real core.

With pytest, use the ``chat_bot`` fixture this package registers (see
:mod:`plugin_testing.pytest_plugin`)::

    def test_ping(chat_bot):
        bot = chat_bot("ping")          # your plugin's entry-point name
        assert bot.say("ping").content == "pong"

Without pytest, :class:`ChatBot` does the same in ``async`` code.

The bot runs the core and the plugins you name, nothing else: no memory
plugin unless you ask for it (the core then keeps one session per channel
and user, and stores nothing), no network, data under ``data_dir``.
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from core.bot import Bot
from core.models import IncomingMessage, Reply, Sent
from core.settings import BotSection, EnvSettings, PluginsSection, Settings

__all__ = ["ChatBot", "SyncChatBot"]

_ids = itertools.count(1_000_000)


@dataclass
class _EntryPoint:
    """An entry point naming a module the test already holds."""

    name: str
    module: Any
    value: str = "test"
    dist: Any = None

    def load(self) -> Any:
        return self.module


class ChatBot:
    """A started bot with only the core and ``plugins``.

    ``plugins`` are entry-point names of installed plugins, or a mapping of
    name to module (a plugin not installed yet). ``config`` holds TOML-like
    tables: ``{"bot": {...}, "ping": {...}}``.
    """

    def __init__(
        self,
        plugins: list[str] | dict[str, ModuleType],
        data_dir: Path,
        config: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        config = dict(config or {})
        names = list(plugins)
        entry_points = [_EntryPoint(n, m) for n, m in plugins.items()] if isinstance(plugins, dict) else None
        settings = Settings(
            env=EnvSettings(data_dir=data_dir, instance_id="plugin-test", _env_file=None),  # type: ignore[call-arg]
            bot=BotSection(**config.pop("bot", {})),
            plugins=PluginsSection(enabled=names),
            sections=config,
        )
        self.bot = Bot(settings, entry_points=entry_points)
        self.replies: list[Reply] = []

    async def start(self) -> ChatBot:
        await self.bot.start()
        return self

    async def stop(self) -> None:
        await self.bot.stop()

    def problems(self) -> dict[str, str]:
        """Plugins that did not load or start, with the reason (empty when
        all is well): assert on it first, so a typo fails loudly."""
        return {i.name: i.reason for i in self.bot.plugins.listing() if i.state == "failed"}

    async def say(self, text: str, *, author: str = "alice", channel: str = "general",
                  guild: str | None = "guild", **fields: Any) -> Reply | None:
        """Send ``text`` through the whole pipeline; the reply, or ``None``."""
        sent: list[Reply] = []

        async def send(reply: Reply) -> Sent:
            sent.append(reply)
            return Sent()

        message = IncomingMessage(
            id=str(next(_ids)),
            author_id=author,
            author_name=author,
            channel_id=channel,
            guild_id=guild,
            is_dm=guild is None,
            content=text,
            timestamp=self.bot.clock.now(),
            transport="test",
            **fields,
        )
        await self.bot.handle(message, send)
        self.replies.extend(sent)
        return sent[-1] if sent else None


class SyncChatBot:
    """:class:`ChatBot` for plain (non-async) tests: its own event loop."""

    def __init__(self, chat: ChatBot, loop: asyncio.AbstractEventLoop) -> None:
        self.chat = chat
        self.loop = loop
        self.bot = chat.bot

    @property
    def replies(self) -> list[Reply]:
        return self.chat.replies

    def problems(self) -> dict[str, str]:
        return self.chat.problems()

    def say(self, text: str, **kwargs: Any) -> Reply | None:
        return self.loop.run_until_complete(self.chat.say(text, **kwargs))
