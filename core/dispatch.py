"""Calling hooks the way the core needs: awaited, isolated, in order.

pluggy neither awaits coroutines nor survives an exception in one
implementation (pluggy #320, #419), so the core walks the implementations
itself, in pluggy's call order (``tryfirst`` first, ``trylast`` last, later
registrations before earlier ones).
"""

from __future__ import annotations

import inspect
import logging
from collections import Counter
from dataclasses import dataclass
from collections.abc import Callable
from typing import Any

import pluggy

from core.errors import ConfigError, Refused
from core.logs import PLUGIN, note_message
from core.switches import guild_of

log = logging.getLogger("core.hooks")


@dataclass(slots=True)
class HookFailure:
    plugin: str
    hook: str
    error: str
    # The plugin refused its configuration (a ConfigError): the operator's
    # mistake, not the plugin's, and the command line refuses to start on it.
    config: bool = False


class Hooks:
    """Dispatches a hook to every registered implementation.

    ``failures`` keeps the last failures (newest last) so a transport or a
    command can say which plugin misbehaved; ``failure_counts`` counts every
    failure by ``(plugin, hook)`` since start, for metrics.
    """

    def __init__(
        self,
        pm: pluggy.PluginManager,
        context: dict[str, Any] | None = None,
        off_in_guild: Callable[[str | None], set[str]] | None = None,
    ) -> None:
        self.pm = pm
        # Arguments every hook may take (``bot``), merged into each call.
        self.context = context or {}
        # The plugins switched off in a guild (core.switches): a call that
        # concerns that guild skips them.
        self.off_in_guild = off_in_guild
        self.failures: list[HookFailure] = []
        self.failure_counts: Counter[tuple[str, str]] = Counter()

    def implementations(self, name: str) -> list[Any]:
        caller = getattr(self.pm.hook, name)
        return list(reversed(caller.get_hookimpls()))

    def _active(self, name: str, kwargs: dict[str, Any]) -> list[Any]:
        impls = self.implementations(name)
        if self.off_in_guild is None:
            return impls
        off = self.off_in_guild(guild_of(kwargs))
        return [i for i in impls if i.plugin_name not in off] if off else impls

    async def _call(self, name: str, impl: Any, kwargs: dict[str, Any]) -> tuple[bool, Any]:
        args = {arg: kwargs[arg] for arg in impl.argnames}
        _note_context(kwargs)
        plugin = PLUGIN.set(impl.plugin_name)
        try:
            result = impl.function(**args)
            if inspect.isawaitable(result):
                result = await result
        except Refused:
            raise
        except Exception as exc:  # noqa: BLE001 - isolation is the point
            self._failed(name, impl.plugin_name, exc)
            return False, None
        finally:
            PLUGIN.reset(plugin)
        return True, result

    def _failed(self, hook: str, plugin: str, exc: BaseException) -> None:
        config = isinstance(exc, ConfigError)
        # A configuration error is an expected condition: its message says
        # everything (a traceback would bury it), and whoever starts the bot
        # reports it (the command line refuses to start on it).
        if config:
            # At start-up the caller reports it; later, nobody else will.
            level = logging.INFO if hook == "startup" else logging.ERROR
            log.log(level, "plugin %r refused its configuration in hook %s: %s", plugin, hook, exc)
        else:
            log.error("plugin %r failed in hook %s: %s", plugin, hook, exc, exc_info=exc)
        self.failures.append(HookFailure(plugin, hook, str(exc) if config else f"{type(exc).__name__}: {exc}", config))
        self.failure_counts[(plugin, hook)] += 1
        del self.failures[:-50]

    def _kwargs(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        return {**self.context, **kwargs}

    async def broadcast(self, name: str, **kwargs: Any) -> list[tuple[str, Any]]:
        """Run every implementation; return ``(plugin, result)`` for those
        that did not raise."""
        kwargs = self._kwargs(kwargs)
        results = []
        for impl in self._active(name, kwargs):
            ok, result = await self._call(name, impl, kwargs)
            if ok:
                results.append((impl.plugin_name, result))
        return results

    async def first(self, name: str, **kwargs: Any) -> Any:
        """Return the first non-``None`` result, or ``None``."""
        kwargs = self._kwargs(kwargs)
        for impl in self._active(name, kwargs):
            ok, result = await self._call(name, impl, kwargs)
            if ok and result is not None:
                return result
        return None

    async def collect(self, name: str, **kwargs: Any) -> list[Any]:
        """Return every non-``None`` result, lists flattened."""
        gathered: list[Any] = []
        for _plugin, result in await self.broadcast(name, **kwargs):
            if isinstance(result, list):
                gathered.extend(result)
            elif result is not None:
                gathered.append(result)
        return gathered

    def call_registry(self, name: str, make_register: Any) -> None:
        """Call a ``register_*`` hook synchronously, isolating each plugin.

        ``make_register(plugin_name)`` returns the ``register`` callable that
        plugin receives, so each contribution is known by its plugin.
        """
        for impl in self.implementations(name):
            kwargs = self._kwargs({"register": make_register(impl.plugin_name)})
            try:
                result = impl.function(**{arg: kwargs[arg] for arg in impl.argnames})
                if inspect.isawaitable(result):
                    result.close()
                    raise TypeError(f"{name} must be a plain def, not async")
            except Exception as exc:  # noqa: BLE001
                self._failed(name, impl.plugin_name, exc)


def _note_context(kwargs: dict[str, Any]) -> None:
    """Tell the log lines which message, session and instance a hook call
    is about (core.logs: the JSON log format)."""
    message, session, bot = kwargs.get("message"), kwargs.get("session"), kwargs.get("bot")
    message_id = getattr(message, "id", None)
    if message_id is None and (record := kwargs.get("record")) is not None:
        # store_message: the user's record, or the reply to it.
        message_id = getattr(record, "reply_to_id", None) or getattr(record, "id", None)
    note_message(message_id, getattr(session, "id", None), getattr(bot, "instance_id", None))
