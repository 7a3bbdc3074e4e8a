"""Where the time of one message goes: wall time per hook implementation
(inclusive of nested hooks and of I/O waits), measured by wrapping the
bot's dispatcher. Used to explain a missed goal, not as a goal itself."""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any


class TimedLease:
    def __init__(self, inner: Any, sink: dict[str, list[float]]) -> None:
        self.inner, self.sink = inner, sink

    async def __aenter__(self) -> Any:
        start = time.perf_counter_ns()
        try:
            return await self.inner.__aenter__()
        finally:
            self.sink["lease enter (memory)"].append((time.perf_counter_ns() - start) / 1e6)

    async def __aexit__(self, *exc: Any) -> Any:
        start = time.perf_counter_ns()
        try:
            return await self.inner.__aexit__(*exc)
        finally:
            self.sink["lease exit (memory)"].append((time.perf_counter_ns() - start) / 1e6)


class Breakdown:
    """Patch ``bot.hooks._call`` on one bot instance; ``stop()`` undoes it."""

    def __init__(self, bot: Any) -> None:
        self.bot = bot
        self.samples: dict[str, list[float]] = defaultdict(list)
        self._original = bot.hooks._call

        async def timed(name: str, impl: Any, kwargs: dict[str, Any]) -> tuple[bool, Any]:
            start = time.perf_counter_ns()
            ok, result = await self._original(name, impl, kwargs)
            self.samples[f"{name} ({impl.plugin_name})"].append((time.perf_counter_ns() - start) / 1e6)
            if name == "session_lease" and result is not None:
                result = TimedLease(result, self.samples)
            return ok, result

        bot.hooks._call = timed

    def stop(self) -> None:
        self.bot.hooks.__dict__.pop("_call", None)

    def summary(self, messages: int) -> list[tuple[str, float, int]]:
        """``(hook, ms per message, calls per message)``, largest first."""
        out = [(k, sum(v) / messages, round(len(v) / messages)) for k, v in self.samples.items()]
        return sorted(out, key=lambda t: -t[1])
