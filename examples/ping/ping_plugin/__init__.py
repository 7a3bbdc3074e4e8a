"""The ping plugin: answers "ping" with "pong", and ``/ping``.

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
    return Reply(f"hello {inv.message.author_name}, from the ping plugin")


@hookimpl
def register_commands(register: Any) -> None:
    """Registry: ``/ping`` in the terminal, a slash command in Discord."""
    register(Command("ping", "says hello", hello))
