"""Sliding-window event counters: in-process, or in Redis (shared by every
bot instance).

A window is a set of ``(event id, time)`` pairs younger than the period.
Recording an event whose id is already in the window changes nothing and is
allowed: a message delivered twice (gateway resend, two instances during a
rolling deploy) counts once.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(slots=True)
class Hit:
    """The outcome of recording one event against one window."""

    allowed: bool
    count: int
    # Seconds until the oldest event leaves the window (0 when allowed).
    retry_after: float = 0.0


class Counters(Protocol):
    async def hit(self, key: str, event_id: str, now: float, limit: int, period: float) -> Hit: ...

    async def undo(self, key: str, event_id: str) -> None: ...


class LocalCounters:
    """Counters in this process only. Bounded: the least recently used
    windows are dropped beyond ``max_keys`` (a flood of new user ids cannot
    exhaust memory)."""

    def __init__(self, max_keys: int = 100_000) -> None:
        self.max_keys = max_keys
        self._windows: OrderedDict[str, dict[str, float]] = OrderedDict()

    async def hit(self, key: str, event_id: str, now: float, limit: int, period: float) -> Hit:
        window = self._windows.pop(key, None) or {}
        self._windows[key] = window
        while len(self._windows) > self.max_keys:
            self._windows.popitem(last=False)
        for old in [e for e, t in window.items() if t <= now - period]:
            del window[old]
        if event_id in window:
            return Hit(True, len(window))
        if len(window) >= limit:
            return Hit(False, len(window), max(0.0, min(window.values()) + period - now))
        window[event_id] = now
        return Hit(True, len(window))

    async def undo(self, key: str, event_id: str) -> None:
        window = self._windows.get(key)
        if window is not None:
            window.pop(event_id, None)


class RedisCounters:
    """Counters in a Redis sorted set per window (score = event time).

    One MULTI/EXEC per event: trim the window, add the event if new, count,
    refresh the expiry. An event that finds the window full is taken out
    again, so a refused event does not hold a slot. No Lua (fakeredis runs
    without it).
    """

    def __init__(self, client: Any, prefix: str, timeout: float) -> None:
        self.client = client
        self.prefix = prefix
        self.timeout = timeout

    async def hit(self, key: str, event_id: str, now: float, limit: int, period: float) -> Hit:
        return await asyncio.wait_for(self._hit(self.prefix + key, event_id, now, limit, period), self.timeout)

    async def _hit(self, key: str, event_id: str, now: float, limit: int, period: float) -> Hit:
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.zremrangebyscore(key, "-inf", now - period)
            pipe.zadd(key, {event_id: now}, nx=True)
            pipe.zcard(key)
            pipe.expire(key, max(1, int(period) + 1))
            _trimmed, added, count, _ = await pipe.execute()
        if not added:
            return Hit(True, int(count))
        if count <= limit:
            return Hit(True, int(count))
        await self.client.zrem(key, event_id)
        oldest = await self.client.zrange(key, 0, 0, withscores=True)
        retry = (float(oldest[0][1]) + period - now) if oldest else period
        return Hit(False, int(count) - 1, max(0.0, retry))

    async def undo(self, key: str, event_id: str) -> None:
        await asyncio.wait_for(self.client.zrem(self.prefix + key, event_id), self.timeout)

    async def ping(self) -> bool:
        return bool(await asyncio.wait_for(self.client.ping(), self.timeout))

    async def close(self) -> None:
        close = getattr(self.client, "aclose", None) or getattr(self.client, "close", None)
        if close is not None:
            result = close()
            if asyncio.iscoroutine(result):
                await result
