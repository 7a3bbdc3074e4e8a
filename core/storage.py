"""The conversation store as a typed service.

What the core and the plugins need of the memory (messages, sessions, the
session lease, the fenced send, bot-wide state) has one implementation per
bot: it is a service, not a hook bus. A plugin provides it by returning an
object that satisfies :class:`Storage` through the ``register_storage``
registry hook; the core holds it as ``bot.storage`` (a
:class:`StorageService`) and every caller goes through that.

A second backend is one class (subclass :class:`StorageBase` to start from
"stores nothing"). The core calls it the way it calls hooks: awaited, each
call isolated (a failure is logged with the plugin's name and counted,
never raised into the pipeline) and bounded by ``[bot] hook_timeout``.
"""

from __future__ import annotations

import inspect
import logging
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from core.models import IncomingMessage, MessageDeletion, MessageEdit, MessageRecord, Session

if TYPE_CHECKING:
    from core.dispatch import HookFailure, Hooks

log = logging.getLogger("core.storage")


@runtime_checkable
class Storage(Protocol):
    """The store a memory plugin registers. Every method is ``async``."""

    async def store_message(self, record: MessageRecord, session: Session) -> bool:
        """Store one message of the conversation (the user's, then the
        reply). Idempotent on ``record.id``. ``True`` when durably accepted,
        ``False`` when accepted only in degraded form (the core tells the
        user memory is degraded). May raise :class:`core.errors.Refused`."""
        ...

    async def load_messages(self, session: Session, limit: int) -> list[MessageRecord]:
        """The last ``limit`` messages of ``session``, oldest first."""
        ...

    async def edit_message(self, edit: MessageEdit) -> None:
        """A user edited a message: what memory holds for it (and the next
        context) shows the new text. Idempotent; a later edit wins."""
        ...

    async def delete_messages(self, deletion: MessageDeletion) -> None:
        """Messages were deleted: remove them, and the bot's replies to
        them, everywhere the store keeps them. Idempotent; final (a deleted
        message is not stored again)."""
        ...

    async def load_records(self, ids: list[str]) -> list[MessageRecord]:
        """The stored messages among ``ids`` (any session), in any order;
        those it does not hold (or cannot reach now) are left out. Used to
        bring back an exchange a user replies to."""
        ...

    async def load_session(self, scope_key: str) -> Session | None:
        """The latest session stored for ``scope_key``, open or closed, or
        ``None``. Raises when it cannot tell (unknown is not "none")."""
        ...

    async def save_session(self, session: Session) -> None:
        """Persist ``session`` (opened, touched, closed, state changed)."""
        ...

    async def list_sessions(self, user_id: str, limit: int) -> list[Session]:
        """Up to ``limit`` of ``user_id``'s sessions, newest first."""
        ...

    async def session_lease(self, message: IncomingMessage) -> AbstractAsyncContextManager[Any] | None:
        """An async context manager the core holds while it handles
        ``message`` (resolving its session to storing the reply), so one
        session's messages are handled one at a time, across instances
        too; or ``None``."""
        ...

    async def confirm_reply(self, message: IncomingMessage) -> bool:
        """Right before any answer to ``message`` is sent: ``False`` when
        this instance must not send it (another took the message over); the
        core then asks ``claim_message`` again (rule A4, docs/MEMORY.md)."""
        ...

    async def load_bot_state(self, key: str) -> Any:
        """The durable bot-wide value under ``key`` (JSON-able), or ``None``."""
        ...

    async def load_bot_states(self, prefix: str) -> dict[str, Any] | None:
        """Every bot-wide value whose key starts with ``prefix`` (``{}``
        when none), or ``None`` when the store cannot answer now."""
        ...

    async def save_bot_state(self, key: str, value: Any) -> None:
        """Durably store a bot-wide value, shared by all instances."""
        ...


class StorageBase:
    """A :class:`Storage` that stores nothing durably: subclass it and
    override what your backend keeps. Bot-wide state lives in this object
    (this process) until overridden."""

    def _states(self) -> dict[str, Any]:
        states = self.__dict__.get("_bot_states")
        if states is None:
            states = self.__dict__["_bot_states"] = {}
        return states

    async def store_message(self, record: MessageRecord, session: Session) -> bool:
        return True

    async def load_messages(self, session: Session, limit: int) -> list[MessageRecord]:
        return []

    async def load_records(self, ids: list[str]) -> list[MessageRecord]:
        return []

    async def edit_message(self, edit: MessageEdit) -> None:
        return None

    async def delete_messages(self, deletion: MessageDeletion) -> None:
        return None

    async def load_session(self, scope_key: str) -> Session | None:
        return None

    async def save_session(self, session: Session) -> None:
        return None

    async def list_sessions(self, user_id: str, limit: int) -> list[Session]:
        return []

    async def session_lease(self, message: IncomingMessage) -> AbstractAsyncContextManager[Any] | None:
        return None

    async def confirm_reply(self, message: IncomingMessage) -> bool:
        return True

    async def load_bot_state(self, key: str) -> Any:
        return self._states().get(key)

    async def load_bot_states(self, prefix: str) -> dict[str, Any] | None:
        return {k: v for k, v in self._states().items() if k.startswith(prefix)}

    async def save_bot_state(self, key: str, value: Any) -> None:
        self._states()[key] = value


class StorageFailed(Exception):
    """The registered storage raised (or timed out) on a call whose caller
    must tell "failed" from "nothing there"."""


@dataclass(slots=True)
class _Method:
    """A storage method in the shape the dispatcher calls (an implementation
    with its plugin's name), so it gets the hooks' isolation and timeout."""

    function: Any
    argnames: tuple[str, ...]
    plugin_name: str


def _argnames(function: Any, offered: dict[str, Any]) -> tuple[str, ...]:
    try:
        parameters = inspect.signature(function).parameters
    except (TypeError, ValueError):
        return tuple(offered)
    if any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
        return tuple(offered)
    return tuple(name for name in parameters if name in offered)


class StorageService:
    """The bot's storage, as the core and the plugins call it."""

    def __init__(self, hooks: Hooks) -> None:
        self.hooks = hooks
        self.impl: Storage | None = None
        self.plugin: str | None = None
        # (method, arguments offered) -> the names the method takes: reading
        # a signature costs more than the rest of a call's dispatch.
        self._names: dict[tuple[str, tuple[str, ...]], tuple[str, ...]] = {}

    @property
    def present(self) -> bool:
        return self.impl is not None

    def register_for(self, plugin: str) -> Any:
        def register(storage: Any) -> None:
            if not isinstance(storage, Storage):
                raise TypeError(
                    f"register_storage: {type(storage).__name__} is not a core.storage.Storage "
                    "(subclass core.storage.StorageBase)"
                )
            if self.impl is not None:
                log.warning("storage from %r ignored: %r already provides it", plugin, self.plugin)
                return
            self.impl, self.plugin = storage, plugin
            self._names.clear()

        return register

    def clear(self) -> None:
        self.impl, self.plugin = None, None
        self._names.clear()

    async def _call(self, method: str, **kwargs: Any) -> tuple[bool, Any, list[HookFailure]]:
        if self.impl is None or self.plugin is None:
            return False, None, []
        failures: list[HookFailure] = []
        function = getattr(self.impl, method)
        # Like a hook implementation, a method takes the arguments it names.
        key = (method, tuple(kwargs))
        names = self._names.get(key)
        if names is None:
            names = self._names[key] = _argnames(function, kwargs)
        call = _Method(function, names, self.plugin)
        ok, result = await self.hooks.call_guarded(f"storage.{method}", call, kwargs, failures)
        return ok, result, failures

    async def store_message(self, record: MessageRecord, session: Session) -> bool:
        """``True`` when accepted (or there is no storage), ``False`` when
        degraded or failed."""
        if self.impl is None:
            return True
        ok, result, _ = await self._call("store_message", record=record, session=session)
        return ok and result is not False

    async def load_messages(self, session: Session, limit: int) -> list[MessageRecord]:
        ok, result, _ = await self._call("load_messages", session=session, limit=limit)
        return list(result) if ok and result else []

    async def edit_message(self, edit: MessageEdit) -> None:
        await self._call("edit_message", edit=edit)

    async def delete_messages(self, deletion: MessageDeletion) -> None:
        await self._call("delete_messages", deletion=deletion)

    async def load_records(self, ids: list[str]) -> list[MessageRecord]:
        ok, result, _ = await self._call("load_records", ids=list(ids))
        return [r for r in result if isinstance(r, MessageRecord)] if ok and result else []

    async def load_session(self, scope_key: str) -> Session | None:
        """The stored session, or ``None`` (also when the storage failed)."""
        ok, result, _ = await self._call("load_session", scope_key=scope_key)
        return result if ok and isinstance(result, Session) else None

    async def load_session_or_fail(self, scope_key: str) -> Session | None:
        """:meth:`load_session`, raising :class:`StorageFailed` when the
        storage could not tell."""
        ok, result, failures = await self._call("load_session", scope_key=scope_key)
        if failures:
            raise StorageFailed(failures[0].error)
        return result if ok and isinstance(result, Session) else None

    async def save_session(self, session: Session) -> None:
        await self._call("save_session", session=session)

    async def list_sessions(self, user_id: str, limit: int) -> list[Session]:
        ok, result, _ = await self._call("list_sessions", user_id=user_id, limit=limit)
        return [s for s in result if isinstance(s, Session)] if ok and result else []

    async def session_lease(self, message: IncomingMessage) -> AbstractAsyncContextManager[Any] | None:
        ok, result, _ = await self._call("session_lease", message=message)
        return result if ok else None

    async def confirm_reply(self, message: IncomingMessage) -> bool:
        ok, result, _ = await self._call("confirm_reply", message=message)
        return not (ok and result is False)

    async def load_bot_state(self, key: str) -> Any:
        ok, result, _ = await self._call("load_bot_state", key=key)
        return result if ok else None

    async def load_bot_states(self, prefix: str) -> dict[str, Any] | None:
        ok, result, _ = await self._call("load_bot_states", prefix=prefix)
        return result if ok and isinstance(result, dict) else None

    async def save_bot_state(self, key: str, value: Any) -> None:
        await self._call("save_bot_state", key=key, value=value)
