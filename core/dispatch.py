"""Calling hooks the way the core needs: awaited, isolated, in order.

pluggy neither awaits coroutines nor survives an exception in one
implementation (pluggy #320, #419), so the core walks the implementations
itself, in pluggy's call order (``tryfirst`` first, ``trylast`` last, later
registrations before earlier ones).

Each hookspec declares its calling mode (:class:`core.hookspecs.Mode`); each
method here serves one mode, and refuses a hook of another mode or an
argument the hook does not declare (:class:`HookMisuse`): a caller cannot
broadcast a first-answer hook, nor pass an argument that every
implementation would silently never see.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections import Counter
from dataclasses import dataclass, field
from collections.abc import Callable
from collections.abc import Set as AbstractSet
from typing import Any

import pluggy

from core.errors import ConfigError, Refused
from core.hookspecs import Mode, mode_of
from core.logs import PLUGIN, note_message
from core.switches import guild_of

log = logging.getLogger("core.hooks")

DEFAULT_HOOK_TIMEOUT = 180.0


class HookMisuse(TypeError):
    """A hook called in a mode its spec does not declare, with an argument
    it does not declare, or a hook that does not exist: a programming
    error in the caller, never isolated."""


class HookTimeout(Exception):
    """An implementation did not return within its hook's timeout."""


@dataclass(slots=True)
class HookFailure:
    plugin: str
    hook: str
    error: str
    # The plugin refused its configuration (a ConfigError): the operator's
    # mistake, not the plugin's, and the command line refuses to start on it.
    config: bool = False

    @property
    def timed_out(self) -> bool:
        return self.error.startswith(HookTimeout.__name__)


@dataclass(slots=True)
class FirstAnswer:
    """The outcome of one first-answer call: the answer (or ``None``), the
    plugin that gave it, and the failures of this call only."""

    value: Any = None
    plugin: str | None = None
    failures: list[HookFailure] = field(default_factory=list)
    # How many implementations ran (answered, said nothing, or failed).
    tried: int = 0

    @property
    def all_failed(self) -> bool:
        return self.tried > 0 and len(self.failures) == self.tried


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
        off_in_guild: Callable[[str | None], AbstractSet[str]] | None = None,
        timeout_of: Callable[[str], float] | None = None,
    ) -> None:
        self.pm = pm
        # Arguments every hook may take (``bot``), merged into each call.
        self.context = context or {}
        # The plugins switched off in a guild (core.switches): a call that
        # concerns that guild skips them.
        self.off_in_guild = off_in_guild
        self.failures: list[HookFailure] = []
        # Failures, and of them timeouts, by (plugin, hook): for metrics.
        self.failure_counts: Counter[tuple[str, str]] = Counter()
        self.timeout_counts: Counter[tuple[str, str]] = Counter()
        # Seconds an implementation of a hook may take before it counts as
        # failed ([bot] hook_timeout): a hung plugin must not hold a session.
        self.timeout_of = timeout_of or (lambda _name: DEFAULT_HOOK_TIMEOUT)
        self.check_specs()

    def check_specs(self) -> None:
        """Refuse, at start-up, a hookspec that declares no calling mode."""
        for name in self.pm.hook.__dict__:
            caller = getattr(self.pm.hook, name)
            if getattr(caller, "spec", None) is not None:
                self.mode(name)

    def _caller(self, name: str) -> Any:
        caller = getattr(self.pm.hook, name, None)
        if caller is None or caller.spec is None:
            raise HookMisuse(f"no hook named {name!r} is declared in core.hookspecs")
        return caller

    def mode(self, name: str) -> Mode:
        """The calling mode hook ``name`` declares."""
        declared = mode_of(self._caller(name).spec.function)
        if declared is None:
            raise HookMisuse(f"hook {name!r} declares no calling mode (core.hookspecs.spec)")
        return declared

    def _check(self, name: str, mode: Mode, kwargs: dict[str, Any]) -> None:
        declared = self.mode(name)
        if declared is not mode:
            raise HookMisuse(f"hook {name!r} is called by {declared.value}, not by {mode.value}")
        unknown = set(kwargs) - set(self._caller(name).spec.argnames)
        if unknown:
            raise HookMisuse(f"hook {name!r} takes no argument {', '.join(sorted(unknown))}")

    def implementations(self, name: str) -> list[Any]:
        caller = self._caller(name)
        return list(reversed(caller.get_hookimpls()))

    def _active(self, name: str, kwargs: dict[str, Any]) -> list[Any]:
        impls = self.implementations(name)
        if self.off_in_guild is None:
            return impls
        off = self.off_in_guild(guild_of(kwargs))
        return [i for i in impls if i.plugin_name not in off] if off else impls

    async def call_one(self, name: str, impl: Any, **kwargs: Any) -> HookFailure | None:
        """Run one implementation of broadcast hook ``name`` (a plugin's own
        ``startup`` or ``shutdown``); its failure, or ``None``."""
        kwargs = self._kwargs(kwargs)
        self._check(name, Mode.BROADCAST, kwargs)
        failures: list[HookFailure] = []
        await self._call(name, impl, kwargs, failures)
        return failures[0] if failures else None

    async def call_guarded(
        self, name: str, impl: Any, kwargs: dict[str, Any], failures: list[HookFailure]
    ) -> tuple[bool, Any]:
        """Call one implementation that is not a hook (a service's method,
        :mod:`core.storage`) with the hooks' isolation and timeout."""
        return await self._call(name, impl, kwargs, failures)

    async def _call(
        self, name: str, impl: Any, kwargs: dict[str, Any], failures: list[HookFailure] | None = None
    ) -> tuple[bool, Any]:
        args = {arg: kwargs[arg] for arg in impl.argnames}
        _note_context(kwargs)
        plugin = PLUGIN.set(impl.plugin_name)
        limit = self.timeout_of(name)
        deadline: asyncio.Timeout | None = None
        try:
            result = impl.function(**args)
            if inspect.isawaitable(result):
                # In this task, not a new one: a hook may tie work to the
                # task that handles the message (memory's claims do).
                async with asyncio.timeout(limit) as deadline:
                    result = await result
        except Refused:
            raise
        except Exception as exc:  # noqa: BLE001 - isolation is the point
            if isinstance(exc, TimeoutError) and deadline is not None and deadline.expired():
                exc = HookTimeout(f"no answer within {limit:g} s")
            failure = self._failed(name, impl.plugin_name, exc)
            if failures is not None:
                failures.append(failure)
            return False, None
        finally:
            PLUGIN.reset(plugin)
        return True, result

    def _failed(self, hook: str, plugin: str, exc: BaseException) -> HookFailure:
        config = isinstance(exc, ConfigError)
        # A configuration error is an expected condition: its message says
        # everything (a traceback would bury it), and whoever starts the bot
        # reports it (the command line refuses to start on it).
        if config:
            # At start-up the caller reports it; later, nobody else will.
            level = logging.INFO if hook == "startup" else logging.ERROR
            log.log(level, "plugin %r refused its configuration in hook %s: %s", plugin, hook, exc)
        elif isinstance(exc, HookTimeout):
            log.error("plugin %r did not answer hook %s: %s", plugin, hook, exc)
            self.timeout_counts[(plugin, hook)] += 1
        else:
            log.error("plugin %r failed in hook %s: %s", plugin, hook, exc, exc_info=exc)
        failure = HookFailure(plugin, hook, str(exc) if config else f"{type(exc).__name__}: {exc}", config)
        self.failures.append(failure)
        self.failure_counts[(plugin, hook)] += 1
        del self.failures[:-50]
        return failure

    def _kwargs(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        return {**self.context, **kwargs}

    async def _every(self, name: str, mode: Mode, kwargs: dict[str, Any]) -> list[tuple[str, Any]]:
        kwargs = self._kwargs(kwargs)
        self._check(name, mode, kwargs)
        results = []
        for impl in self._active(name, kwargs):
            ok, result = await self._call(name, impl, kwargs)
            if ok:
                results.append((impl.plugin_name, result))
        return results

    async def broadcast(self, name: str, **kwargs: Any) -> list[tuple[str, Any]]:
        """Run every implementation of a broadcast hook; return
        ``(plugin, result)`` for those that did not raise."""
        return await self._every(name, Mode.BROADCAST, kwargs)

    async def first_answer(self, name: str, **kwargs: Any) -> FirstAnswer:
        """Run a first-answer hook: implementations in turn until one
        returns something other than ``None``."""
        kwargs = self._kwargs(kwargs)
        self._check(name, Mode.FIRST, kwargs)
        outcome = FirstAnswer()
        for impl in self._active(name, kwargs):
            outcome.tried += 1
            ok, result = await self._call(name, impl, kwargs, outcome.failures)
            if ok and result is not None:
                outcome.value, outcome.plugin = result, impl.plugin_name
                break
        return outcome

    async def first(self, name: str, **kwargs: Any) -> Any:
        """The first non-``None`` result of a first-answer hook, or ``None``."""
        return (await self.first_answer(name, **kwargs)).value

    async def collect_by_plugin(self, name: str, **kwargs: Any) -> list[tuple[str, Any]]:
        """Run a collect hook; ``(plugin, result)`` for every implementation
        that did not raise (so a caller can tell who failed)."""
        return await self._every(name, Mode.COLLECT, kwargs)

    async def collect(self, name: str, **kwargs: Any) -> list[Any]:
        """Run a collect hook; every non-``None`` result, lists flattened."""
        gathered: list[Any] = []
        for _plugin, result in await self.collect_by_plugin(name, **kwargs):
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
        self._check(name, Mode.REGISTRY, self._kwargs({"register": None}))
        for impl in self.implementations(name):
            kwargs = self._kwargs({"register": make_register(impl.plugin_name)})
            try:
                result = impl.function(**{arg: kwargs[arg] for arg in impl.argnames})
                if inspect.isawaitable(result):
                    if inspect.iscoroutine(result):
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
