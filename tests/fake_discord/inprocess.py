"""Run the real discord.py transport in this process against a FakeDiscord.

discord.py's URLs are process-global class attributes; :func:`connected`
points them at the fake for the duration of the block and restores them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from plugins.discord.client import DiscordBot, ShardedDiscordBot, build_client
from plugins.discord.endpoints import use_endpoints
from plugins.discord.settings import DiscordSettings
from tests.fake_discord.server import FakeDiscord


@contextlib.asynccontextmanager
async def connected(core_bot: Any, fake: FakeDiscord, *, timeout: float = 10.0,
                    **settings: Any) -> AsyncIterator[DiscordBot | ShardedDiscordBot]:
    """Start the transport for ``core_bot`` (already started) against
    ``fake``; yield the client once it is ready and its slash commands are
    synced; close it on exit. ``settings`` are ``[discord]`` keys."""
    settings.setdefault("guild_ready_timeout", 0.05)
    settings.setdefault("send_retry_delay", 0.05)
    config = DiscordSettings(_env_file=None, **settings)  # type: ignore[call-arg]
    with use_endpoints(fake.api_base, fake.gateway_url, fake.base_url):
        client = build_client(core_bot, config)
        task = asyncio.create_task(client.start(fake.token))
        try:
            await fake.wait_until(lambda: task.done() or (client.is_ready() and client.synced.is_set()),
                                  timeout, "the bot to connect")
            if task.done():
                task.result()  # raise what stopped it
            yield client
        finally:
            await client.close()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
