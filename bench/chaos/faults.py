"""The faults, each in its own lane: a lane waits a random gap, injects its
fault, holds it, restores, and counts it. Gaps and holds come from one
seeded random stream per lane, so a seed gives the same fault sequence
(the wall-clock interleaving with traffic still varies a little).

Kinds:

- ``redis_flushall``: FLUSHALL on the private redis-server (direct, not
  through the proxy).
- ``redis_restart``: SIGKILL the redis-server, keep it down for the hold,
  start it again on the same port, empty.
- ``redis_blackhole``: the Redis proxy swallows everything for the hold,
  then passes again (and resets the streams it froze).
- ``db_cut``: the PostgreSQL proxy resets (``drop``) or swallows
  (``blackhole``) every connection for the hold, then passes again.
- ``bot_kill``: SIGKILL one bot process; start a new process with the same
  name and data directory (its local spool survives) after the hold.
- ``bot_pause``: SIGSTOP one bot process for longer than its claims and
  leases last on the bot clock, then SIGCONT.

The two process lanes pace the *start* of their faults, not the time between
one fault's end and the next one's start: a pause lasts longer than the mean
gap a 20,000-message run allows (about 10 s against 8), so a pause lane that
waited for each pause to end could not reach its count. A process fault's
hold runs on its own; two can overlap on different instances, and one
instance always stays healthy (``Soak.pick_victim``).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("bench.chaos.faults")

KINDS = ("redis_flushall", "redis_restart", "redis_blackhole", "db_cut", "bot_kill", "bot_pause")
PROCESS_KINDS = ("bot_kill", "bot_pause")


@dataclass
class FaultPlan:
    """Mean gap between two faults, per kind, and hold ranges (seconds)."""

    gaps: dict[str, float]
    pause_hold: tuple[float, float]
    redis_down: tuple[float, float] = (0.5, 2.0)
    blackhole: tuple[float, float] = (1.0, 3.0)
    db_cut: tuple[float, float] = (1.0, 4.0)
    kill_down: tuple[float, float] = (0.3, 1.5)

    def mean_hold(self, kind: str) -> float:
        pick = {"redis_restart": self.redis_down, "redis_blackhole": self.blackhole, "db_cut": self.db_cut,
                "bot_kill": self.kill_down, "bot_pause": self.pause_hold}.get(kind, (0.0, 0.0))
        return sum(pick) / 2


class FaultLanes:
    """Runs one lane per kind until :meth:`stop`; ``counts`` says how many
    faults of each kind really happened (a fault that could not be injected,
    e.g. FLUSHALL while Redis is down, is counted under ``skipped``)."""

    def __init__(self, soak: Any, plan: FaultPlan, seed: int, kinds: tuple[str, ...] = KINDS) -> None:
        self.soak = soak
        self.plan = plan
        self.seed = seed
        self.kinds = kinds
        self.counts: Counter[str] = Counter({k: 0 for k in kinds})
        self.skipped: Counter[str] = Counter()
        self.events: list[dict[str, Any]] = []
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._holds: set[asyncio.Task[None]] = set()  # process faults in progress
        self._redis_lock = asyncio.Lock()  # FLUSHALL and kill/restart touch the same server

    def start(self) -> None:
        for i, kind in enumerate(self.kinds):
            rng = random.Random(f"{self.seed}:{kind}:{i}")
            self._tasks.append(asyncio.get_running_loop().create_task(self._lane(kind, rng), name=f"fault-{kind}"))

    async def stop(self, timeout: float = 60.0) -> None:
        """Stop injecting; every fault in progress is restored first."""
        self._stop.set()
        if self._tasks:
            done, pending = await asyncio.wait(self._tasks, timeout=timeout)
            if self._holds:
                more_done, more_pending = await asyncio.wait(set(self._holds), timeout=timeout)
                done |= more_done
                pending |= more_pending
            for task in pending:
                task.cancel()
            for task in done:
                if task.exception() is not None:
                    log.error("fault lane failed: %r", task.exception())

    async def _sleep(self, seconds: float) -> bool:
        """Sleep unless stopped; ``True`` if the lane should go on."""
        try:
            await asyncio.wait_for(self._stop.wait(), seconds)
            return False
        except asyncio.TimeoutError:
            return True

    async def _hold(self, seconds: float) -> None:
        # A hold is not cut short by stop(): the fault ends as planned, then is restored.
        await asyncio.sleep(seconds)

    async def _lane(self, kind: str, rng: random.Random) -> None:
        run: Callable[[random.Random, dict[str, Any]], Awaitable[bool]] = getattr(self, f"_{kind}")
        # Lanes start out of step.
        gap = self.plan.gaps[kind]
        if not await self._sleep(rng.uniform(0.2, 1.0) * gap):
            return
        while True:
            started = time.monotonic()
            # start / end (restored) in seconds since the soak started, for tracing.
            event: dict[str, Any] = {"kind": kind, "at": round(self.soak.elapsed(), 2)}
            try:
                if await run(rng, event):
                    self.counts[kind] += 1
                    self.events.append(event)
                else:
                    self.skipped[kind] += 1
            except Exception as exc:  # noqa: BLE001 - a fault that fails to inject is reported, not fatal
                log.warning("fault %s failed: %r", kind, exc)
                self.skipped[kind] += 1
            wait = rng.uniform(0.5, 1.5) * gap
            if kind in PROCESS_KINDS:
                # Paced from this fault's start (its hold runs on its own).
                wait = max(0.0, wait - (time.monotonic() - started))
            if not await self._sleep(wait):
                return

    def _in_background(self, coro: Awaitable[None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)  # type: ignore[arg-type]
        self._holds.add(task)
        task.add_done_callback(self._holds.discard)

    async def _in_thread(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(None, fn, *args)

    # --- Redis and the database ---------------------------------------------------

    async def _redis_flushall(self, rng: random.Random, event: dict[str, Any]) -> bool:
        async with self._redis_lock:
            if not self.soak.backends.redis.alive:
                return False
            await self._in_thread(self.soak.backends.flush_redis)
            event["end"] = round(self.soak.elapsed(), 2)
            return True

    async def _redis_restart(self, rng: random.Random, event: dict[str, Any]) -> bool:
        hold = rng.uniform(*self.plan.redis_down)
        async with self._redis_lock:
            await self._in_thread(self.soak.backends.kill_redis, False)
            try:
                await self._hold(hold)
            finally:
                await self._in_thread(self.soak.backends.start_redis)
                event["end"] = round(self.soak.elapsed(), 2)
        return True

    async def _redis_blackhole(self, rng: random.Random, event: dict[str, Any]) -> bool:
        hold = rng.uniform(*self.plan.blackhole)
        self.soak.backends.redis_unreachable("blackhole")
        try:
            await self._hold(hold)
        finally:
            self.soak.backends.redis_reachable()
            event["end"] = round(self.soak.elapsed(), 2)
        return True

    async def _db_cut(self, rng: random.Random, event: dict[str, Any]) -> bool:
        hold = rng.uniform(*self.plan.db_cut)
        mode = rng.choice(("drop", "blackhole"))
        self.soak.backends.cut_database(mode)
        try:
            await self._hold(hold)
        finally:
            self.soak.backends.restore_database()
            event["end"] = round(self.soak.elapsed(), 2)
        event["mode"] = mode
        return True

    # --- bot processes ---------------------------------------------------------------

    async def _victim(self, rng: random.Random) -> str | None:
        # Another process fault may hold the only spare instance: wait for it.
        for _ in range(300):
            name = self.soak.pick_victim(rng)
            if name is not None or self._stop.is_set():
                return name
            await asyncio.sleep(0.1)
        return None

    async def _bot_kill(self, rng: random.Random, event: dict[str, Any]) -> bool:
        hold = rng.uniform(*self.plan.kill_down)
        name = await self._victim(rng)
        if name is None:
            return False
        event["at"] = round(self.soak.elapsed(), 2)  # after waiting for a victim
        try:
            await self.soak.kill_instance(name)
        except BaseException:
            await self.soak.restart_instance(name)
            raise

        async def later() -> None:
            try:
                await self._hold(hold)
            finally:
                await self.soak.restart_instance(name)
                event["end"] = round(self.soak.elapsed(), 2)

        event["instance"] = name
        self._in_background(later())
        return True

    async def _bot_pause(self, rng: random.Random, event: dict[str, Any]) -> bool:
        hold = rng.uniform(*self.plan.pause_hold)
        name = await self._victim(rng)
        if name is None:
            return False
        event["at"] = round(self.soak.elapsed(), 2)  # after waiting for a victim
        self.soak.pause_instance(name)

        async def later() -> None:
            try:
                await self._hold(hold)
            finally:
                self.soak.resume_instance(name)
                event["end"] = round(self.soak.elapsed(), 2)

        event["instance"] = name
        self._in_background(later())
        return True
