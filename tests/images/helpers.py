"""Bots assembled with the real images plugin, and small HTTP servers."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

import plugins.images as images_plugin
from core.bot import Bot
from core.clock import Clock, ManualClock
from core.models import Attachment, IncomingMessage, MessageRecord, Reply, Sent
from core.plugins import hookimpl
from core.storage import StorageBase
from core.settings import EnvSettings, Settings

WAIT = 10.0  # bound on every wait in these tests


class EntryPoint:
    """A stand-in for an importlib entry point naming a given object."""

    def __init__(self, name: str, target: Any) -> None:
        self.name, self.target, self.value, self.dist = name, target, f"tests:{name}", None

    def load(self) -> Any:
        return self.target


class Recorder(StorageBase):
    """A memory stand-in: keeps every stored record, answers load_messages."""

    @hookimpl
    def register_storage(self, register: Any) -> None:
        register(self)

    def __init__(self) -> None:
        self.records: list[MessageRecord] = []

    def store_message(self, record: MessageRecord) -> bool:
        self.records.append(record)
        return True


def make_bot(data_dir: Path, images: dict[str, Any] | None = None, *, clock: Clock | None = None,
             extra: dict[str, Any] | None = None) -> tuple[Bot, Recorder]:
    recorder = Recorder()
    entry_points = [EntryPoint("images", images_plugin), EntryPoint("recorder", recorder)]
    entry_points += [EntryPoint(name, obj) for name, obj in (extra or {}).items()]
    settings = Settings(env=EnvSettings(data_dir=data_dir, instance_id="images-test"),
                        sections={"images": dict(images or {})})
    return Bot(settings, clock=clock or ManualClock(), entry_points=entry_points), recorder


_ids = iter(range(1_000_000, 10_000_000))


def user_message(text: str = "", *, author: str = "alice", attachments: list[Attachment] | None = None,
                 channel: str = "general") -> IncomingMessage:
    n = next(_ids)
    return IncomingMessage(id=str(n), author_id=author, author_name=author, channel_id=channel, guild_id="guild",
                           content=text, timestamp=1_700_000_000.0 + n / 1000, attachments=attachments or [])


async def send_one(bot: Bot, message: IncomingMessage) -> Reply:
    """Handle ``message``; return the one reply the bot sent."""
    sent: list[Reply] = []

    async def send(reply: Reply) -> Sent:
        sent.append(reply)
        return Sent()

    if not bot.started:
        await bot.start()
    await asyncio.wait_for(bot.handle(message, send), WAIT)
    assert len(sent) == 1, sent
    return sent[0]


@contextlib.asynccontextmanager
async def serve(routes: list[web.RouteDef]) -> AsyncIterator[str]:
    """Run an aiohttp app on 127.0.0.1 (a free port); yield its base URL."""
    app = web.Application()
    app.add_routes(routes)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


def run(coro_factory: Callable[[], Any]) -> Any:
    return asyncio.run(asyncio.wait_for(coro_factory(), 60))
