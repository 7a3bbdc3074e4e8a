"""Sessions under faults (docs/MEMORY_SESSIONS.md): the copy of recent
conversations, provisional sessions and how they are settled, the
background rebuild after a flush."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from core.models import Session
from plugins.memory.provisional import JOIN_FRESH, JOIN_KEEP, JOIN_SCAN_EVERY, JOINED_PREFIX, follow_joins, windows_dropped
from plugins.memory.recent import RecentConversations
from plugins.memory.records import to_row
from plugins.memory.store import SessionStateUnreachable
from tests.memory.conftest import Backend, database_cut, run, started
from tests.memory.helpers import Killed, abandon, dies_dropping, ids, rec

SCOPE = "dm:u3"
S = Session(id="s-old", scope_key=SCOPE, opened_at=1000.0, last_active_at=1000.0, user_id="u3")
BLIND = {"provisional": {"idle_timeout": 1800.0, "max_age": None}}


def _p(at: float, **state: object) -> Session:
    return Session(id="s-blind", scope_key=SCOPE, opened_at=at, last_active_at=at, user_id="u3", state=dict(state or BLIND))


async def _until(at: float) -> None:
    await asyncio.sleep(max(0.0, at - time.time()) + 0.2)


def session_ids(backend: Backend) -> list[str]:
    return sorted({r[0] for r in backend.sql("SELECT session_id FROM messages WHERE scope_key = ?", (SCOPE,))})


def rows(backend: Backend) -> list[str]:
    return sorted(r[0] for r in backend.sql("SELECT session_id FROM sessions WHERE scope_key = ?", (SCOPE,)))


async def _a_serving_s(backend: Backend) -> Any:
    """Instance A, started, with messages 1 and 2 in S and S's window built."""
    a = backend.store("A")
    await a.start()
    try:
        await a.save_session(S)
        for n in (1, 2):
            await a.store_message(rec(n, session=S))
        assert ids(await a.load_messages(S, 10)) == ["1001", "1002"]  # S's window
    except BaseException:
        abandon(a)
        raise
    return a


async def _next_probe_after_a_died_dropping(backend: Backend, a: Any, step: Callable[[], Awaitable[object]], expected: list[str]) -> None:
    """D3: A runs ``step`` and dies the moment it would drop S's window; the
    next probe of another instance serves S with ``expected``."""
    try:
        dies_dropping(a, S.id)
        with pytest.raises(Killed):
            await step()
        assert session_ids(backend) == ["s-old"]
    finally:
        abandon(a)
    async with started(backend.store("B")) as b:
        await b.probe()
        assert ids(await b.load_messages(S, 10)) == expected


# --- the copy ------------------------------------------------------------------------


def test_the_copy_is_bounded_and_merges_reads_with_writes() -> None:
    copies = RecentConversations(window_size=3, max_scopes=2, max_messages=100)
    copies.note_session(dataclasses.asdict(S))
    copies.add(rec(1, session=S))
    assert copies.window(S.id) is None  # an append alone is no history
    copies.note_window(S.id, [rec(2, session=S), rec(3, session=S)])
    copies.note_window(S.id, [rec(3, session=S)])  # a shorter read loses nothing
    copies.add(rec(4, session=S))
    assert ids(copies.window(S.id) or []) == ["1002", "1003", "1004"]
    copies.add(rec(5, session=S))
    assert ids(copies.window(S.id) or []) == ["1003", "1004", "1005"]  # the last window_size
    for n in range(2):
        copies.note_session({**dataclasses.asdict(S), "id": f"x{n}", "scope_key": f"other{n}"})
    assert len(copies) == 2 and copies.session(SCOPE) is None  # least recently used went first
    fresh = {**dataclasses.asdict(S), "id": "new", "opened_at": 5.0, "last_active_at": 5.0}
    copies.note_session(fresh, written=True)
    assert copies.window("new") == []  # opened here: known empty


def test_a_write_goes_into_the_copy_in_message_order_once() -> None:
    copies = RecentConversations(window_size=5)
    copies.note_session(dataclasses.asdict(S))
    copies.note_window(S.id, [rec(1, session=S), rec(3, session=S)])
    copies.add(rec(2, session=S))  # older than the last known: sorted in
    copies.add(rec(3, session=S))  # known already: not twice
    copies.add(rec(4, session=S))
    copies.add(rec(4, session=S))
    assert ids(copies.window(S.id) or []) == ["1001", "1002", "1003", "1004"]


def test_the_copy_answers_only_when_redis_and_the_database_both_fail(backend: Backend) -> None:
    async def go() -> None:
        async with started(backend.store()) as store:
            await store.save_session(S)
            for n in (1, 2):
                await store.store_message(rec(n, session=S))
            await store.load_messages(S, 10)
            backend.flush()
            with database_cut(backend, store):
                assert await store.store_message(rec(3, session=S)) is True  # queued, not degraded
                assert not store.db_ok
                found = await store.load_session(SCOPE)
                assert found is not None and found.id == S.id
                assert ids(await store.load_messages(S, 10)) == ["1001", "1002", "1003"]

    run(go())


def test_with_no_copy_anywhere_the_state_is_unreachable_not_empty(backend: Backend) -> None:
    async def go() -> None:
        async with started(backend.store("A")) as a:
            await a.save_session(S)
        async with started(backend.store("B")) as b:
            backend.flush()
            with database_cut(backend, b):
                b.db_breaker.trip("cut")  # SQLite would still let it read
                with pytest.raises(SessionStateUnreachable):
                    await b.load_session(SCOPE)

    run(go())


def test_a_forgotten_user_leaves_no_copy(backend: Backend) -> None:
    async def go() -> None:
        async with started(backend.store()) as store:
            await store.save_session(S)
            await store.store_message(rec(1, session=S))
            await store.load_messages(S, 10)
            await store.forget_user("u3")
            assert store.recent.session(SCOPE) is None and store.recent.window(S.id) is None

    run(go())


# --- provisional sessions ----------------------------------------------------------------


async def _blind_after(backend: Backend, store: object, opened: float) -> None:
    """``S`` with two messages is stored; then, with the database cut, a
    provisional session opened at ``opened`` gets message 3; the database
    returns and the outbox drains."""
    await store.save_session(S)  # type: ignore[attr-defined]
    for n in (1, 2):
        await store.store_message(rec(n, session=S))  # type: ignore[attr-defined]
    blind = _p(opened)
    with database_cut(backend, store):  # type: ignore[arg-type]
        await store.save_session(blind)  # type: ignore[attr-defined]
        assert await store.store_message(rec(3, session=blind)) is False  # memory degraded
    await store.probe()  # type: ignore[attr-defined]
    assert store.db_ok  # type: ignore[attr-defined]


def test_a_provisional_session_is_joined_to_the_conversation_it_continues(backend: Backend) -> None:
    async def go() -> None:
        async with started(backend.store()) as store:
            await _blind_after(backend, store, 1010.0)
            assert rows(backend) == ["s-old"] and session_ids(backend) == ["s-old"]
            found = await store.load_session(SCOPE)
            assert found is not None and found.id == "s-old" and found.last_active_at >= 1010.0
            assert ids(await store.load_messages(found, 10)) == ["1001", "1002", "1003"]
            assert await store.store_message(rec(4, session=found)) is True

    run(go())


def test_a_join_whose_instance_died_before_dropping_the_window_is_dropped_by_the_next_probe(backend: Backend) -> None:
    """D3: the join committed (message 3 moved into S) and its instance died
    before it dropped S's window, which lacks message 3. Another instance's
    probe finds the join not yet published and drops it."""

    async def go() -> None:
        a = await _a_serving_s(backend)
        try:
            blind = _p(1010.0)
            with database_cut(backend, a):
                await a.save_session(blind)
                assert await a.store_message(rec(3, session=blind)) is False
        except BaseException:
            abandon(a)
            raise
        # Replays, joins s-blind into S, dies.
        await _next_probe_after_a_died_dropping(backend, a, a.probe, ["1001", "1002", "1003"])

    run(go())


def test_a_provisional_session_after_the_timeout_stays_a_conversation_of_its_own(backend: Backend) -> None:
    async def go() -> None:
        async with started(backend.store()) as store:
            # S's last message is stored at the bot clock: past it + 1800 s, S had ended.
            await _blind_after(backend, store, backend.clock.now() + 1800)
            found = await store.load_session(SCOPE)
            # Its own conversation; fresh, so its past arriving late would be judged again (rule 11).
            assert found is not None and found.id == "s-blind" and found.state == {"fresh": BLIND["provisional"]}
            assert rows(backend) == ["s-blind", "s-old"] and session_ids(backend) == ["s-blind", "s-old"]

    run(go())


def test_a_message_written_to_a_joined_session_follows_the_join(backend: Backend) -> None:
    """S10: a write in flight when the join ran (or another instance's spool
    replayed later) lands under the joined id; the next probe moves it."""

    async def go() -> None:
        async with started(backend.store()) as store:
            await _blind_after(backend, store, 1010.0)
            assert rows(backend) == ["s-old"]
            await store.probe()  # the join's own second look is behind us
            assert store.db is not None
            await store.db.run(store.db.insert_messages, [to_row(rec(4, session=_p(1010.0)), 1004.0)])  # late, under s-blind
            fresh = dataclasses.asdict(_p(1010.0, fresh=BLIND["provisional"]))  # its row saved late, no longer provisional
            await store.db.run(store.db.upsert_session, fresh, None)
            assert session_ids(backend) == ["s-blind", "s-old"] and rows(backend) == ["s-blind", "s-old"]
            await store.probe()
            assert session_ids(backend) == ["s-old"] and rows(backend) == ["s-old"]
            found = await store.load_session(SCOPE)
            assert found is not None and found.id == "s-old"
            assert ids(await store.load_messages(found, 10)) == ["1001", "1002", "1003", "1004"]

    run(go())


def test_a_late_write_moved_by_an_instance_that_died_before_dropping_the_window_is_in_the_next_context(backend: Backend) -> None:
    """D3 again: the probe that moved a late write into S died before it
    dropped S's window; the next probe of any instance drops it."""

    async def go() -> None:
        a = backend.store("A")
        await a.start()
        try:
            await _blind_after(backend, a, 1010.0)
            await a.probe()
            assert ids(await a.load_messages(S, 10)) == ["1001", "1002", "1003"]  # S's window
            assert a.db is not None
            await a.db.run(a.db.insert_messages, [to_row(rec(4, session=_p(1010.0)), 1004.0)])  # late, under s-blind
        except BaseException:
            abandon(a)
            raise
        await _next_probe_after_a_died_dropping(backend, a, a.probe, ["1001", "1002", "1003", "1004"])

    run(go())


def test_a_late_write_moved_down_a_chain_of_joins_reaches_the_last_sessions_window_when_its_mover_died(backend: Backend) -> None:
    """D3 along a chain: s-blind was joined to s-mid, s-mid to S. A late
    write under s-blind is moved to S, the end of the chain; the probe that
    moved it died (or its call timed out) before dropping S's window. The
    next probe drops S's window, not only the first hop's (the chaos soak
    met it: a mover's call that timed out committed later)."""

    async def go() -> None:
        a = await _a_serving_s(backend)
        try:
            assert a.db is not None
            at = time.time()
            await a.db.run(a.db.set_state, JOINED_PREFIX + "s-mid", {"into": S.id, "scope": SCOPE, "at": at})
            await a.db.run(a.db.set_state, JOINED_PREFIX + "s-blind", {"into": "s-mid", "scope": SCOPE, "at": at})
            await a.db.run(a.db.insert_messages, [to_row(rec(3, session=_p(1010.0)), 1003.0)])  # late, under s-blind
        except BaseException:
            abandon(a)
            raise
        await _next_probe_after_a_died_dropping(backend, a, a._follow_joins, ["1001", "1002", "1003"])

    run(go())


def test_a_late_write_under_an_old_join_follows_it_when_a_replay_wrote_it_or_at_the_next_look_under_all(backend: Backend) -> None:
    """S10 without a scan of every join on every probe: a join older than
    JOIN_FRESH is looked under when an outbox replay wrote under its id (a
    spool replayed late), and otherwise at the next look under every join
    (every JOIN_SCAN_EVERY seconds, and a life's first probe)."""

    async def go() -> None:
        async with started(backend.store()) as store:
            await store.save_session(S)
            await store.store_message(rec(1, session=S))
            assert store.db is not None
            old = time.time() - JOIN_FRESH - 60
            await store.db.run(store.db.set_state, JOINED_PREFIX + "s-blind", {"into": S.id, "scope": SCOPE, "at": old})
            await store.probe()  # the life's first look, under every join: nothing there yet
            await store._apply([store.outbox.entry("msg", list(to_row(rec(2, session=_p(1010.0)), 1002.0)))])  # a spool, late
            await store.probe()
            assert session_ids(backend) == ["s-old"]
            assert ids(await store.load_messages(S, 10)) == ["1001", "1002"]
            await store.db.run(store.db.insert_messages, [to_row(rec(3, session=_p(1010.0)), 1003.0)])  # named by nothing
            await store.probe()
            assert session_ids(backend) == ["s-blind", "s-old"]  # not looked under: the join is old
            store._joins_looked_at -= JOIN_SCAN_EVERY
            await store.probe()
            assert session_ids(backend) == ["s-old"]
            assert ids(await store.load_messages(S, 10)) == ["1001", "1002", "1003"]

    run(go())


def test_a_write_landing_in_a_joins_last_minute_is_moved_before_its_record_goes(backend: Backend) -> None:
    """S10: a write lands under a joined id while the join's record is still
    kept (named by nothing: a write in flight, a stop's hand-over replay, a
    failover's write-back). The record's day ends before the next look under
    every join; a probe that did not look under it must not delete it."""

    async def go() -> None:
        async with started(backend.store()) as store:
            await store.save_session(S)
            await store.store_message(rec(1, session=S))
            assert ids(await store.load_messages(S, 10)) == ["1001"]
            assert store.db is not None
            at = time.time() - JOIN_KEEP + 3.0  # a day old in 3 s
            await store.db.run(store.db.set_state, JOINED_PREFIX + "s-blind", {"into": S.id, "scope": SCOPE, "at": at})
            await store.probe()  # the life's first look under every join: nothing there
            await store.db.run(store.db.insert_messages, [to_row(rec(2, session=_p(1010.0)), 1002.0)])  # late, the record still kept
            assert time.time() < at + JOIN_KEEP
            await _until(at + JOIN_KEEP)  # the record's day is over; the next look under all is ~a minute away
            await store.probe()  # an ordinary probe
            store._joins_looked_at -= JOIN_SCAN_EVERY
            await store.probe()  # the look under every join
            assert session_ids(backend) == ["s-old"]
            assert ids(await store.load_messages(S, 10)) == ["1001", "1002"]

    run(go())


def test_a_late_write_moved_as_its_join_record_expires_reaches_the_window_when_its_mover_died(backend: Backend) -> None:
    """D3: the look that moves a late write marks the record stale first, so
    that a mover killed before its drop leaves the mark for the next probe.
    When the same call deletes the record (older than JOIN_KEEP), the mark
    goes with it and S's window lacks the moved message for good."""

    async def go() -> None:
        a = await _a_serving_s(backend)
        try:
            assert a.db is not None
            at = time.time() - JOIN_KEEP + 3.0
            await a.db.run(a.db.set_state, JOINED_PREFIX + "s-blind", {"into": S.id, "scope": SCOPE, "at": at})
            await a.db.run(a.db.insert_messages, [to_row(rec(3, session=_p(1010.0)), 1003.0)])  # late, the record still kept
            assert time.time() < at + JOIN_KEEP
            await _until(at + JOIN_KEEP)
        except BaseException:
            abandon(a)
            raise
        # The life's first look under every join: moves it into S, dies.
        await _next_probe_after_a_died_dropping(backend, a, a._follow_joins, ["1001", "1002", "1003"])

    run(go())


def test_a_join_into_a_session_whose_own_row_came_back_is_not_undone(backend: Backend) -> None:
    """S10 on a cycle of joins: s-blind was joined into s-old (its record
    stays a day), its row came back (a save in flight), and s-old (fresh,
    judged again by rule 11, or provisional with s-blind as its `after`)
    was then joined into s-blind: all messages are under s-blind, the live
    row. followed as a chain, s-blind's end was s-blind
    itself: the look deleted the live row and 'moves' its messages onto themselves
    (a new stale mark and a drop on every look). The later join wins."""

    async def go() -> None:
        async with started(backend.store()) as store:
            blind = _p(1010.0, fresh=BLIND["provisional"])
            await store.save_session(blind)
            for n in (1, 2):
                await store.store_message(rec(n, session=blind))
            assert store.db is not None
            now = time.time()
            await store.db.run(store.db.set_state, JOINED_PREFIX + "s-blind", {"into": S.id, "scope": SCOPE, "at": now - 120})
            await store.db.run(store.db.set_state, JOINED_PREFIX + S.id, {"into": "s-blind", "scope": SCOPE, "at": now - 60})
            await store.probe()
            assert rows(backend) == ["s-blind"]  # the conversation's row, where every message is
            found = await store.load_session(SCOPE)
            assert found is not None and found.id == "s-blind"

    run(go())


def test_a_join_mark_is_not_cleared_by_a_probe_that_dropped_the_windows_before_rows_moved_again(backend: Backend) -> None:
    """D3: Q's probe finds a join marked stale and drops the windows; a late
    write lands under the joined id; P's probe moves it and dies before its
    drop; Q then clears the mark it dropped for. P's mark must survive it."""

    async def go() -> None:
        async with started(backend.store("Q")) as q, started(backend.store("P")) as p:
            await q.save_session(S)
            for n in (1, 2):
                await q.store_message(rec(n, session=S))
            assert q.db is not None
            # A join's record its joiner left marked (it died before its drop).
            await q.db.run(q.db.set_state, JOINED_PREFIX + "s-blind", {"into": S.id, "scope": SCOPE, "at": time.time(), "stale": "m1"})
            moved, stale = await q.db.run(follow_joins, q.db)  # Q's probe, first half
            assert stale and not moved
            await q._invalidate({"s-blind", S.id}, {SCOPE})
            assert ids(await q.load_messages(S, 10)) == ["1001", "1002"]  # S's window rebuilt
            await q.db.run(q.db.insert_unless_deleted, tuple(to_row(rec(3, session=_p(1010.0)), backend.clock.now())))  # late, under s-blind
            dies_dropping(p, S.id)
            with pytest.raises(Killed):
                await p._follow_joins()  # moves it into S, dies
            await q._windows_dropped([(old, mark) for old, _, _, mark in stale])  # Q's probe, second half
            await q.probe()  # any later probe
            assert ids(await q.load_messages(S, 10)) == ["1001", "1002", "1003"]

    run(go())


def test_a_clear_does_not_overwrite_a_mark_written_between_its_read_and_its_write(backend: Backend) -> None:
    """D3: another probe marks the join anew (and moves a late write)
    between a clear's read of the record and its write."""

    async def go() -> None:
        async with started(backend.store("Q")) as q:
            await q.save_session(S)
            assert q.db is not None
            db = q.db
            await db.run(db.set_state, JOINED_PREFIX + "s-blind", {"into": S.id, "scope": SCOPE, "at": time.time(), "stale": "m1"})
            await db.run(db.insert_unless_deleted, tuple(to_row(rec(3, session=_p(1010.0)), backend.clock.now())))  # late, under s-blind

            class Racing:
                def __getattr__(self, name: str) -> object:
                    return getattr(db, name)

                def state_raw(self, key: str) -> object:
                    raw = db.state_raw(key)
                    follow_joins(db)  # P's probe, between Q's read and Q's write; P then dies
                    return raw

            await db.run(windows_dropped, Racing(), [("s-blind", "m1")])
            record = await db.run(db.get_state, JOINED_PREFIX + "s-blind")
            assert record.get("stale")  # P's mark: its moved write's window is still to drop

    run(go())


def test_a_provisional_session_with_nothing_before_it_joins_the_session_opened_beside_it(backend: Backend) -> None:
    """S5: another instance, finding nothing to continue, opened a session
    for the scope while the provisional one was active: one conversation."""
    beside = Session(id="s-beside", scope_key=SCOPE, opened_at=1012.0, last_active_at=1012.0, user_id="u3")

    async def go() -> None:
        async with started(backend.store()) as store:
            blind = _p(1010.0)
            with database_cut(backend, store):
                await store.save_session(blind)
                assert await store.store_message(rec(10, session=blind)) is False
            store.db_breaker.reset()
            assert store.db is not None
            await store.db.run(store.db.upsert_session, dataclasses.asdict(beside), None)
            await store.db.run(store.db.insert_messages, [to_row(rec(12, session=beside), 1012.0)])
            await store.probe()
            assert rows(backend) == ["s-beside"] and session_ids(backend) == ["s-beside"]
            found = await store.load_session(SCOPE)
            assert found is not None and found.id == "s-beside"
            assert ids(await store.load_messages(found, 10)) == ["1010", "1012"]

    run(go())


def test_a_provisional_session_is_not_joined_to_a_session_opened_after_it_went_idle(backend: Backend) -> None:
    async def go() -> None:
        async with started(backend.store()) as store:
            # The blind session's message is stored at the bot clock: past it + 1800 s, it had ended.
            at = backend.clock.now() + 1805
            later = Session(id="s-later", scope_key=SCOPE, opened_at=at, last_active_at=at, user_id="u3")
            blind = _p(1010.0)
            with database_cut(backend, store):
                await store.save_session(blind)
                await store.store_message(rec(10, session=blind))
            store.db_breaker.reset()
            assert store.db is not None
            await store.db.run(store.db.upsert_session, dataclasses.asdict(later), None)
            await store.probe()
            assert rows(backend) == ["s-blind", "s-later"]

    run(go())


def test_a_provisional_session_waits_for_the_outbox(backend: Backend) -> None:
    async def go() -> None:
        async with started(backend.store()) as store:
            await store.save_session(S)
            blind = _p(1010.0)
            with database_cut(backend, store):
                await store.save_session(blind)
                await store.store_message(rec(3, session=blind))
                # The database is still cut: the provisional session is used as it is.
                assert (await store.load_session(SCOPE)) == blind
            assert store.spool.files()  # written while the database was cut, not replayed yet
            store.db_breaker.reset()  # the database answers, the probe has not run
            found = await store.load_session(SCOPE)
            assert found is not None and found.id == "s-blind"  # not settled before the outbox drained
            assert await _provisional_reported(store) == 1  # what operators see (docs/OPERATIONS.md)
            await store.probe()
            found = await store.load_session(SCOPE)
            assert found is not None and found.id == "s-old" and session_ids(backend) == ["s-old"]
            assert await _provisional_reported(store) == 0

    run(go())


async def _provisional_reported(store: object) -> int:
    reports = {r.component: r for r in await store.health()}  # type: ignore[attr-defined]
    return int(reports["database"].metrics["provisional"])


def test_a_provisional_session_is_settled_by_the_instance_that_replays_it(backend: Backend) -> None:
    """Its opener was killed before it could settle it: the instance that
    writes it to the database from the outbox settles it at its next probe,
    though no message of that conversation comes to read it back."""

    async def go() -> None:
        a = backend.store("A")
        await a.start()
        await a.save_session(S)
        for n in (1, 2):
            await a.store_message(rec(n, session=S))
        blind = _p(1010.0)
        with database_cut(backend, a):
            await a.save_session(blind)
            assert await a.store_message(rec(3, session=blind)) is False
            await a.stop()  # killed: its outbox keeps the writes, its copy is gone
        async with started(backend.store("B")) as b:
            await b.probe()
            assert rows(backend) == ["s-old"] and session_ids(backend) == ["s-old"]

    run(go())


def test_a_provisional_session_left_in_the_database_is_settled_by_the_next_instance_to_start(backend: Backend) -> None:
    """Whoever replayed it was killed before settling it, and no outbox
    holds it any more: an instance finds it in the database at its first
    probe."""

    async def go() -> None:
        async with started(backend.store("A")) as a:
            await a.save_session(S)
            await a.store_message(rec(1, session=S))
            a.recent = RecentConversations(a.settings.window_size)  # a replaying instance, killed:
            a._unsettled.clear()  # it knows nothing of what it wrote
            assert a.db is not None
            blind = dataclasses.asdict(_p(1010.0))
            await a.db.run(a.db.upsert_session, blind, None)
            await a.store_message(rec(2, session=_p(1010.0)))
        async with started(backend.store("B")) as b:
            await b.probe()
            assert rows(backend) == ["s-old"] and session_ids(backend) == ["s-old"]

    run(go())


# --- rule 11: a conversation whose past reaches the database late -----------------------

FRESH = {"fresh": {"idle_timeout": 1800.0, "max_age": None}}
PROVISIONAL = {"provisional": {"idle_timeout": 1800.0, "max_age": None}}


async def _first_beside_a_late_session(backend: Backend, a: object, b: object, later: float) -> None:
    """B opens the scope's session while its writes fail: only its outbox
    holds it, and a flush takes the stream's copy. A, finding nothing,
    opens the scope's first session ``later`` seconds after B's last write
    (the bot clock). Then B's probe replays its spool and settles what it
    wrote late."""
    await b.probe()  # type: ignore[attr-defined]  # its first probe's scan is behind it: the replay must tell
    at = backend.clock.now()
    early = Session(id="s-early", scope_key=SCOPE, opened_at=at, last_active_at=at, user_id="u3", state=dict(FRESH))
    with database_cut(backend, b):  # type: ignore[arg-type]
        await b.save_session(early)  # type: ignore[attr-defined]
        await b.store_message(rec(1, ts=at, session=early))  # type: ignore[attr-defined]
    first_at = at + later
    backend.flush()  # B's spool alone holds the conversation now
    assert await a.load_session(SCOPE) is None  # type: ignore[attr-defined]
    first = Session(id="s-first", scope_key=SCOPE, opened_at=first_at, last_active_at=first_at, user_id="u3", state=dict(FRESH))
    await a.save_session(first)  # type: ignore[attr-defined]
    await a.store_message(rec(2, ts=first_at, session=first))  # type: ignore[attr-defined]
    await b.probe()  # type: ignore[attr-defined]


def test_a_first_session_is_joined_to_a_session_replayed_late(backend: Backend) -> None:
    async def go() -> None:
        async with started(backend.store("A")) as a, started(backend.store("B")) as b:
            await _first_beside_a_late_session(backend, a, b, 10.0)
            assert rows(backend) == ["s-early"] and session_ids(backend) == ["s-early"]
            found = await a.load_session(SCOPE)
            assert found is not None and found.id == "s-early"
            assert ids(await a.load_messages(found, 10)) == ["1001", "1002"]

    run(go())


def test_a_first_session_after_the_timeout_stays_a_conversation_of_its_own(backend: Backend) -> None:
    async def go() -> None:
        async with started(backend.store("A")) as a, started(backend.store("B")) as b:
            await _first_beside_a_late_session(backend, a, b, 1800.0 + 60.0)
            assert rows(backend) == ["s-early", "s-first"] and session_ids(backend) == ["s-early", "s-first"]
            found = await a.load_session(SCOPE)
            assert found is not None and found.id == "s-first"
            assert await _provisional_reported(b) == 0

    run(go())


def test_a_first_session_beside_a_late_one_is_settled_by_the_next_instance_to_start(backend: Backend) -> None:
    """The instance that replayed the earlier session was killed before it
    looked at the scope: the replay left a mark in the database, and an
    instance finds it at its first probe (rule 11, as rule 6)."""

    async def go() -> None:
        at = backend.clock.now()
        async with started(backend.store("A")) as a:
            await a.probe()
            first = Session(id="s-first", scope_key=SCOPE, opened_at=at + 10, last_active_at=at + 10, user_id="u3", state=dict(FRESH))
            await a.save_session(first)
            await a.store_message(rec(2, ts=at + 10, session=first))
            early = dataclasses.asdict(Session(id="s-early", scope_key=SCOPE, opened_at=at, last_active_at=at, user_id="u3", state=dict(FRESH)))
            await a._apply([a.outbox.entry("session", {"s": early, "f": None}), a.outbox.entry("msg", list(to_row(rec(1, ts=at, session=_session(early)), at)))])
            a._late_scopes.clear()  # killed before its next probe: it never looked
        assert rows(backend) == ["s-early", "s-first"]
        async with started(backend.store("C")) as c:
            await c.probe()
            assert rows(backend) == ["s-early"] and session_ids(backend) == ["s-early"]
            found = await c.load_session(SCOPE)
            assert found is not None and ids(await c.load_messages(found, 10)) == ["1001", "1002"]
            await c.probe()  # the join grew s-early: its scope is looked at once more, then the mark goes
            assert not backend.sql("SELECT key FROM bot_state WHERE key LIKE ?", ("memory.late.%",))

    run(go())


async def _early_and_a_blind_session_replayed(backend: Backend, a: Any) -> float:
    """``s-early`` opened at ``at`` (returned), its row never touched again
    while the conversation goes on in it (message 1 at ``at + 1500``); and
    ``s-blind``, provisional, opened at ``at + 100`` early in an outage and
    replayed into the database late, its row as old."""
    at = backend.clock.now()
    await a.probe()
    early = Session(id="s-early", scope_key=SCOPE, opened_at=at, last_active_at=at, user_id="u3")
    await a.save_session(early)
    blind = dataclasses.asdict(Session(id="s-blind", scope_key=SCOPE, opened_at=at + 100.0, last_active_at=at + 100.0, user_id="u3", state=dict(PROVISIONAL)))
    await a._apply([a.outbox.entry("session", {"s": blind, "f": None})])
    backend.clock.advance(1500.0)
    await a.store_message(rec(1, ts=at + 1500.0, session=early))
    return at


def test_a_joined_session_is_as_active_as_its_newest_message(backend: Backend) -> None:
    """Rule 5's join, both rows lagging (a row's ``last_active_at`` reaches
    the database every ``session_touch_interval``, or never when a fault
    took the touch): the session a join hands to the read that made it, and
    writes, takes its activity from the newest message it now holds. Handed
    back with the rows' time, the message being handled found the
    conversation idle past the timeout and started it again (the chaos
    soak's split, seed 7: a provisional session opened early in an outage,
    read back late)."""

    async def go() -> None:
        async with started(backend.store("A")) as a:
            at = await _early_and_a_blind_session_replayed(backend, a)
            backend.flush()
            # The read finds s-blind, provisional, and settles it: joined to s-early.
            found = await a.load_session(SCOPE)
            assert rows(backend) == ["s-early"]
            assert found is not None and found.id == "s-early"
            assert found.last_active_at >= at + 1500.0
            (row,) = backend.sql("SELECT last_active_at FROM sessions WHERE session_id = ?", ("s-early",))
            assert row[0] >= at + 1500.0

    run(go())


def test_a_provisional_session_settled_alone_is_as_active_as_its_newest_message(backend: Backend) -> None:
    """Rule 5, nothing to join: the provisional session becomes a
    conversation of its own, handed back with its newest message's time,
    not its lagging row's."""

    async def go() -> None:
        at = backend.clock.now()
        async with started(backend.store("A")) as a:
            await a.probe()
            blind = Session(id="s-blind", scope_key=SCOPE, opened_at=at, last_active_at=at, user_id="u3", state=dict(PROVISIONAL))
            await a._apply([a.outbox.entry("session", {"s": dataclasses.asdict(blind), "f": None})])
            backend.clock.advance(1500.0)
            await a._apply([a.outbox.entry("msg", list(to_row(rec(1, ts=at + 1500.0, session=blind), at + 1500.0)))])
            backend.flush()
            found = await a.load_session(SCOPE)
            assert found is not None and found.id == "s-blind" and "provisional" not in found.state
            assert found.last_active_at >= at + 1500.0

    run(go())


def test_a_provisional_session_not_settled_yet_is_as_active_as_the_conversation_it_continues(backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rule 5: until it can be settled (here the outbox may still hold
    writes), a provisional session is used as it is, and judged with the
    activity of the conversation it continues. Judged by its own, it looked
    idle while the conversation went on in the session before it: the
    message being handled closed it by timeout and opened a new session,
    and the join carried that close to the conversation (the chaos soak's
    split, seed 7)."""

    async def go() -> None:
        async with started(backend.store("A")) as a:
            at = await _early_and_a_blind_session_replayed(backend, a)
            backend.flush()

            async def outbox_not_drained() -> bool:
                return True

            monkeypatch.setattr(a, "_outbox_may_hold_entries", outbox_not_drained)
            found = await a.load_session(SCOPE)
            assert found is not None and found.id == "s-blind" and "provisional" in found.state  # not settled yet
            assert found.last_active_at >= at + 1500.0
            assert rows(backend) == ["s-blind", "s-early"]

    run(go())


def _session(data: dict[str, object]) -> Session:
    return Session(**data)  # type: ignore[arg-type]


def test_a_session_ended_by_timeout_goes_on_when_its_later_messages_arrive_late(backend: Backend) -> None:
    """A's view: the conversation's last message was at t, so at t + 1900
    its session had timed out and a fresh one opened. B's outbox held a
    message of it from t + 1500 (its stream copy flushed away); replayed, the
    timeout is judged again: one conversation, open again (rule 11)."""
    from plugins.sessions.lifecycle import close

    async def go() -> None:
        async with started(backend.store("A")) as a, started(backend.store("B")) as b:
            await b.probe()  # its first probe's scan is behind it: the replay must tell
            t = backend.clock.now()
            old = Session(id="s-old", scope_key=SCOPE, opened_at=t, last_active_at=t, user_id="u3")
            await a.save_session(old)
            await a.store_message(rec(1, ts=t, session=old))
            backend.clock.advance(1500)
            with database_cut(backend, b):
                await b.store_message(rec(2, ts=t + 1500, session=old))
            backend.flush()  # B's spool alone holds message 2
            backend.clock.advance(400)
            await a.save_session(close(old, t + 1900, "idle", at=t + 1800))
            fresh = Session(id="s-fresh", scope_key=SCOPE, opened_at=t + 1900, last_active_at=t + 1900, user_id="u3", state=dict(FRESH))
            await a.save_session(fresh)
            await a.store_message(rec(3, ts=t + 1900, session=fresh))
            await b.probe()  # message 2 reaches the database late
            assert rows(backend) == ["s-old"] and session_ids(backend) == ["s-old"]
            found = await a.load_session(SCOPE)
            assert found is not None and found.id == "s-old" and found.closed_at is None
            assert ids(await a.load_messages(found, 10)) == ["1001", "1002", "1003"]

    run(go())


def test_a_join_that_brings_activity_after_a_timeout_was_judged_voids_that_end(backend: Backend) -> None:
    """Rule 5 (the chaos soak, seed 8, 8 Dec): two instances opened the
    conversation's session in the same millisecond; one, blind to the
    other's messages, ended its own by idle timeout, judged on its first
    message's time. The join brings messages later than that: the end was
    judged without them and is void, so the next message goes on in the
    conversation instead of opening a new session."""
    from plugins.sessions.lifecycle import close

    async def go() -> None:
        async with started(backend.store("A")) as a:
            await a.probe()
            t = backend.clock.now()
            early = Session(id="s-a", scope_key=SCOPE, opened_at=t, last_active_at=t, user_id="u3", state=dict(FRESH))
            await a.save_session(early)
            await a.store_message(rec(1, ts=t, session=early))
            blind = Session(id="s-b", scope_key=SCOPE, opened_at=t, last_active_at=t + 2200.0, user_id="u3", state=dict(BLIND))
            entries = [a.outbox.entry("session", {"s": dataclasses.asdict(blind), "f": None})]
            entries += [a.outbox.entry("msg", list(to_row(rec(n, ts=t + at, session=blind), t + at))) for n, at in ((2, 1000.0), (3, 2200.0))]
            await a._apply(entries)
            backend.clock.advance(2300.0)
            await a.save_session(close(early, t + 2300.0, "idle", at=t + 1800.0))  # judged without s-b's messages
            backend.flush()
            found = await a.load_session(SCOPE)  # settles s-b: joined to s-a
            assert rows(backend) == ["s-a"] and session_ids(backend) == ["s-a"]
            assert found is not None and found.id == "s-a" and found.closed_at is None
            assert found.last_active_at >= t + 2200.0
            (row,) = backend.sql("SELECT closed_at FROM sessions WHERE session_id = ?", ("s-a",))
            assert row[0] is None

    run(go())


def _locks_awaited(backend: Backend) -> int:
    found = backend.sql(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    return int(found[0][0])


@pytest.mark.real  # row locks between connections: SQLite takes the file's write lock instead
def test_two_instances_settling_a_chain_of_provisional_sessions_lose_no_message(backend: Backend) -> None:
    """P1 continues S and P2 continues P1 (two outages in a row). One
    instance joins P1 into S while another settles P2: P2's messages end in
    S, never in P1's deleted row; a settle never waits for a lock another
    transaction holds (a paused instance may hold it for seconds)."""
    import psycopg2

    from plugins.memory.provisional import SettleLater, settle

    async def go() -> None:
        async with started(backend.store()) as store:
            assert store.db is not None
            p1 = dataclasses.replace(_p(1010.0), id="s-p1")
            p2 = dataclasses.replace(_p(1020.0), id="s-p2")
            for n, session in enumerate((S, p1, p2), start=1):
                await store.save_session(session)
                await store.store_message(rec(n, session=session))
            other = psycopg2.connect(backend.database_url)  # the other instance, mid-join of P1 into S
            try:
                with other.cursor() as cur:
                    cur.execute("SELECT 1 FROM sessions WHERE session_id = 's-p1' FOR UPDATE")
                    cur.execute("UPDATE messages SET session_id = 's-old' WHERE session_id = 's-p1'")
                    cur.execute("DELETE FROM sessions WHERE session_id = 's-p1'")
                task = asyncio.ensure_future(store.db.run(settle, store.db, "s-p2", slow=True))
                for _ in range(500):  # bounded: until the settle is done or waits for the other's locks
                    if task.done() or _locks_awaited(backend):
                        break
                    await asyncio.sleep(0.01)
                other.commit()
            finally:
                other.close()
            try:
                settled = await task
            except SettleLater:  # it found P1 locked and changed nothing: the next probe tries again
                settled = await store.db.run(settle, store.db, "s-p2")
            assert settled is not None and settled.session["id"] == "s-old"
            assert rows(backend) == ["s-old"] and session_ids(backend) == ["s-old"]

    run(go())


@pytest.mark.real  # row locks between connections: SQLite takes the file's write lock instead
def test_a_settle_does_not_wait_for_a_row_another_transaction_holds(backend: Backend) -> None:
    """An instance paused mid-write holds its row lock for seconds: a settle
    that waited would time out and mark the database down. It leaves the
    session provisional for the next probe instead."""
    import psycopg2

    async def go() -> None:
        async with started(backend.store()) as store:
            await store.save_session(S)
            await store.store_message(rec(1, session=S))
            blind = _p(1010.0)
            with database_cut(backend, store):
                await store.save_session(blind)
                await store.store_message(rec(2, session=blind))
            other = psycopg2.connect(backend.database_url)  # the paused instance, mid-save of S
            try:
                with other.cursor() as cur:
                    cur.execute("SELECT 1 FROM sessions WHERE session_id = 's-old' FOR UPDATE")
                await store.probe()  # the database is back: replay, then settle
                assert store.db_ok and rows(backend) == ["s-blind", "s-old"]
            finally:
                other.rollback()
                other.close()
            await store.probe()
            assert rows(backend) == ["s-old"] and session_ids(backend) == ["s-old"]

    run(go())


# --- the background rebuild -----------------------------------------------------------------


def test_after_a_flush_the_probe_rebuilds_recent_windows(backend: Backend) -> None:
    async def go() -> None:
        async with started(backend.store()) as store:
            await store.save_session(S)
            for n in (1, 2):
                await store.store_message(rec(n, session=S))
            await store.load_messages(S, 10)
            backend.flush()
            await store.probe()
            task = store._refills.get("(recent)")
            if task is not None:  # else already done: the window below says it ran
                await asyncio.wait([task])
            assert store.cache is not None
            hot, _counter = await store.cache.window(S, 10)
            assert hot is not None and ids(hot) == ["1001", "1002"]
            assert await store.cache.get_session(SCOPE) is not None

    run(go())
