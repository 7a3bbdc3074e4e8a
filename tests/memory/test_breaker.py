"""G7: an outage is noticed on the first failing call, routed around at once
(later calls do not touch the dead backend), and recovery is automatic."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from plugins.memory.breaker import BackendDown, Breaker
from tests.memory.conftest import Backend, database_cut, run, started
from tests.memory.helpers import SESSION, db_history, ids, rec


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
