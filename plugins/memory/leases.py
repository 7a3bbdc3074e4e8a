"""Session leases: one session's messages handled one at a time (rules
L1-L3 of docs/MEMORY.md).

A lease lives in Redis as ``lease:<scope>`` = ``{"o": owner, "t": token,
"x": expires_at}`` (``expires_at`` on the bot clock, so tests advance it
without sleeping; the Redis TTL is only a backstop). Each acquisition draws
a fencing token from ``fence:<scope>``; session saves carry it and the
database rejects a save older than the stored token, so an instance that
paused past its lease cannot overwrite newer state. Inside one process an
asyncio lock per scope does the same; with Redis down it is the only one.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import secrets
import time
from typing import Any

import orjson

from plugins.memory.breaker import BackendDown

log = logging.getLogger("plugins.memory.leases")

BACKSTOP_TTL = 7 * 24 * 3600
FENCE_TTL = 30 * 24 * 3600
POLL = 0.02

# Compare-and-set and compare-and-delete, each one atomic round trip.
SWAP = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
    return 1
end
return 0
"""
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""

# Take the lease if free and draw a fencing token, reading what the caller
# needs next (the holder when not won, the epoch, the cached session): one
# command. A missing key reads as "" (a nil would cut Lua's reply short).
ACQUIRE = """
local won = redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2])
local fence = redis.call('INCR', KEYS[2])
redis.call('EXPIRE', KEYS[2], ARGV[3])
return {won and 1 or 0, fence, redis.call('GET', KEYS[1]) or '', redis.call('GET', KEYS[3]) or '', redis.call('GET', KEYS[4]) or ''}
"""

# (scope key, fencing token) of the lease the current task holds.
current_fence: contextvars.ContextVar[tuple[str, int] | None] = contextvars.ContextVar("memory_fence", default=None)
# The scope's cached session as read in the lease's own round trip:
# [scope key, epoch, raw value], emptied by the first load_session that uses
# it or by any save of the scope (a list, so a hook running in a copied
# context empties it for everyone).
prefetched_session: contextvars.ContextVar[list[Any] | None] = contextvars.ContextVar("memory_session", default=None)


def _holder(raw: Any) -> dict[str, Any] | None:
    if raw is None:
        return None
    try:
        value = orjson.loads(raw)
        return value if isinstance(value, dict) else None
    except orjson.JSONDecodeError:
        return None


class Leases:
    """The leases of one memory store: ``async with leases.lease(scope):``."""

    def __init__(self, store: Any) -> None:
        # The memory store (not imported: it imports this module).
        self.store = store
        self.local_locks: dict[str, asyncio.Lock] = {}

    @property
    def cache(self) -> Any:
        return self.store.cache

    def lease(self, scope_key: str) -> Lease:
        return Lease(self, scope_key)

    async def _swap(self, key: str, expected: bytes, value: bytes) -> bool:
        """Replace ``key``'s value only if it is still ``expected``."""
        (swapped,) = await self.cache.run(("EVAL", SWAP, 1, key, expected, value, BACKSTOP_TTL))
        return bool(swapped)


class Lease:
    """Async context manager holding a session's lease."""

    def __init__(self, leases: Leases, scope_key: str) -> None:
        self.c = leases
        self.scope_key = scope_key
        self.token = secrets.token_hex(8)
        self.key = ""
        self.fence: int | None = None
        self._reset: contextvars.Token[Any] | None = None
        self._local: asyncio.Lock | None = None
        self._held_remote = False
        self.value = b""
        self.session: list[Any] = []
        self._reset_session: contextvars.Token[Any] | None = None

    async def __aenter__(self) -> Lease:
        locks = self.c.local_locks
        self._local = locks.setdefault(self.scope_key, asyncio.Lock())
        await self._local.acquire()
        try:
            store = self.c.store
            if store.redis_ok:
                try:
                    await self._acquire()
                except BackendDown as exc:
                    store.redis_failed(exc)
                    self.fence = None
        except BaseException:
            self._local.release()
            raise
        self._reset = current_fence.set((self.scope_key, self.fence) if self.fence is not None else None)
        self._reset_session = prefetched_session.set(self.session)
        return self

    async def _acquire(self) -> None:
        store = self.c.store
        cache = self.c.cache
        self.key = f"{cache.prefix}lease:{self.scope_key}"
        fence_key = f"{cache.prefix}fence:{self.scope_key}"
        deadline = time.monotonic() + store.settings.lease_wait
        while True:
            now = store.clock.now()
            value = orjson.dumps({"o": store.instance_id, "t": self.token, "x": now + store.settings.lease_ttl})
            # The fencing token is drawn with the attempt (one round trip); a
            # token drawn by a failed attempt is simply never used.
            keys = (self.key, fence_key, cache.epoch_key, cache.session_key(self.scope_key))
            ((won, fence, raw, epoch, session),) = await cache.run(("EVAL", ACQUIRE, len(keys), *keys, value, BACKSTOP_TTL, FENCE_TTL))
            raw, epoch, session = raw or None, epoch or None, session or None
            if won:
                # Read after the lease was won: nobody else writes it now.
                if not cache._seen_epoch(epoch):
                    self.session = [self.scope_key, cache.epoch, session]
                break
            holder = _holder(raw)
            # This instance already holds the scope's local lock, so a lease in
            # its own name is a leftover (a release that failed, or an earlier
            # life of this instance): take it over at once, fenced.
            own_leftover = holder is not None and holder.get("o") == store.instance_id
            if raw is not None and (
                holder is None or own_leftover or float(holder.get("x", 0)) <= now or time.monotonic() >= deadline
            ):
                if time.monotonic() >= deadline and holder is not None and float(holder.get("x", 0)) > now:
                    log.warning("memory: lease on %s still held by %s after %.1fs; taking it over (fenced)", self.scope_key, holder.get("o"), store.settings.lease_wait)
                if await self.c._swap(self.key, raw, value):
                    (fence,) = await cache.run(("INCR", fence_key))
                    break
            await asyncio.sleep(POLL)
        self.value = value
        self._held_remote = True
        self.fence = await self._fence_floor(int(fence), fence_key)

    async def _fence_floor(self, fence: int, fence_key: str) -> int:
        if fence > 1:
            return fence
        # The counter was lost (flush, expiry): continue above what the database saw.
        floor = await self.c.store.max_fence(self.scope_key)
        if floor >= fence:
            cache = self.c.cache
            fence = int(await cache.call(cache.r.incrby(fence_key, floor)))
        return fence

    async def __aexit__(self, *exc: Any) -> None:
        try:
            if self._reset is not None:
                current_fence.reset(self._reset)
            if self._reset_session is not None:
                prefetched_session.reset(self._reset_session)
            self.session.clear()
            if self._held_remote:
                try:
                    await self._release()
                except BackendDown as err:
                    self.c.store.redis_failed(err)
        finally:
            if self._local is not None:
                self._local.release()
                if not self._local.locked() and not self._local._waiters:  # type: ignore[attr-defined]
                    self.c.local_locks.pop(self.scope_key, None)

    async def _release(self) -> None:
        # Only our own lease: one that expired and was taken over is not ours to drop.
        await self.c.cache.run(("EVAL", RELEASE, 1, self.key, self.value))
