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

    async def __aexit__(self, *exc: object) -> Any:
        start = time.perf_counter_ns()
        try:
            return await self.inner.__aexit__(*exc)
        finally:
            self.sink["lease exit (memory)"].append((time.perf_counter_ns() - start) / 1e6)


class Trips:
    """Round trips and commands this process sends, counted at the client
    (an ``EVAL`` is one command, a write of packed commands one round trip):
    Redis on redis-py's connections (whatever path sent them: a pipeline, a
    single command, the memory's own connection), the database as
    statements on a cursor (``BEGIN``/``COMMIT`` included: each is a round
    trip to a server). ``mark()`` snapshots them (e.g. when the reply is sent)."""

    def __init__(self, bot: Any) -> None:
        from redis.asyncio.connection import AbstractConnection

        self.redis_trips = self.redis_commands = self.db_trips = 0
        self.marks: list[tuple[int, int, int]] = []
        self._undo: list[Any] = []
        counter = self
        pack, send = AbstractConnection.pack_command, AbstractConnection.send_packed_command

        def pack_command(conn: Any, *args: Any) -> Any:
            counter.redis_commands += 1
            return pack(conn, *args)

        async def send_packed_command(conn: Any, *args: Any, **kwargs: Any) -> Any:
            counter.redis_trips += 1
            return await send(conn, *args, **kwargs)

        AbstractConnection.pack_command = pack_command  # type: ignore[method-assign]
        AbstractConnection.send_packed_command = send_packed_command  # type: ignore[method-assign]
        self._undo.append(lambda: (setattr(AbstractConnection, "pack_command", pack),
                                   setattr(AbstractConnection, "send_packed_command", send)))
        db = getattr(getattr(getattr(bot, "plugin_state", {}).get("memory"), "db", None), "db", None)
        if db is not None:
            cursor = db.cursor

            def counting_cursor(*args: Any, **kwargs: Any) -> Any:
                return _CountingCursor(cursor(*args, **kwargs), counter)

            db.cursor = counting_cursor
            self._undo.append(lambda: db.__dict__.pop("cursor", None))

    def now(self) -> tuple[int, int, int]:
        return (self.redis_commands, self.redis_trips, self.db_trips)

    def mark(self) -> None:
        self.marks.append(self.now())

    def stop(self) -> None:
        for undo in self._undo:
            undo()


class _CountingCursor:
    def __init__(self, inner: Any, counter: Trips) -> None:
        self._inner, self._counter = inner, counter

    def execute(self, *args: Any, **kwargs: Any) -> Any:
        self._counter.db_trips += 1
        return self._inner.execute(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def __iter__(self) -> Any:
        return iter(self._inner)


class Breakdown:
    """Patch ``bot.hooks._call`` on one bot instance; ``stop()`` undoes it."""

    def __init__(self, bot: Any) -> None:
        self.bot = bot
        self.samples: dict[str, list[float]] = defaultdict(list)
        self._original = bot.hooks._call

        async def timed(name: str, impl: Any, kwargs: dict[str, Any], failures: Any = None) -> tuple[bool, Any]:
            start = time.perf_counter_ns()
            ok, result = await self._original(name, impl, kwargs, failures)
            self.samples[f"{name} ({impl.plugin_name})"].append((time.perf_counter_ns() - start) / 1e6)
            if name == "storage.session_lease" and result is not None:
                result = TimedLease(result, self.samples)
            return ok, result

        bot.hooks._call = timed
        self._db = self._wrap_db_calls()

    def _wrap_db_calls(self) -> Any:
        """Also time the memory plugin's database calls, when its store has
        the shape this benchmark knows (``bot.plugin_state["memory"].db.run(fn, *args)``);
        diagnostic only, silently skipped otherwise."""
        db = getattr(self.bot.plugin_state.get("memory"), "db", None)
        original = getattr(db, "run", None)
        if original is None:
            return None

        async def run(fn: Any, *args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter_ns()
            try:
                return await original(fn, *args, **kwargs)
            finally:
                name = getattr(fn, "__name__", "call")
                self.samples[f"  database: {name} (thread + query)"].append((time.perf_counter_ns() - start) / 1e6)

        db.run = run
        return db

    def stop(self) -> None:
        self.bot.hooks.__dict__.pop("_call", None)
        if self._db is not None:
            self._db.__dict__.pop("run", None)

    def summary(self, messages: int) -> list[tuple[str, float, int, float]]:
        """``(hook, mean ms per message, calls per message, p50 ms per call)``,
        largest first. The mean carries the tail (a slow commit, a GC
        pause); the p50 per call is the typical cost."""
        out = []
        for key, values in self.samples.items():
            ordered = sorted(values)
            out.append((key, sum(values) / messages, round(len(values) / messages), ordered[len(ordered) // 2]))
        return sorted(out, key=lambda t: -t[1])
