"""Claims on incoming messages and leases on sessions, across instances.

Both live in Redis as ``{"o": owner, "t": token, "x": expires_at}`` where
``expires_at`` is on the bot clock (so tests advance it without sleeping);
the Redis TTL is only a backstop that cleans up long after.

- A **claim** (``claim:<message id>``) makes one instance handle a message.
  When the reply is stored the claim becomes ``done`` (kept for a day), and
  the reply record ``reply:<id>`` in the database means done too, so a
  redelivery after a Redis flush still gets no second reply. A claim whose
  holder died expires and is taken over.
- A **lease** (``lease:<scope>``) makes one instance at a time handle a
  session's messages. Each acquisition takes a new **fencing token** from
  ``fence:<scope>``; session saves carry it and the database rejects a save
  older than the stored token, so an instance that paused past its lease
  cannot overwrite newer state.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import orjson

from plugins.memory.breaker import BackendDown

if TYPE_CHECKING:
    from plugins.memory.store import MemoryStore

log = logging.getLogger("plugins.memory.coordination")

DONE = b"done"
DONE_TTL = 24 * 3600
BACKSTOP_TTL = 7 * 24 * 3600
FENCE_TTL = 30 * 24 * 3600
POLL = 0.02
# A reply whose message was held longer than this (real seconds) re-checks
# its claim before it is sent.
CONFIRM_AFTER = 1.0
# A Redis claim won later than this (real seconds) after it was asked for.
SLOW_CLAIM = 0.2
# A claim won this soon (real seconds) after this instance saw the cache
# epoch change is decided like a late one: the empty key may be another
# instance's claim that Redis lost, whose reply is being sent and stored
# (every reply re-reads its claim first, so only that short window is open).
RECENT_FLUSH = 0.5
MAX_HELD_CLAIMS = 10_000
# With both breakers open, a claim waits this long (real seconds) at most for
# a probe to confirm both backends are down before answering unarbitrated.
CONFIRM_DOWN_WAIT = 2.0
# The event loop's heartbeat: a beat this much later than due means the
# process was stalled (SIGSTOP, a frozen VM, a blocked loop).
BEAT = 0.1
STALL = 1.0

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

# (scope key, fencing token) of the lease the current task holds.
current_fence: contextvars.ContextVar[tuple[str, int] | None] = contextvars.ContextVar("memory_fence", default=None)
# The scope's cached session as read in the lease's own round trip:
# [scope key, epoch, raw value], emptied by the first load_session that uses
# it or by any save of the scope (a list, so a hook running in a copied
# context empties it for everyone).
prefetched_session: contextvars.ContextVar[list[Any] | None] = contextvars.ContextVar("memory_session", default=None)


def _owners(*raws: Any) -> frozenset[str]:
    """The instances whose claims ``raws`` (Redis values) are."""
    return frozenset(str(h["o"]) for h in map(_holder, raws) if h is not None and "o" in h)


def _holder(raw: Any) -> dict[str, Any] | None:
    if raw is None or raw == DONE:
        return None
    try:
        value = orjson.loads(raw)
        return value if isinstance(value, dict) else None
    except orjson.JSONDecodeError:
        return None


class Coordinator:
    def __init__(self, store: MemoryStore) -> None:
        self.store = store
        # Tokens of the claims and leases this instance holds; claims by
        # message id too, bounded (a message refused mid-way never gets its
        # reply stored, so its claim token is only dropped by age).
        self.mine: set[str] = set()
        self.claimed: OrderedDict[str, str] = OrderedDict()
        # Messages answered here, oldest first, with when (bot clock).
        self.recent_answers: OrderedDict[str, float] = OrderedDict()
        self.local_locks: dict[str, asyncio.Lock] = {}
        # When (monotonic) each held claim was taken, for still_mine(), and
        # when (bot clock) it expires; ``None`` for a message taken with
        # nothing to arbitrate.
        self.held_since: dict[str, float] = {}
        self.expires: dict[str, float | None] = {}
        # The cache's epoch_changes when each claim was taken: a change seen
        # since (this instance read a flushed or restarted Redis while
        # answering) means the claim may be gone and another instance may
        # hold the message now.
        self.claim_epochs: dict[str, int] = {}
        # When (bot clock) each held message was sent, as its claim was asked.
        self.sent_ats: dict[str, float | None] = {}
        # Messages whose claim is being decided here: a second delivery of
        # one to this instance meanwhile is left to the first.
        self.claiming: set[str] = set()
        # Of those, the ones whose claim this instance has won and now checks
        # (another instance's report may list them): its reports list them.
        # Not the ones it waits on while another instance holds the claim,
        # or that instance would back off because of this one's wait.
        self.deciding: set[str] = set()
        # The probe that confirms "both down" for claims, shared by all of them.
        self._probing: asyncio.Future[None] | None = None
        self._probe_started = -1e9
        # The probe started when a stall was noticed: claims and replies wait
        # for it before trusting what the breakers say.
        self._resync: asyncio.Future[None] | None = None
        self._tick = time.monotonic()
        self._beat_handle: asyncio.TimerHandle | None = None

    @property
    def cache(self) -> Any:
        return self.store.cache

    # --- stalls -----------------------------------------------------------------

    def _beat(self) -> None:
        now = time.monotonic()
        if now - self._tick > STALL:
            # Everything this process knew about the backends is as old as
            # the stall: its breakers opened on timeouts that ran out while
            # it was stopped, its connections may have been closed meanwhile.
            # One probe says what is true now; until it has, a claim or a
            # reply waits for it (the first beat runs before the requests
            # that queued up during the stall are handled).
            log.warning("memory: this process was stalled for %.1f s; probing the backends before trusting them", now - self._tick)
            self._probe_started = now
            self._probing = self._resync = asyncio.ensure_future(self._probe_once())
        self._tick = now
        self._beat_handle = asyncio.get_running_loop().call_later(BEAT, self._beat)

    def _start_beat(self) -> None:
        if self._beat_handle is None:
            self._tick = time.monotonic()
            self._beat_handle = asyncio.get_running_loop().call_later(BEAT, self._beat)

    def close(self) -> None:
        if self._beat_handle is not None:
            self._beat_handle.cancel()
            self._beat_handle = None

    async def _settle(self) -> None:
        """After a stall, wait (bounded) for the probe that followed it."""
        task = self._resync
        if task is not None and not task.done():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(task), CONFIRM_DOWN_WAIT)

    def claim_key(self, message_id: str) -> str:
        return f"{self.cache.prefix}claim:{message_id}"

    def _claim_value(self, token: str) -> tuple[bytes, float]:
        """A claim by this instance, as stored in Redis, and its expiry."""
        store = self.store
        expires = store.clock.now() + store.settings.claim_ttl
        return orjson.dumps({"o": store.instance_id, "t": token, "x": expires}), expires

    # --- claims ----------------------------------------------------------------

    async def claim(self, message_id: str, sent_at: float | None = None) -> bool:
        """``True`` if this instance should handle ``message_id`` now.

        Claims live in Redis; while Redis is unreachable they live in the
        database (``claims`` table); with both down (confirmed by a probe,
        see :meth:`_confirm_down`) every instance answers (nothing can
        arbitrate, and an answer beats silence)."""
        if message_id in self.recent_answers or message_id in self.claimed or message_id in self.claiming:
            return False  # answered here already, or being handled here now
        self.claiming.add(message_id)
        try:
            won = await self._decide(message_id, sent_at)
        finally:
            self.claiming.discard(message_id)
        if won:
            self.sent_ats[message_id] = sent_at
        return won

    def _too_old(self, sent_at: float | None) -> float | None:
        """The message's age if it is too old to answer unarbitrated."""
        if sent_at is None:
            return None
        age = self.store.clock.now() - sent_at
        return age if age > self.store.settings.unarbitrated_max_age else None

    async def _decide(self, message_id: str, sent_at: float | None) -> bool:
        store = self.store
        self._start_beat()
        for confirmed in (False, True):
            await self._settle()
            if store.redis_ok:
                try:
                    return await self._claim(message_id, sent_at)
                except BackendDown as exc:
                    store.redis_failed(exc)
            if not confirmed and not store.redis_ok and "Timeout" not in store.redis_breaker.reason:
                # Redis's breaker opened on a closed or refused connection,
                # not on a timeout: Redis restarted, or this process was
                # paused past its connections. A probe likely finds it back,
                # and a claim taken in the database meanwhile is one the
                # instances on Redis do not see. (A timeout is not waited
                # on: a blackholed Redis is routed around at once, G7.)
                await self._confirm_down()
                if message_id in self.recent_answers or message_id in self.claimed:
                    return False
                if store.redis_ok:
                    continue
            if store.db_ok:
                try:
                    return await self._claim_in_db(message_id, sent_at)
                except BackendDown as exc:
                    store.db_failed(exc)
            if confirmed:
                break
            await self._confirm_down()
            if message_id in self.recent_answers or message_id in self.claimed:
                return False
            if not store.redis_ok and not store.db_ok:
                break
        if await store.reply_exists(message_id):
            return False
        if message_id in self.recent_answers or message_id in self.claimed:
            return False  # a second delivery here got this far first
        age = self._too_old(sent_at)
        if age is not None:
            # G6 answers what arrives while memory is down; an older message
            # (this process was paused, or its backlog waited) may have been
            # answered by another instance meanwhile, and nothing can tell:
            # stay silent rather than answer twice. A redelivery that
            # arrives fresh elsewhere is answered there.
            log.warning(
                "memory: message %s not answered: %.0f s old and neither backend answers, so another instance may have answered it",
                message_id,
                age,
            )
            return False
        log.info("memory: neither backend answers; handling message %s unarbitrated", message_id)
        self._hold(message_id, secrets.token_hex(8), None)
        return True

    async def _confirm_down(self) -> None:
        """Both breakers are open: let one probe confirm it before a message
        is answered with nothing to arbitrate. A breaker also trips on a
        connection the backend closed while it was briefly away, or on a
        timeout that fired because this process was paused (SIGSTOP, a long
        GC, a starved VM): then the backends are back, and answering
        unarbitrated would answer again what another instance answered
        meanwhile. One probe is shared by every claim waiting; a probe that
        started within ``probe_interval`` is trusted as is, so a real double
        outage costs a message at most one probe's time."""
        # A probe counts only if it started recently, and after the breakers
        # last opened: one that began before this process was paused ends at
        # once when it resumes (its timeouts ran out during the pause), and
        # says "down" about backends that may well be up; one that began
        # before a call tripped a breaker has not seen what that call saw.
        store = self.store
        opened = max((b.since for b in (store.redis_breaker, store.db_breaker) if not b.ok), default=-1e9)
        fresh = max(time.monotonic() - store.settings.probe_interval, opened)
        task = self._probing
        if task is None or task.done() or self._probe_started < fresh:
            if (task is None or task.done()) and self._probe_started >= fresh:
                return
            self._probe_started = time.monotonic()
            task = self._probing = asyncio.ensure_future(self._probe_once())
        try:
            await asyncio.wait_for(asyncio.shield(task), CONFIRM_DOWN_WAIT)
        except asyncio.TimeoutError:
            pass  # the backends are slow to answer: down enough

    async def _probe_once(self) -> None:
        try:
            await self.store.probe()
        except Exception:  # noqa: BLE001 - the probe loop reports its own failures
            log.debug("memory: claim probe failed", exc_info=True)

    async def _claim_in_db(self, message_id: str, sent_at: float | None = None) -> bool:
        store = self.store
        db = store.db
        assert db is not None
        token = secrets.token_hex(8)
        deadline = time.monotonic() + store.settings.claim_wait
        self.mine.add(token)
        try:
            return await self._claim_in_db_loop(message_id, token, deadline, sent_at)
        finally:
            if self.claimed.get(message_id) != token:
                self.mine.discard(token)

    async def _claim_in_db_loop(self, message_id: str, token: str, deadline: float, sent_at: float | None) -> bool:
        store = self.store
        db = store.db
        assert db is not None
        while True:
            now = store.clock.now()
            expires = now + store.settings.claim_ttl
            state, holder = await db.run(db.try_claim, message_id, store.instance_id, token, expires)
            if state == "done":
                return False
            if state == "mine":
                return await self._claimed_in_db(message_id, token, expires, sent_at, frozenset())
            owner, held_token, held_until = holder
            if held_token in self.mine and held_token != token:
                return False  # a second delivery while this instance handles the first
            if owner == store.instance_id or float(held_until) <= now:
                if await db.run(db.take_claim, message_id, store.instance_id, token, expires, held_token):
                    log.info("memory: took over the expired claim on message %s", message_id)
                    return await self._claimed_in_db(message_id, token, expires, sent_at, frozenset({str(owner)}))
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(POLL)

    async def _claimed_in_db(
        self, message_id: str, token: str, expires: float, sent_at: float | None, suspects: frozenset[str]
    ) -> bool:
        """A database claim was won: hold it, unless another instance may
        still answer the message (see :mod:`plugins.memory.reports`). Asked
        for every message, not only late ones: an instance that reaches
        Redis claims there, where this one cannot see it, and its reply may
        not be stored yet."""
        store = self.store
        db = store.db
        assert db is not None
        with self._deciding(message_id):
            verdict = await store.reports.settled(message_id, sent_at, suspects)
            if verdict == "busy" or (verdict == "unknown" and self._too_old(sent_at) is not None) or await store.reply_exists(message_id):
                with contextlib.suppress(BackendDown):
                    await db.run(db.release_claim, message_id, token)
                return False
            self._hold(message_id, token, expires)
            return True

    @contextlib.contextmanager
    def _deciding(self, message_id: str) -> Iterator[None]:
        self.deciding.add(message_id)
        try:
            yield
        finally:
            self.deciding.discard(message_id)

    def _epoch_changes(self) -> int:
        return self.cache.epoch_changes if self.cache is not None else 0

    def _late(self, sent_at: float | None) -> bool:
        """Handled long after it was sent: a redelivery or a backlog, which
        another instance may have answered or may still be answering."""
        return sent_at is not None and self.store.clock.now() - sent_at > self.store.settings.late_message_age

    async def _claim(self, message_id: str, sent_at: float | None = None) -> bool:
        store = self.store
        key = self.claim_key(message_id)
        token = secrets.token_hex(8)
        started = time.monotonic()
        deadline = started + store.settings.claim_wait
        # Whether the reply is already stored (a redelivery after Redis lost
        # its claims) is asked of the database while Redis is asked too.
        answered = asyncio.ensure_future(store.answered_or_claimed(message_id))
        # Known as ours before Redis is asked: a concurrent second delivery
        # here must see the claim as this instance's live one, not as a
        # stale claim of an earlier life of this instance.
        self.mine.add(token)
        # Another instance's live claim seen by an earlier attempt: if the
        # key is then gone (FLUSHALL, Redis restarted empty, eviction), its
        # holder is most likely still answering, and winning the empty key
        # would answer the message a second time.
        watched: bytes | None = None
        try:
            while True:
                now = store.clock.now()
                value, expires = self._claim_value(token)
                won, raw, epoch = await self.cache.run(
                    ("SET", key, value, "NX", "EX", BACKSTOP_TTL), ("GET", key), ("GET", self.cache.epoch_key)
                )
                self.cache._seen_epoch(epoch)
                if won and watched is not None and float((_holder(watched) or {}).get("x", 0)) > now:
                    # The claim vanished under a live holder: put it back and
                    # keep waiting (unless its reply is stored by now).
                    if await store.reply_exists(message_id):
                        await self.cache.run(("SET", key, DONE, "EX", DONE_TTL))
                        return False
                    if await self._swap(key, value, watched):
                        log.info("memory: put back the vanished claim on message %s", message_id)
                elif won:
                    # A claim won slowly (Redis was restarting, the process
                    # stalled) was won after the database answered: another
                    # instance may have answered meanwhile, so ask again.
                    slow = time.monotonic() - started > SLOW_CLAIM
                    # Just after a flush or a restart, the key may have been
                    # empty because Redis lost another instance's claim, one
                    # whose quick reply is on its way.
                    flushed = time.monotonic() - self.cache.epoch_changed_at < RECENT_FLUSH
                    return await self._claimed(
                        key, token, value, expires, answered, message_id, sent_at,
                        ask_again=watched is not None or slow or flushed, suspects=_owners(watched),
                    )
                else:
                    if raw == DONE:
                        return False
                    holder = _holder(raw)
                    if holder is not None:
                        if holder.get("t") in self.mine and holder.get("t") != token:
                            return False  # a second delivery while this instance handles the first
                        stale_self = holder.get("o") == store.instance_id  # an earlier life of this instance
                        if stale_self or float(holder.get("x", 0)) <= now:
                            if await self._swap(key, raw, value):
                                log.info("memory: took over the expired claim on message %s", message_id)
                                return await self._claimed(
                                    key, token, value, expires, answered, message_id, sent_at,
                                    ask_again=watched is not None, suspects=_owners(watched, raw),
                                )
                        else:
                            watched = raw
                if time.monotonic() >= deadline:
                    return False  # someone else is handling it
                await asyncio.sleep(POLL)
        finally:
            if not answered.done():
                answered.cancel()
            if message_id not in self.claimed or self.claimed[message_id] != token:
                self.mine.discard(token)

    async def _claimed(
        self,
        key: str,
        token: str,
        value: bytes,
        expires: float,
        answered: asyncio.Future[str | None],
        message_id: str,
        sent_at: float | None,
        ask_again: bool = False,
        suspects: frozenset[str] = frozenset(),
    ) -> bool:
        store = self.store
        # After waiting on another holder, the answer asked at the start is
        # stale: that holder may have stored its reply meanwhile.
        found = await store.answered_or_claimed(message_id) if ask_again else await answered
        if found == "unknown" and self._too_old(sent_at) is not None:
            # Redis had no claim, but Redis may have lost it (a flush or a
            # restart) after another instance answered, and the database,
            # which would know, does not answer: for an old message (this
            # instance was paused, or it waited) that is likely. One probe,
            # in case the database breaker only opened because this process
            # was stalled; then silence rather than a second answer.
            await self._confirm_down()
            if store.db_ok:
                found = await store.answered_or_claimed(message_id)
            if found == "unknown":
                await self.cache.run(("EVAL", RELEASE, 1, key, value))
                log.warning(
                    "memory: message %s not answered: it is old, Redis may have lost its claim and the database cannot tell whether it was answered",
                    message_id,
                )
                return False
        if found in (None, "unknown") and (ask_again or self._late(sent_at)):
            # Another instance may hold a reply to it that nothing else shows:
            # its claim vanished or expired while it was about to send, or it
            # sent while the database was down and the reply waits in its
            # spool. (With the database down its reports are in Redis.)
            with self._deciding(message_id):
                verdict = await store.reports.settled(message_id, sent_at, suspects)
                if verdict == "free":
                    found = await store.answered_or_claimed(message_id)
            if verdict == "busy" or (verdict == "unknown" and self._too_old(sent_at) is not None):
                await self.cache.run(("EVAL", RELEASE, 1, key, value))
                return False
        if found == "answered":
            await self.cache.run(("SET", key, DONE, "EX", DONE_TTL))
            return False
        if found == "claimed":
            # An instance without Redis holds it in the database: it answers.
            # Our Redis claim goes, so a redelivery after that instance died
            # is not kept waiting on us.
            await self.cache.run(("EVAL", RELEASE, 1, key, value))
            log.info("memory: message %s is claimed in the database by an instance without Redis; leaving it", message_id)
            return False
        self._hold(message_id, token, expires)
        return True

    def _hold(self, message_id: str, token: str, expires: float | None) -> None:
        self.held_since[message_id] = time.monotonic()
        self.expires[message_id] = expires
        self.claim_epochs[message_id] = self._epoch_changes()
        while len(self.held_since) > MAX_HELD_CLAIMS:
            stale = next(iter(self.held_since))
            self.held_since.pop(stale)
            self.expires.pop(stale, None)
            self.claim_epochs.pop(stale, None)
            self.sent_ats.pop(stale, None)
        self.mine.add(token)
        old = self.claimed.pop(message_id, None)
        if old is not None:
            self.mine.discard(old)
        self.claimed[message_id] = token
        while len(self.claimed) > MAX_HELD_CLAIMS:
            _mid, stale = self.claimed.popitem(last=False)
            self.mine.discard(stale)

    async def confirm(self, message_id: str) -> bool:
        """:meth:`still_mine`, and if so the reply counts as being sent (this
        instance's reports list it) until :meth:`answered`.

        The reply is in a written report before it is sent: an instance that
        is paused right after sending, while Redis loses the claim, is then
        seen to hold it by whoever decides a redelivery (a young message is
        claimed without a report, so no report may list it yet)."""
        if not await self.still_mine(message_id):
            self._forget(message_id)
            return False
        reports = self.store.reports
        reports.sending[message_id] = time.monotonic()
        if not reports.lists(message_id):
            await reports.report()
        return True

    def answered(self, message_id: str) -> None:
        """The reply to ``message_id`` is stored: forget its claim token and
        remember (bounded) that this instance answered it, so a redelivery
        here is dropped even if both backends lost track meanwhile."""
        self._forget(message_id)
        self.recent_answers[message_id] = self.store.clock.now()
        while len(self.recent_answers) > MAX_HELD_CLAIMS:
            self.recent_answers.popitem(last=False)

    def forget_answers(self, message_ids: Any) -> bool:
        """Drop forgotten messages from the ones answered here (reports list
        those answered lately); ``True`` if any was there."""
        found = False
        for mid in message_ids:
            found = self.recent_answers.pop(str(mid), None) is not None or found
        return found

    async def _swap(self, key: str, expected: bytes, value: bytes) -> bool:
        """Replace ``key``'s value only if it is still ``expected``."""

        (swapped,) = await self.cache.run(("EVAL", SWAP, 1, key, expected, value, BACKSTOP_TTL))
        return bool(swapped)

    async def still_mine(self, message_id: str) -> bool:
        """Right before a reply is sent: ``False`` when another instance took
        the message over meanwhile (this one was paused or stalled past the
        claim's expiry), so that instance's reply is the only one.

        A quick reply (held less than ``CONFIRM_AFTER`` real seconds, its
        claim unexpired, no flush seen since) costs one Redis read, which
        finds the claim still there; anything else is checked in full (the
        claim put back if Redis lost it, or one database statement while
        Redis is down). When nothing can tell, the reply is sent if its
        claim has not expired (nobody could take it over) or was never
        arbitrated (G6: an answer beats silence); a claim held past its
        expiry may have been taken over and answered elsewhere, so that
        reply is not sent.
        """
        since = self.held_since.get(message_id)
        token = self.claimed.get(message_id)
        if since is None or token is None:
            return True
        store = self.store
        expires = self.expires.get(message_id)
        # A claim that expired is checked however briefly it was held here:
        # the process may have stopped between winning it and holding it;
        # so is one Redis may have lost since (a flush or a restart seen
        # while answering): another instance may have claimed the empty key.
        quick = time.monotonic() - since < CONFIRM_AFTER
        unexpired = expires is None or store.clock.now() < expires
        if quick and unexpired and self.claim_epochs.get(message_id) == self._epoch_changes():
            if not store.redis_ok:
                return True
            # This instance may not have seen a flush that another one has:
            # that one may have won the empty key.
            try:
                (raw,) = await self.cache.run(("GET", self.claim_key(message_id)))
            except BackendDown as exc:
                store.redis_failed(exc)
                return True
            holder = _holder(raw)
            if holder is not None and holder.get("t") == token:
                return True
        # As for claims: a breaker open because this process was the one
        # paused gets one probe's chance before "nothing can tell".
        for confirmed in (False, True):
            await self._settle()
            if store.redis_ok:
                try:
                    verdict = await self._still_mine_in_redis(message_id, token)
                except BackendDown as exc:
                    store.redis_failed(exc)
                else:
                    if verdict is not None:
                        return verdict
                    # Redis lost the claim and the database cannot tell.
                    if confirmed:
                        break
                    await self._confirm_down()
                    continue
            if store.db_ok and store.db is not None:
                db = store.db
                until = store.clock.now() + store.settings.claim_ttl
                try:
                    state, _holder_row = await db.run(db.try_claim, message_id, store.instance_id, token, until)
                    if state == "done":
                        return False
                    if state != "mine" and not await db.run(db.take_claim, message_id, store.instance_id, token, until, token):
                        return False
                except BackendDown as exc:
                    store.db_failed(exc)
                else:
                    # Claimed in the database (Redis down) just now: an
                    # instance that reaches Redis may have claimed it there.
                    return await self._unheld_elsewhere(message_id)
            if confirmed:
                break
            await self._confirm_down()
            if not store.redis_ok and not store.db_ok:
                break
        expires = self.expires.get(message_id)  # a claim put back has a new expiry
        if expires is not None and store.clock.now() >= expires:
            log.warning(
                "memory: reply to message %s not sent: held past its claim and nothing can confirm the claim, so another instance may have answered it",
                message_id,
            )
            return False
        log.info("memory: nothing can confirm the claim; sending the reply to message %s unconfirmed", message_id)
        return True

    async def _still_mine_in_redis(self, message_id: str, token: str) -> bool | None:
        """``still_mine`` asked of Redis; ``None`` when nothing can tell."""
        key = self.claim_key(message_id)
        (raw,) = await self.cache.run(("GET", key))
        if raw is None:
            # Flushed (or Redis restarted empty) since. Whoever answered
            # meanwhile left a reply (in the database or an outbox), or holds
            # a database claim; if nobody did, the claim is put back, so an
            # instance claiming it from now on waits for this reply.
            found = await self.store.answered_or_claimed(message_id)
            if found == "unknown":
                return None
            if found is not None:
                return False
            value, expires = self._claim_value(token)
            won, raw = await self.cache.run(("SET", key, value, "NX", "EX", BACKSTOP_TTL), ("GET", key))
            if won:
                self.expires[message_id] = expires
                # Another instance may have won the empty key before this
                # one, and lost it again the same way, and be sending now.
                return await self._unheld_elsewhere(message_id)
        holder = _holder(raw)
        return holder is not None and holder.get("t") == token

    async def _unheld_elsewhere(self, message_id: str) -> bool:
        """A claim this instance held was lost and is put back: no other
        instance's report may list the message (see
        :meth:`Reports.settled`); ``True`` also when nothing can tell."""
        verdict = await self.store.reports.settled(message_id, self.sent_ats.get(message_id))
        if verdict == "busy":
            log.warning("memory: reply to message %s not sent: its claim was lost and another instance may answer it", message_id)
            return False
        return True

    def _forget(self, message_id: str) -> None:
        """This instance holds ``message_id`` no more (its reports stop
        listing it)."""
        token = self.claimed.pop(message_id, None)
        if token is not None:
            self.mine.discard(token)
        self.held_since.pop(message_id, None)
        self.expires.pop(message_id, None)
        self.claim_epochs.pop(message_id, None)
        self.sent_ats.pop(message_id, None)
        self.store.reports.sending.pop(message_id, None)

    async def done(self, message_id: str) -> None:
        """Mark ``message_id`` answered (a reply that is not part of the
        conversation record was sent)."""
        self.answered(message_id)
        key = self.claim_key(message_id)
        raw = await self.cache.call(self.cache.r.set(key, DONE, ex=DONE_TTL, get=True))
        holder = _holder(raw)
        if holder is not None:
            self.mine.discard(holder.get("t"))

    # --- leases ----------------------------------------------------------------

    def lease(self, scope_key: str) -> Lease:
        return Lease(self, scope_key)


class Lease:
    """Async context manager holding a session's lease."""

    def __init__(self, coordinator: Coordinator, scope_key: str) -> None:
        self.c = coordinator
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
            won, fence, _, raw, epoch, session = await cache.run(
                ("SET", self.key, value, "NX", "EX", BACKSTOP_TTL),
                ("INCR", fence_key),
                ("EXPIRE", fence_key, FENCE_TTL),
                ("GET", self.key),
                ("GET", cache.epoch_key),
                ("GET", cache.session_key(self.scope_key)),
            )
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
        self.c.mine.add(self.token)
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
                self.c.mine.discard(self.token)
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
