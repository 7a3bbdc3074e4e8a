"""The ``claims`` table: the arbiter's source of truth (docs/MEMORY.md, A1-A6).

Each method runs on a database worker thread (through ``DurableStore.run``)
and reads expiry against the database's own clock, so instances whose
clocks disagree still agree on who holds a claim. A row is
``(message_id, owner, token, expires_at, state)``: ``owner`` is one process
life of one instance, ``state`` is ``claimed``, ``sending`` or ``done``;
``token`` repeats the owner (a column of the first claims schema).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from plugins.memory.durable import DurableStore

CHUNK = 500
# A7: each instance announces itself as bot_state key
# memory.member.<instance id>, valued with its expiry on the database's clock.
MEMBER_PREFIX = "memory.member."
# Announcements that expired this long ago are pruned.
MEMBER_KEEP = 3600.0


def now_sql(dialect: str) -> str:
    """The database's clock, in seconds since the epoch, as SQL."""
    if dialect == "postgres":
        return "CAST(EXTRACT(EPOCH FROM clock_timestamp()) AS DOUBLE PRECISION)"
    if dialect == "mysql":
        return "UNIX_TIMESTAMP(NOW(6))"
    return "((julianday('now') - 2440587.5) * 86400.0)"


def _chunks(ids: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(ids), CHUNK):
        yield ids[start : start + CHUNK]


class ClaimTable:
    """Claim statements for one database (see the module docstring)."""

    def __init__(self, store: DurableStore) -> None:
        self.store = store
        db = store.db
        p = db.param
        self.now = now_sql(store.dialect)
        insert = "INSERT IGNORE INTO" if store.dialect == "mysql" else "INSERT INTO"
        conflict = "" if store.dialect == "mysql" else " ON CONFLICT (message_id) DO NOTHING"
        self.sql_insert = (
            f"{insert} claims (message_id, owner, token, expires_at, state) "
            f"VALUES ({p}, {p}, {p}, {self.now} + {p}, {p}){conflict}"
        )
        self.sql_row = f"SELECT owner, state, expires_at - {self.now} FROM claims WHERE message_id = {p}"
        # A claim is inserted only while the message has no stored reply.
        unanswered = f"WHERE NOT EXISTS (SELECT 1 FROM messages WHERE message_id = {p})"
        dual = " FROM DUAL" if store.dialect == "mysql" else ""
        self.sql_claim = (
            f"{insert} claims (message_id, owner, token, expires_at, state) "
            f"SELECT {p}, {p}, {p}, {self.now} + {p}, 'claimed'{dual} {unanswered}{conflict}"
        )
        # Dirty flags are bot_state keys memory.cache_dirty.<instance>: a key
        # range, so the primary key's index answers it.
        key = '"key"' if store.dialect == "sqlite" else "`key`" if store.dialect == "mysql" else "key"
        self.sql_dirty = f"SELECT 1 FROM bot_state WHERE {key} >= 'memory.cache_dirty.' AND {key} < 'memory.cache_dirty/'"
        if store.dialect == "postgres":
            # One statement, one round trip: the insert, and what the caller
            # needs when it did not land (the holder) or did (dirty flags).
            self.sql_claim = (
                f"WITH ins AS ({self.sql_claim} RETURNING 1) "
                f"SELECT (SELECT COUNT(*) FROM ins), EXISTS (SELECT 1 FROM messages WHERE message_id = {p}), "
                f"EXISTS ({self.sql_dirty}), c.owner, c.state, c.expires_at - {self.now} "
                f"FROM (SELECT 1) AS one LEFT JOIN claims c ON c.message_id = {p}"
            )
        self.sql_take = (
            f"UPDATE claims SET owner = {p}, token = {p}, expires_at = {self.now} + {p} "
            f"WHERE message_id = {p} AND owner = {p} AND state <> 'done' AND expires_at <= {self.now} "
            f"AND NOT EXISTS (SELECT 1 FROM messages WHERE message_id = {p})"
        )
        self.sql_sending = (
            f"UPDATE claims SET state = 'sending', expires_at = {self.now} + {p} "
            f"WHERE message_id = {p} AND owner = {p} AND state <> 'done'"
        )
        self.sql_done = f"UPDATE claims SET state = 'done' WHERE message_id = {p}"
        self.sql_release = f"DELETE FROM claims WHERE message_id = {p} AND owner = {p} AND state <> 'done'"

    def _writing(self) -> Any:
        """A transaction that writes: on SQLite it takes the write lock at
        once (a read upgraded to a write later fails without waiting)."""
        db = self.store.db
        return db.atomic("IMMEDIATE") if self.store.dialect == "sqlite" else db.atomic()

    def _execute(self, sql: str, params: Any) -> Any:
        return self.store.db.execute_sql(sql, params)

    def _replied(self, ids: list[str]) -> set[str]:
        """Which of ``ids`` have their reply stored."""
        found: set[str] = set()
        for chunk in _chunks(ids):
            marks = ", ".join([self.store.db.param] * len(chunk))
            rows = self._execute(f"SELECT message_id FROM messages WHERE message_id IN ({marks})", [f"reply:{i}" for i in chunk])
            found |= {row[0][len("reply:") :] for row in rows.fetchall()}
        return found

    def _insert(self, message_id: str, owner: str, ttl: float, state: str = "claimed") -> bool:
        return bool(self._execute(self.sql_insert, (message_id, owner, owner, ttl, state)).rowcount)

    # --- A1: claim, A3: take over ---------------------------------------------------

    def claim(self, message_id: str, owner: str, ttl: float) -> tuple[str, str | None, bool]:
        """``("mine", None, dirty)`` when this call claimed ``message_id``
        (``dirty``: some instance left the cache dirty, rule D4); ``("done",
        None, False)`` when it was answered; else ``("live" | "expired",
        holder, False)``. One statement on PostgreSQL, two elsewhere; no
        transaction (the insert is atomic by itself)."""
        reply = f"reply:{message_id}"
        if self.store.dialect == "postgres":
            row = self._execute(self.sql_claim, (message_id, owner, owner, ttl, reply, reply, message_id)).fetchone()
            inserted, replied, dirty, holder, state, remaining = row
            if inserted:
                return "mine", None, bool(dirty)
        else:
            if self._execute(self.sql_claim, (message_id, owner, owner, ttl, reply)).rowcount:
                return "mine", None, bool(self._execute(self.sql_dirty, ()).fetchall())
            replied = bool(self._replied([message_id]))
            rows = self._execute(self.sql_row, (message_id,)).fetchall()
            holder, state, remaining = rows[0] if rows else (None, None, None)
        if replied or state == "done":
            return "done", None, False
        if holder is None:
            return "live", None, False  # released, or inserted by a statement this one could not see: look again
        return ("live" if float(remaining) > 0 else "expired"), str(holder), False

    def claim_many(self, items: list[tuple[str, str, float]]) -> list[tuple[str, str | None, bool]]:
        """:meth:`claim` for each item (one database call for a group)."""
        return [self.claim(*item) for item in items]

    def take_over(self, message_id: str, owner: str, old_owner: str, ttl: float) -> bool:
        """Take a claim whose expiry has passed, fenced on its old owner (of
        several standbys, one wins); never one whose reply is stored."""
        params = (owner, owner, ttl, message_id, old_owner, f"reply:{message_id}")
        return bool(self._execute(self.sql_take, params).rowcount)

    def watch(self, ids: list[str]) -> dict[str, tuple[str, str | None]]:
        """Per message id: ``("done", None)``, ``("absent", None)`` (no row:
        claimed in Redis while the database was down, or released), or
        ``("live" | "expired", holder)``."""
        replied = self._replied(ids)
        rows: dict[str, tuple[str, str, float]] = {}
        for chunk in _chunks(ids):
            marks = ", ".join([self.store.db.param] * len(chunk))
            sql = f"SELECT message_id, owner, state, expires_at - {self.now} FROM claims WHERE message_id IN ({marks})"
            for mid, holder, state, remaining in self._execute(sql, chunk).fetchall():
                rows[mid] = (str(holder), str(state), float(remaining))
        out: dict[str, tuple[str, str | None]] = {}
        for mid in ids:
            row = rows.get(mid)
            if mid in replied or (row is not None and row[1] == "done"):
                out[mid] = ("done", None)
            elif row is None:
                out[mid] = ("absent", None)
            else:
                out[mid] = ("live" if row[2] > 0 else "expired", row[0])
        return out

    # --- A2: renew, A4: sending and done --------------------------------------------

    def renew(self, owner: str, ids: list[str], write_back: list[str], ttl: float) -> list[str]:
        """Renew ``owner``'s claims on ``ids`` (inserting those in
        ``write_back``, won in Redis while the database was down); return
        the ids it no longer holds (taken over, or forgotten)."""
        p = self.store.db.param
        held: set[str] = set()
        with self._writing():
            for mid in write_back:
                self._insert(mid, owner, ttl)
            for chunk in _chunks(ids):
                marks = ", ".join([p] * len(chunk))
                self._execute(
                    f"UPDATE claims SET expires_at = {self.now} + {p} WHERE owner = {p} AND state <> 'done' AND message_id IN ({marks})",
                    (ttl, owner, *chunk),
                )
                rows = self._execute(f"SELECT message_id FROM claims WHERE owner = {p} AND message_id IN ({marks})", (owner, *chunk))
                held |= {row[0] for row in rows.fetchall()}
        return [mid for mid in ids if mid not in held]

    def sending(self, message_id: str, owner: str, ttl: float) -> bool:
        """``claimed -> sending`` for ``owner`` only (A4); a claim won in
        Redis while the database was down is inserted (one statement in the
        common case)."""
        if self._execute(self.sql_sending, (ttl, message_id, owner)).rowcount:
            return True
        return self._insert(message_id, owner, ttl, "sending")

    def done(self, message_id: str, owner: str) -> None:
        if not self._execute(self.sql_done, (message_id,)).rowcount:
            self._insert(message_id, owner, 0.0, "done")

    def release(self, message_id: str, owner: str) -> int:
        return int(self._execute(self.sql_release, (message_id, owner)).rowcount)

    def end_lives(self, prefix: str, owner: str) -> tuple[list[str], list[str]]:
        """Expire now the live claims of owners named ``<prefix><token>``
        other than ``owner``: the earlier lives of this instance (A8), each
        fenced on its owner. Their message ids, and the scopes of those of
        the messages stored already (whose session leases they may hold)."""
        p = self.store.db.param
        with self._writing():
            rows = self._execute(
                f"SELECT message_id, owner FROM claims WHERE SUBSTR(owner, 1, {p}) = {p} AND owner <> {p} "
                f"AND state <> 'done' AND expires_at > {self.now}",
                (len(prefix), prefix, owner),
            ).fetchall()
            # "A/x/<token>" is instance "A/x"'s, not an earlier life of "A".
            lives = [(str(mid), str(holder)) for mid, holder in rows if "/" not in str(holder)[len(prefix) :]]
            for mid, holder in lives:
                self._execute(f"UPDATE claims SET expires_at = {self.now} WHERE message_id = {p} AND owner = {p}", (mid, holder))
            ended = [mid for mid, _holder in lives]
            scopes: set[str] = set()
            for chunk in _chunks(ended):
                marks = ", ".join([p] * len(chunk))
                found = self._execute(f"SELECT DISTINCT scope_key FROM messages WHERE message_id IN ({marks})", chunk)
                scopes |= {str(row[0]) for row in found.fetchall()}
        return ended, sorted(scopes)

    # --- A7: who is alive ------------------------------------------------------------

    def announce(self, member: str, ttl: float, may: Callable[[], bool] = lambda: True) -> list[str]:
        """Instance ``member`` is alive for ``ttl`` more seconds (database
        clock), if ``may()`` still says so when the statement is about to
        run (a call left behind by a timeout can run much later, A7);
        return every instance alive now, this one included, sorted."""
        with self._writing():
            now = self._clock()
            if may():
                self.store.set_state(MEMBER_PREFIX + member, now + ttl)
            members = self.store.states_with_prefix(MEMBER_PREFIX)
            for key, expiry in members.items():
                if float(expiry) < now - MEMBER_KEEP:
                    self.store.delete_state(key)
        return sorted(key[len(MEMBER_PREFIX) :] for key, expiry in members.items() if float(expiry) > now)

    def _clock(self) -> float:
        """The database's clock now (seconds since the epoch)."""
        return float(self._execute(f"SELECT {self.now}", ()).fetchone()[0])

    def announced(self, member: str) -> float | None:
        """``member``'s last announcement: its expiry on the database's
        clock (``None`` when none is kept)."""
        value = self.store.get_state(MEMBER_PREFIX + member)
        return None if value is None else float(value)

    def announcement(self, member: str) -> tuple[float | None, float]:
        """``member``'s announced expiry (as :meth:`announced`) and the
        database's clock now."""
        return self.announced(member), self._clock()

    def retire(self, member: str) -> None:
        self.store.delete_state(MEMBER_PREFIX + member)

    def prune(self, keep: float) -> int:
        """Drop claims that expired more than ``keep`` seconds ago."""
        p = self.store.db.param
        return int(self._execute(f"DELETE FROM claims WHERE expires_at < {self.now} - {p}", (keep,)).rowcount)
