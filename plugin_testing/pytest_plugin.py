"""The ``chat_bot`` pytest fixture for plugin authors (installed with this
project as a ``pytest11`` plugin, so it is there in every test run).

``chat_bot(*names, modules=None, config=None)`` starts a bot with the core
and the plugins named (installed entry points), or the ``modules`` given
(``{"name": module}``), and returns a :class:`~plugin_testing.SyncChatBot`:
``say(text)`` sends a message through the whole pipeline and returns the
reply. A plugin that failed to load or start fails the fixture, with the
reason: a typo is never a silently passing test.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

import pytest

from plugin_testing import ChatBot, SyncChatBot


class MakeChatBot(Protocol):
    def __call__(
        self, *names: str, modules: dict[str, ModuleType] | None = None,
        config: dict[str, dict[str, Any]] | None = None,
    ) -> SyncChatBot: ...


@pytest.fixture
def chat_bot(tmp_path: Path) -> Iterator[MakeChatBot]:
    loop = asyncio.new_event_loop()
    started: list[ChatBot] = []

    def make(
        *names: str, modules: dict[str, ModuleType] | None = None, config: dict[str, dict[str, Any]] | None = None
    ) -> SyncChatBot:
        plugins: list[str] | dict[str, ModuleType] = dict(modules) if modules else list(names)
        chat = ChatBot(plugins, tmp_path / f"bot{len(started)}", config)
        loop.run_until_complete(chat.start())
        started.append(chat)
        problems = chat.problems()
        if problems:
            pytest.fail("; ".join(f"plugin {n!r} failed: {why}" for n, why in problems.items()), pytrace=False)
        missing = [n for n in plugins if n not in chat.bot.plugins.info or chat.bot.plugins.info[n].state != "enabled"]
        if missing:
            pytest.fail(f"plugin(s) {', '.join(missing)} not installed (is the package pip-installed?)", pytrace=False)
        return SyncChatBot(chat, loop)

    try:
        yield make
    finally:
        for chat in started:
            loop.run_until_complete(chat.stop())
        loop.close()
