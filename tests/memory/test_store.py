"""The store against real backends: SQLite + fakeredis, PostgreSQL + a
private redis-server. Each test names the guarantee it proves."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json

from typing import Any

import pytest

from core.models import MessageRecord, Role, Session
from plugins.memory.breaker import BackendDown
from plugins.memory.store import MemoryStore
from tests.memory.conftest import Backend, database_cut, run, started
from tests.memory.helpers import SESSION, Killed, abandon, db_history, ids, rec, warm, with_attachment


def test_write_then_read_round_trips_every_field(backend: Backend) -> None:
    async def go() -> None:
        async with started(backend.store()) as store:
            original = with_attachment(rec(1, content="héllo\twörld ✓", reply_to_id="999"))
            assert await store.store_message(original) is True
            cold = await warm(store)  # from the database; the window is rebuilt
            hot = await store.load_messages(SESSION, 10)  # served from the window
            for got in (cold, hot):
                assert [r.to_dict() for r in got] == [original.to_dict()]

    run(go())


def test_g1_accepted_message_is_in_the_database_not_only_redis(backend: Backend) -> None:
    async def go() -> None:
        async with started(backend.store()) as store:
            await store.store_message(rec(1))
            await warm(store)
            await store.store_message(rec(2))
        assert db_history(backend) == ["1001", "1002"]
        backend.flush()
        async with started(backend.store()) as store:
            assert ids(await store.load_messages(SESSION, 10)) == ["1001", "1002"]

    run(go())


def test_g3_duplicate_writes_are_stored_once(backend: Backend) -> None:
    async def go() -> None:
        async with started(backend.store("A")) as a, started(backend.store("B")) as b:
            await a.store_message(rec(1))
            await warm(a)  # window exists
            await b.store_message(rec(1))
            await a.store_message(rec(2))
            await b.store_message(rec(2))
            assert ids(await a.load_messages(SESSION, 10)) == ["1001", "1002"]
            assert ids(await b.load_messages(SESSION, 10)) == ["1001", "1002"]
        assert backend.sql("SELECT COUNT(*) FROM messages")[0][0] == 2

    run(go())


def test_g3_the_first_stored_version_wins_and_a_changed_redelivery_does_not_overwrite_it(backend: Backend) -> None:
    """A message written again by another instance with other content, and a
    second instance's different reply to it: each id is stored once, as first
    written, in the database and in every context, hot or rebuilt."""

    def reply(content: str, ts: float) -> MessageRecord:
        return rec(1, ts=ts, id="reply:1001", role=Role.BOT, author="bot", content=content, reply_to_id="1001")

    async def go() -> None:
        expected = ["as first written", "the first answer", "message 2"]
        async with started(backend.store("A")) as a, started(backend.store("B")) as b:
            assert await a.store_message(rec(1, content="as first written")) is True
            await warm(a)
            assert await b.store_message(rec(1, content="changed on redelivery")) is True
            await a.store_message(reply("the first answer", 1001.5))
            await b.store_message(reply("a second answer", 1001.7))
            await a.store_message(rec(2))
            for store in (a, b):
                assert [r.content for r in await store.load_messages(SESSION, 10)] == expected
            backend.flush()
            for store in (a, b):
                assert [r.content for r in await store.load_messages(SESSION, 10)] == expected
        rows = backend.sql("SELECT message_id, content FROM messages")
        assert sorted(rows) == [("1001", "as first written"), ("1002", "message 2"), ("reply:1001", "the first answer")]

    run(go())


def test_g4_order_is_platform_time_whatever_the_write_order(backend: Backend) -> None:
    async def go() -> None:
        async with started(backend.store()) as store:
            await store.store_message(rec(5))
            await warm(store)
            await store.store_message(rec(3))  # arrives late
            await store.store_message(rec(9))
            await store.store_message(rec(4, ts=1005.0, id="99"))  # same time as 1005, shorter id first
            assert ids(await store.load_messages(SESSION, 10)) == ["1003", "99", "1005", "1009"]
            assert ids(await store.load_messages(SESSION, 2)) == ["1005", "1009"]

    run(go())


@pytest.mark.parametrize("noticed", [False, True], ids=["append-first", "probe-first"])
def test_g5_append_after_flush_does_not_create_a_one_message_history(backend: Backend, noticed: bool) -> None:
    """An append onto a flushed window must not create it. With
    ``probe-first`` the instance has seen the flush (its health probe put the
    epoch key back, to the same value) before the next message arrives, so
    the new message's window key is the one the flush removed: only the
    append's refusal to create a missing list keeps the history whole."""

    async def go() -> None:
        async with started(backend.store()) as store:
            for n in range(1, 4):
                await store.store_message(rec(n))
            assert ids(await store.load_messages(SESSION, 10)) == ["1001", "1002", "1003"]
            backend.flush()
            if noticed:
                await store.probe()
            await store.store_message(rec(4))
            assert ids(await store.load_messages(SESSION, 10)) == ["1001", "1002", "1003", "1004"]
            # and the rebuilt window is what later reads are served from
            await store.store_message(rec(5))
            assert ids(await store.load_messages(SESSION, 10)) == ["1001", "1002", "1003", "1004", "1005"]

    run(go())


def test_g5_rebuild_does_not_miss_a_write_racing_it(backend: Backend) -> None:
    """A write landing between a rebuild's database query and its cache fill
    makes the fill give up, instead of caching a window without it."""

    async def go() -> None:
        async with started(backend.store("A")) as a, started(backend.store("B")) as b:
            await a.store_message(rec(1))
            assert a.cache is not None and a.db is not None
            counter = await a.cache.counter(SESSION.id)
            epoch = a.cache.epoch
            rows = await a.db.run(a.db.last_messages, SESSION.id, 200)
            await b.store_message(rec(2))  # lands after the query
            from plugins.memory import records

            entries = [records.encode_entry(records.from_row(r)) for r in rows]
            assert await a.cache.fill(SESSION.id, entries, counter, epoch) is False
            assert ids(await a.load_messages(SESSION, 10)) == ["1001", "1002"]

    run(go())


@pytest.mark.parametrize("role", [Role.USER, Role.BOT], ids=["user-message", "reply"])
def test_d7_a_write_by_an_instance_that_knew_an_old_epoch_reaches_the_window_rebuilt_meanwhile(backend: Backend, role: Role) -> None:
    """B bumps the epoch and rebuilds the window from the database; A, which
    has not probed since, writes. A's append lands on the old generation's
    window, which nobody reads: the new one must not be served without the
    write (rule D7)."""

    async def go() -> None:
        async with started(backend.store("A")) as a, started(backend.store("B")) as b:
            assert a.cache is not None and b.cache is not None
            await a.store_message(rec(1))
            assert ids(await warm(a)) == ["1001"]
            await b.cache.bump_epoch()
            assert ids(await warm(b)) == ["1001"]  # the new generation's window
            await a.store_message(rec(2, role=role, author="bot" if role is Role.BOT else "u3"))
            assert ids(await b.load_messages(SESSION, 10)) == ["1001", "1002"]
            assert ids(await a.load_messages(SESSION, 10)) == ["1001", "1002"]

    run(go())


def test_d7_a_window_rebuilt_while_a_user_message_commits_gets_it(backend: Backend) -> None:
    """A user's message goes to the window once the database committed it:
    B's rebuild, reading the database before the commit, creates a window
    without it, and A's append, after the commit, puts it there (rule D7;
    the known limit of an append made while the insert committed is gone)."""

    async def go() -> None:
        async with started(backend.store("A")) as a, started(backend.store("B")) as b:
            assert a.cache is not None and a.db is not None
            await a.store_message(rec(1))
            insert = a.db.insert

            async def rebuilt_by_b_first(row: Any) -> bool:
                await b.cache.drop_window(SESSION.id)
                assert ids(await warm(b)) == ["1001"]  # rebuilt without message 2
                return await insert(row)

            a.db.insert = rebuilt_by_b_first  # type: ignore[method-assign]
            await a.store_message(rec(2))
            assert ids(await b.load_messages(SESSION, 10)) == ["1001", "1002"]

    run(go())


async def _a_write_only_in_the_database_after_b_rebuilt_under_a_new_epoch(a: Any, b: Any) -> None:
    """Message 1 in A's window; B moves the epoch and rebuilds the window
    under it; message 2 reaches the database only (as an outbox replay)."""
    from plugins.memory import records

    assert a.cache is not None and a.db is not None and b.cache is not None
    await a.store_message(rec(1))
    assert ids(await warm(a)) == ["1001"]
    await b.cache.bump_epoch()
    assert ids(await warm(b)) == ["1001"]
    await a.db.insert(records.to_row(rec(2), 0.0))


def test_d7_an_invalidation_reaches_the_epoch_another_instance_moved_to(backend: Backend) -> None:
    """A write reached the database without the cache (an outbox replay);
    A drops the session's window, knowing an old epoch: the window B
    rebuilt under the new one before the write is dropped too (rule D7)."""

    async def go() -> None:
        async with started(backend.store("A")) as a, started(backend.store("B")) as b:
            await _a_write_only_in_the_database_after_b_rebuilt_under_a_new_epoch(a, b)
            await a.cache.invalidate({SESSION.id}, {SESSION.scope_key})
            assert a.cache.epoch == b.cache.epoch
            assert ids(await b.load_messages(SESSION, 10)) == ["1001", "1002"]

    run(go())


OTHER = Session(id="sess-2", scope_key="g:1:c:2:u:4", opened_at=1.0, last_active_at=1.0, guild_id="1", channel_id="2", user_id="u4")


def test_d7_two_writes_in_one_round_trip_after_a_bump_both_reach_the_new_windows(backend: Backend) -> None:
    """A knows the old epoch; B bumps it and rebuilds both sessions'
    windows. A stores a message in each session at once: both appends go in
    one round trip onto old-generation windows, and the second to resume
    finds the epoch already adopted by the first. Each must still compare
    with the epoch its own key named (rule D7)."""

    async def go() -> None:
        async with started(backend.store("A")) as a, started(backend.store("B")) as b:
            assert b.cache is not None
            await a.store_message(rec(1))
            await a.store_message(rec(1, session=OTHER, author="u4", id="2001"))
            await warm(a)
            await warm(a, OTHER)
            await b.cache.bump_epoch()
            await warm(b)
            await warm(b, OTHER)
            await asyncio.gather(a.store_message(rec(2)), a.store_message(rec(2, session=OTHER, author="u4", id="2002")))
            assert ids(await b.load_messages(SESSION, 10)) == ["1001", "1002"]
            assert ids(await b.load_messages(OTHER, 10)) == ["2001", "2002"]

    run(go())


def test_d7_an_invalidation_drops_under_the_epoch_redis_reported_whoever_adopted_it_first(backend: Backend) -> None:
    """While an invalidation's round trip is in flight, another coroutine
    of A (a window read, a lease, the probe) adopts the new epoch: the
    invalidation must still drop B's window of the new generation (D7)."""

    async def go() -> None:
        async with started(backend.store("A")) as a, started(backend.store("B")) as b:
            await _a_write_only_in_the_database_after_b_rebuilt_under_a_new_epoch(a, b)
            cache, real = a.cache, a.cache.call

            async def adopted_meanwhile(coro: Any) -> Any:
                if getattr(coro, "__qualname__", "").endswith("execute"):
                    cache._seen_epoch(await cache.r.get(cache.epoch_key))
                return await real(coro)

            cache.call = adopted_meanwhile  # type: ignore[method-assign]
            await cache.invalidate({SESSION.id}, set())
            cache.call = real  # type: ignore[method-assign]
            assert ids(await b.load_messages(SESSION, 10)) == ["1001", "1002"]

    run(go())


def _counting_round_trips(store: Any) -> list[int]:
    """Each Redis round trip the store's auto-pipeline sends, as its number of operations."""
    sent: list[int] = []
    send = store.cache.pipeline.send

    async def counting(groups: list[Any]) -> Any:
        sent.append(len(groups))
        return await send(groups)

    store.cache.pipeline.send = counting
    return sent


def test_d8_a_turn_reads_the_window_its_own_append_returned(backend: Backend) -> None:
    """The task that stored a user's message reads the session's window
    from what its append returned: no round trip of its own (rule D8)."""

    async def go() -> None:
        async with started(backend.store()) as store:
            await store.store_message(rec(1))
            await warm(store)
            await store.store_message(rec(2))
            sent = _counting_round_trips(store)
            assert ids(await store.load_messages(SESSION, 10)) == ["1001", "1002"]
            assert sent == []
            # Used once: the next read asks Redis.
            assert ids(await store.load_messages(SESSION, 10)) == ["1001", "1002"]
            assert sent == [1]

    run(go())


@pytest.mark.parametrize("touch", ["a reply stored", "an invalidation", "another task's read", "an epoch bump"])
def test_d8_a_window_touched_since_the_append_is_read_from_redis(backend: Backend, touch: str) -> None:
    """What the append returned is not served once anything else touched
    the window here, to another task, or under a moved epoch (rule D8)."""

    async def go() -> None:
        async with started(backend.store("A")) as store, started(backend.store("B")) as other:
            await store.store_message(rec(1))
            await warm(store)
            await store.store_message(rec(2))
            expected = ["1001", "1002"]
            if touch == "a reply stored":
                await store.store_message(rec(3, role=Role.BOT, author="bot", id="reply:1002"))
                expected.append("reply:1002")
            elif touch == "an invalidation":
                await other.store_message(rec(3))  # only B's window is told, A's copy is not
                await store.cache.invalidate({SESSION.id}, set())
                expected.append("1003")
            elif touch == "an epoch bump":
                await other.store_message(rec(3))
                await other.cache.bump_epoch()
                await store.cache.refresh_epoch()
                expected.append("1003")
            else:
                await other.store_message(rec(3))
                loaded = await asyncio.ensure_future(store.load_messages(SESSION, 10))
                assert ids(loaded) == ["1001", "1002", "1003"]
                expected.append("1003")
            sent = _counting_round_trips(store)
            assert ids(await store.load_messages(SESSION, 10)) == expected
            assert sent

    run(go())


def test_d8_a_retention_purge_after_the_append_is_not_served_from_the_appends_copy(backend: Backend) -> None:
    """Retention deletes message 1 and drops the session's window in this
    process after the turn's append returned: the turn's read is not
    served the append's copy that still shows the deleted message (D8: a
    drop since the append sends the read to Redis). Found by review."""
    from plugins.memory import retention

    async def go() -> None:
        async with started(backend.store()) as store:
            await store.store_message(rec(1))
            await warm(store)
            await store.store_message(rec(2))  # the turn's append (D8 copy kept)
            outcome = await retention.run(store, {"guild:1": 1.0}, now=1001.5 + retention.DAY)
            assert outcome.messages == 1
            assert ids(await store.load_messages(SESSION, 10)) == ["1002"]

    run(go())


def test_window_is_bounded_and_longer_reads_go_to_the_database(backend: Backend) -> None:
    async def go() -> None:
        async with started(backend.store(window_size=5)) as store:
            assert store.cache is not None
            bound = 5 + store.cache.trim_slack
            for n in range(1, 3 * bound):
                await store.store_message(rec(n))
                await warm(store)
                assert await store.cache.r.llen(store.cache.window_key(SESSION.id)) <= bound
            last = 3 * bound - 1
            assert ids(await store.load_messages(SESSION, 4)) == [str(1000 + n) for n in range(last - 3, last + 1)]
            assert ids(await store.load_messages(SESSION, 8)) == [str(1000 + n) for n in range(last - 7, last + 1)]
            ttl = await store.cache.r.ttl(store.cache.window_key(SESSION.id))
            assert 0 < ttl <= store.settings.cache_ttl

    run(go())


def test_g8_sessions_never_share_a_window(backend: Backend) -> None:
    other = Session(id="sess-2", scope_key="g:1:c:2:u:4", opened_at=1.0, last_active_at=1.0)

    async def go() -> None:
        async with started(backend.store()) as store:
            await store.store_message(rec(1))
            await store.store_message(rec(2, session=other, author="u4"))
            await warm(store)
            await store.store_message(rec(3))
            assert ids(await store.load_messages(SESSION, 10)) == ["1001", "1003"]
            assert ids(await store.load_messages(other, 10)) == ["1002"]

    run(go())


def test_g6_redis_down_reads_and_writes_use_the_database_and_the_cache_is_invalidated(backend: Backend) -> None:
    async def go() -> None:
        async with started(backend.store("A")) as a, started(backend.store("B")) as b:
            await a.store_message(rec(1))
            assert ids(await warm(b)) == ["1001"]  # window cached
            backend.redis_down()
            assert await a.store_message(rec(2)) is True
            assert not a.redis_ok
            assert ids(await a.load_messages(SESSION, 10)) == ["1001", "1002"]
            backend.redis_up()
            # B never saw the outage; A's recovery bumps the epoch for everyone,
            # and B adopts it at its next health probe.
            await a.probe()
            assert a.redis_ok
            await b.probe()
            assert ids(await b.load_messages(SESSION, 10)) == ["1001", "1002"]
            assert ids(await a.load_messages(SESSION, 10)) == ["1001", "1002"]

    run(go())


def test_g5_redis_back_while_the_database_is_down_serves_no_window_that_lacks_a_write(backend: Backend) -> None:
    """Redis stops answering (its data kept); A writes to the database
    only; then the database goes down for A, and Redis comes back. Neither A
    nor B (which never saw the outage) may now serve the window cached before
    the write: a context holding message 1 must hold message 2 too. Only A
    knows of that write until the database is back, so its recovery must
    invalidate the cache for everyone."""

    async def go() -> None:
        async with started(backend.store("A")) as a, started(backend.store("B")) as b:
            await a.store_message(rec(1))
            assert ids(await warm(b)) == ["1001"]  # window cached
            backend.redis_unreachable()
            try:
                await a.probe()  # as its background probe would: A routes around Redis
                assert await a.store_message(rec(2)) is True  # the database only
            finally:
                backend.redis_reachable()
            with contextlib.ExitStack() as cut:
                cut.enter_context(database_cut(backend, a))
                if backend.kind != "sqlite":  # SQLite's lock cuts every instance at once
                    cut.enter_context(database_cut(backend, b))
                await a.probe()
                await b.probe()
                assert a.redis_ok and b.redis_ok
                for store in (a, b):
                    got = ids(await store.load_messages(SESSION, 10))
                    assert "1001" not in got or "1002" in got, f"{store.instance_id} served {got}: message 1002 is in the database"
            await a.probe()
            await b.probe()  # (A's dirty flag, read now, bumps the epoch again: B rebuilds from the database)
            for store in (a, b):
                assert ids(await store.load_messages(SESSION, 10)) == ["1001", "1002"]

    run(go())


async def _a_dead_instance_left_the_cache_dirty(backend: Backend) -> MemoryStore:
    """B cached message 1001's window; A, routing around Redis after a call
    failed, stored 1002 in the database only and "died" before Redis was
    back for it: the window Redis holds is stale. (Not a stopped Redis: a
    command sent to it before the timeout runs when it resumes.)"""
    async with started(backend.store("B")) as b:
        await b.store_message(rec(1))
        assert ids(await warm(b)) == ["1001"]
    a = backend.store("A")
    await a.start()
    a._probe_task.cancel()  # type: ignore[union-attr]
    a.redis_failed(BackendDown("redis", "a call failed"))
    await a.store_message(rec(2))  # database only; A "dies" before Redis returns
    return a


def test_g5_a_dead_instance_dirty_cache_is_invalidated_by_the_next_start(backend: Backend) -> None:
    async def go() -> None:
        a = await _a_dead_instance_left_the_cache_dirty(backend)
        async with started(backend.store("C")) as c:
            assert ids(await c.load_messages(SESSION, 10)) == ["1001", "1002"]
        await a.stop()

    run(go())


@contextlib.asynccontextmanager
async def started_losing(backend: Backend, lose: Any) -> Any:
    """Start instance C, which loses a backend (``lose(C)`` enters the
    fault) between its first ping and its dirty check; yield C started."""
    c = backend.store("C")
    check = c._check_dirty_flags

    async def lost_first() -> None:
        c._check_dirty_flags = check  # type: ignore[method-assign]
        lose(c)
        await check()

    c._check_dirty_flags = lost_first  # type: ignore[method-assign]
    await c.start()
    try:
        yield c
    finally:
        await c.stop()


def test_g5_redis_lost_between_the_first_ping_and_the_dirty_check_starts_degraded(backend: Backend) -> None:
    """Seen in the soak: Redis closed the connection after a starting
    instance's first ping, and the start failed. It starts degraded instead,
    and the bump it owes the dead instance's dirty cache happens on recovery.
    (Real: the stopped Redis runs the bump sent before the timeout when it
    resumes, so only the fast matrix can see a recovery without the bump.)"""

    async def go() -> None:
        a = await _a_dead_instance_left_the_cache_dirty(backend)
        try:
            async with started_losing(backend, lambda _c: backend.redis_unreachable()) as c:
                assert not c.redis_ok
                assert ids(await c.load_messages(SESSION, 10)) == ["1001", "1002"]  # from the database
                backend.redis_reachable()
                await c.probe()
                assert c.redis_ok
                assert ids(await c.load_messages(SESSION, 10)) == ["1001", "1002"]  # not the stale window
        finally:
            backend.redis_reachable()
            await a.stop()

    run(go())


def test_g5_the_database_lost_during_the_dirty_check_is_checked_again_when_it_returns(backend: Backend) -> None:
    """The start lost the database before it read (or cleared) the dead
    instance's dirty flag: the recovery when the database returns reads it
    and bumps the epoch, not only a later probe."""

    async def go() -> None:
        a = await _a_dead_instance_left_the_cache_dirty(backend)
        cut: list[Any] = []
        try:
            async with started_losing(backend, lambda c: cut.append(database_cut(backend, c).__enter__())) as c:
                assert not c.db_ok
                cut.pop().__exit__(None, None, None)
                await c.probe()
                assert c.db_ok and c.redis_ok
                assert ids(await c.load_messages(SESSION, 10)) == ["1001", "1002"]  # not the stale window
        finally:
            for held in cut:
                held.__exit__(None, None, None)
            await a.stop()

    run(go())


def test_g6_database_down_writes_go_to_the_outbox_and_are_replayed_in_order(backend: Backend) -> None:
    async def go() -> None:
        async with started(backend.store()) as store:
            await store.store_message(rec(1))
            await warm(store)
            with database_cut(backend, store):
                assert await store.store_message(rec(3)) is True  # durable in the stream
                assert await store.store_message(rec(2)) is True
                assert not store.db_ok
                assert ids(await store.load_messages(SESSION, 10)) == ["1001", "1002", "1003"]
                depth = {r.component: r for r in await store.health()}["outbox"].metrics["depth"]
                assert depth == 2
                await store.store_message(rec(2))  # a redelivery while down
            await store.probe()
            assert store.db_ok
            assert db_history(backend) == ["1001", "1002", "1003"]
            assert {r.component: r for r in await store.health()}["outbox"].metrics["depth"] == 0
            assert ids(await store.load_messages(SESSION, 10)) == ["1001", "1002", "1003"]

    run(go())


def test_g6_both_down_the_spool_keeps_writes_and_nothing_is_lost(backend: Backend) -> None:
    async def go() -> None:
        async with started(backend.store()) as store:
            await store.store_message(rec(1))
            with database_cut(backend, store):
                backend.redis_down()
                assert await store.store_message(rec(2)) is False  # accepted, degraded
                assert await store.store_message(rec(3)) is False
                assert store.spool.depth() == 2
                assert ids(await store.load_messages(SESSION, 10)) == ["1002", "1003"]  # what is known
                backend.redis_up()
            await store.probe()
            await store.probe()
            assert store.db_ok and store.redis_ok
            assert store.spool.depth() == 0
            assert db_history(backend) == ["1001", "1002", "1003"]
            assert ids(await store.load_messages(SESSION, 10)) == ["1001", "1002", "1003"]

    run(go())


def test_g4_the_spool_replays_writes_in_the_order_they_were_made(backend: Backend) -> None:
    """With both backends down only the local spool holds the writes; when
    the database returns they are applied oldest first: the session's and
    the bot state's last saves win, and of two writes of one message id the
    first one stays (G3). Replayed newest first, each would come out the
    other way round."""

    async def go() -> None:
        async with started(backend.store()) as store:
            await store.save_session(dataclasses.replace(SESSION, state={"n": 0}))
            await store.save_bot_state("k", 0)
            await store.store_message(rec(1))
            with database_cut(backend, store):
                backend.redis_down()
                try:
                    await store.save_session(dataclasses.replace(SESSION, state={"n": 1}))
                    await store.save_session(dataclasses.replace(SESSION, state={"n": 2}, closed_at=50.0))
                    await store.save_bot_state("k", 1)
                    await store.save_bot_state("k", 2)
                    assert await store.store_message(rec(2, content="as first written")) is False  # spool only
                    await store.store_message(rec(2, content="a later copy"))
                    assert store.spool.depth() == 6
                finally:
                    backend.redis_up()
            await store.probe()
            await store.probe()
            assert store.spool.depth() == 0
            [(state, closed_at)] = backend.sql("SELECT state, closed_at FROM sessions WHERE session_id = ?", (SESSION.id,))
            assert (json.loads(state), closed_at) == ({"n": 2}, 50.0)
            assert backend.sql("SELECT content FROM messages WHERE message_id = '1002'") == [("as first written",)]
            assert await store.load_bot_state("k") == 2
            assert [r.content for r in await store.load_messages(SESSION, 10)] == ["message 1", "as first written"]

    run(go())


def test_d3_a_replayer_killed_once_the_entries_left_the_outbox_leaves_no_window_without_them(backend: Backend) -> None:
    """Writes only A's spool holds (Redis unreachable, its data kept, and
    the database cut): the window lacks them. A replays them and dies the
    moment they leave its spool: the window must not outlive the replay."""

    async def go() -> None:
        a = backend.store("A")
        await a.start()
        try:
            await a.store_message(rec(1))
            await warm(a)  # the window holds 1001
            with database_cut(backend, a):
                backend.redis_unreachable()
                try:
                    assert await a.store_message(rec(2)) is False  # the spool only
                    assert await a.store_message(rec(3)) is False
                finally:
                    backend.redis_reachable()
            drop = a.spool.drop_prefix

            def drop_then_die(*args: Any) -> None:
                drop(*args)
                raise Killed

            a.spool.drop_prefix = drop_then_die  # type: ignore[method-assign]
            with pytest.raises(Killed):
                for _ in range(3):  # Redis comes back at one probe, the database at the same or the next
                    await a.probe()
            assert db_history(backend) == ["1001", "1002", "1003"]
        finally:
            abandon(a)
        async with started(backend.store("B")) as b:
            assert ids(await b.load_messages(SESSION, 10)) == ["1001", "1002", "1003"]

    run(go())


def test_g2_spool_left_by_a_dead_instance_is_replayed_by_the_next(backend: Backend) -> None:
    async def go() -> None:
        a = backend.store("A")
        await a.start()
        with database_cut(backend, a):
            backend.redis_down()
            assert await a.store_message(rec(1)) is False
            backend.redis_up()
        await a.stop_without_replay() if hasattr(a, "stop_without_replay") else None
        a._probe_task.cancel()  # type: ignore[union-attr]
        async with started(backend.store("B")) as b:
            assert db_history(backend) == ["1001"]
            assert ids(await b.load_messages(SESSION, 10)) == ["1001"]

    run(go())


def test_sessions_round_trip_and_survive_a_flush(backend: Backend) -> None:
    async def go() -> None:
        async with started(backend.store()) as store:
            s = Session("s-9", "dm:42", 10.0, 20.0, user_id="42", channel_id="c", state={"summary": "hi", "n": [1, 2]})
            await store.save_session(s)
            assert await store.load_session("dm:42") == s
            backend.flush()
            assert await store.load_session("dm:42") == s
            s.closed_at = 30.0
            await store.save_session(s)
            assert (await store.load_session("dm:42")).closed_at == 30.0  # type: ignore[union-attr]
            newer = Session("s-10", "dm:42", 40.0, 40.0, user_id="42")
            await store.save_session(newer)
            assert (await store.load_session("dm:42")).id == "s-10"  # type: ignore[union-attr]
            backend.flush()
            assert (await store.load_session("dm:42")).id == "s-10"  # type: ignore[union-attr]
            assert [x.id for x in await store.list_sessions("42", 10)] == ["s-10", "s-9"]
            assert await store.load_session("dm:nobody") is None

    run(go())


def test_bot_state_is_shared_and_durable(backend: Backend) -> None:
    async def go() -> None:
        async with started(backend.store("A")) as a, started(backend.store("B")) as b:
            await a.save_bot_state("plugins.runtime", {"disabled": ["images"]})
            assert await b.load_bot_state("plugins.runtime") == {"disabled": ["images"]}
            await b.save_bot_state("plugins.runtime", {"disabled": []})
            assert await a.load_bot_state("plugins.runtime") == {"disabled": []}
            assert await a.load_bot_state("missing") is None

    run(go())


def test_export_and_forget_cover_database_cache_and_outbox(backend: Backend) -> None:
    other = Session(id="sess-2", scope_key="g:1:c:2:u:4", opened_at=1.0, last_active_at=1.0, user_id="u4")

    async def go() -> None:
        async with started(backend.store()) as store:
            await store.save_session(SESSION)
            await store.save_session(other)
            await store.store_message(rec(1))
            await store.store_message(rec(2, role=Role.BOT, author="bot", id="reply:1001", reply_to_id="1001"))
            await store.store_message(rec(3, session=other, author="u4", content="not yours"))
            await warm(store)
            await store.load_session(SESSION.scope_key)
            async with store.leases.lease(SESSION.scope_key):
                pass  # leaves a fencing counter keyed by the scope
            with database_cut(backend, store):
                await store.store_message(rec(4))  # queued in the outbox
            exported = await store.export_user("u3")
            assert sorted(m["id"] for m in exported["messages"]) == ["1001", "1004", "reply:1001"]
            assert [s["id"] for s in exported["sessions"]] == ["sess-1"]
            assert "not yours" not in str(exported)

            counts = await store.forget_user("u3")
            assert counts["messages"] == 2 and counts["outbox"] == 1 and counts["sessions"] == 1
            await store.probe()
            assert db_history(backend) == []
            assert backend.sql("SELECT COUNT(*) FROM messages WHERE author_id = 'u4'")[0][0] == 1
            assert store.cache is not None
            keys = [k.decode() for k in await store.cache.r.keys(f"{backend.prefix}*")]
            leftover = [k for k in keys if SESSION.id in k or SESSION.scope_key in k]
            assert not leftover, leftover  # windows, counters, sessions, leases, fences
            for key in keys:
                value = await store.cache.r.type(key)
                if value == b"list":
                    assert not any(b"u3" in e for e in await store.cache.r.lrange(key, 0, -1))
                elif value == b"string":
                    assert b'"u3"' not in (await store.cache.r.get(key) or b"")
            assert await store.load_messages(SESSION, 10) == []
            assert await store.load_session(SESSION.scope_key) is None

    run(go())


pytestmark = pytest.mark.timeout(120)


def test_hot_reads_are_served_from_redis_not_the_database(backend: Backend) -> None:
    """Proves the window is really used: a row removed behind the store's
    back is still in the hot context (and back from the database once the
    window is dropped)."""

    async def go() -> None:
        async with started(backend.store()) as store:
            await store.store_message(rec(1))
            await store.store_message(rec(2))
            await warm(store)
            if backend.kind == "sqlite":
                import sqlite3

                conn = sqlite3.connect(backend.database_url[len("sqlite:///") :])
                conn.execute("DELETE FROM messages WHERE message_id = '1001'")
                conn.commit()
                conn.close()
            else:
                import psycopg2

                conn = psycopg2.connect(backend.database_url)
                conn.autocommit = True
                conn.cursor().execute("DELETE FROM messages WHERE message_id = '1001'")
                conn.close()
            assert ids(await store.load_messages(SESSION, 10)) == ["1001", "1002"]
            backend.flush()
            assert ids(await store.load_messages(SESSION, 10)) == ["1002"]

    run(go())
