"""Finding, loading and switching plugins.

Every plugin, built-in or third-party, is found the same way: an entry point
in the ``discord_bot.plugins`` group naming a module (or object) that holds
hook implementations. This project's own ``pyproject.toml`` declares the
built-ins there, exactly as a third-party package would. The core's own
defaults (the fallback reply and the ``help``/``plugins`` commands) form the
essential ``core`` plugin, which cannot be disabled.

Config decides before anything is imported: a plugin that is not enabled is
never imported (``[plugins] enabled`` / ``disabled``). A plugin that fails to
import or register is reported by name with the reason and left out; the bot
starts without it.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata
import inspect
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import pluggy

from core import hookspecs
from core.hookspecs import PROJECT_NAME
from core.settings import PluginsSection
from core.switches import Switch

log = logging.getLogger("core.plugins")

ENTRY_POINT_GROUP = "discord_bot.plugins"
ESSENTIAL = frozenset({"core"})

hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@dataclass(slots=True)
class PluginInfo:
    """What the bot knows of one plugin."""

    name: str
    state: str  # enabled | disabled | failed | unknown
    source: str = ""
    reason: str = ""
    hooks: list[str] = field(default_factory=list)
    # What config asks for; a bot-wide switch (core.switches) overrides it.
    configured: bool = True
    # The bot-wide switch this instance follows, if any.
    switch: Switch | None = None
    # Declared by the plugin (``SWITCHED_BY_OWNERS_ONLY = True``): guild
    # administrators cannot switch it in their guild.
    owners_only: bool = False
    # Failed because its configuration is invalid (``reason`` says how).
    bad_config: bool = False


class PluginContractError(Exception):
    """A plugin's hook implementations do not fit the hookspecs."""


def one_line(text: str, limit: int = 200) -> str:
    """A reason fit for one line of the ``plugins`` table."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def contract_problem(pm: pluggy.PluginManager, plugin: Any) -> str | None:
    """Why ``plugin`` does not fit the hookspecs, in one line, or ``None``.

    Checked before it is registered, so a typo in a hook name (which pluggy
    would accept and never call until ``check_pending``) or an argument the
    hook does not pass fails the plugin, named, instead of doing nothing."""
    specs = {n: c.spec for n, c in vars(pm.hook).items() if getattr(c, "spec", None) is not None}
    for attr in sorted(dir(plugin)):
        opts = pm.parse_hookimpl_opts(plugin, attr)
        if opts is None:
            continue
        hook = opts.get("specname") or attr
        if hook not in specs:
            if opts.get("optionalhook"):
                continue
            close = difflib.get_close_matches(hook, list(specs), n=1)
            hint = f"did you mean {close[0]}?" if close else "see docs/HOOKS.md"
            return f"{hook} is not a hook ({hint})"
        wanted = _required_args(getattr(plugin, attr))
        extra = [a for a in wanted if a not in specs[hook].argnames]
        if extra:
            return (
                f"{hook} asks for {', '.join(extra)}, which the hook does not pass "
                f"(it passes {', '.join(specs[hook].argnames)})"
            )
    return None


def _required_args(func: Any) -> list[str]:
    try:
        parameters = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):
        return []
    return [p.name for p in parameters if p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


@dataclass(slots=True)
class Candidate:
    name: str
    source: str
    load: Callable[[], Any]


def discover(entry_points: Iterable[Any] | None = None) -> list[Candidate]:
    """Every plugin that could be loaded, sorted by name."""
    if entry_points is None:
        entry_points = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
    found: dict[str, Candidate] = {
        "core": Candidate("core", "core", lambda: importlib.import_module("core.default_plugin"))
    }
    for ep in entry_points:
        dist = getattr(ep, "dist", None)
        source = f"{dist.name} {dist.version}" if dist is not None else ep.value
        if ep.name in found:
            log.warning("plugin name %r is claimed twice (%s); keeping %s", ep.name, source, found[ep.name].source)
            continue
        found[ep.name] = Candidate(ep.name, source, ep.load)
    return sorted(found.values(), key=lambda c: (c.name != "core", c.name))


class PluginHost:
    """The plugin manager plus what happened to each plugin."""

    def __init__(self, pm: pluggy.PluginManager, candidates: list[Candidate]) -> None:
        self.pm = pm
        self.candidates = {c.name: c for c in candidates}
        self.info: dict[str, PluginInfo] = {}
        self.problems: list[str] = []
        self._loaded: dict[str, Any] = {}

    # --- loading ---------------------------------------------------------

    def load(self, name: str) -> bool:
        candidate = self.candidates[name]
        try:
            plugin = self._loaded.get(name) or candidate.load()
            problem = contract_problem(self.pm, plugin)
            if problem is not None:
                raise PluginContractError(problem)
            self.pm.register(plugin, name=name)
        except Exception as exc:  # noqa: BLE001 - one broken plugin must not stop the bot
            reason = one_line(str(exc) if isinstance(exc, PluginContractError) else f"{type(exc).__name__}: {exc}")
            log.error("plugin %r failed to load: %s", name, reason)
            self.info[name] = PluginInfo(name, "failed", candidate.source, reason)
            return False
        self._loaded[name] = plugin
        hooks = sorted(h.name for h in self.pm.get_hookcallers(plugin) or [])
        before = self.info.get(name)
        self.info[name] = PluginInfo(
            name,
            "enabled",
            candidate.source,
            "",
            hooks,
            configured=before.configured if before else True,
            switch=before.switch if before else None,
            owners_only=getattr(plugin, "SWITCHED_BY_OWNERS_ONLY", False) is True,
        )
        return True

    def check_pending(self) -> None:
        """pluggy's own check that every registered implementation has a
        hookspec; a plugin it finds (``contract_problem`` should have) is
        failed, not left enabled doing nothing."""
        while True:
            try:
                self.pm.check_pending()
                return
            except pluggy.PluginValidationError as exc:
                name = self.pm.get_name(exc.plugin)
                if name is None:
                    raise
                self.fail(name, one_line(str(exc)))

    def fail(self, name: str, reason: str, *, bad_config: bool = False) -> None:
        """Take out a plugin that broke at start-up."""
        if self.pm.has_plugin(name):
            self.pm.unregister(name=name)
        info = self.info.get(name) or PluginInfo(name, "failed")
        info.state, info.reason, info.bad_config = "failed", one_line(reason), bad_config
        self.info[name] = info

    # --- switching at run time --------------------------------------------

    def disable(self, name: str, reason: str = "switched off at run time") -> str:
        if name in ESSENTIAL:
            raise ValueError(f"plugin {name!r} is essential and cannot be disabled")
        if name not in self.candidates:
            raise ValueError(f"unknown plugin {name!r}; installed: {', '.join(self.candidates)}")
        if self.pm.has_plugin(name):
            self.pm.unregister(name=name)
        info = self.info.get(name) or PluginInfo(name, "disabled", self.candidates[name].source)
        info.state, info.reason = "disabled", reason
        self.info[name] = info
        return name

    def enable(self, name: str) -> bool:
        if name not in self.candidates:
            raise ValueError(f"unknown plugin {name!r}; installed: {', '.join(self.candidates)}")
        if self.pm.has_plugin(name):
            return True
        return self.load(name)

    def enabled(self) -> list[str]:
        return [n for n, i in self.info.items() if i.state == "enabled"]

    def listing(self) -> list[PluginInfo]:
        return [self.info[n] for n in sorted(self.info, key=lambda n: (n != "core", n))]


def get_plugin_manager(
    config: PluginsSection | None = None,
    entry_points: Iterable[Any] | None = None,
) -> PluginHost:
    """Build a plugin manager: add the hookspecs, then load every discovered
    plugin that config allows. Nothing global: each call builds a new one."""
    config = config or PluginsSection()
    pm = pluggy.PluginManager(PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    candidates = discover(entry_points)
    host = PluginHost(pm, candidates)
    known = set(host.candidates)

    for key, names in (("enabled", config.enabled or []), ("disabled", config.disabled)):
        for name in names:
            if name not in known:
                problem = f"[plugins] {key} names unknown plugin {name!r} (installed: {', '.join(sorted(known))})"
                host.problems.append(problem)
                host.info[name] = PluginInfo(name, "unknown", "", problem)
                log.warning(problem)
    for name in config.disabled:
        if name in ESSENTIAL:
            problem = f"[plugins] disabled names {name!r}, which is essential and stays enabled"
            host.problems.append(problem)
            log.warning(problem)

    for candidate in candidates:
        name = candidate.name
        wanted = config.enabled is None or name in config.enabled
        if name in ESSENTIAL or (wanted and name not in config.disabled):
            host.load(name)
        else:
            host.info[name] = PluginInfo(name, "disabled", candidate.source, "disabled in config", configured=False)
    host.check_pending()
    return host
