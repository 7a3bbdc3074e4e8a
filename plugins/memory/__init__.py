"""Memory plugin: Redis-first conversation memory on a peewee database.

Hooks and the storage service (:class:`MemoryStorage`, registered through
``register_storage``); the logic is in :mod:`plugins.memory.store` and its
siblings.
Each bot gets its own :class:`~plugins.memory.store.MemoryStore`, created in
``startup`` and kept as ``bot.plugin_state["memory"]`` (several bots may share
a process); :func:`store_of` returns it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from core.errors import ConfigError
from core.models import HealthReport, IncomingMessage, MessageDeletion, MessageEdit, MessageRecord, ReplyId, Session
from core.plugins import hookimpl
from core.tasks import stop_task
from plugins.memory import edits
from plugins.memory.breaker import BackendDown
from plugins.memory.edits import corrections_of
from plugins.memory.settings import MemorySettings
from plugins.memory.store import MemoryStore

log = logging.getLogger("plugins.memory")


def store_of(bot: Any) -> MemoryStore:
    store = bot.plugin_state.get("memory")
    if not isinstance(store, MemoryStore):
        raise RuntimeError("memory plugin is not started for this bot")
    return store


@hookimpl
async def startup(bot: Any) -> None:
    settings = bot.settings.for_plugin("memory", MemorySettings)
    old = bot.plugin_state.get("memory")
    if isinstance(old, MemoryStore):
        await old.stop()
    # An admin command's bot answers no message: it stays out of the roster (A7).
    serves = getattr(bot, "admin_command", None) is None
    store = MemoryStore(settings, data_dir=bot.settings.data_dir, instance_id=bot.instance_id, clock=bot.clock, serves_messages=serves)
    try:
        await store.start()
    except RuntimeError as exc:
        raise ConfigError(str(exc)) from None
    bot.plugin_state["memory"] = store
    if settings.retention:
        bot.plugin_state["memory.retention"] = asyncio.create_task(_retention_loop(bot, store, settings), name="memory-retention")


async def _retention_loop(bot: Any, store: MemoryStore, settings: MemorySettings) -> None:
    """Retention every ``retention_interval`` seconds (plugins/memory/retention.py)."""
    from plugins.memory import retention

    while True:
        await asyncio.sleep(settings.retention_interval)
        try:
            outcome = await retention.run(store, settings.retention, bot.clock.now())
        except BackendDown as exc:
            log.warning("memory: retention not run now (%s); trying again in %ss", exc.reason, settings.retention_interval)
            continue
        except Exception:  # noqa: BLE001 - the loop must outlive anything
            log.exception("memory: retention failed; trying again in %ss", settings.retention_interval)
            continue
        if outcome.messages or outcome.sessions or outcome.facts:
            log.info("memory: retention deleted %s", outcome.as_dict())


@hookimpl
async def shutdown(bot: Any) -> None:
    task = bot.plugin_state.pop("memory.retention", None)
    if isinstance(task, asyncio.Task):
        await stop_task(task)
    store = bot.plugin_state.pop("memory", None)
    if isinstance(store, MemoryStore):
        await store.stop()


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


class MemoryStorage:
    """The memory as the bot's storage service (:class:`core.storage.Storage`):
    the store this bot's ``startup`` made, looked up at each call."""

    def __init__(self, bot: Any) -> None:
        self.bot = bot

    async def store_message(self, record: MessageRecord, session: Session) -> bool:
        store = store_of(self.bot)
        corrected = corrections_of(store).corrected(record)
        if corrected is None:
            # Deleted before it was stored (E3): nothing to keep, and a reply
            # to it marks the message answered all the same.
            reply = ReplyId.parse(record.id)
            if reply is not None:
                await store.arbiter.done(reply.message_id)
            return True
        return await store.store_message(corrected)

    async def load_messages(self, session: Session, limit: int) -> list[MessageRecord]:
        store = store_of(self.bot)
        return corrections_of(store).overlay(await store.load_messages(session, limit))

    async def edit_message(self, edit: MessageEdit) -> None:
        await edits.edit(store_of(self.bot), edit)

    async def delete_messages(self, deletion: MessageDeletion) -> None:
        await edits.delete(store_of(self.bot), deletion)

    async def load_records(self, ids: list[str]) -> list[MessageRecord]:
        store = store_of(self.bot)
        return corrections_of(store).overlay(await store.load_records(ids))

    async def load_session(self, scope_key: str) -> Session | None:
        return await store_of(self.bot).load_session(scope_key)

    async def save_session(self, session: Session) -> None:
        await store_of(self.bot).save_session(session)

    async def list_sessions(self, user_id: str, limit: int) -> list[Session]:
        return await store_of(self.bot).list_sessions(user_id, limit)

    async def session_lease(self, message: IncomingMessage) -> Any:
        scope = await self.bot.hooks.first("session_scope", message=message)
        if not scope:
            scope = f"{message.guild_id or 'dm'}:{message.channel_id}:{message.author_id}"
        return store_of(self.bot).leases.lease(scope)

    async def confirm_reply(self, message: IncomingMessage) -> bool:
        return await store_of(self.bot).arbiter.confirm(message.id)

    async def load_bot_state(self, key: str) -> Any:
        return await store_of(self.bot).load_bot_state(key)

    async def load_bot_states(self, prefix: str) -> dict[str, Any] | None:
        return await store_of(self.bot).load_bot_states(prefix)

    async def save_bot_state(self, key: str, value: Any) -> None:
        await store_of(self.bot).save_bot_state(key, value)


@hookimpl
def register_storage(register: Any, bot: Any) -> None:
    register(MemoryStorage(bot))


@hookimpl
async def export_user(user_id: str, bot: Any) -> dict[str, Any]:
    return await store_of(bot).export_user(user_id)


@hookimpl
async def export_guild(guild_id: str, bot: Any) -> dict[str, Any]:
    return await store_of(bot).export_guild(guild_id)


@hookimpl
async def forget_user(user_id: str, bot: Any) -> dict[str, int]:
    return await store_of(bot).forget_user(user_id)


@hookimpl
def register_admin_commands(register: Any) -> None:
    # Imported here: the command line is the only user of these modules.
    from plugins.memory.admin import COMMANDS

    for command in COMMANDS:
        register(command)


__all__ = ["BackendDown", "MemorySettings", "MemoryStorage", "MemoryStore", "store_of"]
