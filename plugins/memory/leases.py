"""Session leases: one session's messages handled one at a time (rules
L1-L3 of docs/MEMORY.md).

``lease:<scope>`` in Redis holds ``<instance id> <random>`` and expires
``claim_ttl`` after its holder last renewed it (every ``claim_ttl / 3``
while it holds it, as claims are): a slow model call keeps its lease, and a
dead holder's lease is free again within ``claim_ttl``. Each acquisition
draws a fencing token from ``fence:<scope>``; session saves carry it and the
database rejects a save older than the stored token, so a holder that
paused past its lease cannot overwrite newer state. In one process an
asyncio lock per scope does the same; with Redis down it is the only one.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import secrets
from typing import Any

from core.tasks import stop_task
from plugins.memory.breaker import BackendDown

log = logging.getLogger("plugins.memory.leases")

FENCE_TTL = 30 * 24 * 3600
FIRST_POLL = 0.02

# Take the lease if it is free, or a leftover of this instance (a failed
# release, an earlier life); then draw a fencing token and read what the
# caller needs next (the cached session): one command, on the scope's keys
# only (one Cluster slot; the epoch is read beside it). A missing key reads
# as "" (a nil would cut Lua's reply short).
ACQUIRE = """
local won = redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2])
if not won then
    local v = redis.call('GET', KEYS[1]) or ''
    if string.sub(v, 1, string.len(ARGV[4])) ~= ARGV[4] then return {0, 0, ''} end
    redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
end
local fence = redis.call('INCR', KEYS[2])
redis.call('EXPIRE', KEYS[2], ARGV[3])
return {1, fence, redis.call('GET', KEYS[3]) or ''}
"""
RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# (scope key, fencing token) of the lease the current task holds.
current_fence: contextvars.ContextVar[tuple[str, int] | None] = contextvars.ContextVar("memory_fence", default=None)
# The scope's cached session as read in the lease's own round trip:
# [scope key, epoch, raw value], emptied by the first load_session that uses
# it or by any save of the scope (a list, so a hook running in a copied
# context empties it for everyone).
prefetched_session: contextvars.ContextVar[list[Any] | None] = contextvars.ContextVar("memory_session", default=None)


class Leases:
    """The leases of one memory store: ``async with leases.lease(scope):``."""

    def __init__(self, store: Any) -> None:
        # The memory store (not imported: it imports this module).
        self.store = store
        self.local_locks: dict[str, asyncio.Lock] = {}
        # Lease key -> value, for every lease held here (renewed by the loop).
        self.held: dict[str, bytes] = {}
        self._renewer: asyncio.Task[None] | None = None

    @property
    def ttl_ms(self) -> int:
        return int(self.store.settings.claim_ttl * 1000)

    def start(self) -> None:
        self._renewer = asyncio.create_task(self._renew_loop(), name=f"memory-leases-{self.store.instance_id}")

    async def stop(self) -> None:
        await stop_task(self._renewer)
        self._renewer = None

    def lease(self, scope_key: str) -> Lease:
        return Lease(self, scope_key)

    async def _renew_loop(self) -> None:
        while True:
            await asyncio.sleep(self.store.settings.claim_ttl / 3)
            if not self.held or not self.store.redis_ok:
                continue
            try:
                await self.store.cache.run(*[("EVAL", RENEW, 1, key, value, self.ttl_ms) for key, value in self.held.items()])
            except BackendDown as exc:
                self.store.redis_failed(exc)
            except Exception:  # noqa: BLE001 - the loop must outlive anything
                log.exception("memory: renewing leases failed")


class Lease:
    """Async context manager holding a session's lease."""

    def __init__(self, leases: Leases, scope_key: str) -> None:
        self.c = leases
        self.scope_key = scope_key
        self.value = f"{leases.store.instance_id} {secrets.token_hex(8)}".encode()
        self.key = ""
        self.fence: int | None = None
        self.session: list[Any] = []
        self._local: asyncio.Lock | None = None
        self._reset: contextvars.Token[Any] | None = None
        self._reset_session: contextvars.Token[Any] | None = None

    async def __aenter__(self) -> Lease:
        self._local = self.c.local_locks.setdefault(self.scope_key, asyncio.Lock())
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
        store, cache = self.c.store, self.c.store.cache
        self.key = cache.keys.lease(self.scope_key)
        fence_key = cache.keys.fence(self.scope_key)
        keys = (self.key, fence_key, cache.session_key(self.scope_key))
        mine = f"{store.instance_id} ".encode()
        delay = FIRST_POLL
        while True:
            (won, fence, session), epoch = await cache.run(
                ("EVAL", ACQUIRE, len(keys), *keys, self.value, self.c.ttl_ms, FENCE_TTL, mine), ("GET", cache.epoch_key)
            )
            if won:
                break
            # Held by a live instance (it renews while it works): wait.
            await asyncio.sleep(delay)
            delay = min(delay * 2, store.settings.claim_ttl / 12)
        self.c.held[self.key] = self.value
        # Read after the lease was won: nobody else writes it now.
        if not cache._seen_epoch(epoch or None):
            self.session = [self.scope_key, cache.epoch, session or None]
        self.fence = await self._fence_floor(int(fence), fence_key)

    async def _fence_floor(self, fence: int, fence_key: str) -> int:
        if fence > 1:
            return fence
        # The counter was lost (flush, expiry): continue above what the database saw.
        floor = await self.c.store.max_fence(self.scope_key)
        if floor >= fence:
            cache = self.c.store.cache
            fence = int(await cache.call(cache.r.incrby(fence_key, floor)))
        return fence

    async def __aexit__(self, *exc: Any) -> None:
        try:
            if self._reset is not None:
                current_fence.reset(self._reset)
            if self._reset_session is not None:
                prefetched_session.reset(self._reset_session)
            self.session.clear()
            if self.c.held.pop(self.key, None) is not None:
                try:
                    # Only our own lease: one that expired and was taken is not ours to drop.
                    await self.c.store.cache.run(("EVAL", RELEASE, 1, self.key, self.value))
                except BackendDown as err:
                    self.c.store.redis_failed(err)
        finally:
            if self._local is not None:
                self._local.release()
                if not self._local.locked() and not self._local._waiters:  # type: ignore[attr-defined]
                    self.c.local_locks.pop(self.scope_key, None)
