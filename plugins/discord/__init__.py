"""Discord transport: chat with the bot in Discord (DMs, mentions, replies,
configured channels) and run its commands as slash commands.

Needs ``DISCORD_TOKEN`` in the environment; settings are the ``[discord]``
table / ``DISCORD_*`` variables (see :mod:`plugins.discord.settings`). The
logic lives in ``client`` (the discord.py client), ``convert`` (discord.py
objects → core models) and ``split`` (2,000-character messages).
"""

from __future__ import annotations

from typing import Any

from core.plugins import hookimpl


async def run(bot: Any) -> None:
    """Serve Discord until cancelled (the ``discord`` transport)."""
    from plugins.discord.client import serve

    await serve(bot)


@hookimpl
def register_transports(register: Any) -> None:
    register("discord", run)
