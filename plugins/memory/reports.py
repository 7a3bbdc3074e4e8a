"""Instance reports: which messages each instance may still be answering.

A claim says who answers a message, but a claim can vanish (a Redis flush
or restart) or expire (its holder paused) while its holder still has a
reply that no other instance can see: one it is about to send, one sent and
not yet stored, or one sent while the database was down and parked in its
local spool. An instance that then answers a redelivery of that message
answers it twice.

So every instance reports, every ``report_interval``, in the database
(``bot_state`` key ``memory.instance.<id>``) and in Redis (hash
``<prefix>reports``, where the others see it while the database is down)::

    {"life": <random per process>, "n": <report number>, "at": <bot clock>,
     "every": <bot-clock seconds between reports>,
     "held": [<message ids>], "full": <the list was cut>}

``held`` lists the messages this instance has won a claim on and is
deciding, holds a claim on, has sent a reply to that is not stored yet, has
a reply to in its spool, or stored a reply to within the last
``unarbitrated_max_age`` (for an instance that cannot ask the database).

Before an instance answers a *late* message (older than
``late_message_age``, i.e. a redelivery or a backlog), one whose claim it
won after seeing another holder, slowly, or just after it saw Redis lose its
data (a flush or a restart changes the cache epoch), or any message it
claimed in the database (Redis down), it reports at once (its list then
holds the message) and waits for a report from every other live instance
written after that (:meth:`Reports.settled`): write, then read, so of two
instances deciding one message the later one sees the earlier. If one lists
the message (or its list was cut), it stays silent: a later redelivery is
answered once that instance has stored its reply or let it go. An instance
that does not report in time (paused, stalled, cut off from both backends)
is judged by the newest report of it this instance has seen (reads are
remembered, so a Redis flush does not erase them): it may hold what its
report lists and any young message sent since (a young message is claimed
without reporting it first). So while an instance is paused, a late message
whose claim Redis lost waits for it to come back or to time out. An
instance whose last report is older than ``instance_timeout`` (bot clock) is
gone and not waited for; one that stops cleanly leaves a tombstone. Each
instance also writes to the database the reports of others it has seen that
are newer than the database's (a report that only reached Redis survives a
flush that way).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Literal

import orjson

from plugins.memory.breaker import BackendDown

if TYPE_CHECKING:
    from plugins.memory.store import MemoryStore

log = logging.getLogger("plugins.memory.reports")

REPORT_PREFIX = "memory.instance."
# At most this many message ids per report; past it the report says "full"
# and every late message waits for that instance to catch up.
MAX_HELD = 2000
# How long (real seconds) a late message waits for fresh reports.
SETTLE_WAIT = 2.0
# An instance whose report this one has not seen change for this many report
# intervals (plus CLOCK_SKEW, as slack) is not waited for.
OVERDUE = 2
# Bot-clock seconds two hosts' clocks may disagree by (NTP keeps them closer).
CLOCK_SKEW = 1.0
POLL = 0.05
# A reply confirmed for sending and not stored after this long (real
# seconds) was never sent (the transport failed): it is no longer reported.
SENDING_MAX = 120.0

Verdict = Literal["free", "busy", "unknown"]


class Reports:
    def __init__(self, store: MemoryStore) -> None:
        self.store = store
        self.life = secrets.token_hex(6)
        self.number = 0
        self.started_at = store.clock.now()
        self.started_mono = time.monotonic()
        # Replies confirmed for sending and not yet stored: message id -> when (monotonic).
        self.sending: dict[str, float] = {}
        # The newest report of each instance this one has seen, and what the
        # database held at the last read.
        self.seen: dict[str, dict[str, Any]] = {}
        # When (monotonic) this instance last saw each one's report change.
        self.changed_at: dict[str, float] = {}
        self.in_db: dict[str, Any] = {}
        self._read: asyncio.Future[dict[str, dict[str, Any]]] | None = None
        self._read_started = -1e9
        # Reports are written one at a time, in order; when (monotonic) the
        # list of the newest one written was taken.
        self._writing = asyncio.Lock()
        self._listed_at = -1e9
        # What the newest report this instance wrote lists.
        self._listed: tuple[frozenset[str], bool] = (frozenset(), False)

    @property
    def key(self) -> str:
        return REPORT_PREFIX + self.store.instance_id

    # --- this instance's report -------------------------------------------------

    def held(self, spooled: list[str]) -> tuple[list[str], bool]:
        """The message ids this instance may still answer, whose reply it
        has not stored in the database or stored only lately, and whether
        the list was cut."""
        store = self.store
        c = store.coordinator
        cutoff = time.monotonic() - SENDING_MAX
        for mid in [m for m, since in self.sending.items() if since < cutoff]:
            del self.sending[mid]
        # Claims won and being decided count too: two instances that each won
        # a claim where the other cannot see it (one in Redis, one in the
        # database) and wait for each other's reports must see each other.
        ids = set(self.sending) | c.deciding
        # A held claim counts while its reply could still be on its way, even
        # past its expiry: a holder that was paused re-checks its claim
        # before it sends, but one that resumes while another instance
        # decides the message must show it holds it.
        for mid in c.claimed:
            if c.held_since.get(mid, 0.0) > cutoff:
                ids.add(mid)
        ids.update(spooled)
        # And replies stored lately: an instance that cannot ask the database
        # whether a message was answered may still answer one this young on
        # the reports alone (older ones it leaves: unarbitrated_max_age).
        since = store.clock.now() - store.settings.unarbitrated_max_age
        for mid, at in reversed(c.recent_answers.items()):
            if at < since:
                break
            ids.add(mid)
        return sorted(ids)[:MAX_HELD], len(ids) > MAX_HELD

    async def publish(self) -> None:
        """Write this instance's report to the database and to Redis (while
        the database is down, Redis is where the others see it), and read
        everyone's: what was read is remembered, so a Redis flush does not
        make this instance forget a report it saw only there."""
        store = self.store
        await self.report()
        with _quietly("either backend"):
            await self._read_all()
        if store.db_ok:
            with _quietly("database"):
                await self._relay()

    async def report(self) -> None:
        """Write this instance's report now, unless one whose list was taken
        after this was asked is written already (concurrent callers share
        it). Before an instance decides a claim it reports it this way, then
        reads the others' reports: of two instances deciding one message,
        the one that reads last sees the other's."""
        asked = time.monotonic()
        async with self._writing:
            if self._listed_at >= asked:
                return
            self._listed_at = time.monotonic()
            store = self.store
            # The spool is files on disk: read off the event loop.
            spooled = await asyncio.get_running_loop().run_in_executor(None, store.spooled_reply_ids)
            held, full = self.held(spooled)
            self.number += 1
            at = store.clock.now()
            # How often it reports, on the bot clock (which may run at another
            # pace than real time, as in tests and the chaos soak).
            rate = (at - self.started_at) / max(1e-6, time.monotonic() - self.started_mono)
            every = store.settings.report_interval * max(0.0, rate)
            value = {"life": self.life, "n": self.number, "at": at, "every": every, "held": held, "full": full}
            self._remember({self.key: value})
            await self._write(value)
            self._listed = (frozenset(held), full)

    def lists(self, message_id: str) -> bool:
        """Whether the newest report this instance wrote lists ``message_id``."""
        held, full = self._listed
        return full or message_id in held

    async def _relay(self) -> None:
        """Write to the database the reports of others this instance has
        seen that are newer than the database's copies: one written only to
        Redis (its instance could not reach the database) and lost there in
        a flush is then still known to an instance that never read Redis in
        time. Reports older than ``instance_timeout`` are not relayed, and
        twice that old they are deleted (a stopped instance's tombstone)."""
        db = self.store.db
        assert db is not None
        now = self.store.clock.now()
        limit = self.store.settings.instance_timeout
        for key, value in list(self.seen.items()):
            age = now - float(value.get("at", 0))
            if key == self.key:
                continue
            if age > 2 * limit:
                del self.seen[key]
                self.changed_at.pop(key, None)
                if key in self.in_db:
                    await db.run(db.delete_state, key)
            elif age <= limit and _newer(value, self.in_db.get(key)):
                await db.run(db.set_state, key, value)
                self.in_db[key] = value

    async def withdraw(self) -> None:
        """A clean stop: nobody needs to wait for this instance any more. A
        tombstone, not a deletion: another instance that remembers an older
        report would otherwise relay it back."""
        store = self.store
        async with self._writing:
            self.number += 1
            await self._write({"life": self.life, "n": self.number, "at": store.clock.now(), "gone": True})

    async def _write(self, value: dict[str, Any]) -> None:
        """This instance's report, to each backend that is up."""
        store = self.store
        if store.db_ok:
            assert store.db is not None
            with _quietly("database"):
                await store.db.run(store.db.set_state, self.key, value)
        if store.redis_ok:
            assert store.cache is not None
            with _quietly("redis"):
                await store.cache.run(("HSET", self.hash_key, self.key, orjson.dumps(value)))

    @property
    def hash_key(self) -> str:
        assert self.store.cache is not None
        return f"{self.store.cache.prefix}reports"

    # --- other instances' reports -------------------------------------------------

    def _remember(self, reports: dict[str, Any]) -> None:
        for key, value in reports.items():
            if isinstance(value, dict) and _newer(value, self.seen.get(key)):
                self.seen[key] = value
                self.changed_at[key] = time.monotonic()

    async def _read_all(self) -> dict[str, dict[str, Any]]:
        """Read every report (database, and Redis when up); the newest of
        each instance, as far as this instance has ever seen."""
        store = self.store
        read = False
        if store.db_ok:
            assert store.db is not None
            try:
                self.in_db = await store.db.run(store.db.states_with_prefix, REPORT_PREFIX)
                self._remember(self.in_db)
                read = True
            except BackendDown as exc:
                store.db_failed(exc)
        if store.redis_ok:
            assert store.cache is not None
            try:
                (raw,) = await store.cache.run(("HGETALL", self.hash_key))
                self._remember({_text(k): orjson.loads(v) for k, v in _pairs(raw)})
                read = True
            except BackendDown as exc:
                store.redis_failed(exc)
        if not read:
            raise BackendDown("database", "neither backend answers")
        return dict(self.seen)

    async def _reports(self, after: float) -> dict[str, dict[str, Any]]:
        """Every report, read by a query that started at or after ``after``
        (monotonic); concurrent callers share the queries."""
        while True:
            task = self._read
            if task is not None and self._read_started >= after:
                return await asyncio.shield(task)
            if task is None or task.done():
                self._read_started = time.monotonic()
                self._read = asyncio.ensure_future(self._read_all())
            else:
                await asyncio.wait([task])

    def _others(self, reports: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        now = self.store.clock.now()
        limit = self.store.settings.instance_timeout
        return {
            key: value
            for key, value in reports.items()
            if key != self.key and isinstance(value, dict) and not value.get("gone") and now - float(value.get("at", 0)) <= limit
        }

    async def settled(self, message_id: str, sent_at: float | None, suspects: frozenset[str] = frozenset()) -> Verdict:
        """Whether this instance may answer ``message_id`` (sent at
        ``sent_at``, bot clock), whose claim it has just won; ``suspects``
        are the instances known to have held its claim before (an expired
        claim taken over, a claim that vanished under its holder).

        This instance first reports (its list holds the message), then every
        other live instance must report again, after now: ``"busy"`` when a
        report lists the message; ``"free"`` when none does. An instance that
        does not report within the wait (stalled, or dead within
        ``instance_timeout``) may still hold the message if its last report
        lists it, if it is a suspect, or if it could have claimed the message
        since without reporting it (see :func:`_stalled_after`): then
        ``"busy"``; else it is not waited for. Reports are read from the
        database and from Redis, so this works while either is down;
        ``"unknown"`` when neither answers.
        """
        await self.report()
        started = time.monotonic()
        settings = self.store.settings
        # The oldest message another instance may answer without reporting
        # it first: a young one, or one answered unarbitrated.
        young = max(settings.late_message_age, settings.unarbitrated_max_age)
        cache = self.store.cache
        lost_at = cache.epoch_changed_clock if cache is not None else None

        def may_hold(key: str, report: dict[str, Any]) -> bool:
            return _lists(report, message_id) or _name(key) in suspects or _stalled_after(report, sent_at, young, lost_at)

        try:
            first = self._others(await self._reports(started))
            # One whose report is overdue already (paused, stopped, cut off)
            # is judged now by its last report: waiting on it is what the
            # chaos soak, where one instance or another is paused most of
            # the time, cannot afford.
            quiet = time.monotonic() - OVERDUE * settings.report_interval - CLOCK_SKEW
            overdue = {k for k in first if self.changed_at.get(k, started) < quiet}
            deadline = started + SETTLE_WAIT
            while True:
                now = self._others(await self._reports(time.monotonic()))
                waiting = []
                for key, before in first.items():
                    after = now.get(key)
                    if after is None:
                        continue  # stopped cleanly meanwhile
                    if after.get("life") == before.get("life") and after.get("n", 0) <= before.get("n", 0):
                        waiting.append(key)
                    elif _lists(after, message_id):
                        log.info("memory: message %s not answered here: %s may still answer it", message_id, _name(key))
                        return "busy"
                if not waiting:
                    return "free"
                if time.monotonic() >= deadline or all(k in overdue for k in waiting):
                    stalled = [k for k in waiting if may_hold(k, first[k])]
                    if not stalled:
                        return "free"
                    log.warning(
                        "memory: message %s not answered here: %s stopped reporting and may hold a reply to it",
                        message_id,
                        ", ".join(_name(k) for k in stalled),
                    )
                    return "busy"
                await asyncio.sleep(POLL)
        except BackendDown:
            return "unknown"  # neither backend answers (each breaker has been told)


def _newer(report: dict[str, Any], than: dict[str, Any] | None) -> bool:
    if than is None:
        return True
    if report.get("life") == than.get("life"):
        return int(report.get("n", 0)) > int(than.get("n", 0))
    return float(report.get("at", 0)) >= float(than.get("at", 0))


def _pairs(raw: Any) -> list[tuple[Any, Any]]:
    if isinstance(raw, dict):
        return list(raw.items())
    items = list(raw or [])
    return list(zip(items[::2], items[1::2], strict=False))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@contextlib.contextmanager
def _quietly(where: str) -> Iterator[None]:
    """A report that cannot be written or read is not a health signal: the
    next call on the message path says whether a backend is down."""
    try:
        yield
    except BackendDown as exc:
        log.debug("memory: instance reports: %s unavailable (%s)", where, exc.reason)


def _name(key: str) -> str:
    return key[len(REPORT_PREFIX) :]


def _lists(report: dict[str, Any], message_id: str) -> bool:
    return bool(report.get("full")) or message_id in report.get("held", ())


def _stalled_after(report: dict[str, Any], sent_at: float | None, young: float, lost_at: float | None) -> bool:
    """Whether an instance whose last report is ``report`` may have claimed
    a message first sent at ``sent_at`` without that report listing it, and
    then stopped (a backstop: an instance reports a message before it sends
    a reply to it, and one that stalls between claim and send re-checks).

    An instance reports a claim before deciding it, except a quick claim on
    a young message (won at once, at most ``young`` after it was sent). So
    what it claimed after ``at`` and does not list is a young message sent
    after ``at - young``, less the clock skew between hosts; and it stopped
    before its next report was due (``at + every``; twice that, for a late
    timer). The bound matters: some instance is paused much of the time in
    the chaos soak, and a rule that held back every late message sent
    while one is silent starved it.

    Unless Redis lost its data (a flush, a restart) after that report, as
    this instance saw at ``lost_at``: reports the instance wrote since only
    to Redis (its database was down) are gone, and any of them may have
    listed a message sent up to then."""
    if sent_at is None:
        return True
    at = float(report.get("at", 0))
    until = at + 2 * float(report.get("every", 0.0))
    if at - young - CLOCK_SKEW > sent_at:
        return False
    # What was sent after the loss was seen cannot be in a lost report.
    return sent_at <= until + CLOCK_SKEW or (lost_at is not None and lost_at > at and sent_at <= lost_at)
