"""Who answers a message: rules A1-A8 of docs/MEMORY.md.

The database decides, on its own clock (:mod:`plugins.memory.claim_table`).
Redis mirrors each claim (``claim:<id>`` = ``"<owner> <state>"`` or
``done``, expiring after ``claim_ttl``): while the database answers, a live
mirror can only delay a takeover; while it is down, Redis decides with the
same rules. With both down, one instance answers each message: the first
of the instances last seen alive, ranked per message (A7). Per-message state is
one :class:`Held`; one loop renews every held claim, and each standby's
watch asks the database through one grouped query per poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from core.tasks import stop_task
from plugins.memory.breaker import BackendDown
from plugins.memory.claim_table import ClaimTable
from plugins.memory.durable import Batcher

if TYPE_CHECKING:
    from core.clock import Clock
    from plugins.memory.cache import Cache
    from plugins.memory.durable import DurableStore
    from plugins.memory.settings import MemorySettings

log = logging.getLogger("plugins.memory.arbiter")

DONE = b"done"
DONE_TTL = 24 * 3600
# Messages answered here, remembered so a second delivery to this process is
# dropped without asking anyone.
MAX_ANSWERED = 10_000
# A standby's first look comes soon (most replies are quick), then backs off
# to claim_ttl / POLLS_PER_TTL.
FIRST_LOOK = 0.05
POLLS_PER_TTL = 12
# A roster kept by a previous life of this instance is used at start (the
# database may be down) if written less than this many claim periods ago.
ROSTER_KEEP = 10
# Claims whose expiry passed this long ago are pruned (database clock).
CLAIM_KEEP = 24 * 3600.0

# Take the mirror when it is absent (database down: Redis decides, A6).
CLAIM_LUA = """
local v = redis.call('GET', KEYS[1])
if not v then
    redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
    return 'mine'
end
if v == 'done' then return 'done' end
return v
"""
# Set this owner's mirror unless the message is done; unless ARGV[3] is '1'
# (the database has just decided for us), only where the key is absent or
# already ours. 1 when set.
RENEW_LUA = """
local v = redis.call('GET', KEYS[1])
if v == 'done' then return 0 end
if (not v) or ARGV[3] == '1' or string.sub(v, 1, string.len(ARGV[4])) == ARGV[4] then
    redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
    return 1
end
return 0
"""
RELEASE_LUA = """
local v = redis.call('GET', KEYS[1])
if v and string.sub(v, 1, string.len(ARGV[1])) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""


class Backends(Protocol):
    """What the arbiter needs of the memory store (no import of it)."""

    db: DurableStore | None
    cache: Cache | None
    settings: MemorySettings
    clock: Clock
    instance_id: str

    @property
    def db_ok(self) -> bool: ...

    @property
    def redis_ok(self) -> bool: ...

    @property
    def db_down_confirmed(self) -> bool: ...

    @property
    def db_back_at(self) -> float:
        """When (monotonic) the database breaker last closed."""

    @property
    def earlier_lives_settled(self) -> bool:
        """What earlier lives of this instance left in its spool (a reply
        answered unarbitrated among them) is in the database, or there was
        nothing."""

    def db_failed(self, exc: BackendDown) -> None: ...

    def redis_failed(self, exc: BackendDown) -> None: ...

    async def dirty_seen(self) -> None:
        """Another instance wrote to the database while it could not reach
        Redis: make the cache safe to read (rule D4)."""

    async def check(self) -> None:
        """Ping both backends now: what answers is not known down (rule H1)."""

    def recover_soon(self) -> None:
        """Start the recovery work that closes the breakers, unless under way."""

    async def answers(self) -> bool:
        """Whether either backend answers a ping now (no recovery work)."""


@dataclass
class Held:
    """A claim this process holds, from winning it to its reply."""

    message_id: str
    # The pipeline task answering it: when it ends without a reply the
    # claim is released (A2).
    task: asyncio.Task[Any] | None
    # The database has this claim's row (False: won in Redis while the
    # database was down, or unarbitrated: written back by the next renewal).
    in_db: bool
    arbitrated: bool = True
    state: str = "claimed"
    lost: bool = False


@dataclass
class Watch:
    """One message being decided here, from its arrival to a verdict."""

    message_id: str
    sent_at: float | None
    # time.monotonic() when it arrived here.
    received: float
    # The roster when the message arrived here (A7): its first instance
    # for the message may answer it unarbitrated, whatever the roster says
    # later (an outage longer than claim_ttl lets every announcement
    # expire). Announcements replace the list, never change it.
    roster: list[str] = field(default_factory=list)
    # Before this (monotonic), the watch looks but does not claim (A7),
    # unless the first instance announces itself after ``since`` (the
    # database's clock at the hold's first read; None until read).
    # ``read_at``: when (monotonic) its announcement was last read.
    claim_after: float = 0.0
    since: float | None = None
    read_at: float = 0.0

    @property
    def may_claim(self) -> bool:
        return time.monotonic() >= self.claim_after


class Arbiter:
    """Claims for one memory store. ``start()`` after the backends, ``stop()`` before."""

    def __init__(self, backends: Backends, roster_file: Path | None = None, announces: bool = True) -> None:
        self.b = backends
        self.roster_file = roster_file
        self.announces = announces
        self.owner = f"{backends.instance_id.replace(' ', '_')}/{secrets.token_hex(4)}"
        self.held: dict[str, Held] = {}
        self.answered: OrderedDict[str, None] = OrderedDict()
        # Sends refused here (A4) until a claim is won again: a transport that
        # asked first (a streamed preview) must not be told yes by the core's
        # own ask a moment later.
        self.refused: OrderedDict[str, None] = OrderedDict()
        self.watching: set[str] = set()
        # The instances alive at the last announcement (A7), this one
        # included: instance ids, stable across restarts (BOT_INSTANCE_ID), so
        # a restart does not change the roster.
        self.member = backends.instance_id
        self.roster: list[str] = self._last_roster()
        # Claims won at once, taken over from a dead holder, and conceded
        # (another instance answered): the ops plugin's metrics.
        self.won = self.takeovers = self.conceded = 0
        self._table: ClaimTable | None = None
        self._claims: Batcher | None = None
        self._looks: Batcher | None = None
        self._renewer: asyncio.Task[None] | None = None
        self._pruned = 0.0
        # Per instance: the last read of its announcement (A7), shared by
        # the watches that ask at the same moment.
        self._reads: dict[str, tuple[float, asyncio.Future[tuple[float | None, float]]]] = {}

    @property
    def ttl(self) -> float:
        return self.b.settings.claim_ttl

    def start(self) -> None:
        db = self.b.db
        if db is not None:
            table = self._table = ClaimTable(db)
            self._claims = Batcher(db, table.claim_many, lambda item: table.claim(*item))
            self._looks = Batcher(db, lambda ids: list(map(table.watch(ids).__getitem__, ids)), lambda mid: table.watch([mid])[mid])
        self._renewer = asyncio.create_task(self._renew_loop(), name=f"memory-claims-{self.owner}")

    async def stop(self) -> None:
        await stop_task(self._renewer)
        self._renewer = None
        # A clean stop hands what it holds to the standbys at once.
        for message_id in list(self.held):
            with contextlib.suppress(Exception):
                await self.release(message_id)
        if self.announces and self._table is not None and self.b.db_ok:
            with contextlib.suppress(BackendDown):
                await self._db(self._table.retire, self.member)

    # --- Redis mirror -------------------------------------------------------------

    def key(self, message_id: str) -> str:
        assert self.b.cache is not None
        return f"{self.b.cache.prefix}claim:{message_id}"

    def _value(self, state: str) -> bytes:
        return f"{self.owner} {state}".encode()

    async def _redis(self, *commands: tuple[Any, ...]) -> list[Any] | None:
        """Run ``commands`` on Redis; ``None`` when it is down."""
        b = self.b
        if not b.redis_ok:
            return None
        assert b.cache is not None
        try:
            return await b.cache.run(*commands)
        except BackendDown as exc:
            b.redis_failed(exc)
            return None

    @property
    def _db_usable(self) -> bool:
        """Claims go to the database unless it is known down (A6): a breaker
        one slow call opened, or kept open by recovery work while the
        database answers, does not stop them."""
        return self._table is not None and (self.b.db_ok or not self.b.db_down_confirmed)

    async def _db(self, fn: Any, *args: Any) -> Any:
        """Run a claim statement; raises :class:`BackendDown` when the database is down."""
        b = self.b
        if not self._db_usable:
            raise BackendDown("database", "circuit open")
        assert b.db is not None
        try:
            return await b.db.run(fn, *args)
        except BackendDown as exc:
            b.db_failed(exc)
            raise

    async def _mirror(self, message_id: str, state: str, decided: bool) -> bool:
        """Set this owner's mirror (A6); ``False`` when Redis says the claim
        is another's or done (only meaningful when ``decided`` is false)."""
        found = await self._redis(self._mirror_command(message_id, state, decided))
        return found is None or bool(found[0])

    def _mirror_command(self, message_id: str, state: str, decided: bool) -> tuple[Any, ...]:
        return ("EVAL", RENEW_LUA, 1, self.key(message_id), self._value(state), int(self.ttl * 1000), "1" if decided else "0", f"{self.owner} ")

    def _mirror_later(self, message_id: str, state: str) -> None:
        task = asyncio.ensure_future(self._mirror(message_id, state, True))
        task.add_done_callback(lambda t: t.cancelled() or t.exception())

    # --- A1: claim ------------------------------------------------------------------

    async def claim(self, message_id: str, sent_at: float | None) -> bool:
        """``True`` if this instance answers ``message_id`` now: it won the
        claim, or kept watch as a standby and took it over (A1, A3)."""
        if message_id in self.held or message_id in self.answered or message_id in self.watching:
            return False  # being answered, or answered, here
        self.watching.add(message_id)
        try:
            verdict = await self._decide(message_id, sent_at)
        except asyncio.CancelledError:
            # Cut short (the core's hook timeout, a stop) while another
            # instance held it: not ours, whatever the core does next (A4).
            if message_id not in self.held:
                self._remember(message_id)
            raise
        finally:
            self.watching.discard(message_id)
        if verdict == "done":
            self.conceded += 1
            self._remember(message_id)
        return verdict == "mine"

    async def _decide(self, message_id: str, sent_at: float | None) -> str:
        watch = Watch(message_id, sent_at, time.monotonic(), self.roster)
        verdict = await self._first_ask(watch)
        if verdict == "unknown":
            # Both breakers are open, which may be old news (this process was
            # paused past its connections): A7 applies only if neither
            # backend answers a ping made now.
            if not await self.b.answers() and self._unarbitrated(watch):
                return "mine"
            await self._wait_for_a_backend()
            verdict = "unknown"
        delay = FIRST_LOOK
        while verdict in ("live", "unknown"):
            if verdict == "unknown":
                self._hold_back(watch)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.ttl / POLLS_PER_TTL)
            verdict = await self._look(watch)
        return verdict

    def _hold_back(self, watch: Watch) -> None:
        """A7: nothing arbitrated this message for a while. The first
        instance for it answered it unarbitrated, or nobody did: until that
        instance shows it wrote back what it held (it announces itself
        again), or for one claim period, this watch looks but does not claim."""
        if self.first_for(watch.message_id, watch.roster) == self.member:
            return
        watch.since = None
        watch.read_at = time.monotonic()
        watch.claim_after = watch.read_at + self.ttl

    async def _first_wrote_back(self, watch: Watch) -> bool:
        """Whether the first instance for a held-back message announced
        itself since the hold began (A7); the first read sets the mark.
        An announcement's time is the database's clock read before its
        check: one that commits late (a stalled call) is older than the
        mark, whenever it lands."""
        if self._table is None:
            return False
        try:
            watch.read_at, (expiry, now) = await self._announcement(self.first_for(watch.message_id, watch.roster), watch.read_at)
        except BackendDown:
            return False
        if watch.since is None:
            watch.since = now
            return False
        if expiry is not None and expiry - self.ttl > watch.since:
            watch.claim_after = 0.0
            return True
        return False

    async def _announcement(self, member: str, after: float) -> tuple[float, tuple[float | None, float]]:
        """``(when read, (member's announced expiry, the database's clock))``,
        from a read begun after ``after`` (monotonic); watches asking at
        once share one read. A failed read is forgotten: kept, it would
        answer every later look of the watches that shared it."""
        assert self._table is not None
        read = self._reads.get(member)
        if read is None or read[0] <= after:
            read = (time.monotonic(), asyncio.ensure_future(self._db(self._table.announcement, member)))
            self._reads[member] = read
        try:
            return read[0], await asyncio.shield(read[1])
        except BackendDown:
            if self._reads.get(member) is read:
                del self._reads[member]
            raise

    async def _first_ask(self, watch: Watch) -> str:
        """``mine``, ``done``, ``live`` (someone else holds it) or
        ``unknown`` (neither backend answers)."""
        message_id = watch.message_id
        if self._db_usable and self._claims is not None:
            # The mirror is read in the same moment: a claim Redis decided
            # while the database was down, not yet written back (A6).
            mirror = asyncio.ensure_future(self._mirror_says(message_id))
            try:
                verdict, holder, dirty = await self._claims((message_id, self.owner, self.ttl))
            except BackendDown as exc:
                self.b.db_failed(exc)
                await mirror
            else:
                said = await mirror
                if verdict == "mine":
                    return await self._won(message_id, said, dirty)
                if verdict == "expired":
                    return await self._take_over(message_id, holder)
                return str(verdict)
        return await self._ask_redis(watch)

    async def _won(self, message_id: str, said: str | None, dirty: bool) -> str:
        """The database gave us the claim; its mirror may say otherwise."""
        if said is not None:
            assert self._table is not None
            with contextlib.suppress(BackendDown):
                await self._db(self._table.release, message_id, self.owner)
            return said
        self.won += 1
        self._hold(message_id, in_db=True)
        self._mirror_later(message_id, "claimed")
        if dirty:
            await self.b.dirty_seen()
        return "mine"

    async def _ask_redis(self, watch: Watch) -> str:
        """The database is down: Redis decides (A6), but only once a probe
        since the breaker opened confirmed it (a slow call alone may have
        opened it, while the others still claim in the database), and only
        what Redis can know: not a message received before Redis last lost
        data (a flush, a restart, an invalidation: it may have held the
        message's claim or answer), nor an older one (a loss while this
        process was paused is not seen yet). Those wait for the database."""
        if not self.b.db_down_confirmed and self.b.db is not None:
            await self._probe_once()
            if self._db_usable:
                return "live"  # the database answers again: the next look asks it
        if not self._redis_knows(watch):
            return "live" if self.b.redis_ok else "unknown"
        found = await self._redis(("EVAL", CLAIM_LUA, 1, self.key(watch.message_id), self._value("claimed"), int(self.ttl * 1000)))
        if found is None:
            return "unknown"
        if found[0] == b"mine":
            self._hold(watch.message_id, in_db=False)
            return "mine"
        return "done" if found[0] == DONE else "live"

    def _redis_knows(self, watch: Watch) -> bool:
        if self.b.db is None or set(self.roster) <= {self.member}:
            return True  # Redis is the only arbiter there is, or nobody else could claim
        if not watch.may_claim or self._age(watch.sent_at) > self.b.settings.unarbitrated_max_age:
            return False
        return self.b.cache is None or self.b.cache.epoch_changed_at < watch.received

    async def _look(self, watch: Watch) -> str:
        """A standby's look at a claim it watches (A3)."""
        if self._db_usable and self._looks is not None:
            try:
                state, holder = await self._looks(watch.message_id)
            except BackendDown as exc:
                self.b.db_failed(exc)
            else:
                if state in ("done", "live"):
                    return str(state)
                if not watch.may_claim and not await self._first_wrote_back(watch):
                    return "live"
                if state == "expired":
                    return await self._take_over(watch.message_id, holder)
                return await self._claim_absent(watch.message_id)
        return await self._ask_redis(watch)

    async def _mirror_says(self, message_id: str) -> str | None:
        """``done``, ``live`` (another owner's unexpired mirror) or ``None``.
        An unreadable mirror says ``live`` for one claim period after the
        database came back: a claim Redis decided during the outage may not
        be written back yet (its holder's next renewal does it, A6)."""
        found = await self._redis(("GET", self.key(message_id)))
        if found is None:
            return "live" if time.monotonic() - self.b.db_back_at < self.ttl else None
        if found[0] is None:
            return None
        if found[0] == DONE:
            return "done"
        return None if bytes(found[0]).startswith(f"{self.owner} ".encode()) else "live"

    async def _take_over(self, message_id: str, holder: str | None) -> str:
        """The database says the claim expired: take it over, fenced on its
        holder, unless its mirror is still renewed (A3, A6)."""
        said = await self._mirror_says(message_id)
        if said is not None:
            return said
        assert self._table is not None
        try:
            won = await self._db(self._table.take_over, message_id, self.owner, holder, self.ttl)
        except BackendDown:
            return "live"
        if not won:
            return "live"  # another standby won, or the reply landed: the next look says which
        log.warning("memory: message %s: its holder %s stopped renewing its claim; taking it over", message_id, holder)
        self.takeovers += 1
        self._hold(message_id, in_db=True)
        self._mirror_later(message_id, "claimed")
        return "mine"

    async def _claim_absent(self, message_id: str) -> str:
        """No row: claimed in Redis while the database was down (its holder
        writes it back with its next renewal), or released."""
        said = await self._mirror_says(message_id)
        if said is not None:
            return said
        assert self._claims is not None
        try:
            verdict, _holder, dirty = await self._claims((message_id, self.owner, self.ttl))
        except BackendDown as exc:
            self.b.db_failed(exc)
            return "live"
        if verdict == "mine":
            return await self._won(message_id, None, dirty)
        return "done" if verdict == "done" else "live"

    async def _probe_once(self) -> None:
        """Both backends pinged (one round shared by every claim that needs
        it now), and the recovery work started: not awaited, a replay may
        wait long on another instance's locks (rule H1)."""
        with contextlib.suppress(Exception):
            await self.b.check()
        self.b.recover_soon()

    def first_for(self, message_id: str, roster: list[str] | None = None) -> str:
        """The instance that comes first for ``message_id`` among those
        alive at the last announcement, or in ``roster`` (rendezvous
        hashing: every instance with the same roster picks the same one)."""
        peers = set(self.roster if roster is None else roster) | {self.member}
        return max(peers, key=lambda member: hashlib.blake2b(f"{member} {message_id}".encode(), digest_size=8).digest())

    def ranked_first(self, message_id: str) -> bool:
        return self.first_for(message_id) == self.member

    def _unarbitrated(self, watch: Watch) -> bool:
        """Neither backend answers: answer now only if ranked first (when
        it arrived) and the message is young (A7)."""
        message_id, sent_at = watch.message_id, watch.sent_at
        if self.first_for(message_id, watch.roster) != self.member:
            log.info("memory: neither backend answers; message %s is another instance's to answer: keeping watch", message_id)
            return False
        age = self._age(sent_at)
        if age > self.b.settings.unarbitrated_max_age:
            log.warning("memory: message %s is %.0f s old and neither backend answers: keeping watch until one does", message_id, age)
            return False
        log.info("memory: neither backend answers; handling message %s unarbitrated", message_id)
        self._hold(message_id, in_db=False, arbitrated=False)
        return True

    def _age(self, sent_at: float | None) -> float:
        """Bot-clock seconds since the message was sent (0 when unknown)."""
        return 0.0 if sent_at is None else self.b.clock.now() - sent_at

    async def _wait_for_a_backend(self) -> None:
        """A7: until either backend answers a ping, then a probe."""
        delay = FIRST_LOOK
        while not await self.b.answers():
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.ttl / POLLS_PER_TTL)
        await self._probe_once()

    def _hold(self, message_id: str, *, in_db: bool, arbitrated: bool = True) -> None:
        self.held[message_id] = Held(message_id, asyncio.current_task(), in_db, arbitrated)
        self.refused.pop(message_id, None)

    def _remember(self, message_id: str) -> None:
        self.answered[message_id] = None
        while len(self.answered) > MAX_ANSWERED:
            self.answered.popitem(last=False)

    # --- A4: sending, done ------------------------------------------------------------

    async def confirm(self, message_id: str) -> bool:
        """Right before the reply is sent: ``claimed -> sending`` (A4).
        ``False`` when another instance took the message over."""
        held = self.held.get(message_id)
        if held is None:
            # Not claimed here: answered elsewhere if this process conceded it.
            return message_id not in self.answered and message_id not in self.refused
        if not held.arbitrated and not held.lost and not await self._arbitrate_now(held):
            return True  # nothing can arbitrate it (A7)
        table = self._table
        if not held.lost and table is not None and self._db_usable:
            try:
                if await self._db(table.sending, message_id, self.owner, self.ttl):
                    # The mirror says "sending" from the next renewal on:
                    # while the database answers, only it decides (A6).
                    held.state, held.in_db = "sending", True
                    return True
                held.lost = True
            except BackendDown:
                pass
        if not held.lost and not self.b.db_ok and await self._mirror(message_id, "sending", False):
            # Redis decides (or, with both down, nothing can: A7, and the
            # transport's nonce is the last line of defence).
            held.state = "sending"
            return True
        log.warning("memory: reply to message %s not sent: another instance took the message over", message_id)
        self.held.pop(message_id, None)
        self.refused[message_id] = None
        while len(self.refused) > MAX_ANSWERED:
            self.refused.popitem(last=False)
        return False

    async def _arbitrate_now(self, held: Held) -> bool:
        """A claim answered unarbitrated, about to be sent: if a backend
        answers now, it decides first (a standby may have claimed the
        message while this process was paused or slow: the claim is then
        lost). Asked directly, whatever the breakers say (they may be old
        news after a pause) and without waiting for a probe: the database
        writes the claim back, else Redis mirrors it. ``False`` when
        neither answers (A7)."""
        mid = held.message_id
        if await self._renew_in_db([held], direct=True):
            held.arbitrated = True
            return True
        if self.b.cache is not None:
            with contextlib.suppress(BackendDown):
                (kept,) = await self.b.cache.run(self._mirror_command(mid, "claimed", False))
                held.arbitrated = True
                held.lost = held.lost or not kept
                return True
        return False

    def answered_here(self, message_id: str) -> None:
        """The reply to ``message_id`` is stored (its row, and the ``done``
        mirror written with the window append, say so to the others)."""
        self.held.pop(message_id, None)
        self._remember(message_id)

    def spooled(self, message_id: str) -> None:
        """The reply went to the outbox (database down): the claim stays held
        and renewed, by this process alone, until the replay stores it (A4)."""
        held = self.held.get(message_id)
        if held is not None:
            held.task, held.state = None, "sending"

    async def done(self, message_id: str) -> None:
        """A command's answer (no reply record) was sent: the claim is done."""
        self.answered_here(message_id)
        if self._table is not None and self.b.db_ok:
            with contextlib.suppress(BackendDown):
                await self._db(self._table.done, message_id, self.owner)
        await self._redis(("SET", self.key(message_id), DONE, "EX", DONE_TTL))

    async def release(self, message_id: str) -> None:
        """Give a claim up so a standby takes it over at its next look."""
        self.held.pop(message_id, None)
        if self._table is not None and self.b.db_ok:
            with contextlib.suppress(BackendDown):
                await self._db(self._table.release, message_id, self.owner)
        if self.b.cache is not None:
            await self._redis(("EVAL", RELEASE_LUA, 1, self.key(message_id), f"{self.owner} "))

    def forget(self, message_ids: Any) -> None:
        for mid in message_ids:
            self.answered.pop(str(mid), None)
            self.held.pop(str(mid), None)
            self.refused.pop(str(mid), None)

    async def end_earlier_lives(self) -> None:
        """A8: the claims and session leases an earlier life of this
        instance left (it was killed) end now, so standbys take its messages
        over at their next look instead of a claim period later. Called at
        start, once what that life sent and spooled is in the database."""
        if self._table is None or not self.b.db_ok or " " in self.b.instance_id:
            # Owners spell a space "_": "bot a" would end "bot_a"'s claims.
            return
        prefix = self.owner.rsplit("/", 1)[0] + "/"
        try:
            ended, scopes = await self._db(self._table.end_lives, prefix, self.owner)
        except BackendDown:
            return
        if not ended:
            return
        log.warning("memory: ended %d claim(s) an earlier life of this instance held; standbys take them over", len(ended))
        cache = self.b.cache
        if cache is not None:
            await self._redis(
                *[("EVAL", RELEASE_LUA, 1, self.key(mid), prefix) for mid in ended],
                *[("EVAL", RELEASE_LUA, 1, cache.keys.lease(scope), f"{self.b.instance_id} ") for scope in scopes],
            )

    # --- A2: renew ---------------------------------------------------------------------

    async def _renew_loop(self) -> None:
        while True:
            # Renewed first: an announcement says every claim held here has
            # its row (A7).
            for step in (self.renew, self.announce):
                try:
                    await step()
                except Exception:  # noqa: BLE001 - the loop must outlive anything
                    log.exception("memory: renewing claims failed")
            await asyncio.sleep(self.ttl / 3)

    async def announce(self) -> None:
        """Say this instance is alive and read who else is (A7); the roster
        is kept in the data dir for a restart while the database is down."""
        if not self._all_written():
            return  # not yet: a standby holding back for these would claim them (A7)
        if self.announces and self._table is not None and self.b.db_ok:
            with contextlib.suppress(BackendDown):
                # Asked again on the database thread: a call abandoned after a
                # timeout may run after this instance answered unarbitrated.
                self.roster = await self._db(self._table.announce, self.member, self.ttl, self._all_written)
                if self.roster_file is not None:
                    with contextlib.suppress(OSError):
                        self.roster_file.parent.mkdir(parents=True, exist_ok=True)
                        self.roster_file.write_text("\n".join(self.roster))

    def _all_written(self) -> bool:
        """Every claim held here has its row, and what earlier lives left in
        the spool is in the database: an announcement may say so (A7). Read
        from a database thread too (a copy of the values: no iteration over
        a dict the loop changes)."""
        return self.b.earlier_lives_settled and all(held.in_db for held in list(self.held.values()))

    def _last_roster(self) -> list[str]:
        """The roster a previous life of this instance kept, if recent."""
        path = self.roster_file
        with contextlib.suppress(OSError):
            if path is not None and time.time() - path.stat().st_mtime < ROSTER_KEEP * self.ttl:
                return [line for line in path.read_text().splitlines() if line]
        return []

    async def renew(self) -> None:
        """Renew every claim held here; write back those the database lacks;
        release those whose pipeline ended without a reply (A2, A6)."""
        for held in list(self.held.values()):
            if held.task is not None and held.task.done():
                await self.release(held.message_id)
        held_now = list(self.held.values())
        decided = await self._renew_in_db(held_now)
        if self.b.cache is None or not held_now:
            return
        found = await self._redis(*[self._mirror_command(h.message_id, h.state, decided) for h in held_now])
        if found is not None and not decided:
            for held, kept in zip(held_now, found):
                if not kept and held.arbitrated:
                    held.lost = True
        await self._prune()

    async def _renew_in_db(self, held_now: list[Held], direct: bool = False) -> bool:
        """Renew ``held_now`` in the database, writing back those it lacks;
        ``direct``: asked whatever the breaker says, and a failure trips
        nothing (A7's question before an unarbitrated reply is sent)."""
        table, db = self._table, self.b.db
        if not held_now or table is None or db is None or not (direct or self.b.db_ok):
            return False
        ids = [h.message_id for h in held_now]
        write_back = [h.message_id for h in held_now if not h.in_db]
        try:
            lost = set(await (db.run if direct else self._db)(table.renew, self.owner, ids, write_back, self.ttl))
        except BackendDown:
            return False
        for held in held_now:
            held.in_db = True
            held.lost = held.lost or held.message_id in lost
        return True

    async def _prune(self) -> None:
        if self._table is None or not self.b.db_ok or time.monotonic() - self._pruned < 3600:
            return
        self._pruned = time.monotonic()
        with contextlib.suppress(BackendDown):
            await self._db(self._table.prune, CLAIM_KEEP)
