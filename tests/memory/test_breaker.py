"""G7: an outage is noticed on the first failing call, routed around at once
(later calls do not touch the dead backend), and recovery is automatic."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from plugins.memory.breaker import BackendDown, Breaker
from tests.memory.conftest import Backend, database_cut, run, started
from tests.memory.helpers import SESSION, db_history, ids, rec, replay_waits, warm


def test_breaker_opens_on_trip_and_closes_on_reset() -> None:
    b = Breaker("x")
    b.check()
    b.trip("boom")
    with pytest.raises(BackendDown, match="x unavailable: boom"):
        b.check()
    b.reset()
    b.check()
    assert (b.failures, b.recoveries) == (1, 1)


class Spy:
    """Counts calls into a real callable and passes them through."""

    def __init__(self, fn: Any) -> None:
        self.fn = fn
        self.calls = 0

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        return await self.fn(*args, **kwargs)


def test_database_outage_is_routed_around_after_the_first_failure_and_recovers_by_itself(backend: Backend) -> None:
    async def go() -> None:
        async with started(backend.store(probe_interval=0.05)) as store:
            assert store.db is not None
            await store.store_message(rec(1))
            spy = Spy(store.db.run)
            store.db.run = spy  # type: ignore[method-assign]
            with database_cut(backend, store):
                assert await store.store_message(rec(2)) is True  # first failure: tripped, queued
                assert not store.db_ok
                calls = spy.calls
                for n in range(3, 8):
                    assert await store.store_message(rec(n)) is True
                assert spy.calls == calls  # the dead database was not asked again
            for _ in range(200):  # the probe notices the database is back (bounded wait)
                if store.db_ok and db_history(backend) == [str(1000 + n) for n in range(1, 8)]:
                    break
                await asyncio.sleep(0.05)
            assert store.db_ok
            assert db_history(backend) == [str(1000 + n) for n in range(1, 8)]

    run(go())


@pytest.fixture
def blackhole() -> Iterator[int]:
    """A TCP port that accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
                held.append(conn)
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join(2)
    for conn in held:
        conn.close()
    server.close()


def test_a_redis_that_never_answers_costs_one_timeout_then_nothing(backend: Backend, blackhole: int) -> None:
    async def go() -> None:
        store = backend.store(redis_url=f"redis://127.0.0.1:{blackhole}/0", redis_timeout=0.1)
        async with started(store):
            assert not store.redis_ok  # the start-up ping timed out
            assert store.cache is not None
            spy = Spy(store.cache.call)
            store.cache.call = spy  # type: ignore[method-assign]
            for n in range(1, 6):
                assert await store.store_message(rec(n)) is True
            assert ids(await store.load_messages(SESSION, 10)) == [str(1000 + n) for n in range(1, 6)]
            assert spy.calls == 0

    run(go())


def test_a_probe_that_finds_the_backend_answering_voids_the_confirmation() -> None:
    """A6: Redis decides only while the database is known down. A breaker
    whose recovery work is still running (the probe's ping answered) is not."""
    breaker = Breaker("database")
    breaker.trip("connection refused", probed=True)
    assert breaker.confirmed
    breaker.answered()
    assert not breaker.ok and not breaker.confirmed
    breaker.trip("connection refused", probed=True)
    assert breaker.confirmed


async def until(condition: Any, what: str, timeout: float = 10.0) -> None:
    """A bounded wait on the event ``condition`` names."""
    try:
        async with asyncio.timeout(timeout):
            while not condition():
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"not within {timeout} s: {what}") from None


def test_h1_pings_run_while_recovery_work_waits(backend: Backend) -> None:
    """A replay that waits does not stop the pings: a second cut is known
    at once (Redis may decide, A6), and so is the database answering again."""

    async def go() -> None:
        async with started(backend.store(probe_interval=0.05)) as store:
            with database_cut(backend, store):
                await store.store_message(rec(1))  # queued: something to replay
                await until(lambda: store.db_down_confirmed, "a ping confirmed the cut")
            go_on = replay_waits(store)
            await until(lambda: not store.db_down_confirmed and store._recovering.locked(), "the replay began")
            with database_cut(backend, store):
                await until(lambda: store.db_down_confirmed, "a ping during the replay confirmed the second cut")
            await until(lambda: not store.db_down_confirmed, "a ping during the replay found the database back")
            assert not store.db_ok  # its breaker still open for the replay
            go_on.set()
            await until(lambda: store.db_ok, "the replay closed the breaker")
            assert db_history(backend) == ["1001"]

    run(go())


def test_h1_a_redis_restart_seen_while_recovery_work_waits_is_not_forgotten(backend: Backend) -> None:
    """Nothing of a restarted Redis is served until the epoch is bumped,
    however long the recovery work under way takes (R1)."""

    async def go() -> None:
        async with started(backend.store(probe_interval=0.05)) as store:
            assert store.cache is not None
            ping, server = store.cache.ping, ["server-a"]

            async def answered_by() -> tuple[str, int]:
                _run_id, depth = await ping()  # (fakeredis has no run id)
                return server[0], depth

            store.cache.ping = answered_by
            await until(lambda: store.run_id == "server-a", "a ping saw the server")
            await store.store_message(rec(1))
            with database_cut(backend, store):
                await store.store_message(rec(2))
                await until(lambda: store.db_down_confirmed, "a ping confirmed the cut")
            go_on = replay_waits(store)
            await until(lambda: store._recovering.locked() and not store.db_down_confirmed, "the replay began")
            epoch = store.cache.epoch
            server[0] = "server-b"  # restarted
            await until(lambda: not store.redis_ok, "a ping saw the restart")
            assert store.cache.epoch == epoch  # not bumped yet: the recovery work waits
            go_on.set()
            await until(lambda: store.redis_ok and store.db_ok, "the recovery work closed both breakers")
            assert store.cache.epoch != epoch

    run(go())


def test_h1_a_restart_seen_during_the_bump_for_another_gets_a_bump_of_its_own(backend: Backend) -> None:
    """Pings go on while the recovery work bumps the epoch: the breaker it
    closes must not let through a server it did not bump for."""

    async def go() -> None:
        async with started(backend.store()) as store:  # (probes only when asked)
            assert store.cache is not None
            ping, bump, server, bumps = store.cache.ping, store.cache.bump_epoch, ["server-a"], []

            async def answered_by() -> tuple[str, int]:
                _run_id, depth = await ping()  # (fakeredis has no run id)
                return server[0], depth

            async def restarted_again_meanwhile() -> Any:
                if server[0] == "server-b":
                    server[0] = "server-c"
                    await store.check()  # a ping while the recovery work bumps for server-b
                bumps.append(server[0])
                return await bump()

            store.cache.ping, store.cache.bump_epoch = answered_by, restarted_again_meanwhile
            await store.probe()
            server[0] = "server-b"
            await store.probe()  # bumps for b; meanwhile c is seen
            assert not store.redis_ok  # not closed on b's bump: c's is owed
            count = len(bumps)
            await store.probe()
            assert store.redis_ok and len(bumps) > count

    run(go())


def test_h1_a_restart_a_call_saw_after_the_redis_ping_gets_its_bump(backend: Backend) -> None:
    """Redis (server-a) answers the tick's ping; while the database's ping of
    the same round takes its time (up to claim_ttl / 3), Redis restarts
    (server-b, maybe from an older snapshot) and a message's call notices it
    (Cache.run: a closed connection, another server) and opens the breaker.
    The recovery work the tick starts must not close that breaker on
    server-a's answer without a bump: no ping has seen server-b yet (R1)."""

    async def go() -> None:
        async with started(backend.store()) as store:  # (probes only when asked)
            assert store.cache is not None and store.db is not None
            ping, bump, server, bumps, pings = store.cache.ping, store.cache.bump_epoch, ["server-a"], [], []

            async def answered_by() -> tuple[str, int]:
                _run_id, depth = await ping()  # (fakeredis has no run id)
                pings.append(server[0])
                return server[0], depth

            async def counted() -> Any:
                bumps.append(server[0])
                return await bump()

            store.cache.ping, store.cache.bump_epoch = answered_by, counted
            await store.probe()
            assert store.redis_ok and store.run_id == "server-a"
            bumps.clear()  # (the real matrix's first probe saw the real run id change to server-a)

            db_ping, answering = store.db.ping, asyncio.Event()

            async def slow_db_ping(timeout: float | None = None) -> None:
                await answering.wait()  # a database slow to answer (CPU, load)
                await db_ping(timeout)

            store.db.ping = slow_db_ping  # type: ignore[method-assign]
            tick = asyncio.ensure_future(store.check())  # the loop's tick
            await until(lambda: len(pings) == 2, "the tick's Redis ping answered")
            server[0] = "server-b"  # Redis restarted; a message's call sees it:
            store.redis_failed(BackendDown("redis", "ConnectionError: closed; another server answers"))
            answering.set()
            await tick
            store.recover_soon()  # as the loop does right after
            assert store._recovery is not None
            await store._recovery
            assert not store.redis_ok or bumps, "server-b is served, no ping saw it and no epoch bump was made for it"

    run(go())


@pytest.mark.parametrize("backend", ["real"], indirect=True)
def test_h1_a_restarted_redis_serves_an_old_snapshot_window(backend: Backend) -> None:
    """The same race with a real restart from a snapshot: the window it
    brings back lacks the last message, and is served (D4, R1)."""

    async def go() -> None:
        assert backend.redis is not None
        async with started(backend.store()) as store:
            assert store.db is not None
            await store.store_message(rec(1))
            await store.store_message(rec(2))
            await warm(store)
            with contextlib.closing(backend.redis.client()) as c:
                c.save()  # the snapshot a restart loads
            await store.store_message(rec(3))
            assert ids(await store.load_messages(SESSION, 10)) == ["1001", "1002", "1003"]
            await store.probe()

            db_ping, answering = store.db.ping, asyncio.Event()

            async def slow_db_ping(timeout: float | None = None) -> None:
                await answering.wait()
                await db_ping(timeout)

            store.db.ping = slow_db_ping  # type: ignore[method-assign]
            asked = store._redis_answered_at
            tick = asyncio.ensure_future(store.check())
            await until(lambda: store._redis_answered_at > asked, "the Redis ping of the round answered")
            backend.redis_down()
            backend.redis_up()  # restarted from the snapshot: another run id
            got = await store.load_messages(SESSION, 10)  # a message's read notices
            assert not store.redis_ok and ids(got) == ["1001", "1002", "1003"]
            answering.set()
            await tick
            store.recover_soon()
            assert store._recovery is not None
            await store._recovery
            try:
                assert ids(await store.load_messages(SESSION, 10)) == ["1001", "1002", "1003"]
            finally:
                (backend.redis.directory / "dump.rdb").unlink(missing_ok=True)

    run(go())


def test_h1_a_ping_under_way_does_not_hide_the_answer_of_the_last_one(backend: Backend) -> None:
    """Both backends come back after a double outage (A7). The recovery work
    started after the round that found both answering first recovers Redis;
    meanwhile the next round begins (an arbiter's claim, or the next tick)
    and its database ping is slow. The recovery work must still do the
    database's part on the last answer (else its breaker stays open, writes
    queued, for one more probe_interval)."""

    async def go() -> None:
        async with started(backend.store()) as store:
            assert store.cache is not None and store.db is not None
            backend.redis_unreachable()
            try:
                with database_cut(backend, store):
                    await store.store_message(rec(1))  # queued: something to replay
                    await store.check()
                    assert store.db_down_confirmed and not store.redis_ok
            finally:
                backend.redis_reachable()
            await store.check()  # both answer
            assert not store.db_down_confirmed and not store.db_ok and not store.redis_ok

            refresh, refreshing = store.cache.refresh_epoch, asyncio.Event()
            keep, keeping = store._keep_recent, asyncio.Event()
            db_ping, answering = store.db.ping, asyncio.Event()

            async def slow_refresh() -> str:
                await refreshing.wait()  # Redis's recovery: some round trips
                return await refresh()

            async def slow_keep() -> None:
                waiting.append("keep")
                await keeping.wait()  # the recent windows' rebuild
                await keep()

            async def slow_db_ping(timeout: float | None = None) -> None:
                waiting.append("ping")
                await answering.wait()
                await db_ping(timeout)

            waiting: list[str] = []
            store.cache.refresh_epoch, store._keep_recent = slow_refresh, slow_keep  # type: ignore[method-assign]
            store.recover_soon()
            await until(lambda: store._recovering.locked(), "the recovery work began")
            store.db.ping = slow_db_ping  # type: ignore[method-assign]
            next_round = asyncio.ensure_future(store.check())
            await until(lambda: "ping" in waiting, "the next round's database ping began")
            refreshing.set()
            await until(lambda: "keep" in waiting, "the recovery work is past the database's part")
            answering.set()
            await next_round  # the database answered again
            store.recover_soon()  # as the caller of check() does
            keeping.set()
            assert store._recovery is not None
            await store._recovery
            assert store.db_ok or not store._recovery.done(), "two rounds found the database answering; its breaker is open, no recovery pending"

    run(go())


def replay_began(store: Any) -> asyncio.Event:
    """Set when ``store``'s next outbox replay is called."""
    replay, began = store._replay_outbox, asyncio.Event()

    async def signalled() -> int:
        began.set()
        return int(await replay())

    store._replay_outbox = signalled
    return began


def test_h1_recovery_work_does_not_close_the_database_breaker_a_later_ping_found_down(backend: Backend) -> None:
    """The database answers a ping after an outage; the recovery work's
    replay waits (another instance's locks). Meanwhile the database goes
    again and a ping confirms it: claims go to Redis (A6). Then Redis fails
    under the replay (or, on SQLite, there is simply nothing to replay):
    the replay asks the database nothing, and the breaker must stay open
    and the outage confirmed, the pings alone decide that (H1)."""

    async def go() -> None:
        async with started(backend.store()) as store:  # (probes only when asked)
            with database_cut(backend, store):
                await store.check()
                assert store.db_down_confirmed
            await store.check()  # it answers: not known down; the breaker waits for the recovery work
            assert not store.db_ok and not store.db_down_confirmed
            go_on = replay_waits(store)
            began = replay_began(store)
            store.recover_soon()
            await asyncio.wait_for(began.wait(), 10)
            with database_cut(backend, store):
                await store.check()
                assert store.db_down_confirmed  # known down again: Redis decides claims
                backend.redis_unreachable()
                try:
                    go_on.set()
                    assert store._recovery is not None
                    await asyncio.wait_for(store._recovery, 20)
                finally:
                    backend.redis_reachable()
                assert store.db_down_confirmed, f"breaker closed (db_ok={store.db_ok}) though the last ping found the database down"

    run(go())


def test_h1_the_database_breaker_is_not_closed_on_a_ping_asked_before_a_call_found_it_down(backend: Backend) -> None:
    """As for Redis: the tick's database ping is answered,
    its answer arrives late (a starved thread, a slow round trip); meanwhile
    the database goes and a claim's statement finds it down, opening the
    breaker. The recovery work the tick starts must not close the breaker on
    that older answer (nothing asked after the failure said it answers)."""

    async def go() -> None:
        async with started(backend.store()) as store:  # (probes only when asked)
            assert store.db is not None
            db_ping, delivered, pinged = store.db.ping, asyncio.Event(), asyncio.Event()

            async def answer_arrives_late(timeout: float | None = None) -> None:
                await db_ping(timeout)  # the database answered this ping...
                pinged.set()
                await delivered.wait()  # ...the answer is read later

            store.db.ping = answer_arrives_late  # type: ignore[method-assign]
            tick = asyncio.ensure_future(store.check())
            await asyncio.wait_for(pinged.wait(), 10)
            with database_cut(backend, store):
                claim = asyncio.ensure_future(store.arbiter.claim("1001", backend.clock.now()))
                await until(lambda: not store.db_ok, "the claim's statement found the database down")
                delivered.set()
                await tick
                store.recover_soon()  # as the loop does after the tick
                assert store._recovery is not None
                await asyncio.wait_for(store._recovery, 20)
                claim.cancel()  # (this store pings only when asked; its outcome is not the point)
                assert not store.db_ok, "the breaker closed on an answer asked before the call found the database down"

    run(go())
