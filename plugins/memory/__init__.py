"""Memory plugin: Redis-first conversation memory on a peewee database.

Hooks only; the logic is in :mod:`plugins.memory.store` and its siblings.
Each bot gets its own :class:`~plugins.memory.store.MemoryStore`, created in
``startup`` and kept as ``bot.memory`` (several bots may share a process).
"""

from __future__ import annotations

import logging
from typing import Any

from core.errors import ConfigError
from core.models import HealthReport, IncomingMessage, MessageRecord, Session
from core.plugins import hookimpl
from plugins.memory.breaker import BackendDown
from plugins.memory.settings import MemorySettings
from plugins.memory.store import MemoryStore

log = logging.getLogger("plugins.memory")


def store_of(bot: Any) -> MemoryStore:
    store = getattr(bot, "memory", None)
    if not isinstance(store, MemoryStore):
        raise RuntimeError("memory plugin is not started for this bot")
    return store


@hookimpl
async def startup(bot: Any) -> None:
    settings = bot.settings.for_plugin("memory", MemorySettings)
    old = getattr(bot, "memory", None)
    if isinstance(old, MemoryStore):
        await old.stop()
    store = MemoryStore(settings, data_dir=bot.settings.data_dir, instance_id=bot.instance_id, clock=bot.clock)
    try:
        await store.start()
    except RuntimeError as exc:
        raise ConfigError(str(exc)) from None
    bot.memory = store


@hookimpl
async def shutdown(bot: Any) -> None:
    store = getattr(bot, "memory", None)
    if isinstance(store, MemoryStore):
        await store.stop()
        bot.memory = None


@hookimpl
async def health(bot: Any) -> list[HealthReport]:
    return await store_of(bot).health()


@hookimpl
async def claim_message(message: IncomingMessage, bot: Any) -> bool:
    return await store_of(bot).arbiter.claim(message.id, sent_at=message.timestamp)


@hookimpl
async def message_answered(message: IncomingMessage, bot: Any) -> None:
    # A command or refused input stores no reply record; its claim is done now.
    await store_of(bot).arbiter.done(message.id)


@hookimpl
async def confirm_reply(message: IncomingMessage, bot: Any) -> bool:
    return await store_of(bot).arbiter.confirm(message.id)


@hookimpl
async def session_lease(message: IncomingMessage, bot: Any) -> Any:
    scope = await bot.hooks.first("session_scope", message=message)
    if not scope:
        scope = f"{message.guild_id or 'dm'}:{message.channel_id}:{message.author_id}"
    return store_of(bot).leases.lease(scope)


@hookimpl
async def store_message(record: MessageRecord, session: Session, bot: Any) -> bool:
    return await store_of(bot).store_message(record)


@hookimpl
async def load_messages(session: Session, limit: int, bot: Any) -> list[MessageRecord]:
    return await store_of(bot).load_messages(session, limit)


@hookimpl
async def load_session(scope_key: str, bot: Any) -> Session | None:
    return await store_of(bot).load_session(scope_key)


@hookimpl
async def save_session(session: Session, bot: Any) -> None:
    await store_of(bot).save_session(session)


@hookimpl
async def list_sessions(user_id: str, limit: int, bot: Any) -> list[Session]:
    return await store_of(bot).list_sessions(user_id, limit)


@hookimpl
async def export_user(user_id: str, bot: Any) -> dict[str, Any]:
    return await store_of(bot).export_user(user_id)


@hookimpl
async def forget_user(user_id: str, bot: Any) -> dict[str, int]:
    return await store_of(bot).forget_user(user_id)


@hookimpl
async def load_bot_state(key: str, bot: Any) -> Any:
    return await store_of(bot).load_bot_state(key)


@hookimpl
async def load_bot_states(prefix: str, bot: Any) -> dict[str, Any] | None:
    return await store_of(bot).load_bot_states(prefix)


@hookimpl
async def save_bot_state(key: str, value: Any, bot: Any) -> None:
    await store_of(bot).save_bot_state(key, value)


@hookimpl
def register_admin_commands(register: Any) -> None:
    # Imported here: the command line is the only user of these modules.
    from plugins.memory.admin import COMMANDS

    for command in COMMANDS:
        register(command)


__all__ = ["BackendDown", "MemorySettings", "MemoryStore", "store_of"]
