"""The sessions plugin: who shares context (scope), when a conversation
ends (idle timeout, maximum age, reset), and which earlier messages a reply
sees (the context window). See README.md in this folder.

Only hook implementations and thin glue live here; the logic is in
:mod:`.scope`, :mod:`.lifecycle`, :mod:`.window`, :mod:`.tokens`,
:mod:`.config` and :mod:`.commands`, testable without pluggy. Storage is
another plugin's job (``load_session``, ``save_session``, ``load_messages``,
``list_sessions``), reached through ``bot.hooks``.
"""

from __future__ import annotations

from typing import Any

from core.models import Context, IncomingMessage, Session
from core.plugins import hookimpl

from plugins.sessions import commands, quotes, service


@hookimpl
def startup(bot: Any) -> None:
    """Validate ``[sessions]`` now, so a malformed scope or override stops
    this plugin at start-up (``python -m core check`` names the key) rather
    than at the first message."""
    service.configure(bot)


@hookimpl
def session_scope(message: IncomingMessage, bot: Any) -> str:
    return service.own_scope(bot, message)


@hookimpl
async def resolve_session(message: IncomingMessage, bot: Any) -> Session | None:
    return await service.resolve(bot, message)


@hookimpl
async def build_context(session: Session, message: IncomingMessage, bot: Any) -> Context:
    cfg = service.settings_for(bot, message)
    window = await service.window(bot, session, message, cfg)
    quoted = await quotes.quoted_exchange(bot, message, session, window.messages)
    return Context(
        session=session,
        system_prompt=service.system_prompt_for(bot, cfg),
        messages=quoted + window.messages,
        token_budget=cfg.token_budget,
        tokens_used=window.tokens_used + service.tokens_of(bot, quoted),
        notes=[quotes.NOTE] if quoted else [],
    )


@hookimpl
def register_commands(register: Any) -> None:
    for command in commands.all_commands():
        register(command)
