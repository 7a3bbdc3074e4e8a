"""The Redis side: hot windows, cached sessions, the cache epoch.

Keys (all under ``key_prefix``; their names are made in
:mod:`plugins.memory.keys`, each session's and each scope's keys hash-tagged
so that a Redis Cluster keeps them in one slot):

- ``epoch``: the cache generation. Windows and sessions live under keys that
  embed it (``w:<epoch>:{<session>}``, ``s:<epoch>:{<scope>}``), so bumping it
  invalidates every cached window at once, for every instance, without
  scanning. It is bumped after an outage during which writes reached only
  the database, or when Redis restarted or failed over (its data may be an
  old snapshot or a replica's lagging copy). Each instance re-reads it on
  every health probe and on recovery, and beside every window read. A new
  epoch is never one used before (at least the clock in milliseconds), so
  keys of an old generation that survived a partial loss are never read again.
- ``w:<epoch>:{<session>}``: the last ``window_size`` messages, oldest first,
  one orjson entry each. Appends use ``RPUSHX``: a flushed, expired or
  evicted key is never recreated by an append (G5); only a rebuild from the
  database creates it, in one script.
- ``c:{<session>}``: a write counter bumped by every append. A rebuild reads it
  before its database query and creates the window only if it is unchanged,
  so a message written between the query and the creation is never left out.
- ``s:<epoch>:{<scope>}``: the latest session of a scope (JSON).

No script touches the epoch key and another key: the epoch is read by its
own command in the same round trip (a Cluster keeps it in another slot).

The hot-path operations (append, window read, session get/put, claims,
leases) go through :class:`AutoPipeline`: the commands of every operation
issued while a round trip is in flight are sent together in the next one, so
under load 64 sessions cost one round trip, not 64; and each round trip
waits one turn of the event loop, so operations other tasks issue in the
same turn (a claim's mirror beside the lease that follows it) share it.
Each operation's commands stay together in order, and none of them needs
``MULTI``: what must be atomic is a Lua script.

``fakeredis://NAME`` URLs give an in-process server shared by every client in
this process that names the same NAME (tests, the terminal chat).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, cast

import orjson
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, RedisError, ResponseError, WatchError

from core.models import MessageRecord, Session
from plugins.memory import records
from plugins.memory.breaker import BackendDown
from plugins.memory.grouping import Grouped
from plugins.memory.keys import KeyNames, glob_escape
from plugins.memory.redis_client import _FAKE_SERVERS, RedisURLError, describe_redis_url, fake_server, is_cluster, make_client

log = logging.getLogger("plugins.memory.cache")

Command = tuple[Any, ...]

# What a Redis call may raise when Redis fails: a Cluster client raises
# RedisClusterException (not a RedisError) when no node of it answers.
FAILURES = (RedisError, RedisClusterException, OSError, asyncio.TimeoutError)

# Windows kept for their turn's own read (D8): a turn that never reads
# leaves one behind until another write of its session or this bound.
MAX_SEEN = 1024

# An append is one Lua script instead of three or four commands and, now
# and then, a second round trip to trim (measured: a little cheaper even
# alone). A user's message's append also returns the window, which the turn
# reads instead of a round trip of its own (D8).

# KEYS: window, write counter. ARGV: the counter read before the database
# query ('' if there was none), ttl, entries. -> 1 if the window was
# created: only if it does not exist and nothing was appended since (the
# counter). The window's key names the epoch read before the query: a fill
# that lands after a bump creates a key of the old generation, which no
# read asks for again (it expires).
FILL = """
if (redis.call('GET', KEYS[2]) or '') ~= ARGV[1] then return 0 end
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
for i = 3, #ARGV, 1000 do
    redis.call('RPUSH', KEYS[1], unpack(ARGV, i, math.min(i + 999, #ARGV)))
end
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[2])
return 1
"""
# KEYS: window, write counter. ARGV: entry, window size, length that
# triggers a trim, ttl, how many of the window's last entries to return (0:
# none). -> {length (0: no window), the entry before the new one, entries}
APPEND = """
local n = redis.call('RPUSHX', KEYS[1], ARGV[1])
local previous = redis.call('LINDEX', KEYS[1], -2)
local count = redis.call('INCR', KEYS[2])
if count == 1 or n > tonumber(ARGV[3]) then
    redis.call('EXPIRE', KEYS[2], ARGV[4])
    if n > tonumber(ARGV[2]) then
        redis.call('LTRIM', KEYS[1], -tonumber(ARGV[2]), -1)
        redis.call('EXPIRE', KEYS[1], ARGV[4])
    end
end
if n > 0 and tonumber(ARGV[5]) > 0 then
    return {n, previous, redis.call('LRANGE', KEYS[1], -tonumber(ARGV[5]), -1)}
end
return {n, previous}
"""


# The window's last ARGV[1] entries and its write counter: one command (the
# epoch is read beside it). A missing key reads as "" (a nil would cut
# Lua's reply short).
WINDOW = """
return {redis.call('LRANGE', KEYS[1], ARGV[1], -1), redis.call('GET', KEYS[2]) or ''}
"""

# A new epoch: one more than the last, and at least ARGV[1] (the clock in
# milliseconds), so that a generation lost with the epoch key (a flush of
# its node, a replica promoted without it) is never numbered again.
NEW_EPOCH = """
local v = redis.call('INCR', KEYS[1])
if v < tonumber(ARGV[1]) then
    redis.call('SET', KEYS[1], ARGV[1])
    return ARGV[1]
end
return tostring(v)
"""


class AutoPipeline(Grouped):
    """``await pipeline.run(("GET", key), ("INCR", other))`` -> their replies.

    The operations issued while a round trip is in flight go together in the
    next one (see :class:`~plugins.memory.grouping.Grouped`), each
    operation's commands together and in order. A reply that is an error
    fails only the operation it belongs to; a connection error fails every
    operation of that round trip.
    """

    task_name = "memory-redis-batch"
    gather = True

    def __init__(self, client: aioredis.Redis) -> None:
        super().__init__()
        self.r = client
        # One server or a Sentinel's master: the round trips go on one
        # connection kept here (one is in flight at a time), with the
        # pipeline's timeouts (the write, then each reply). redis-py's
        # pipeline took about 2x the CPU per round trip for the same bytes
        # (docs/PERFORMANCE.md). A Cluster routes by slot, and fakeredis has
        # no socket: both keep the pipeline.
        self.own = type(client) is aioredis.Redis and isinstance(client.connection_pool, aioredis.ConnectionPool)
        self.conn: Any = None
        self.flying: Any = None

    async def run(self, *commands: Command) -> list[Any]:
        return await self(commands)

    async def send(self, groups: list[tuple[Command, ...]]) -> list[Any]:
        commands = [command for group in groups for command in group]
        flat = await (self._on_own_connection(commands) if self.own else self._piped(commands))
        out: list[Any] = []
        at = 0
        for group in groups:
            replies = flat[at : at + len(group)]
            at += len(group)
            out.append(next((r for r in replies if isinstance(r, Exception)), replies))
        return out

    async def _piped(self, commands: list[Command]) -> list[Any]:
        pipe = self.r.pipeline(transaction=False)
        for command in commands:
            pipe.execute_command(*command)
        return cast(list[Any], await pipe.execute(raise_on_error=False))

    async def _on_own_connection(self, commands: list[Command]) -> list[Any]:
        """Send ``commands`` and read their replies on the kept connection;
        an error reply is its command's result, as in a pipeline. Any other
        failure (the socket, a timeout, a cancellation) closes the
        connection: its replies may be half read. The next round trip takes
        a fresh one from the pool."""
        pool = self.r.connection_pool
        conn = self.conn
        if conn is None:
            conn = self.conn = await pool.get_connection()
        self.flying = conn
        try:
            await conn.send_packed_command(conn.pack_commands(commands), check_health=False)
            replies = [await _reply(conn) for _ in commands]
        except BaseException:
            self.conn = None
            with contextlib.suppress(Exception):
                await conn.disconnect(nowait=True)
            await pool.release(conn)
            raise
        finally:
            self.flying = None
        if self.conn is not conn:
            await pool.release(conn)  # let go of while in flight
        callbacks = self.r.response_callbacks
        for i, (command, reply) in enumerate(zip(commands, replies)):
            callback = callbacks.get(command[0])
            if callback is not None and not isinstance(reply, ResponseError):
                replies[i] = callback(reply)
        return replies

    async def let_go(self) -> None:
        """Give the kept connection back to the pool, to be dropped with its
        idle ones (the server may be another now: a failover, a restart);
        one in flight goes back when its round trip ends."""
        conn, self.conn = self.conn, None
        if conn is not None and conn is not self.flying:
            await self.r.connection_pool.release(conn)

    def copy_error(self, exc: BaseException) -> BaseException:
        return _copy(exc)


async def _reply(conn: Any) -> Any:
    try:
        # Each reply within the client's socket timeout, as in a pipeline: a
        # large round trip that keeps answering is not cut short.
        return await conn.read_response()
    except ResponseError as exc:
        return exc


def _copy(exc: BaseException) -> BaseException:
    # One exception object raised in many tasks would chain their tracebacks.
    if isinstance(exc, FAILURES):
        try:
            return type(exc)(*exc.args)
        except Exception:  # noqa: BLE001 - an exception type with other arguments
            pass
    return RedisError(f"{type(exc).__name__}: {exc}")


class _Seen:
    """A window as an append returned it, for its turn's own read (D8)."""

    __slots__ = ("reader", "epoch", "entries")

    def __init__(self, reader: asyncio.Task[Any], epoch: str) -> None:
        self.reader, self.epoch = reader, epoch
        self.entries: list[bytes] | None = None


def _decode(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


class Cache:
    """Window and session operations. Every method raises
    :class:`BackendDown` when Redis fails or is too slow."""

    def __init__(self, client: aioredis.Redis, *, prefix: str, window_size: int, ttl: int, timeout: float) -> None:
        self.r = client
        self.keys = KeyNames(prefix)
        # A Redis Cluster: every primary's run id makes the server's identity,
        # and keys of different slots are never sent in one command.
        self.cluster = is_cluster(client)
        self.pipeline = AutoPipeline(client)
        # The server's run id as the memory's probe last accepted it.
        self.run_id: str | None = None
        self.prefix = prefix
        self.window_size = window_size
        self.ttl = ttl
        self.timeout = timeout
        self.epoch = "0"
        # Epoch changes seen (a flush, a restart, an invalidation): claims
        # compare it to know whether Redis may have lost them since.
        self.epoch_changes = 0
        # When this instance last saw a known epoch change (Redis lost its
        # data, or the cache was invalidated): monotonic, and on the bot
        # clock (``now``, set by the store).
        self.epoch_changed_at = -1e9
        self.epoch_changed_clock = -1e18
        self.now: Callable[[], float] | None = None
        self.epoch_key = self.keys.epoch
        self.trim_slack = max(8, window_size // 4)
        # Per session, the window a turn's own append returned (D8).
        self.seen: OrderedDict[str, _Seen] = OrderedDict()
        # fakeredis has no INFO; a real server's run id tells a restart apart.
        self.has_info = not type(client).__module__.startswith("fakeredis")

    # --- keys ---------------------------------------------------------------

    def window_key(self, session_id: str, epoch: str | None = None) -> str:
        return self.keys.window(session_id, epoch or self.epoch)

    def counter_key(self, session_id: str) -> str:
        return self.keys.counter(session_id)

    def session_key(self, scope_key: str, epoch: str | None = None) -> str:
        return self.keys.session(scope_key, epoch or self.epoch)

    async def call(self, coro: Any) -> Any:
        """Await a Redis operation, mapping every failure to
        :class:`BackendDown`. The client's socket timeouts bound it."""
        try:
            return await coro
        except FAILURES as exc:
            raise BackendDown("redis", type(exc).__name__ + (f": {exc}" if str(exc) else "")) from None

    async def run(self, *commands: Command) -> list[Any]:
        """Send ``commands`` (in order, in the next auto-pipelined round
        trip); their replies, or :class:`BackendDown`.

        A connection the server closed is not by itself an outage: this
        process may have been paused past it, or a proxy reset it. Then the
        pool's idle connections are dropped and the server is asked its run
        id on a fresh one: the same server means the operation is sent once
        more; another server (a restart, maybe from an older snapshot) or no
        answer means Redis is down, for the breaker and the probe to handle.
        """
        try:
            return await self.pipeline.run(*commands)
        except RedisConnectionError as exc:
            if not await self._same_server():
                raise BackendDown("redis", f"{type(exc).__name__}: {exc}") from None
            log.info("memory: a Redis connection was closed under us (%s); same server, sending again", exc)
        except FAILURES as exc:
            raise BackendDown("redis", type(exc).__name__ + (f": {exc}" if str(exc) else "")) from None
        return await self.call(self.pipeline.run(*commands))

    async def _same_server(self) -> bool:
        if not self.has_info or self.run_id is None:
            return False
        try:
            await self._drop_idle_connections()
            info = await (self._cluster_identity() if self.cluster else self.r.info("server"))
        except FAILURES:
            return False
        return isinstance(info, dict) and str(info.get("run_id")) == self.run_id

    def _epoch_changed(self) -> None:
        self.epoch_changes += 1
        self.epoch_changed_at = time.monotonic()
        if self.now is not None:
            self.epoch_changed_clock = self.now()

    def _adopt(self, value: Any) -> str:
        """Adopt the epoch Redis reports and return it. Callers compare it
        with the epoch their own keys named, not with ``self.epoch``:
        another task of this instance may have adopted it meanwhile (D7)."""
        self._seen_epoch(value)
        return _decode(value) or "0"

    def _seen_epoch(self, value: Any) -> bool:
        """Adopt the epoch Redis reports; ``True`` if it changed."""
        epoch = _decode(value) or "0"
        if epoch != self.epoch:
            # From "0" (none known yet, or a loss already seen): adopted, not
            # a new loss of data.
            known = self.epoch != "0"
            self.epoch = epoch
            if known:
                self._epoch_changed()
            else:
                self.epoch_changes += 1
            return True
        return False

    # --- health ---------------------------------------------------------------

    async def ping(self) -> tuple[str | None, int]:
        """Ping Redis; return its run id (it changes when Redis restarts),
        if known, and the outbox stream's length."""

        async def go() -> tuple[str | None, int]:
            pipe = self.r.pipeline(transaction=False)
            pipe.get(self.epoch_key)
            pipe.xlen(self.keys.outbox)
            if self.has_info and not self.cluster:
                pipe.info("server")
            epoch, depth, *rest = await pipe.execute(raise_on_error=False)
            if self.cluster:
                rest = [await self._cluster_identity()]
            for value in (epoch, depth):
                if isinstance(value, Exception):
                    raise value
            info = rest[0] if rest else None
            if isinstance(info, Exception):
                self.has_info = False  # a Redis look-alike without INFO (fakeredis over TCP)
                info = None
            self._seen_epoch(epoch)
            run_id = str(info.get("run_id")) if isinstance(info, dict) and info.get("run_id") else None
            return run_id, int(depth or 0)

        try:
            return await go()
        except RedisConnectionError:
            # A pooled connection the server closed (it restarted, or this
            # process was paused past it) says nothing of now: ask again on
            # a fresh one. A restart shows in the run id the caller compares.
            with contextlib.suppress(*FAILURES):
                await self._drop_idle_connections()
        except FAILURES as exc:
            raise BackendDown("redis", type(exc).__name__ + (f": {exc}" if str(exc) else "")) from None
        return await self.call(go())

    async def _drop_idle_connections(self) -> None:
        if self.cluster:
            # With replies collected (raise_on_error=False) a Cluster pipeline
            # never re-reads the topology itself; closing the client makes
            # the next command do it (as redis-py's own retry does): after a
            # failover, that is how the promoted replica is found.
            await self.r.aclose()
        else:
            await self.pipeline.let_go()
            await self.r.connection_pool.disconnect(inuse_connections=False)

    async def _cluster_identity(self) -> dict[str, Any]:
        """A Cluster's "run id": every primary's, joined. A failover (a
        replica promoted, maybe without the last writes) or a restarted
        primary changes it, which the memory handles as a restart (D4, R2)."""
        found = await self.r.info("server", target_nodes=aioredis.RedisCluster.PRIMARIES)  # type: ignore[call-arg]
        infos = found.values() if isinstance(found, dict) and "run_id" not in found else [found]
        return {"run_id": ",".join(sorted(str(i.get("run_id")) for i in infos if isinstance(i, dict)))}

    async def refresh_epoch(self) -> str:
        self._seen_epoch(await self.call(self.r.get(self.epoch_key)))
        return self.epoch

    async def new_epoch(self) -> str:
        """Move the epoch to a value never used before; the new value."""
        value = await self.call(self.r.eval(NEW_EPOCH, 1, self.epoch_key, int(time.time() * 1000)))
        return _decode(value) or "0"

    async def bump_epoch(self) -> str:
        """Invalidate every cached window and session (all instances)."""
        self.epoch = await self.new_epoch()
        self._epoch_changed()
        log.warning("memory: cache epoch is now %s (cached windows rebuilt from the database)", self.epoch)
        return self.epoch

    # --- windows --------------------------------------------------------------------

    async def append(self, record: MessageRecord, done_claim: str | None = None, reader: asyncio.Task[Any] | None = None) -> bool:
        """Append to a session's window only if the window exists; ``True``
        when it did, in the current epoch.

        ``False`` means a window may lack this write: there was none (a
        rebuild reading the database before the write committed may create
        one without it), or it was an old generation's (another instance
        bumped the epoch and may have rebuilt the window already). The
        writer then calls :meth:`invalidate` once the write is in the
        database (docs/MEMORY.md, D7).

        One round trip (the script, the epoch's ``GET``, and for a reply its
        claim's ``SET``) in the common case. The window
        stays sorted: the element before the new one is checked (another
        client's concurrent push makes that check see an equal element and
        repair, which is harmless), and a late or duplicate arrival makes the
        window be re-sorted. Trimming is lazy (the window may hold up to
        ``window_size + trim_slack`` entries); every trim also refreshes the
        window's TTL, and ``fill`` sets it when the window is created.

        With ``reader`` (the task handling the turn), the script also
        returns the window as it stands after the append, and that task's
        next :meth:`window` of the session is served from it, without a
        round trip of its own (docs/MEMORY.md, D8).
        """
        entry = records.encode_entry(record)
        used = self.epoch
        sid = record.session_id
        key = self.window_key(sid, used)
        ticket = _Seen(reader, used) if reader is not None else None
        self._forget_seen(sid)
        if ticket is not None:
            self._note_seen(sid, ticket)
        # The claim is another slot's key: its own command, in the same round trip.
        done = (("SET", done_claim, "done", "EX", 86400),) if done_claim is not None else ()
        (result, *_, epoch) = await self.run(
            ("EVAL", APPEND, 2, key, self.counter_key(sid), entry, self.window_size, self.window_size + self.trim_slack, self.ttl,
             self.window_size if ticket is not None else 0),
            *done,
            ("GET", self.epoch_key),
        )
        length, previous = result[0], result[1]
        if self._adopt(epoch) != used:
            return False
        if length and previous is not None:
            key_new = (record.timestamp, len(record.id), record.id)
            if records.entry_sort_key(previous) >= key_new:
                # Out of order or a duplicate (rare): put the window back in
                # order, or drop it so the next read rebuilds it.
                self._forget_seen(sid)
                await self.call(self._reorder(key))
                return bool(length)
        if ticket is not None and len(result) > 2 and self.seen.get(sid) is ticket:
            # Nothing else touched the window here since the append was sent.
            ticket.entries = result[2]
        return bool(length)

    def _note_seen(self, session_id: str, seen: _Seen) -> None:
        self.seen[session_id] = seen
        while len(self.seen) > MAX_SEEN:
            self.seen.popitem(last=False)

    def _forget_seen(self, session_id: str) -> None:
        self.seen.pop(session_id, None)

    def _take_seen(self, session: Session, limit: int) -> list[MessageRecord] | None:
        """The window the current task's own append returned (D8), if
        nothing touched it here since and the epoch is still the one the
        append read beside it; used once."""
        seen = self.seen.pop(session.id, None)
        if seen is None or seen.entries is None or seen.epoch != self.epoch:
            return None
        if seen.reader is not asyncio.current_task():
            return None
        out = records.decode_entries(seen.entries[-limit:], session) if limit > 0 else []
        return out if out and records.is_ordered(out) else None

    async def _reorder(self, key: str) -> None:
        async with self.r.pipeline(transaction=True) as pipe:
            try:
                await pipe.watch(key)
                entries = await pipe.lrange(key, 0, -1)
                # One entry per message id: a second write of the same id
                # with another timestamp (two instances both answering) must
                # not take a place in the window. The earliest is the one
                # the database kept (it ignores later inserts of an id).
                by_id: dict[str, tuple[Any, bytes]] = {}
                # The client returns bytes (decode_responses is off).
                for entry in cast(list[bytes], entries):
                    sort_key = records.entry_sort_key(entry)
                    if sort_key[2] not in by_id or sort_key < by_id[sort_key[2]][0]:
                        by_id[sort_key[2]] = (sort_key, entry)
                ordered = [entry for _k, entry in sorted(by_id.values())]
                pipe.multi()
                pipe.delete(key)
                if ordered:
                    pipe.rpush(key, *ordered[-self.window_size :])
                    pipe.expire(key, self.ttl)
                await pipe.execute()
            except WatchError:
                await self.r.delete(key)

    async def window(self, session: Session, limit: int) -> tuple[list[MessageRecord] | None, Any]:
        """The last ``limit`` messages from the hot window, or ``None`` on a
        miss (the caller rebuilds from the database); and the session's
        write counter, read in the same round trip, which a rebuild needs
        from before its query.

        One round trip: the epoch is read beside the ``LRANGE``, so a window
        of a generation another instance invalidated (it wrote to the
        database while Redis was unreachable) is never served, even by an
        instance that did not see the outage and whose probe has not run."""
        served = self._take_seen(session, limit)
        if served is not None:
            return served, None
        keys = (self.window_key(session.id), self.counter_key(session.id))
        # The window before the epoch: an epoch still the known one after the
        # window was read means the window was read before any bump.
        (entries, counter), epoch = await self.run(("EVAL", WINDOW, len(keys), *keys, -limit), ("GET", self.epoch_key))
        epoch, counter = epoch or None, counter or None
        if self._seen_epoch(epoch) or not entries:
            return None, counter
        out = records.decode_entries(entries, session)
        if not records.is_ordered(out):
            return None, counter
        return out, counter

    async def has_window(self, session_id: str) -> bool:
        """Whether the session's hot window exists (in the current epoch)."""
        epoch, exists = await self.run(("GET", self.epoch_key), ("EXISTS", self.window_key(session_id)))
        # A moved epoch means the key asked about was an old generation's.
        return not self._seen_epoch(epoch) and bool(exists)

    async def counter(self, session_id: str) -> Any:
        epoch, value = await self.run(("GET", self.epoch_key), ("GET", self.counter_key(session_id)))
        self._seen_epoch(epoch)
        return value

    async def fill(self, session_id: str, entries: list[bytes], counter_before: Any, epoch: str) -> bool:
        """Create a window from database rows, unless it exists already, an
        append happened since ``counter_before`` was read, or the epoch moved."""
        if not entries:
            return False
        self._forget_seen(session_id)
        key = self.window_key(session_id, epoch)
        ckey = self.counter_key(session_id)
        before = b"" if counter_before is None else counter_before
        (filled,) = await self.run(("EVAL", FILL, 2, key, ckey, before, self.ttl, *entries[-self.window_size :]))
        return bool(filled)

    async def drop_window(self, session_id: str) -> None:
        await self.invalidate({session_id}, set())

    async def invalidate(self, sessions: set[str], scopes: set[str]) -> None:
        """Drop the windows of ``sessions`` and the cached sessions of
        ``scopes``; bump their write counters so a rebuild already under way
        does not fill a window from before.

        The epoch is read after the counters moved, and what it names is
        dropped too when this instance knew an older one (docs/MEMORY.md,
        D7): another instance may have bumped it and rebuilt these windows
        from a query made before the write being published here committed.
        A rebuild that lands after the counters moved is refused; one that
        landed before is under the epoch read here or an older one, which
        no read serves."""
        known = self.epoch
        pipe = self.r.pipeline(transaction=False)
        for sid in sessions:
            self._forget_seen(sid)
            pipe.incr(self.counter_key(sid))
            pipe.expire(self.counter_key(sid), self.ttl)
            pipe.delete(self.window_key(sid, known))
        for scope in scopes:
            pipe.delete(self.session_key(scope, known))
        pipe.get(self.epoch_key)
        *_, epoch = await self.call(pipe.execute())
        now = self._adopt(epoch)
        if now == known:
            return
        pipe = self.r.pipeline(transaction=False)
        for key in [self.window_key(sid, now) for sid in sessions] + [self.session_key(scope, now) for scope in scopes]:
            pipe.delete(key)  # one by one: on a Cluster they are in other slots
        await self.call(pipe.execute())

    # --- sessions ---------------------------------------------------------------------

    async def put_session(self, data: dict[str, Any], only_if_missing: bool = False, epoch: str | None = None) -> None:
        key = self.session_key(data["scope_key"], epoch)
        await self.run(("SET", key, orjson.dumps(data), "EX", self.ttl, *(("NX",) if only_if_missing else ())))

    async def get_session(self, scope_key: str) -> dict[str, Any] | None:
        epoch, raw = await self.run(("GET", self.epoch_key), ("GET", self.session_key(scope_key)))
        if self._seen_epoch(epoch):
            return None
        return orjson.loads(raw) if raw else None

    # --- forgetting --------------------------------------------------------------------

    async def forget(self, sessions: list[str], scopes: list[str], message_ids: list[str]) -> int:
        """Delete every key about these sessions, scopes and messages, in all
        epochs: windows, write counters, cached sessions, leases, fencing
        counters. Claims on the messages are kept only as ``done`` markers
        (they hold no content and stop a redelivery from storing them again).
        Returns how many keys were deleted."""
        for sid in sessions:
            self._forget_seen(sid)
        patterns = [self.keys.windows_of(sid) for sid in sessions]
        patterns += [self.keys.sessions_of(scope) for scope in scopes]
        exact = [self.counter_key(sid) for sid in sessions]
        exact += [key for scope in scopes for key in (self.keys.lease(scope), self.keys.fence(scope))]
        deleted = await self.delete_matching(patterns)
        # One key per command: on a Cluster each goes to its own slot's node.
        pipe = self.r.pipeline(transaction=False)
        for key in exact:
            pipe.delete(key)
        for mid in message_ids:
            pipe.set(self.keys.claim(mid), b"done", ex=24 * 3600, xx=True)
        results = await self.call(pipe.execute())
        return deleted + sum(r for r in results[: len(exact)] if isinstance(r, int))

    async def drop_windows(self, sessions: list[str]) -> int:
        """Delete the windows of ``sessions`` in every epoch, and their write
        counters; the number of keys deleted. A window an append brought
        back for its turn is forgotten too (D8)."""
        for sid in sessions:
            self._forget_seen(sid)
        deleted = await self.delete_matching([self.keys.windows_of(sid) for sid in sessions])
        for sid in sessions:  # one key a command: each in its own slot on a Cluster
            deleted += int(await self.call(self.r.delete(self.counter_key(sid))))
        return deleted

    async def delete_matching(self, patterns: list[str]) -> int:
        """Delete every key matching the glob ``patterns`` (all epochs)."""

        async def go() -> int:
            deleted = 0
            for pattern in patterns:
                batch = []
                async for key in self.r.scan_iter(match=pattern, count=500):
                    batch.append(key)
                    if len(batch) >= 500:
                        deleted += await self.r.delete(*batch)
                        batch = []
                if batch:
                    deleted += await self.r.delete(*batch)
            return deleted

        try:
            return await asyncio.wait_for(go(), max(self.timeout * 40, 5.0))
        except FAILURES as exc:
            raise BackendDown("redis", type(exc).__name__) from None


__all__ = ["_FAKE_SERVERS", "Cache", "RedisURLError", "describe_redis_url", "fake_server", "glob_escape", "make_client"]
