"""Settling a provisional session once its scope's stored state is back.

A session the sessions plugin had to open while the scope's stored state
was unreachable (Redis lost it and the database was down, and this instance
held no copy) is *provisional*: ``state["provisional"]`` holds the
``idle_timeout`` and ``max_age`` it was opened under. Once the database
answers and no write waits in the outbox, it is settled, in one transaction:

- if the scope's session before it would still have continued when it was
  opened (not closed, not idle, not too old), the provisional session is
  *joined* to it: its messages move there (message order is their own
  timestamps) and its row is deleted, so the conversation is one session;
- otherwise, if the scope's next session was opened while it was still
  active (another instance, finding nothing to continue, started one at the
  same time), it is joined to that one;
- otherwise it was a new conversation as far as the database knows: it
  loses the mark and is *fresh* (below).

A *fresh* session (``state["fresh"]``, the timeouts it was opened under) was
opened because nothing known continued: the scope had no session, or its
session had timed out, or it is a provisional session settled as a
conversation of its own. That was judged on what the database held, and
the conversation's past may reach it late (an instance's spool replayed
after a flush took the stream's copy; a provisional session joined later).
Whenever writes of a scope reach the database late, its fresh sessions are
judged again against the session before each, with that one's activity as
now stored (an end by timeout recorded in between is judged again; a reset
stays): one that would still have continued takes the fresh session in,
and is open again (rule 11). The replay marks those scopes in bot_state
(``memory.late.*``) in its own transaction, for an instance killed before
it looked at them.

A join leaves a record (bot_state ``memory.joined.<id>``); messages written
under the joined id afterwards (a write in flight when the join ran, another
instance's spool replayed later) are moved to the session it joined by
:func:`follow_joins`, run after each health probe.

The provisional row and the row before it are locked first, so concurrent
settles of a chain of provisional sessions never move messages into a row
another join deletes; a row already locked means "settle later", never a
wait. The rules: docs/MEMORY_SESSIONS.md, "Sessions under faults".
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import orjson

from plugins.memory.durable import DurableStore
from plugins.memory.recent import FRESH, PROVISIONAL

JOINED_PREFIX = "memory.joined."
# A join's record says "stale" (a token) until the windows of the two
# sessions were dropped (D7): whoever joined them, or any instance's next
# probe if the joiner died in between, drops them and then clears it, but
# only if the token is still the one it dropped for (a probe moving late
# writes marks it anew).
STALE = "stale"
# A scope whose past reached the database late, written with those writes
# and deleted once its fresh sessions were looked at (rule 11): a replayer
# killed in between leaves it for the next instance's first probe.
LATE_PREFIX = "memory.late."


def late_key(scope_key: str) -> str:
    # bot_state keys are at most 191 characters; scope keys may be as long.
    return LATE_PREFIX + hashlib.sha256(scope_key.encode()).hexdigest()[:32]


def late_writes(entries: list[dict[str, Any]]) -> dict[str, float]:
    """The scopes outbox ``entries`` write to, each with the earliest time
    they cover (a message's timestamp, a session's opening): a fresh session
    opened before it cannot have missed them."""
    late: dict[str, float] = {}
    for entry in entries:
        kind, data = entry.get("k"), entry["d"]
        if kind == "msg":
            scope, at = str(data[2]), float(data[7])  # records.ROW_COLUMNS: scope_key, ts
        elif kind == "session":
            scope, at = str(data["s"]["scope_key"]), float(data["s"]["opened_at"])
        else:
            continue
        late[scope] = min(at, late.get(scope, at))
    return late
# Join records are kept this long (wall-clock seconds): later writes to a
# joined session come from writes in flight and from spools replayed by an
# instance's next life.
JOIN_KEEP = 24 * 3600.0
# Looking for late writes under every join of the last day costs an index
# probe per join (tens of milliseconds for a few thousand joins, on every
# probe of every instance). Writes in flight when a join ran (a pipeline's
# model call included) reach the database within JOIN_FRESH wall-clock
# seconds, so every probe looks under the joins that young; an outbox
# replay names the sessions it wrote under (a spool replayed late, whatever
# the join's age); and every JOIN_SCAN_EVERY seconds a probe looks under
# all of them, for what nothing named (a replayer that died before it
# looked).
JOIN_FRESH = 300.0
JOIN_SCAN_EVERY = 60.0
CHUNK = 500


@dataclass(slots=True)
class Settled:
    """The session to go on with; ``joined_from`` is the provisional session
    whose messages it took over (``None`` when nothing was joined)."""

    session: dict[str, Any]
    joined_from: str | None = None
    moved: int = 0
    changed: bool = True  # False: judged again, nothing to do
    # The join's record's stale mark, to clear once the windows are dropped.
    mark: str | None = None


# Ends that a timeout recorded: judged again from the activity (a late write
# moves it). A reset is a decision, never judged again.
TIMED_OUT = ("idle", "max_age")


def _opened_under(blind: dict[str, Any]) -> dict[str, Any]:
    """The timeouts a provisional or fresh session was opened under."""
    return blind["state"].get(PROVISIONAL) or blind["state"].get(FRESH) or {}


def continues(before: dict[str, Any], blind: dict[str, Any], newest_write: float | None) -> bool:
    """Whether a message arriving when ``blind`` was opened would have
    continued ``before``, under the timeouts ``blind`` was opened with."""
    mark = _opened_under(blind)
    opened = blind["opened_at"]
    timed_out = before["state"].get("closed_reason") in TIMED_OUT
    if before["closed_at"] is not None and before["closed_at"] <= opened and not timed_out:
        return False
    active = max(before["last_active_at"], newest_write or 0.0)
    idle = float(mark.get("idle_timeout") or 0)
    if idle > 0 and opened >= active + idle:
        return False
    max_age = mark.get("max_age")
    return not (max_age and opened >= before["opened_at"] + float(max_age))


class SettleLater(Exception):
    """A row the settle needs is locked by another transaction (another
    settle, a save, or a paused instance mid-write): nothing changed; the
    next read or probe tries again. A settle never waits for a lock: a
    database worker stuck behind a paused instance's transaction would
    time out and mark the database down."""


def settle(store: DurableStore, session_id: str) -> Settled | None:
    """Settle provisional session ``session_id`` (run on a database thread).
    ``None`` when it is gone (settled meanwhile by another instance).
    Raises :class:`SettleLater` when a row it needs is locked."""
    try:
        settled = _settle(store, session_id)
    except Exception as exc:
        if _lock_refused(exc):
            raise SettleLater(session_id) from None
        raise
    if settled is not None and settled.joined_from is None and settled.session["closed_at"] is None:
        # What the message being handled is judged by (a join's is so already).
        settled.session["last_active_at"] = _activity(store, settled.session)
    return settled


def _activity(store: DurableStore, data: dict[str, Any]) -> float:
    """A session's activity as the database holds it (rule 5): its row's
    ``last_active_at`` lags (``session_touch_interval``, or a touch a fault
    took), its newest message does not."""
    return max(data["last_active_at"], _newest_write(store, data["id"]) or 0.0)


def _lock_refused(exc: BaseException) -> bool:
    # peewee wraps the driver's error: PostgreSQL 55P03 lock_not_available,
    # MySQL 3572 ER_LOCK_NOWAIT.
    for err in (exc, exc.__context__, *(exc.args[:1] if exc.args else ())):
        if getattr(err, "pgcode", None) == "55P03" or (isinstance(err, BaseException) and err.args[:1] == (3572,)):
            return True
    return False


def conversation_activity(store: DurableStore, blind: dict[str, Any]) -> float:
    """When the conversation provisional session ``blind`` belongs to was
    last active, as the database holds it now (rule 5): its own newest
    write, or that of the session before it when ``blind`` continues that
    one (the judgment a settle would make). Read only: for a provisional
    session that cannot be settled yet and is used as it is meanwhile."""
    active = _activity(store, blind)
    row = _session_before(store, blind).first()
    if row is None:
        return active
    before = store._session_dict(row)
    newest = _newest_write(store, before["id"])
    if continues(before, blind, newest):
        active = max(active, before["last_active_at"], newest or 0.0)
    return active


def _settle(store: DurableStore, session_id: str) -> Settled | None:
    S = store.m.SessionRow
    with _transaction(store):
        row = _locked(store, S.select().where(S.session_id == session_id)).first()
        if row is None:
            return None
        blind = store._session_dict(row)
        if not blind["state"].get(PROVISIONAL):
            return _settle_fresh(store, blind) if blind["state"].get(FRESH) else Settled(blind)
        before = _before(store, blind)
        if before is not None and continues(before, blind, _newest_write(store, before["id"])):
            return _join(store, blind, before)
        after = _after(store, blind)
        if after is not None:
            return _join(store, blind, after)
        # A conversation of its own, as far as the database knows now: fresh,
        # judged again if the past arrives late (rule 11).
        mark = blind["state"][PROVISIONAL]
        blind["state"] = {**{k: v for k, v in blind["state"].items() if k != PROVISIONAL}, FRESH: mark}
        S.update(state=orjson.dumps(blind["state"]).decode()).where(S.session_id == session_id).execute()
        return Settled(blind)


def _settle_fresh(store: DurableStore, fresh: dict[str, Any]) -> Settled:
    """A session opened because nothing known continued (rule 11), judged
    again now that more of the scope's past is in the database: joined to
    the session before it if that one would still have continued when it
    was opened; else left as it is, mark and all (more may come)."""
    before = _before(store, fresh)
    if before is not None and continues(before, fresh, _newest_write(store, before["id"])):
        return _join(store, fresh, before)
    return Settled(fresh, changed=False)


def _transaction(store: DurableStore) -> Any:
    # SQLite: take the write lock at BEGIN, so a concurrent settle waits
    # instead of reading rows it is about to change.
    if store.dialect == "sqlite":
        return store.db.atomic("IMMEDIATE")
    return store.db.atomic()


def _locked(store: DurableStore, query: Any) -> Any:
    """``query`` locking its rows until the transaction ends, where the
    database has row locks (SQLite locks the whole file: see _transaction);
    a row already locked raises at once (see SettleLater)."""
    return query.for_update(nowait=True) if store.db.for_update else query


def _before(store: DurableStore, blind: dict[str, Any]) -> dict[str, Any] | None:
    """The scope's session before ``blind``, locked. Two instances may
    settle a chain of provisional sessions at once (P2 into P1 while P1
    goes into S): each locks its own session, then the one before it, so
    a join never moves messages into a session a concurrent join deletes.
    When the one found was deleted by such a join meanwhile, look again."""
    S = store.m.SessionRow
    while True:
        found = _session_before(store, blind, S.session_id).first()
        if found is None:
            return None
        row = _locked(store, S.select().where(S.session_id == found.session_id)).first()
        if row is not None:
            return store._session_dict(row)


def _session_before(store: DurableStore, blind: dict[str, Any], *fields: Any) -> Any:
    """The query of the scope's latest session opened before ``blind``."""
    S = store.m.SessionRow
    return (
        S.select(*fields)
        .where((S.scope_key == blind["scope_key"]) & (S.session_id != blind["id"]) & (S.opened_at <= blind["opened_at"]))
        .order_by(S.opened_at.desc(), S.last_active_at.desc())
    )


def _after(store: DurableStore, blind: dict[str, Any]) -> dict[str, Any] | None:
    """The scope's next session, locked, if it was opened while ``blind``
    was still active and is not provisional itself (that one settles on its
    own): two new conversations started at once, one of them blind, are one."""
    S = store.m.SessionRow
    if blind["closed_at"] is not None:
        return None  # reset or timed out: what came next is a new conversation
    found = (
        S.select(S.session_id)
        .where((S.scope_key == blind["scope_key"]) & (S.session_id != blind["id"]) & (S.opened_at > blind["opened_at"]))
        .order_by(S.opened_at, S.session_id)
        .first()
    )
    if found is None:
        return None
    row = _locked(store, S.select().where(S.session_id == found.session_id)).first()
    if row is None:
        return None
    after = store._session_dict(row)
    idle = float((blind["state"].get(PROVISIONAL) or {}).get("idle_timeout") or 0)
    active = _activity(store, blind)
    if after["state"].get(PROVISIONAL) or (idle > 0 and after["opened_at"] >= active + idle):
        return None
    return after


def _join(store: DurableStore, blind: dict[str, Any], before: dict[str, Any]) -> Settled:
    S, M = store.m.SessionRow, store.m.Message
    moved = M.update(session_id=before["id"]).where(M.session_id == blind["id"]).execute()
    # Both rows may lag: the newest message the session now holds says when it was active.
    before["last_active_at"] = max(_activity(store, before), blind["last_active_at"])
    if blind["closed_at"] is not None:
        # Reset (or timed out) while provisional: the conversation ended then.
        before["closed_at"] = blind["closed_at"]
        before["state"] = {**before["state"], "closed_reason": blind["state"].get("closed_reason", "reset")}
    elif _end_judged_without(before, blind):
        # Its end by timeout was judged without what arrived late: it goes on.
        before["closed_at"] = None
        before["state"] = {k: v for k, v in before["state"].items() if k != "closed_reason"}
    S.update(
        last_active_at=before["last_active_at"],
        closed_at=before["closed_at"],
        state=orjson.dumps(before["state"]).decode(),
    ).where(S.session_id == before["id"]).execute()
    S.delete().where(S.session_id == blind["id"]).execute()
    mark = secrets.token_hex(4)
    store.set_state(JOINED_PREFIX + blind["id"], {"into": before["id"], "scope": blind["scope_key"], "at": time.time(), STALE: mark})
    return Settled(before, blind["id"], int(moved or 0), mark=mark)


def _end_judged_without(before: dict[str, Any], blind: dict[str, Any]) -> bool:
    """Whether ``before``'s end by timeout was judged without what the join
    brings (rule 5): ``blind`` was opened after it, or, for an idle end,
    ``before`` (its messages and ``blind``'s now) was active later than the
    activity the end was judged on (``closed_at - idle_timeout``): two
    sessions opened at once, one ended blind to the other's messages."""
    reason = before["state"].get("closed_reason")
    if reason not in TIMED_OUT or before["closed_at"] is None:
        return False
    if before["closed_at"] <= blind["opened_at"]:
        return True
    idle = float(_opened_under(blind).get("idle_timeout") or 0)
    return reason == "idle" and idle > 0 and before["last_active_at"] > before["closed_at"] - idle + 0.001


def follow_joins(
    store: DurableStore, look_at: Collection[str] | None = None
) -> tuple[list[tuple[str, str, str, int]], list[tuple[str, list[str], str, Any]]]:
    """Move messages written under a joined session since its join to the
    session it joined (following chains of joins); drop old join records.
    Looks under the joined ids in ``look_at`` and the joins younger than
    ``JOIN_FRESH``, or under every join when ``look_at`` is ``None``.
    Returns ``(joined id, session id, scope, messages moved)`` for each
    move, and ``(joined id, sessions, scope, mark)`` for each join whose
    windows may not be dropped yet, ``sessions`` being its whole chain of
    joins: rows it moved went to the chain's end, which a mover that died
    before its drop leaves stale (run on a database thread)."""
    records = {key[len(JOINED_PREFIX) :]: value for key, value in store.states_with_prefix(JOINED_PREFIX).items()}
    if not records:
        return [], []
    for obsolete in _cycles_broken(records):
        store.delete_state(JOINED_PREFIX + obsolete)
    stale = [(old, _chain(records, old), _scope(r), r[STALE]) for old, r in records.items() if r.get(STALE)]
    M = store.m.Message
    now = time.time()
    ids = [old for old, r in records.items() if look_at is None or old in look_at or now - float(r.get("at") or now) <= JOIN_FRESH]
    late: list[str] = []
    for start in range(0, len(ids), CHUNK):
        chunk = ids[start : start + CHUNK]
        late += [row[0] for row in M.select(M.session_id).where(M.session_id.in_(chunk)).distinct().tuples()]
    moved = []
    for old in late:
        target = _mark_stale(store, old, records, stale)  # before the move: an instance dying after it leaves the mark
        count = M.update(session_id=target).where(M.session_id == old).execute()
        if count:
            moved.append((old, target, _scope(records[old]), int(count)))
    # A save in flight when the join ran puts a joined session's row back:
    # the conversation goes on in the session it joined.
    S = store.m.SessionRow
    for start in range(0, len(ids), CHUNK):
        back = [row[0] for row in S.select(S.session_id).where(S.session_id.in_(ids[start : start + CHUNK])).tuples()]
        for old in back:
            target = _mark_stale(store, old, records, stale)
            S.delete().where(S.session_id == old).execute()
            moved.append((old, target, _scope(records[old]), 0))
    # Only a look under every join forgets old ones (a look under a few
    # would drop records it did not look under), and never one still
    # marked: its windows are to be dropped first (D3).
    for old, record in records.items():
        if look_at is None and not record.get(STALE) and now - float(record.get("at") or now) > JOIN_KEEP:
            store.delete_state(JOINED_PREFIX + old)
    return moved, stale


def _cycles_broken(records: dict[str, Any]) -> list[str]:
    """Remove from ``records`` the oldest record of each cycle of joins and
    return their ids. A cycle means a joined session's row came back (a
    save in flight) and the session was then made the target of a later
    join: the later join says where the conversation goes on."""
    broken = []
    for start in list(records):
        path: list[str] = []
        node = start
        while node in records and node not in path:
            path.append(node)
            node = str(records[node]["into"])
        if node in path:
            cycle = path[path.index(node) :]
            oldest = min(cycle, key=lambda sid: float(records[sid].get("at") or 0))
            del records[oldest]
            broken.append(oldest)
    return broken


def _mark_stale(store: DurableStore, old: str, records: dict[str, Any], stale: list[tuple[str, list[str], str, Any]]) -> str:
    """Rows of ``old`` are about to move to the end of its chain of joins
    (returned): their windows are stale until dropped. A new mark, so that
    a clear for an older one (another instance's drop, made before these
    rows moved) leaves it."""
    record = records[old]
    record[STALE] = secrets.token_hex(4)
    store.set_state(JOINED_PREFIX + old, record)
    chain = _chain(records, old)
    stale.append((old, chain, _scope(record), record[STALE]))
    return chain[-1]


def _scope(record: dict[str, Any]) -> str:
    return str(record.get("scope") or "")


def windows_dropped(store: DurableStore, marks: list[tuple[str, Any]]) -> None:
    """The windows of these joins were dropped after their records showed
    these marks: clear each mark that is still the one shown."""
    for old, mark in marks:
        key = JOINED_PREFIX + old
        raw = store.state_raw(key)
        record = orjson.loads(raw) if raw else None
        if raw and isinstance(record, dict) and record.get(STALE) == mark:
            del record[STALE]
            # Only over the value read: a new mark written meanwhile stays.
            store.replace_state_if(key, raw, record)


def _chain(records: dict[str, Any], session_id: str) -> list[str]:
    """The sessions ``session_id`` was joined to, one after another; the
    last is where its messages belong. ``records`` has no cycles
    (:func:`_cycles_broken` ran on them)."""
    chain = [str(records[session_id]["into"])]
    while chain[-1] in records:
        chain.append(str(records[chain[-1]]["into"]))
    return chain


def _newest_write(store: DurableStore, session_id: str) -> float | None:
    # The row's last_active_at lags (session_touch_interval); every message
    # is stored, so the newest one says when the session was last active.
    M = store.m.Message
    row = M.select(M.created_at).where(M.session_id == session_id).order_by(M.ts.desc()).limit(1).tuples().first()
    return float(row[0]) if row and row[0] is not None else None
