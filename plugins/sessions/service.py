"""The sessions plugin's work against a running bot: the glue between the
pure logic (:mod:`.scope`, :mod:`.lifecycle`, :mod:`.window`) and the bot's
storage service (``bot.storage``: ``load_session``, ``save_session``,
``load_messages``).

Settings are validated once per bot (at start-up) and kept in the bot's
``plugin_state["sessions"]``, not per process: tests and rolling deploys run
several bots in one process.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from core.models import IncomingMessage, MessageRecord, Session
from core.storage import StorageFailed

from plugins.sessions import lifecycle
from plugins.sessions.config import Effective, SessionsSettings, effective, load
from plugins.sessions.scope import scope_key
from plugins.sessions.tokens import record_tokens, resolve_counter
from plugins.sessions.window import Window, fit

log = logging.getLogger("plugins.sessions")

LAST_KNOWN_MAX = 10_000


@dataclass
class SessionsState:
    """What the plugin keeps for one bot (``bot.plugin_state["sessions"]``)."""

    settings: SessionsSettings | None = None
    # The session each scope last resolved to: used only when the storage
    # fails outright (raises), so a broken storage call does not start a
    # new conversation on every message. Bounded.
    last_known: OrderedDict[str, Session] = field(default_factory=OrderedDict)


def state_of(bot: Any) -> SessionsState:
    state = bot.plugin_state.get("sessions")
    if state is None:
        state = bot.plugin_state["sessions"] = SessionsState()
    return state


def settings_of(bot: Any) -> SessionsSettings:
    """This bot's validated ``[sessions]`` settings."""
    state = state_of(bot)
    if state.settings is None:
        state.settings = load(bot.settings)
    return state.settings


def configure(bot: Any) -> SessionsSettings:
    """(Re)validate the settings; raises :class:`core.errors.ConfigError`."""
    state = state_of(bot)
    state.settings = load(bot.settings)
    return state.settings


def settings_for(bot: Any, message: IncomingMessage) -> Effective:
    """The settings for ``message``: config and its overrides, then what
    the server's administrators set at run time (``/settings``)."""
    cfg = effective(settings_of(bot), message)
    runtime = getattr(bot, "guild_settings", None)
    if runtime is None or message.guild_id is None or message.is_dm:
        return cfg
    changed = {name: value for name in ("scope", "window_messages", "system_prompt")
               if (value := runtime.get(message.guild_id, name)) is not None}
    return dataclasses.replace(cfg, **changed) if changed else cfg


def own_scope(bot: Any, message: IncomingMessage) -> str:
    return scope_key(message, settings_for(bot, message).scope)


async def current_scope(bot: Any, message: IncomingMessage) -> str:
    """The scope key every plugin agrees on: the ``session_scope`` hook's
    first answer (ours unless a plugin overrides it), else our own."""
    key = await bot.hooks.first("session_scope", message=message)
    return key if isinstance(key, str) and key else own_scope(bot, message)


def has_storage(bot: Any) -> bool:
    return bool(bot.storage.present)


async def load_session(bot: Any, key: str) -> Session | None:
    found = await bot.storage.load_session(key)
    return found if isinstance(found, Session) else None


def remember(bot: Any, session: Session) -> None:
    known = state_of(bot).last_known
    known[session.scope_key] = session
    known.move_to_end(session.scope_key)
    while len(known) > LAST_KNOWN_MAX:
        known.popitem(last=False)


def forget_cached(bot: Any, user_id: str) -> None:
    """Drop what this instance remembers of ``user_id``'s sessions."""
    known = state_of(bot).last_known
    if known:
        for key in [k for k, s in known.items() if s.user_id == user_id]:
            del known[key]


async def load_for_message(bot: Any, key: str) -> Session | None:
    """``load_session`` for the pipeline: when the storage failed, fall back on the session this instance last saw for ``key`` (a copy);
    without one, raise :class:`~.lifecycle.StateUnreachable` (the caller
    opens a provisional session rather than act as if there were none)."""
    try:
        return await bot.storage.load_session_or_fail(key)
    except StorageFailed:
        known = state_of(bot).last_known.get(key)
        if known is not None:
            log.warning("load_session failed for %s; continuing session %s as last seen here", key, known.id)
            return Session(**{f: getattr(known, f) for f in Session.__dataclass_fields__})
        raise lifecycle.StateUnreachable(key) from None


async def save_session(bot: Any, session: Session) -> None:
    await bot.storage.save_session(session)


async def resolve(bot: Any, message: IncomingMessage) -> Session | None:
    """The session of ``message`` (see :mod:`.lifecycle`); ``None`` when no
    plugin stores sessions, so the core's default applies.

    Judged at the message's own time, not at the moment an instance got to
    it (docs/MEMORY_SESSIONS.md, rule 12): a standby that takes a message
    over after its holder froze, or a message that waited out an outage,
    continues the session it was sent in, as its first holder decided. The
    activity recorded is the moment it is handled: the reply goes out
    then."""
    if not has_storage(bot):
        return None
    cfg = settings_for(bot, message)
    key = await current_scope(bot, message)
    session = await lifecycle.resolve(
        message,
        key,
        sent_at(bot, message),
        cfg.idle_timeout,
        cfg.max_age,
        lambda k: load_for_message(bot, k),
        lambda s: save_session(bot, s),
        handled_at=bot.clock.now(),
    )
    remember(bot, session)
    return session


def sent_at(bot: Any, message: IncomingMessage) -> float:
    """When ``message`` was sent, by the platform's clock; never later than
    this instance's clock (a platform clock ahead of ours must not make a
    session look active in our future)."""
    return min(bot.clock.now(), message.timestamp)


def current_record(message: IncomingMessage, session: Session) -> MessageRecord:
    return MessageRecord.from_incoming(message, session)


def system_prompt_for(bot: Any, cfg: Effective) -> str:
    return cfg.system_prompt or bot.settings.bot.system_prompt


async def session_messages(bot: Any, session: Session, limit: int) -> list[MessageRecord]:
    """The last ``limit`` messages of ``session``, in conversation order.

    Records of any other session are left out even if a storage plugin
    returned them: context never crosses scopes (G8).
    """
    loaded = await bot.storage.load_messages(session, limit)
    mine = [r for r in loaded if isinstance(r, MessageRecord) and r.session_id == session.id]
    if len(mine) != len(loaded):
        log.warning("load_messages returned %d records of other sessions for %s; left out", len(loaded) - len(mine), session.id)
    return sorted(mine, key=lambda r: r.sort_key)


async def window(bot: Any, session: Session, message: IncomingMessage | None, cfg: Effective) -> Window:
    """The context window of ``session`` for ``message`` (or between messages)."""
    counter = resolve_counter(settings_of(bot).token_counter)
    # One more than the window: room for the current message when memory
    # could not store it (degraded), without ever showing fewer than asked.
    loaded = await session_messages(bot, session, cfg.window_messages + 1)
    current = None
    if message is not None:
        current = next((r for r in loaded if r.id == message.id), None) or current_record(message, session)
    return fit(loaded, current, system_prompt_for(bot, cfg), cfg.window_messages, cfg.token_budget, counter)


def tokens_of(bot: Any, records: list[MessageRecord]) -> int:
    counter = resolve_counter(settings_of(bot).token_counter)
    return sum(record_tokens(r, counter) for r in records)
