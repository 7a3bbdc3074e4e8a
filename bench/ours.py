"""Ours: the assembled bot (real core, memory, sessions and the offline
reply plugin), driven through the hooks every transport uses."""

from __future__ import annotations

import importlib
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from bench import data
from core.models import IncomingMessage, Reply, Sent

log = logging.getLogger("bench.ours")

WINDOW = 200
HOT = 50
PIPELINE_PLUGINS = ("memory", "sessions", "llm")
# A developer's environment must not redirect the benchmark's memory.
_LEAKY_ENV = ("DATABASE_URL", "REDIS_URL", "BOT_CONFIG")


def available() -> str | None:
    """``None`` when the memory plugin imports and registers the storage."""
    try:
        module = importlib.import_module("plugins.memory")
    except Exception as exc:  # noqa: BLE001 - reported in the table
        return f"memory plugin unavailable ({type(exc).__name__}: {exc})"
    if not hasattr(module, "register_storage"):
        return "memory plugin registers no storage yet"
    return None


def plugins_present() -> list[str]:
    present = []
    for name in PIPELINE_PLUGINS:
        try:
            importlib.import_module(f"plugins.{name}")
        except Exception as exc:  # noqa: BLE001 - a broken plugin is left out and named by the pipeline row
            log.warning("plugin %s left out of the benchmark: %s", name, exc)
            continue
        present.append(name)
    return present


async def no_op_send(reply: Reply) -> Sent:
    return Sent()


class Ours:
    """One bot instance of ours against given Redis and database URLs."""

    def __init__(self, redis_url: str, database_url: str, prefix: str, *, plugins: list[str] | None = None,
                 memory: dict[str, Any] | None = None, instance_id: str = "bench") -> None:
        from core.bot import Bot
        from core.settings import EnvSettings, PluginsSection, Settings

        for name in _LEAKY_ENV:
            os.environ.pop(name, None)
        for name in list(os.environ):
            if name.startswith(("MEMORY_", "SESSIONS_", "LLM_")):
                os.environ.pop(name)
        self.tmp = Path(tempfile.mkdtemp(prefix="bench-bot-"))
        section = {"database_url": database_url, "redis_url": redis_url, "key_prefix": prefix,
                   "window_size": WINDOW, "spool_dir": str(self.tmp / "spool")}
        section.update(memory or {})
        enabled = plugins if plugins is not None else plugins_present()
        settings = Settings(
            env=EnvSettings(data_dir=self.tmp, instance_id=instance_id, _env_file=None),  # type: ignore[call-arg]
            plugins=PluginsSection(enabled=enabled),
            sections={"memory": section},
        )
        self.bot = Bot(settings, instance_id=instance_id)
        self.enabled = enabled

    async def start(self) -> None:
        await self.bot.start()
        failed = [f"{n}: {i.reason}" for n, i in self.bot.plugins.info.items() if i.state == "failed"]
        if failed:
            raise RuntimeError("plugins failed to start: " + "; ".join(failed))

    async def stop(self) -> None:
        await self.bot.stop()

    async def store(self, record: data.MessageRecord, session: data.Session) -> bool:
        if not await self.bot.storage.store_message(record, session):
            raise RuntimeError(f"store_message did not accept durably: {self.failures()}")
        return True

    async def load(self, session: data.Session, limit: int = HOT) -> list[data.MessageRecord]:
        if not self.bot.storage.present:
            raise RuntimeError(f"no storage registered {self.failures()}")
        return await self.bot.storage.load_messages(session, limit)

    def failures(self) -> str:
        return "; ".join(f"{f.plugin}.{f.hook}: {f.error}" for f in self.bot.hooks.failures[-3:])

    async def fill_session(self, session: data.Session, count: int, prefix: str = "m") -> None:
        for i in range(count):
            await self.store(data.record(session.id, i, prefix=prefix, scope_key=session.scope_key), session)

    async def handle(self, message: IncomingMessage) -> Reply:
        reply = await self.bot.handle(message, no_op_send)
        if reply is None:
            raise RuntimeError(f"no reply {self.failures()}")
        return reply


def incoming(n: int, *, user: str = "u1", channel: str = "c1", tag: str = "p") -> IncomingMessage:
    import time

    return IncomingMessage(
        id=f"{tag}:{user}:{channel}:{n}", author_id=user, channel_id=channel, guild_id="g1",
        content=data.CONTENT, timestamp=time.time(), author_name=user, transport="bench",
    )
