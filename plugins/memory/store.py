"""MemoryStore: the write path, the read path and the degraded modes.

Write (``store_message``): database first (that is what makes a message
accepted, G1), then an append to the hot window if the window exists (G5).
Database down: the row goes to the outbox (Redis stream; a local spool file
when Redis is down too). A reply, already sent, is in a local journal until
its store finishes (rule D5, docs/MEMORY.md). Redis down: database only, and the cache is marked
dirty so it is invalidated before it is trusted again.

Read (``load_messages``): the hot window; on a miss, one database query that
also rebuilds the window. Redis down: the database. Database down: the
window, or this instance's copy with the outbox entries of that session.
Sessions under faults (the copy, provisional sessions and their join, the
background rebuild after a flush): docs/MEMORY_SESSIONS.md.

A background probe pings both backends every ``probe_interval``, whatever
recovery work is under way (rule H1); the recovery work (epoch bump for
Redis, outbox replay for the database) runs in a task of its own and alone
closes a tripped breaker.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import secrets
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

import orjson

from core.clock import Clock
from core.models import HealthReport, MessageRecord, Role, Session
from core.tasks import stop_tasks
from plugins.memory import records
from plugins.memory.arbiter import DONE, DONE_TTL, Arbiter
from plugins.memory.breaker import BackendDown, Breaker
from plugins.memory.cache import Cache, RedisURLError, describe_redis_url, make_client
from plugins.memory.durable import DIRTY_PREFIX, DatabaseURLError, DurableStore, describe_url
from plugins.memory.edits import apply_correction
from plugins.memory.failover import write_back
from plugins.memory.leases import Leases, current_fence, prefetched_session
from plugins.memory.outbox import Outbox, SentJournal, Spool
from plugins.memory.provisional import JOIN_SCAN_EVERY, LATE_PREFIX, Settled, SettleLater, conversation_activity, follow_joins, late_key, late_writes, settle, windows_dropped
from plugins.memory.recent import RecentConversations, is_fresh, is_provisional, newest
from plugins.memory.settings import DEFAULT_REDIS_URL, MemorySettings

log = logging.getLogger("plugins.memory")

# After a flush or a Redis restart, the windows of this many of the
# conversations served last are rebuilt in the background.
REBUILD_SCOPES = 256
# A clean stop hands claims back and writes the outbox through, but never
# for longer than this: what is left is in the spool and Redis's stream for
# the next start (A2), and a restart must not wait on a slow backend.
STOP_BUDGET = 10.0


class SessionStateUnreachable(BackendDown):
    """Neither Redis, nor the database, nor a copy here or in the outbox
    knows the scope's session: the caller must not take that for "none"
    (the sessions plugin opens a provisional session)."""


class MemoryStore:
    """One bot instance's memory. Create, ``await start()``, use, ``await stop()``."""

    def __init__(
        self, settings: MemorySettings, *, data_dir: Path, instance_id: str, clock: Clock | None = None, serves_messages: bool = True
    ) -> None:
        self.settings = settings
        self.data_dir = Path(data_dir)
        self.instance_id = instance_id
        self.clock = clock or Clock()
        self.db: DurableStore | None = None
        self.cache: Cache | None = None
        self.db_breaker = Breaker("database")
        self.redis_breaker = Breaker("redis")
        self.problems: list[str] = []
        spool_dir = settings.spool_dir or self.data_dir / "spool"
        self.spool = Spool(Path(spool_dir), instance_id)
        self.outbox: Outbox = Outbox(None, self.spool, f"{instance_id}/{secrets.token_hex(4)}")
        self.sent = SentJournal(Path(spool_dir) / "sent", instance_id)
        # An admin command's store answers no message: it stays out of the
        # roster of instances (rule A7).
        self.arbiter = Arbiter(self, self.spool.path.with_suffix(".roster") if serves_messages else None, announces=serves_messages)
        # Window reads Redis answered, and those it missed (rebuilt from the
        # database): the cache hit ratio, for the ops plugin's metrics.
        self.window_hits = self.window_misses = 0
        self.leases = Leases(self)
        self.cache_dirty = False
        self.migrated = False
        # The database server last seen answering (R4 of docs/MEMORY.md).
        self.db_server: str | None = None
        self._db_errors_seen = 0
        self.run_id: str | None = None
        self._probe_task: asyncio.Task[None] | None = None
        # Health pings run apart from the recovery work (rule H1).
        self._checking: asyncio.Future[Any] | None = None
        self._recovery: asyncio.Task[None] | None = None
        self._recovering = asyncio.Lock()
        self._stopping = False
        self._redis_answered_at = -math.inf  # when (monotonic) the last ping that Redis answered was asked
        self._db_answered_at = -math.inf  # (the same for the database)
        self._stream_depth = 0
        self._refills: dict[str, asyncio.Task[None]] = {}
        # Per session id: the row as the database holds it, but for
        # last_active_at, and since when (bot clock) it is known to.
        self._session_rows: OrderedDict[str, tuple[dict[str, Any], float]] = OrderedDict()
        # The last resort of a read (docs/MEMORY_SESSIONS.md).
        self.recent = RecentConversations(settings.window_size)
        # Cache.epoch_changes when recent windows were last rebuilt.
        self._rebuilt_at = -1
        # Provisional sessions this instance saved, replayed from an outbox
        # or found in the database when it started, by id, until settled:
        # the copy alone forgets them when the instance that opened or
        # replayed one restarts (docs/MEMORY_SESSIONS.md, rule 6).
        self._unsettled: OrderedDict[str, dict[str, Any]] = OrderedDict()
        # Scopes whose past reached the database late (rule 11): the earliest
        # time it covers (fresh sessions opened before it cannot be concerned),
        # and the marks in the database to clear once they were looked at.
        self._late_scopes: dict[str, float] = {}
        # Sessions an outbox replay wrote under (maybe joined since), and
        # when (monotonic) the probe last looked under every join (S10).
        self._written_late: set[str] = set()
        self._joins_looked_at = -math.inf
        self._late_marks: dict[str, str] = {}
        self._scanned = False
        self._replayed_once = False

    # --- lifecycle -------------------------------------------------------------

    async def start(self) -> None:
        s = self.settings
        db_url = s.database_url.get_secret_value() if s.database_url else f"sqlite:///{self.data_dir / 'memory.db'}"
        redis_url = s.redis_url.get_secret_value() if s.redis_url else DEFAULT_REDIS_URL
        if db_url.startswith("sqlite:///"):
            Path(db_url[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
        try:
            self.db = DurableStore(db_url, timeout=s.db_timeout, slow_timeout=s.db_slow_timeout, threads=s.db_threads)
        except DatabaseURLError as exc:
            self._problem(self.db_breaker, f"DATABASE_URL is malformed: {exc}")
        try:
            client = make_client(redis_url, s.redis_timeout)
            self.cache = Cache(client, prefix=s.key_prefix, window_size=s.window_size, ttl=s.cache_ttl, timeout=s.redis_timeout)
            self.cache.now = self.clock.now
            self.outbox = Outbox(self.cache, self.spool, f"{self.instance_id}/{secrets.token_hex(4)}")
        except RedisURLError as exc:
            self._problem(self.redis_breaker, f"REDIS_URL is malformed: {exc}")
        if self.db is None and self.cache is None:
            raise RuntimeError("; ".join(self.problems) + " (memory cannot start without either backend)")
        await self._connect(db_url, redis_url)
        await self._hand_over_sent()
        settled = False
        if self.db_ok and self.redis_ok:
            try:
                await self._check_dirty_flags()
                await self._replay_outbox()
                settled = True
            except BackendDown as exc:
                # Lost after its first ping: start degraded; the recovery
                # does this work when the backend answers again (H1).
                self.backend_failed(exc)
        if self.redis_ok:
            await self._keep_epoch_key()
        self.arbiter.start()
        if settled:
            # What the earlier life sent is stored now (rule D5): a standby
            # taking its claims over finds those answered (rule A8).
            await self.arbiter.end_earlier_lives()
        self.leases.start()
        self._probe_task = asyncio.create_task(self._probe_loop(), name=f"memory-probe-{self.instance_id}")

    async def _connect(self, db_url: str, redis_url: str) -> None:
        """First contact with each configured backend; a backend that does
        not answer starts degraded (its breaker open), with the reason."""
        if self.cache is not None:
            try:
                self.run_id, _depth = await self.cache.ping()
                self.cache.run_id = self.run_id
            except BackendDown as exc:
                self._problem(self.redis_breaker, f"REDIS_URL {describe_redis_url(redis_url)} is unreachable ({exc.reason}); starting degraded", fatal=False)
        if self.db is not None:
            try:
                await self.db.ping()
                await self.db.migrate()
                self.migrated = True
                await self._db_server_moved()
            except BackendDown as exc:
                self._problem(self.db_breaker, f"DATABASE_URL {describe_url(db_url)} is unreachable ({exc.reason}); starting degraded", fatal=False)
            except Exception as exc:  # noqa: BLE001 - e.g. authentication failures, missing database
                self._problem(self.db_breaker, f"DATABASE_URL {describe_url(db_url)} cannot be used ({_first_line(exc)}); starting degraded", fatal=False)

    def _problem(self, breaker: Breaker, text: str, fatal: bool = True) -> None:
        log.error("memory: %s", text)
        self.problems.append(text)
        breaker.trip(text)

    async def stop(self) -> None:
        self._stopping = True  # no recovery work starts now (a claim's check may ask)
        await stop_tasks([*self._refills.values(), self._probe_task, self._recovery], timeout=2)
        self._probe_task = self._recovery = None
        try:
            async with asyncio.timeout(STOP_BUDGET):
                await self._hand_over()
        except TimeoutError:
            log.warning("memory: stop cut short after %g s; the outbox is replayed at the next start", STOP_BUDGET)
        if self.cache is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.cache.r.aclose(), 1.0)
        if self.db is not None:
            with contextlib.suppress(Exception):
                await self.db.close()

    async def _hand_over(self) -> None:
        """What a clean stop does for the instances that stay: claims and
        leases handed back, the outbox written through (A2, A4)."""
        await self.arbiter.stop()
        await self.leases.stop()
        if self.db_ok:
            with contextlib.suppress(Exception):
                await self._replay_outbox()

    # --- backend state -------------------------------------------------------------

    @property
    def db_ok(self) -> bool:
        return self.db is not None and self.db_breaker.ok

    @property
    def redis_ok(self) -> bool:
        return self.cache is not None and self.redis_breaker.ok

    def redis_failed(self, exc: BackendDown) -> None:
        self.redis_breaker.trip(exc.reason)

    def db_failed(self, exc: BackendDown) -> None:
        self.db_breaker.trip(exc.reason)

    def backend_failed(self, exc: BackendDown) -> None:
        """Trip the breaker of the backend ``exc`` names."""
        (self.redis_failed if exc.backend == "redis" else self.db_failed)(exc)

    async def _mark_dirty(self) -> None:
        """The database got a write the cache did not: the cache must be
        invalidated before anyone trusts it again, even if this instance dies."""
        self.cache_dirty = True
        if self.db_ok:
            assert self.db is not None
            with contextlib.suppress(BackendDown):
                await self.db.run(self.db.set_state, DIRTY_PREFIX + self.instance_id, self.clock.now())

    async def dirty_seen(self) -> None:
        """A claim's round trip found an instance's dirty flag: it wrote to
        the database while it could not reach Redis, and this instance may
        still trust the windows it left stale. Bump before reading (D4)."""
        if self.db_ok and self.redis_ok:
            with contextlib.suppress(BackendDown):
                await self._check_dirty_flags()

    async def _check_dirty_flags(self) -> None:
        """Bump the epoch if any instance left the cache dirty."""
        assert self.db is not None and self.cache is not None
        flags = await self.db.run(self.db.dirty_flags)
        if not flags and not self.cache_dirty:
            return
        await self._bump()
        for key, value in flags:
            await self.db.run(self.db.delete_state_if, key, value)

    async def _bump(self) -> None:
        """Bump the epoch. The dirty mark is cleared before, not after: a
        write the cache misses meanwhile (or a restart a ping sees, H1)
        marks it again for the next bump."""
        assert self.cache is not None
        self.cache_dirty = False
        try:
            await self.cache.bump_epoch()
        except BackendDown:
            self.cache_dirty = True
            raise

    # --- probe --------------------------------------------------------------------

    async def _probe_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.probe_interval)
            try:
                await self.check()
                self.recover_soon()
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is None or task.cancelling():
                    raise
                log.error("memory: health probe was interrupted; probing again")
            except Exception:  # noqa: BLE001 - the probe must outlive anything
                log.exception("memory: health probe failed")

    async def probe(self) -> None:
        """Ping both backends once, then run the recovery work for any that
        came back, after the recovery work already under way (rule H1)."""
        await self.check()
        await self._recover()

    async def check(self) -> None:
        """Ping both backends at once, whatever recovery work is under way
        (H1): what they answer decides what is known down (A6, A7). Callers
        asking at the same time share one round of pings."""
        if self._checking is None or self._checking.done():
            self._checking = asyncio.ensure_future(asyncio.gather(self._probe_redis(), self._probe_db()))
        await asyncio.shield(self._checking)

    def recover_soon(self) -> None:
        """Start the recovery work in its own task, unless it is under way (H1)."""
        if not self._stopping and (self._recovery is None or self._recovery.done()):
            self._recovery = asyncio.create_task(self._recover_logged(), name=f"memory-recovery-{self.instance_id}")

    async def _recover_logged(self) -> None:
        try:
            await self._recover()
        except Exception:  # noqa: BLE001 - the next ping starts it again
            log.exception("memory: recovery work failed")

    async def _recover(self) -> None:
        """The recovery work for what the last pings found answering (H1)."""
        async with self._recovering:
            await self._hand_over_sent()
            # Only a ping asked after the breaker opened says what Redis is
            # now: one answered before may predate a restart a call saw.
            if self.cache is not None and not self.redis_breaker.ok and self._redis_answered_at >= self.redis_breaker.since:
                await self._redis_recovered()
            if await self._db_back() or (self.db_breaker.ok and (self._stream_depth or self.spool.files())):
                await self._db_recovered()
            if self.db_ok and self.redis_ok:
                # Also right after the database returned: a start that lost
                # it never read a dead instance's dirty flag (H1).
                with contextlib.suppress(BackendDown):
                    await self._check_dirty_flags()
            if self.db_ok and self.db is not None and self.db.dialect == "postgres" and self.db.connection_errors != self._db_errors_seen:
                # A connection broke and was opened again without an outage
                # (the call was retried): maybe on a promoted standby.
                try:
                    await self._follow_db_server()
                except BackendDown as exc:
                    self.db_failed(exc)
            if self.redis_ok:
                await self._keep_epoch_key()
            await self._keep_recent()

    @property
    def db_down_confirmed(self) -> bool:
        """The database breaker is open and a probe since confirmed it."""
        return self.db is not None and self.db_breaker.confirmed

    @property
    def _patient(self) -> float:
        """The timeout of pings that decide the database is down (health
        probes, rule A7's last check): a process starved of CPU must not
        take a slow answer for a dead database and let Redis decide (A6) or
        nobody (A7)."""
        return max(self.settings.db_timeout, self.settings.claim_ttl / 3)

    @property
    def earlier_lives_settled(self) -> bool:
        """Whether an outbox replay finished in this life, or the spool had
        nothing to replay (an unarbitrated reply of an earlier life may wait
        there: rule A7's announcement waits for it)."""
        return self._replayed_once or not self.spool.files()

    @property
    def db_back_at(self) -> float:
        """When (monotonic) the database breaker last closed (now while open)."""
        return self.db_breaker.since if self.db_breaker.ok else time.monotonic()

    async def answers(self) -> bool:
        """Whether either backend answers a ping now, both asked at once
        (no recovery work: the probe does that)."""

        async def pinged(ping: Any) -> bool:
            try:
                await ping()
                return True
            except Exception:  # noqa: BLE001 - e.g. SQLite's "database is locked": not answering
                return False

        asked = [pinged(self.cache.ping)] if self.cache is not None else []
        if self.db is not None:
            asked.append(pinged(functools.partial(self.db.ping, self._patient)))
        return any(await asyncio.gather(*asked))

    async def _probe_redis(self) -> None:
        """Ping Redis: whether it answers, its outbox stream's depth, and
        whether it is another server than before (R1, H1)."""
        if self.cache is None:
            return
        asked = time.monotonic()
        try:
            run_id, self._stream_depth = await self.cache.ping()
        except BackendDown as exc:
            self._redis_answered_at = -math.inf
            self.redis_breaker.trip(exc.reason)
            return
        restarted = bool(run_id and self.run_id and run_id != self.run_id)
        self.run_id = run_id or self.run_id
        if restarted:
            # A restarted Redis may hold an old snapshot that lacks later
            # appends: nothing of it is served until the epoch is bumped,
            # however long the recovery work under way takes (H1).
            self.cache_dirty = True
            self.redis_breaker.trip("restarted (another run id)")
            asked = time.monotonic()  # (this answer is what opened it)
        elif self.redis_breaker.ok:
            self.cache.run_id = self.run_id  # else only once recovered
        self._redis_answered_at = asked

    async def _probe_db(self) -> None:
        """Ping the database (H1): an answer voids a confirmation that it is
        down, none confirms it."""
        if self.db is None:
            return
        asked = time.monotonic()
        try:
            await self.db.ping(self._patient)
        except BackendDown as exc:
            self._db_answered_at = -math.inf
            self.db_breaker.trip(exc.reason, probed=True)
            return
        except Exception as exc:  # noqa: BLE001
            self._db_answered_at = -math.inf
            self.db_breaker.trip(_first_line(exc), probed=True)
            return
        self.db_breaker.answered()
        self._db_answered_at = asked

    async def _db_back(self) -> bool:
        """Whether the last ping found the database answering with its
        breaker open, asked after it opened (as for Redis), migrating it
        if it never was."""
        if self.db is None or self.db_breaker.ok or self._db_answered_at < self.db_breaker.since:
            return False
        if not self.migrated:
            try:
                await self.db.migrate()
            except Exception as exc:  # noqa: BLE001 - e.g. a cut in the middle: the next ping tries again
                self.db_breaker.trip(_first_line(exc))
                return False
            self.migrated = True
        return True

    async def _keep_epoch_key(self) -> None:
        """Keep the epoch key in Redis (a fresh Redis has none): a flush or
        a restart then shows as an epoch change to every instance's next
        read (rule D4 of docs/MEMORY.md)."""
        assert self.cache is not None
        if self.cache.epoch != "0":
            return
        try:
            if await self.cache.refresh_epoch() == "0":
                # Not bump_epoch(): creating the key on a fresh Redis is no
                # news for the operator (the terminal chat shows warnings).
                await self.cache.new_epoch()
                log.info("memory: cache epoch is now %s (the key was missing)", await self.cache.refresh_epoch())
        except BackendDown as exc:
            self.redis_failed(exc)

    async def _redis_recovered(self) -> None:
        assert self.cache is not None
        # Pings go on meanwhile (H1): a restart one sees during this work
        # (another run id again) is left open for a bump of its own.
        seen = self.run_id
        try:
            await self.cache.refresh_epoch()
            if self.cache_dirty or seen != self.cache.run_id:
                await self._bump()
            if self.db_ok:
                await self._check_dirty_flags()
        except BackendDown as exc:
            self.redis_breaker.trip(exc.reason)
            return
        self.cache.run_id = seen
        if self.run_id == seen:
            self.redis_breaker.reset()

    async def _db_server_moved(self) -> bool:
        """Whether another database server answers than the last time asked
        (a standby promoted, or the server restarted): docs/MEMORY.md, R4."""
        assert self.db is not None
        identity = await self.db.run(self.db.server_identity)
        moved = self.db_server is not None and identity is not None and identity != self.db_server
        self.db_server = identity or self.db_server
        return moved

    async def _follow_db_server(self) -> None:
        """After a failover, write back what the new server may lack (R4)."""
        assert self.db is not None
        self._db_errors_seen = self.db.connection_errors
        if self.db.dialect != "postgres":
            return  # one file, or no failover to follow (server_identity)
        if await self._db_server_moved():
            await write_back(self.db, self.recent, self.clock.now())

    async def _db_recovered(self) -> None:
        try:
            await self._replay_outbox()
            await self._follow_db_server()
        except BackendDown as exc:
            if exc.backend != "redis":
                self.db_breaker.trip(exc.reason)
                return
            # Redis failed while the shared stream replayed: the database is
            # fine, and the rest of the stream waits for Redis (as when Redis
            # is already down at the probe). Keeping the database marked down
            # instead left instances with "both down" long after the fault.
            self.redis_failed(exc)
        if self.db_breaker.confirmed:
            return  # a ping during this work found it down again: the pings decide (H1)
        self.db_breaker.reset()
        # Writes queued while the last batch replayed.
        with contextlib.suppress(BackendDown):
            await self._replay_outbox()

    async def _replay_outbox(self) -> int:
        count = await self.outbox.replay(self._apply, self.redis_ok)
        self._replayed_once = True
        if count:
            log.warning("memory: replayed %d outbox entries into the database", count)
        return count

    async def _apply(self, entries: list[dict[str, Any]]) -> None:
        """Write outbox entries to the database, in order, idempotently."""
        assert self.db is not None
        db = self.db

        corrected: set[str] = set()
        # The database learns of these scopes' past only now: their fresh
        # sessions are judged again after the next probe (rule 11).
        late = late_writes(entries)
        marks = {scope: {"scope": scope, "since": since} for scope, since in late.items()}

        def apply_all() -> None:
            with db.db.atomic():
                for scope, mark in marks.items():
                    db.set_state(late_key(scope), mark)
                for entry in entries:
                    kind, data = entry.get("k"), entry.get("d")
                    if kind == "msg":
                        db.insert_unless_deleted(tuple(data))
                    elif kind == "session":
                        db.upsert_session(data["s"], data.get("f"))
                    elif kind == "state":
                        db.set_state(data["key"], data["value"])
                    elif kind in ("edit", "delete"):
                        corrected.update(apply_correction(db, kind, data))

        try:
            await db.run(apply_all, slow=True)
        except BackendDown as exc:
            self.db_breaker.trip(exc.reason)
            raise
        for entry in entries:
            if entry.get("k") == "msg" and str(entry["d"][0]).startswith("reply:"):
                self.arbiter.answered_here(str(entry["d"][0])[len("reply:") :])
        # The cache may not have seen these writes (Redis was down too, or a
        # window was rebuilt meanwhile): what they touch is dropped now,
        # before the entries leave the outbox, so that a replayer killed or
        # stopped at any moment leaves them queued or the windows dropped (D3).
        await self._invalidate(
            {e["d"][1] for e in entries if e.get("k") == "msg"} | corrected,
            {e["d"]["s"]["scope_key"] for e in entries if e.get("k") == "session"},
        )
        for entry in entries:
            if entry.get("k") == "session":
                self._note_unsettled(entry["d"]["s"])
        self._note_written_late(entries)
        for scope, mark in marks.items():
            self._note_late(scope, float(mark["since"]), orjson.dumps(mark).decode())

    def _note_written_late(self, entries: list[dict[str, Any]]) -> None:
        """The next probe looks for late writes under the ids these replayed
        entries wrote under: they may have been joined meanwhile (S10)."""
        for entry in entries:
            if entry.get("k") == "msg":
                self._written_late.add(str(entry["d"][1]))
            elif entry.get("k") == "session":
                self._written_late.add(str(entry["d"]["s"]["id"]))
        if len(self._written_late) > 10_000:
            self._written_late.clear()
            self._joins_looked_at = -math.inf  # the next probe looks under every join

    async def _invalidate(self, sessions: set[str], scopes: set[str]) -> None:
        if self.cache is None or not (sessions or scopes):
            return
        if self.redis_ok:
            try:
                await self.cache.invalidate(sessions, scopes)
                return
            except BackendDown as exc:
                self.redis_failed(exc)
        await self._mark_dirty()

    # --- messages ---------------------------------------------------------------------

    async def store_message(self, record: MessageRecord) -> bool:
        """Store ``record``; ``True`` when durably accepted (database or the
        shared outbox), ``False`` when only the local spool took it."""
        records.check_record(record, self.settings.max_content_bytes)
        row = records.to_row(record, self.clock.now())
        reply = record.role is Role.BOT and record.id.startswith("reply:")
        if not reply:
            # The turn's own read of the window comes from this write's append (D8).
            return await self._store_row(record, row, asyncio.current_task())
        # Sent already: in the journal before anything awaits (rule D5).
        self.sent.note(list(row))
        finished = False
        try:
            stored = await self._store_row(record, row, None)
            finished = True  # in the database or the outbox, degraded or not
            return stored
        finally:
            self.sent.done(record.id, accepted=finished)

    async def _hand_over_sent(self) -> None:
        """Rule D5: replies a store did not finish go to the outbox, unless
        the database already holds them (a killed process's journal holds
        every reply since its last probe, most of them stored whole)."""
        stored: set[str] = set()
        orphans = self.sent.orphans()
        ids = [e["d"][0] for e in orphans]
        if ids and self.db_ok:
            assert self.db is not None
            try:
                for i in range(0, len(ids), 500):
                    rows = await self.db.run(self.db.messages_by_id, ids[i : i + 500])
                    stored |= {row[0] for row in rows}
            except BackendDown as exc:
                self.db_failed(exc)
        # The database holds some, but a window may not: an insert in flight
        # when its process died still commits, with nobody left to append
        # it. Their windows are rebuilt whole from the database (D4), dropped
        # before the journal forgets them (a process killed in between
        # leaves them to its next life, D3).
        await self._invalidate({e["d"][1] for e in orphans if e["d"][0] in stored}, set())
        handed = self.sent.hand_over(self.outbox, orphans, stored)
        if handed:
            log.warning("memory: %d sent replies whose store did not finish (a killed process, a failed write) went to the outbox", handed)

    async def _store_row(self, record: MessageRecord, row: tuple[Any, ...], reader: asyncio.Task[Any] | None) -> bool:
        in_db, duplicate = await self._insert(row)
        accepted, degraded = in_db, False
        if not in_db:
            accepted, degraded = True, not await self._queue(self.outbox.entry("msg", list(row)))
        await self._to_window(record, in_db, duplicate, reader)
        if record.role is Role.BOT and record.id.startswith("reply:"):
            # A claim is held until its reply is in the database (rule A4):
            # a reply waiting in the outbox keeps its claim renewed.
            (self.arbiter.answered_here if in_db else self.arbiter.spooled)(record.id[len("reply:") :])
        return await self._written(record, accepted and not degraded)

    async def _insert(self, row: tuple[Any, ...]) -> tuple[bool, bool]:
        """``(in the database, was there before)``."""
        if not self.db_ok:
            return False, False
        assert self.db is not None
        try:
            return True, not await self.db.insert(row)
        except BackendDown as exc:
            self.db_failed(exc)
            return False, False

    async def _to_window(self, record: MessageRecord, in_db: bool, duplicate: bool, reader: asyncio.Task[Any] | None) -> None:
        """The window's part of a write (rules D4, D7), once the database
        answered: the append (a reply marks its claim done in the same
        script; a user's message brings back the window for its turn's
        read, D8); a write Redis missed marks the cache dirty. A write the
        database had already is not appended: its first version is the one
        the window holds (or will be rebuilt with)."""
        if not self.redis_ok:
            if in_db and self.cache is not None:
                await self._mark_dirty()
            return
        assert self.cache is not None
        try:
            done = None
            if record.role is Role.BOT and record.id.startswith("reply:"):
                done = self.arbiter.key(record.id[len("reply:") :])
            if not duplicate:
                if not await self.cache.append(record, done, reader=reader) and in_db:
                    await self.cache.invalidate({record.session_id}, set())
            elif done is not None:
                await self.cache.run(("SET", done, DONE, "EX", DONE_TTL))
        except BackendDown as exc:
            self.redis_failed(exc)
            if in_db:
                await self._mark_dirty()

    async def _queue(self, entry: dict[str, Any]) -> bool:
        """Queue a write the database could not take: in the local spool
        (survives a Redis flush or loss) and in the shared Redis stream (any
        instance can replay it). ``True`` if the stream took it too."""
        self.outbox.to_spool(entry)
        try:
            await self.outbox.to_stream(entry, self.redis_ok)
            return True
        except BackendDown as exc:
            if self.cache is not None and self.redis_breaker.ok:
                self.redis_failed(exc)
            return False

    async def load_messages(self, session: Session, limit: int) -> list[MessageRecord]:
        """The last ``limit`` messages of ``session``: the hot window, else
        the database (which rebuilds the window), else (both failed) this
        instance's copy and the outbox together."""
        if limit <= 0:
            return []
        counter = epoch = None
        if self.redis_ok and limit <= self.settings.window_size:
            assert self.cache is not None
            try:
                hot, counter = await self.cache.window(session, limit)
                if hot is not None:
                    self.window_hits += 1
                    self.recent.note_window(session.id, hot)
                    return hot
                self.window_misses += 1
                epoch = self.cache.epoch
            except BackendDown as exc:
                self.redis_failed(exc)
        if self.db_ok:
            assert self.db is not None
            try:
                found = await self._rebuild(session, limit, counter, epoch)
                self.recent.note_window(session.id, found)
                return found
            except BackendDown as exc:
                self.db_failed(exc)
        return await self._from_copies(session, limit)

    async def load_records(self, ids: list[str]) -> list[MessageRecord]:
        """Messages by id, from the database (the source of truth): an
        exchange a user replies to, whatever session and window it is in.
        ``[]`` while the database cannot answer (the caller falls back on
        what the platform quoted)."""
        if not ids or not self.db_ok:
            return []
        assert self.db is not None
        try:
            rows = await self.db.run(self.db.messages_by_id, list(ids))
        except BackendDown as exc:
            self.db_failed(exc)
            return []
        return [records.from_row(row) for row in rows]

    async def _rebuild(self, session: Session, limit: int, counter: Any, epoch: str | None) -> list[MessageRecord]:
        """A cold read: one database query of ``limit`` rows. When that is
        the session's whole history the window is filled from it at once;
        otherwise it is refilled (``window_size`` rows) in the background.
        ``counter`` and ``epoch`` were read with the window miss, before the
        query (``epoch`` is ``None`` when Redis was not asked)."""
        assert self.db is not None
        rows = await self.db.run(self.db.last_messages, session.id, limit)
        found = [records.from_row(r) for r in rows]
        found.sort(key=_sort_key)
        if epoch is not None and found and self.redis_ok:
            assert self.cache is not None
            if len(found) < limit:
                try:
                    await self.cache.fill(session.id, [records.encode_entry(r) for r in found], counter, epoch)
                except BackendDown as exc:
                    self.redis_failed(exc)
            else:
                self._schedule_refill(session.id)
        return found

    def _schedule_refill(self, session_id: str) -> None:
        if session_id in self._refills:
            return
        task = asyncio.create_task(self._refill(session_id), name=f"memory-refill-{session_id}")
        self._refills[session_id] = task
        task.add_done_callback(lambda _t: self._refills.pop(session_id, None))

    async def refill(self, session_id: str) -> None:
        """Rebuild a session's hot window from the database now (the read
        path does it in the background after a miss)."""
        task = self._refills.get(session_id)
        if task is not None:
            await asyncio.wait([task])
        else:
            await self._refill(session_id)

    async def _refill(self, session_id: str) -> None:
        """Fill the window from the database, unless a write or an epoch
        change happens meanwhile (then a later read tries again)."""
        if self.cache is None or self.db is None:
            return
        try:
            counter = await self.cache.counter(session_id)
            epoch = self.cache.epoch
            rows = await self.db.run(self.db.last_messages, session_id, self.settings.window_size)
            if rows:
                found = sorted((records.from_row(r) for r in rows), key=_sort_key)
                await self.cache.fill(session_id, [records.encode_entry(r) for r in found], counter, epoch)
        except BackendDown as exc:
            self.backend_failed(exc)
        except Exception:  # noqa: BLE001 - a background refill must never take anything down
            log.exception("memory: refilling the window of %s failed", session_id)

    async def _from_copies(self, session: Session, limit: int) -> list[MessageRecord]:
        """Both the window and the database are out of reach: this
        instance's copy of the window, with what the outbox holds for the
        session (written since, here or by another instance)."""
        found = {r.id: r for r in self.recent.window(session.id) or []}
        for entry in await self.pending_entries():
            if entry.get("k") == "msg" and entry["d"][1] == session.id:
                record = records.from_row(tuple(entry["d"]))
                found[record.id] = record
        return sorted(found.values(), key=_sort_key)[-limit:]

    async def _written(self, record: MessageRecord, durable: bool) -> bool:
        """After every message write: the copy takes it too. ``False``
        (memory degraded) when the reply about to be generated cannot see
        the conversation's earlier messages: the session is provisional, or
        it was read here, the database is down and neither the hot window
        nor a copy here holds its messages."""
        self.recent.add(record)
        sid = record.session_id
        if self.recent.is_provisional(sid):
            return False
        if record.role is Role.USER and not self.db_ok and self.recent.knows(sid) and self.recent.window(sid) is None:
            return durable and await self._has_window(sid)
        return durable

    async def _has_window(self, session_id: str) -> bool:
        if not self.redis_ok:
            return False
        assert self.cache is not None
        try:
            return await self.cache.has_window(session_id)
        except BackendDown as exc:
            self.redis_failed(exc)
            return False

    async def _keep_recent(self) -> None:
        """After each probe: once the cache epoch moved (a flush, a restart,
        an invalidation), rebuild the windows of the conversations served
        last, in the background; settle the provisional sessions known here."""
        if self.cache is None or not (self.redis_ok and self.db_ok):
            return
        if self.cache.epoch_changes != self._rebuilt_at and "(recent)" not in self._refills:
            self._rebuilt_at = self.cache.epoch_changes
            task = asyncio.create_task(self._rebuild_recent(), name=f"memory-rebuild-{self.instance_id}")
            self._refills["(recent)"] = task
            task.add_done_callback(lambda _t: self._refills.pop("(recent)", None))
        await self._settle_known()
        await self._follow_joins()

    async def _follow_joins(self) -> None:
        """Messages written under a session after it was joined go where it
        went (docs/MEMORY_SESSIONS.md, S10); the windows of a join whose
        instance died before it dropped them are dropped here (D3)."""
        assert self.db is not None
        started = time.monotonic()
        every = started - self._joins_looked_at >= JOIN_SCAN_EVERY
        look_at = set(self._written_late)
        try:
            # Bulk work, timed like a replay: cut short at the message
            # path's timeout, the move still committed while the breaker
            # said the database was down.
            moved, stale = await self.db.run(follow_joins, self.db, None if every else look_at, slow=True)
        except BackendDown as exc:
            self.db_failed(exc)
            return
        self._written_late -= look_at
        if every:
            self._joins_looked_at = started
        for old, new, _scope, count in moved:
            log.warning("memory: %d message(s) (or its row) written to session %s after it was joined to %s moved there", count, old, new)
            self._session_rows.pop(old, None)
        if stale:  # the joins above among them
            await self._invalidate({sid for old, chain, _, _ in stale for sid in (old, *chain)}, {scope for _, _, scope, _ in stale if scope})
            await self._windows_dropped([(old, mark) for old, _, _, mark in stale])

    async def _windows_dropped(self, marks: list[tuple[str, Any]]) -> None:
        assert self.db is not None
        try:
            await self.db.run(windows_dropped, self.db, marks)
        except BackendDown as exc:
            self.db_failed(exc)

    async def _settle_known(self) -> None:
        """Settle the provisional sessions this instance knows of: in its
        copy, saved here, written to the database by its outbox replay, or
        found there at its first probe with both backends up (whoever opened
        or replayed them may have been killed before settling them); and the
        fresh sessions of the scopes whose past its replays or joins wrote
        late, or found at that first probe (MEMORY_SESSIONS.md, rule 11)."""
        try:
            await self._find_unsettled()
        except BackendDown as exc:
            self.db_failed(exc)
            return
        known = {d["id"]: d for d in self.recent.provisional_sessions()}
        known.update(self._unsettled)
        for sid, data in known.items():
            settled = await self._settle_provisional(data)
            if settled is not None:
                self.recent.note_session(settled)
            # The same object back: put off (the outbox may hold writes, a row
            # is locked, the database failed); try again after the next probe.
            put_off = settled is data
            if settled is None or settled["id"] != sid or not (is_provisional(settled) or put_off):
                self._unsettled.pop(sid, None)
        await self._clear_late_marks()

    async def _find_unsettled(self) -> None:
        """What ``_settle_known`` must look at besides what it was told:
        at the first probe, every session still provisional (rule 6); the
        fresh sessions of the scopes whose past reached the database late
        (rule 11): written by this instance, or marked in the database by
        one killed before it looked."""
        assert self.db is not None
        if not self._scanned:
            for data in await self.db.run(self.db.provisional_sessions, slow=True):
                self._note_unsettled(data)
            # Scopes a replayer killed before looking at them left behind.
            for value in (await self.db.run(self.db.states_with_prefix, LATE_PREFIX)).values():
                if isinstance(value, dict) and value.get("scope"):
                    self._note_late(str(value["scope"]), float(value.get("since") or 0.0), orjson.dumps(value).decode())
            self._scanned = True
        late, self._late_scopes = self._late_scopes, {}
        scopes = sorted(late)
        for i in range(0, len(scopes), 500):
            chunk = scopes[i : i + 500]
            for data in await self.db.run(self.db.fresh_sessions, chunk, min(late[s] for s in chunk), slow=True):
                if data["opened_at"] >= late[data["scope_key"]]:
                    self._note_unsettled(data, fresh_too=True)

    def _note_late(self, scope: str, since: float, mark: str | None = None) -> None:
        self._late_scopes[scope] = min(since, self._late_scopes.get(scope, since))
        if mark is not None:
            self._late_marks[scope] = mark

    async def _clear_late_marks(self) -> None:
        """Delete the marks of the scopes looked at whose fresh sessions are
        all judged (none put off); only as read or written here: another
        instance's newer mark stays for it."""
        assert self.db is not None
        waiting = {d["scope_key"] for d in self._unsettled.values()} | set(self._late_scopes)
        for scope, mark in list(self._late_marks.items()):
            if scope in waiting:
                continue
            try:
                await self.db.run(self.db.delete_state_if, late_key(scope), mark)
            except BackendDown as exc:
                self.db_failed(exc)
                return
            del self._late_marks[scope]

    def _note_unsettled(self, data: dict[str, Any], fresh_too: bool = False) -> None:
        if not (is_provisional(data) or (fresh_too and is_fresh(data))):
            return
        self._unsettled[data["id"]] = dict(data)
        while len(self._unsettled) > 10_000:
            self._unsettled.popitem(last=False)

    async def _rebuild_recent(self) -> None:
        """Put back the session and the window of each recent conversation
        (from the database; a rebuild never overwrites what a write put
        there meanwhile: see Cache.fill)."""
        assert self.cache is not None and self.db is not None
        for scope in self.recent.scopes(REBUILD_SCOPES):
            if not (self.redis_ok and self.db_ok):
                self._rebuilt_at = -1  # again after the next probe
                return
            epoch = self.cache.epoch
            try:
                data = await self.db.run(self.db.latest_session, scope)
                if data is not None:
                    await self.cache.put_session(data, only_if_missing=True, epoch=epoch)
            except BackendDown as exc:
                self.backend_failed(exc)
                self._rebuilt_at = -1
                return
            if data is not None:
                await self._refill(data["id"])

    def _spooled_entries(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for path in self.spool.files():
            with contextlib.suppress(OSError):
                for line in path.read_bytes().splitlines():
                    with contextlib.suppress(orjson.JSONDecodeError):
                        if line.strip():
                            out.append(orjson.loads(line))
        return out

    async def _outbox_may_hold_entries(self) -> bool:
        """Whether writes may still wait in the outbox (spool or stream)."""
        if self.spool.files():
            return True
        if not self.redis_ok:
            return False
        assert self.cache is not None
        try:
            return bool(await self.cache.call(self.cache.r.xlen(self.outbox.stream_key)))
        except BackendDown as exc:
            self.redis_failed(exc)
            return False

    async def pending_entries(self) -> list[dict[str, Any]]:
        out = self._spooled_entries()
        if self.redis_ok:
            assert self.cache is not None
            try:
                items = await self.cache.call(self.cache.r.xrange(self.outbox.stream_key))
                out.extend(orjson.loads(f[b"e"]) for _i, f in items)
            except BackendDown as exc:
                self.redis_failed(exc)
        return out

    # --- sessions ---------------------------------------------------------------

    async def save_session(self, session: Session) -> bool:
        """Persist ``session``; ``False`` if a newer lease holder fenced it out."""
        ahead = prefetched_session.get()
        if ahead and ahead[0] == session.scope_key:
            ahead.clear()
        data = records.session_to_dict(session)
        held = current_fence.get()
        fence = held[1] if held and held[0] == session.scope_key else None
        in_db = False
        if self.db_ok and self._only_touched(data):
            in_db = True
        elif self.db_ok:
            assert self.db is not None
            try:
                if not await self.db.save_session((data, fence)):
                    log.warning("memory: session %s not saved: a newer lease holder wrote it (fence %s)", session.id, fence)
                    self._session_rows.pop(session.id, None)
                    return False
                in_db = True
                self._known_row(data, written=True)
            except BackendDown as exc:
                self.db_failed(exc)
        if not in_db:
            await self._queue(self.outbox.entry("session", {"s": data, "f": fence}))
        self._note_unsettled(data)
        self.recent.note_session(data, written=True)
        await self._cache_session(data, in_db)
        return True

    async def _cache_session(self, data: dict[str, Any], in_db: bool) -> None:
        """Put a saved session in Redis; if Redis missed a row the database
        took, the cache is dirty."""
        if self.redis_ok:
            assert self.cache is not None
            try:
                await self.cache.put_session(data)
                return
            except BackendDown as exc:
                self.redis_failed(exc)
        if in_db and self.cache is not None:
            await self._mark_dirty()

    def _only_touched(self, data: dict[str, Any]) -> bool:
        """Whether saving ``data`` would only move the database row's
        ``last_active_at``, and the row was written (or seen) less than
        ``session_touch_interval`` ago: then Redis alone takes the touch.

        Safe with fencing: every other change is written (fenced), so an
        instance that paused past its lease can at most move an open
        session's activity time, which the newest message corrects."""
        known = self._session_rows.get(data["id"])
        if known is None:
            return False
        row, since = known
        if self.clock.now() - since >= self.settings.session_touch_interval:
            return False
        return all(row.get(k) == v for k, v in data.items() if k != "last_active_at")

    def _known_row(self, data: dict[str, Any], written: bool = False) -> None:
        rows = self._session_rows
        known = rows.get(data["id"])
        same = known is not None and all(known[0].get(k) == v for k, v in data.items() if k != "last_active_at")
        if written or not same:
            rows[data["id"]] = (data, self.clock.now())
        rows.move_to_end(data["id"])
        while len(rows) > 10_000:
            rows.popitem(last=False)

    async def load_session(self, scope_key: str) -> Session | None:
        """The scope's latest session: Redis, else the database, else (both
        failed) the newest copy here or in the outbox. Raises
        :class:`SessionStateUnreachable` when none of them knows it. A
        provisional session is settled first when the database allows."""
        data, answered = await self._session_from_cache(scope_key)
        if not answered:
            data, answered = await self._session_from_db(scope_key)
        if not answered:
            data = await self._session_from_copies(scope_key)
        if is_provisional(data):
            assert data is not None
            data = await self._settle_provisional(data)
        if data is None:
            return None
        self.recent.note_session(data)
        return records.session_from_dict(data)

    async def _session_from_cache(self, scope_key: str) -> tuple[dict[str, Any] | None, bool]:
        """``(data, True)`` on a hit; a miss says nothing (Redis may have lost it)."""
        if not self.redis_ok:
            return None, False
        assert self.cache is not None
        try:
            ahead = prefetched_session.get()
            if ahead and ahead[0] == scope_key and ahead[1] == self.cache.epoch:
                raw = ahead[2]
                ahead.clear()
                data = orjson.loads(raw) if raw else None
            else:
                data = await self.cache.get_session(scope_key)
        except BackendDown as exc:
            self.redis_failed(exc)
            return None, False
        if data is None:
            return None, False
        # Redis gets a session only after the database did (or its outbox):
        # what it holds is the row, but for touches.
        self._known_row(data)
        return data, True

    async def _session_from_db(self, scope_key: str) -> tuple[dict[str, Any] | None, bool]:
        """``(data or None, True)`` when the database answered."""
        if not self.db_ok:
            return None, False
        assert self.db is not None
        epoch = self.cache.epoch if self.cache is not None else None
        try:
            data = await self.db.run(self.db.latest_session, scope_key)
        except BackendDown as exc:
            self.db_failed(exc)
            return None, False
        if data is not None:
            self._known_row(data)
            if self.redis_ok:
                assert self.cache is not None
                with contextlib.suppress(BackendDown):
                    await self.cache.put_session(data, only_if_missing=True, epoch=epoch)
        return data, True

    async def _session_from_copies(self, scope_key: str) -> dict[str, Any]:
        """Both backends failed: the newest of this instance's copy and the
        saves still queued in the outbox (other instances' too, while Redis
        holds the stream)."""
        queued = None
        for entry in await self.pending_entries():
            if entry.get("k") == "session" and entry["d"]["s"]["scope_key"] == scope_key:
                queued = newest(queued, entry["d"]["s"])
        found = newest(self.recent.session(scope_key), queued)
        if found is None:
            raise SessionStateUnreachable("memory", "the session state of this conversation is unreachable (Redis lost it, the database is down)")
        return found

    async def _settle_provisional(self, data: dict[str, Any]) -> dict[str, Any] | None:
        """A provisional session read back: settle it (join it to the
        conversation it continues) once the database answers and no write
        waits in the outbox; until then it is used as it is. A session
        opened blind twice in a row settles step by step, hence the loop."""
        for _ in range(3):
            unsettled = is_provisional(data) or is_fresh(data)
            if not unsettled or not self.db_ok:
                return data
            if await self._outbox_may_hold_entries():
                return await self._as_its_conversation(data)
            assert self.db is not None
            try:
                settled = await self.db.run(settle, self.db, data["id"])
                if settled is None:  # settled by another instance meanwhile
                    data = await self.db.run(self.db.latest_session, data["scope_key"])
                    if data is None:
                        return None
                    continue
            except BackendDown as exc:
                self.db_failed(exc)
                return data
            except SettleLater:
                return await self._as_its_conversation(data)
            await self._after_settle(settled)
            if not settled.changed:
                return settled.session  # fresh, judged again: nothing to join yet
            data = settled.session
        return data

    async def _as_its_conversation(self, data: dict[str, Any]) -> dict[str, Any]:
        """A provisional session used as it is until it can be settled: as
        active as the conversation it continues (rule 5). Judged by its own
        activity, it may look idle while the conversation went on in the
        session before it, and the message being handled would end it."""
        if not is_provisional(data) or not self.db_ok:
            return data
        assert self.db is not None
        try:
            active = await self.db.run(conversation_activity, self.db, data)
        except BackendDown as exc:
            self.db_failed(exc)
            return data
        return {**data, "last_active_at": max(data["last_active_at"], active)}

    async def _after_settle(self, settled: Settled) -> None:
        data = settled.session
        if not settled.changed:
            return
        self._known_row(data, written=True)
        if settled.joined_from is None:
            self.recent.note_session(data)
            await self._invalidate(set(), {data["scope_key"]})
            return
        log.warning(
            "memory: session %s joined to %s, the conversation it continues (%d messages moved)",
            settled.joined_from, data["id"], settled.moved,
        )
        self._session_rows.pop(settled.joined_from, None)
        self.recent.note_session(data)
        await self._invalidate({data["id"], settled.joined_from}, {data["scope_key"]})
        await self._windows_dropped([(settled.joined_from, settled.mark)])
        # Its activity grew: a fresh session after it is judged again (rule 11).
        self._note_late(data["scope_key"], float(data["opened_at"]))

    async def list_sessions(self, user_id: str, limit: int) -> list[Session]:
        assert self.db is not None
        self.db_breaker.check()
        try:
            rows = await self.db.run(self.db.user_sessions, user_id, limit)
        except BackendDown as exc:
            self.db_failed(exc)
            raise
        return [records.session_from_dict(r) for r in rows]

    async def max_fence(self, scope_key: str) -> int:
        if not self.db_ok:
            return 0
        assert self.db is not None
        S = self.db.m.SessionRow

        def query() -> int:
            from peewee import fn

            rows = list(S.select(fn.MAX(S.fence)).where(S.scope_key == scope_key).tuples())
            return int(rows[0][0] or 0) if rows else 0

        try:
            return await self.db.run(query)
        except BackendDown as exc:
            self.db_failed(exc)
            return 0

    # --- bot state ---------------------------------------------------------------

    async def load_bot_state(self, key: str) -> Any:
        if self.db_ok:
            assert self.db is not None
            try:
                return await self.db.run(self.db.get_state, key)
            except BackendDown as exc:
                self.db_failed(exc)
        latest = None
        for entry in await self.pending_entries():
            if entry.get("k") == "state" and entry["d"]["key"] == key:
                latest = entry["d"]["value"]
        return latest

    async def load_bot_states(self, prefix: str) -> dict[str, Any] | None:
        """Every state whose key starts with ``prefix``, writes still queued
        in the outbox included; ``None`` while the database cannot answer
        (unknown is not empty)."""
        if not self.db_ok:
            return None
        assert self.db is not None
        try:
            states: dict[str, Any] = await self.db.run(self.db.states_with_prefix, prefix)
        except BackendDown as exc:
            self.db_failed(exc)
            return None
        for entry in await self.pending_entries():
            if entry.get("k") == "state" and str(entry["d"]["key"]).startswith(prefix):
                states[entry["d"]["key"]] = entry["d"]["value"]
        return states

    async def save_bot_state(self, key: str, value: Any) -> None:
        if self.db_ok:
            assert self.db is not None
            try:
                await self.db.run(self.db.set_state, key, value)
                return
            except BackendDown as exc:
                self.db_failed(exc)
        await self._queue(self.outbox.entry("state", {"key": key, "value": value}))

    # --- people's data --------------------------------------------------------------

    async def export_user(self, user_id: str) -> dict[str, Any]:
        await self._reach_db("cannot export while the database is unreachable; try again later")
        assert self.db is not None
        data = await self.db.run(self.db.export_user, user_id, slow=True)
        known = {m["id"] for m in data["messages"]}
        for entry in await self.pending_entries():
            if entry.get("k") == "msg" and entry["d"][4] == user_id:
                record = records.from_row(tuple(entry["d"]))
                if record.id not in known:
                    data["messages"].append(record.to_dict())
                    known.add(record.id)
        return data

    async def export_guild(self, guild_id: str) -> dict[str, Any]:
        """What ``guild_id``'s conversations hold: the database's rows, and
        the messages still queued for it in the outbox."""
        await self._reach_db("cannot export while the database is unreachable; try again later")
        assert self.db is not None
        data = await self.db.run(self.db.export_guild, guild_id, slow=True)
        known = {m["id"] for m in data["messages"]}
        for entry in await self.pending_entries():
            if entry.get("k") == "msg" and entry["d"][8] == guild_id and entry["d"][0] not in known:
                record = records.from_row(tuple(entry["d"]))
                data["messages"].append(record.to_dict())
                known.add(record.id)
        return data

    async def forget_user(self, user_id: str) -> dict[str, int]:
        await self._reach_db("cannot forget while the database is unreachable; nothing was deleted, try again later")
        assert self.db is not None

        queued_ids: set[str] = set()

        def mine(entry: dict[str, Any]) -> bool:
            d = entry.get("d")
            if entry.get("k") == "msg" and d[4] == user_id:
                queued_ids.add(d[0])
                return True
            if entry.get("k") == "session":
                return d["s"].get("user_id") == user_id
            return False

        # The queue first, so a replay cannot bring anything back afterwards.
        queued = await self.outbox.forget(mine, self.redis_ok)
        result = await self.db.run(self.db.forget_user, user_id, slow=True)
        self.sent.forget(queued_ids | set(result["message_ids"]))
        cached = 0
        self.recent.forget(result["touched"], user_id)
        for sid in result["touched"]:
            self._session_rows.pop(sid, None)  # gone: the next save must write it whole
            task = self._refills.get(sid)
            if task is not None:
                task.cancel()
        if self.cache is not None:
            try:
                cached = await self.cache.forget(result["touched"], result["scopes"], result["message_ids"])
            except BackendDown as exc:
                self.redis_failed(exc)
                await self._mark_dirty()
        self.arbiter.forget(result["message_ids"])
        return {"messages": result["messages"], "sessions": result["sessions"], "outbox": queued, "cache_keys": cached}

    async def _reach_db(self, why: str) -> None:
        """For rare explicit operations: try the database even while its
        breaker is open (the probe may not have run yet)."""
        if self.db is None:
            raise BackendDown("database", why)
        if not self.db_breaker.ok:
            try:
                await self.db.ping()
            except BackendDown:
                raise BackendDown("database", why) from None

    # --- health ------------------------------------------------------------------

    async def health(self) -> list[HealthReport]:
        reports = []
        reports.append(HealthReport("redis", self.redis_ok, self._detail(self.redis_breaker, self.cache is not None), {"epoch": self.cache.epoch if self.cache else None}))
        # "recovering": a backend is back and the outbox replay, the joins
        # of sessions opened blind and the cache checks are still running.
        # "provisional": sessions opened blind that this instance knows of and
        # has not joined yet, and fresh ones waiting to be judged again after
        # late writes (it tries at every probe once the database answers and
        # the outbox is empty); not 0 long after recovery means a
        # conversation is still split.
        metrics = {
            "dialect": self.db.dialect if self.db else None,
            "recovering": self._recovering.locked(),
            "provisional": len(self._unsettled.keys() | {d["id"] for d in self.recent.provisional_sessions()}),
        }
        reports.append(HealthReport("database", self.db_ok, self._detail(self.db_breaker, self.db is not None), metrics))
        spool = await asyncio.get_running_loop().run_in_executor(None, self.spool.depth)
        stream = 0
        if self.redis_ok:
            try:
                stream = await self.outbox.stream_depth()
            except BackendDown as exc:
                self.redis_failed(exc)
        # An entry is usually in both places: count each write once.
        depth = len({(e.get("i"), e.get("n")) for e in await self.pending_entries()}) if spool or stream else 0
        reports.append(
            HealthReport(
                "outbox",
                depth == 0,
                f"{depth} write{'s' if depth != 1 else ''} waiting for the database" if depth else "empty",
                {"depth": depth, "stream": stream, "spool": spool},
            )
        )
        return reports

    def _detail(self, breaker: Breaker, configured: bool) -> str:
        if not configured:
            return next((p for p in self.problems if p.startswith("DATABASE_URL" if breaker is self.db_breaker else "REDIS_URL")), "not configured")
        return "ok" if breaker.ok else f"down: {breaker.reason}"


def _sort_key(r: MessageRecord) -> tuple[float, int, str]:
    return (r.timestamp, len(r.id), r.id)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:200]
