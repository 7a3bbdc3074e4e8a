"""Claims through the faults the chaos soak (docs/CHAOS.md) found them weak
against: each case here answered a message twice in a 20,000-message soak.

- A claim erased (FLUSHALL, Redis restarted empty) while its holder is still
  answering, and a second instance waiting on it.
- A holder paused past its claim: another instance answered meanwhile, and
  Redis lost the trace of it before the paused one resumed.
- An instance whose breakers opened because its own connections broke (the
  backends are up): nothing must look "unarbitrable" before a probe says so.
"""

from __future__ import annotations

import asyncio
import contextlib

from core.models import Role
from plugins.memory.store import MemoryStore
from tests.memory.conftest import Backend, database_cut, run, started
from tests.memory.helpers import rec


def reply_to(n: int) -> object:
    return rec(n + 1, role=Role.BOT, author="bot", id=f"reply:{1000 + n}", reply_to_id=str(1000 + n))


def held_long(store: MemoryStore, message_id: str) -> None:
    """As if the holder had been held up (paused) since it claimed."""
    store.coordinator.held_since[message_id] -= 60


def trip_both(store: MemoryStore) -> None:
    store.redis_breaker.trip("connection closed while the process was paused")
    store.db_breaker.trip("connection closed while the process was paused")


def test_a_claim_erased_under_its_live_holder_is_put_back(backend: Backend) -> None:
    async def go() -> None:
        async with started(backend.store("A")) as a, started(backend.store("B", claim_wait=20)) as b:
            assert await a.coordinator.claim("1001")
            waiting = asyncio.ensure_future(b.coordinator.claim("1001"))
            await asyncio.sleep(0.2)  # B has seen A's live claim and waits on it
            backend.flush()
            await asyncio.sleep(0.3)  # B finds the key gone
            assert not waiting.done()  # B did not take the message
            await a.store_message(rec(1))
            await a.store_message(reply_to(1))  # A answers
            assert await asyncio.wait_for(waiting, 10) is False

    run(go())


def test_a_resumed_holder_sees_the_answer_given_while_redis_lost_the_claims(backend: Backend) -> None:
    async def go() -> None:
        async with started(backend.store("A")) as a, started(backend.store("B")) as b:
            assert await a.coordinator.claim("1002")
            held_long(a, "1002")  # A is paused
            backend.flush()
            assert await b.coordinator.claim("1002")  # a redelivery to B
            await b.store_message(rec(2))
            await b.store_message(reply_to(2))
            backend.flush()  # and Redis loses the "done" too
            assert await a.coordinator.still_mine("1002") is False

    run(go())


def test_a_resumed_holder_whose_connections_broke_does_not_send_over_another_answer(backend: Backend) -> None:
    async def go() -> None:
        async with started(backend.store("A", claim_ttl=30)) as a, started(backend.store("B", claim_ttl=30)) as b:
            assert await a.coordinator.claim("1003")
            held_long(a, "1003")  # A is paused past its claim
            backend.clock.advance(31)
            assert await b.coordinator.claim("1003")
            await b.store_message(rec(3))
            await b.store_message(reply_to(3))
            trip_both(a)  # A resumes: its connections were closed meanwhile
            assert await a.coordinator.still_mine("1003") is False

    run(go())


def test_an_instance_with_both_breakers_open_asks_the_backends_before_answering_unarbitrated(backend: Backend) -> None:
    async def go() -> None:
        async with started(backend.store("A")) as a, started(backend.store("B")) as b:
            assert await b.coordinator.claim("1004")
            await b.store_message(rec(4))
            await b.store_message(reply_to(4))
            trip_both(a)
            assert await a.coordinator.claim("1004") is False
            assert a.redis_ok and a.db_ok  # the probe found both up

    run(go())


def test_redis_failing_while_the_outbox_replays_does_not_keep_the_database_down(backend: Backend) -> None:
    # In the soak this kept an instance at "both down" seconds after the
    # database was back, and it answered messages unarbitrated.
    async def go() -> None:
        async with started(backend.store("A")) as a:
            with database_cut(backend, a):
                await a.store_message(rec(5))  # queued: spool and shared stream
            assert not a.db_ok
            replay = a._apply

            async def replay_then_redis_fails(entries: list[dict[str, object]]) -> None:
                await replay(entries)  # the spool's entries reach the database
                backend.redis_down()  # then Redis goes before the stream is read

            a._apply = replay_then_redis_fails  # type: ignore[method-assign]
            try:
                await a.probe()
            finally:
                backend.redis_up()
            assert a.db_ok
            assert not a.redis_ok
            assert backend.sql("SELECT count(*) FROM messages WHERE message_id = '1005'") == [(1,)]

    run(go())


def test_with_both_backends_down_a_fresh_message_is_answered_an_old_one_is_not(backend: Backend) -> None:
    async def go() -> None:
        async with started(backend.store("A")) as a:
            now = backend.clock.now()
            backend.redis_down()
            with database_cut(backend, a):
                trip_both(a)
                # G6: what arrives while memory is down is answered...
                assert await a.coordinator.claim("1010", sent_at=now - 5) is True
                # ...but a backlog older than a claim's life (this process was
                # paused) may have been answered elsewhere, and nothing can tell.
                assert await a.coordinator.claim("1011", sent_at=now - a.settings.claim_ttl - 1) is False
            backend.redis_up()

    run(go())


def test_an_instance_claiming_in_the_database_sees_an_answer_given_through_redis(backend: Backend) -> None:
    async def go() -> None:
        async with started(backend.store("A")) as a, started(backend.store("B")) as b:
            assert await a.coordinator.claim("1020")  # A still reaches Redis
            await a.store_message(rec(20))
            await a.store_message(reply_to(20))
            b.redis_breaker.trip("B alone lost Redis")  # B claims in the database
            assert await b.coordinator.claim("1020") is False

    run(go())



def test_a_redis_connection_the_server_closed_is_not_an_outage(postgres_backend: Backend) -> None:
    """Real Redis only: fakeredis has no connections to close. (A restart,
    where the server's run id changes, still trips the breaker: see
    features/redis_eviction.feature.)"""
    backend = postgres_backend
    assert backend.redis is not None

    async def go() -> None:
        async with started(backend.store("A")) as a:
            assert a.cache is not None
            await a.cache.run(("PING",))  # a pooled connection exists
            with contextlib.closing(backend.redis.client()) as admin:
                admin.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
            assert await a.coordinator.claim("1030") is True
            assert a.redis_ok  # the same server answered on a fresh connection: not an outage

    run(go())


def test_an_instance_claiming_in_redis_leaves_a_message_claimed_in_the_database(backend: Backend) -> None:
    async def go() -> None:
        async with started(backend.store("A")) as a, started(backend.store("B")) as b:
            a.redis_breaker.trip("A alone lost Redis")
            assert await a.coordinator.claim("1040")  # claimed in the database
            assert await b.coordinator.claim("1040") is False  # B, still on Redis, sees it there
            assert await b.coordinator.claim("1041")  # and takes what nobody holds

    run(go())


def test_a_redis_breaker_opened_on_a_closed_connection_is_probed_before_claiming_in_the_database(backend: Backend) -> None:
    async def go() -> None:
        async with started(backend.store("A")) as a:
            a.redis_breaker.trip("ConnectionError: Connection closed by server.")  # Redis restarted, and is back
            assert await a.coordinator.claim("1050")
            assert a.redis_ok  # the probe found it back: the claim was taken in Redis...
        assert backend.sql("SELECT COUNT(*) FROM claims")[0][0] == 0  # ...where every instance looks

    run(go())
