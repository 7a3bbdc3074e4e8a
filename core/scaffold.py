"""``python -m core new-plugin NAME``: write a pip-installable plugin package
with an entry point, two hook implementations and a passing test.

The package it writes is the worked example of docs/HOOKS.md: a reply
plugin that answers ``ping`` with ``pong`` (first answer, ``tryfirst`` so
it is asked before the built-in ones whatever its name) and a command.
"""

from __future__ import annotations

import re
from pathlib import Path

NAME = re.compile(r"^[a-z][a-z0-9_]{0,30}$")

PYPROJECT = '''[build-system]
requires = ["setuptools>=65"]
build-backend = "setuptools.build_meta"

[project]
name = "discord-bot-{dist}"
version = "0.1.0"
description = "The {name} plugin for the Discord bot."
requires-python = ">=3.11"
# The bot itself (core, and the chat_bot pytest fixture) is installed in
# the venv the plugin is installed into.
dependencies = []

[project.entry-points."discord_bot.plugins"]
{name} = "{module}"

[tool.setuptools]
packages = ["{module}"]
'''

PLUGIN = '''"""The {name} plugin: answers "ping" with "pong", and ``/{name}``.

Hooks are plain functions named after the hooks of docs/HOOKS.md, taking
only the arguments they need, by name.
"""

from __future__ import annotations

from typing import Any

from core.models import Command, IncomingMessage, Invocation, Reply
from core.plugins import hookimpl


@hookimpl(tryfirst=True)
def generate_reply(message: IncomingMessage) -> Reply | None:
    """First answer: the first plugin that returns a reply wins. ``None``
    leaves the message to the next reply plugin (e.g. ``llm``).
    ``tryfirst`` asks this plugin before the built-in ones."""
    if message.content.strip().lower() == "ping":
        return Reply("pong")
    return None


async def hello(inv: Invocation) -> Reply:
    return Reply(f"hello {{inv.message.author_name}}, from the {name} plugin")


@hookimpl
def register_commands(register: Any) -> None:
    """Registry: ``/{name}`` in the terminal, a slash command in Discord."""
    register(Command("{name}", "says hello", hello))
'''

TEST = '''"""Tests of the {name} plugin, on the real core (the chat_bot fixture
comes with the bot: plugin_testing.pytest_plugin)."""

from __future__ import annotations


def test_ping_is_answered_with_pong(chat_bot) -> None:  # noqa: ANN001
    bot = chat_bot("{name}")
    assert bot.say("ping").content == "pong"


def test_other_messages_are_left_to_other_reply_plugins(chat_bot) -> None:  # noqa: ANN001
    bot = chat_bot("{name}")
    assert bot.say("hello").content.startswith("No reply plugin is enabled")


def test_the_command_answers(chat_bot) -> None:  # noqa: ANN001
    bot = chat_bot("{name}")
    assert bot.say("/{name}").content == "hello alice, from the {name} plugin"
'''

README = '''# {name}: a plugin for the Discord bot

Install it into the bot's venv and it is found through its entry point:

    .venv/bin/pip install -e {name}
    ./bot.sh plugins          # lists {name}
    ./bot.sh chat             # say "ping"

Test it (the chat_bot fixture comes with the bot):

    .venv/bin/python -m pytest {name}/tests
'''


def write_plugin(name: str, where: Path) -> Path:
    """Write the package for plugin ``name`` under ``where / name``; return
    its folder. ``ValueError`` says what is wrong with the name or place."""
    if not NAME.match(name):
        raise ValueError(f"plugin name {name!r}: use lower-case letters, digits and _, starting with a letter")
    root = where / name
    if root.exists():
        raise ValueError(f"{root} already exists; nothing was written")
    module = f"{name}_plugin"
    files = {
        root / "pyproject.toml": PYPROJECT.format(name=name, dist=name.replace("_", "-"), module=module),
        root / module / "__init__.py": PLUGIN.format(name=name),
        root / "tests" / f"test_{name}.py": TEST.format(name=name),
        root / "README.md": README.format(name=name),
    }
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root
