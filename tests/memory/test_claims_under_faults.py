"""Claims through the faults the chaos soak (docs/CHAOS.md) found them weak
against: each case here answered a message twice in a 20,000-message soak.

- A claim erased (FLUSHALL, Redis restarted empty) while its holder is still
  answering, and a second instance waiting on it.
- A holder paused past its claim: another instance answered meanwhile, and
  Redis lost the trace of it before the paused one resumed.
- An instance whose breakers opened because its own connections broke (the
  backends are up): nothing must look "unarbitrable" before a probe says so.
- A backlog (messages that waited while this instance was paused) handled
  while nothing can tell whether another instance answered it: silence, not
  a second answer; what arrives fresh is still answered (G6).
- Two deliveries of one message to one instance at once: one claim.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from core.models import Role
from plugins.memory.store import MemoryStore
from tests.memory.conftest import Backend, database_cut, run, started
from tests.memory.helpers import rec
from tests.memory.test_reports import pause_reports


def reply_to(n: int) -> object:
    return rec(n + 1, role=Role.BOT, author="bot", id=f"reply:{1000 + n}", reply_to_id=str(1000 + n))


async def answer(store: MemoryStore, n: int) -> None:
    """``store``'s instance stores message ``1000 + n`` and its reply."""
    await store.store_message(rec(n))
    await store.store_message(reply_to(n))


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
            await answer(a, 1)  # A answers
            assert await asyncio.wait_for(waiting, 10) is False

    run(go())


def test_a_resumed_holder_sees_the_answer_given_while_redis_lost_the_claims(backend: Backend) -> None:
    async def go() -> None:
        async with started(backend.store("A")) as a, started(backend.store("B", instance_timeout=60)) as b:
            assert await a.coordinator.claim("1002")
            held_long(a, "1002")  # A is paused past its claim and past
            await pause_reports(a)  # instance_timeout: B counts it as gone
            backend.clock.advance(61)
            backend.flush()
            assert await b.coordinator.claim("1002")  # a redelivery to B
            await answer(b, 2)
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
            await answer(b, 3)
            trip_both(a)  # A resumes: its connections were closed meanwhile
            assert await a.coordinator.still_mine("1003") is False

    run(go())


def test_an_instance_with_both_breakers_open_asks_the_backends_before_answering_unarbitrated(backend: Backend) -> None:
    async def go() -> None:
        async with started(backend.store("A")) as a, started(backend.store("B")) as b:
            assert await b.coordinator.claim("1004")
            await answer(b, 4)
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
            await answer(a, 20)
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


def test_an_old_message_redis_may_have_lost_the_claim_of_waits_for_the_database(backend: Backend) -> None:
    """A paused instance resumes with a backlog: Redis lost the "done" of a
    message another instance answered, and the database, which knows, is
    cut. The old message is not answered; a fresh one is (G6)."""

    async def go() -> None:
        async with started(backend.store("A")) as a, started(backend.store("B")) as b:
            now = backend.clock.now()
            old = now - a.settings.unarbitrated_max_age - 1
            assert await b.coordinator.claim("1060", sent_at=old)
            await answer(b, 60)
            backend.flush()  # Redis forgets the claim and its "done"
            with database_cut(backend, a):
                a.db_breaker.trip("database cut")
                assert await a.coordinator.claim("1060", sent_at=old) is False
                assert await a.coordinator.claim("1061", sent_at=now) is True  # nobody answered it: fresh, answered
            # A database breaker open only because this process stalled: the
            # probe finds the database, and the database finds the answer.
            a.coordinator._probe_started = -1e9  # the last probe (during the cut) is long past
            a.db_breaker.trip("no answer within 0.5s (this process was paused)")
            assert await a.coordinator.claim("1060", sent_at=old) is False
            assert a.db_ok

    run(go())


def test_a_reply_held_past_its_claim_is_not_sent_while_nothing_can_tell(backend: Backend) -> None:
    async def go() -> None:
        async with started(backend.store("A", claim_ttl=30)) as a:
            assert await a.coordinator.claim("1070")
            backend.clock.advance(31)  # 1070's claim has expired: another instance may have taken it
            assert await a.coordinator.claim("1071")  # 1071's has not
            backend.redis_down()
            try:
                with database_cut(backend, a):
                    trip_both(a)
                    assert await a.coordinator.claim("1072", sent_at=backend.clock.now())  # unarbitrated (G6)
                    for message_id in ("1070", "1071", "1072"):
                        held_long(a, message_id)
                    assert await a.coordinator.still_mine("1070") is False
                    assert await a.coordinator.still_mine("1071") is True
                    backend.clock.advance(31)
                    assert await a.coordinator.still_mine("1072") is True  # never arbitrated: G6 answers
            finally:
                backend.redis_up()

    run(go())


def test_two_deliveries_of_one_message_to_one_instance_make_one_claim(backend: Backend) -> None:
    async def go() -> None:
        async with started(backend.store("A")) as a:
            db = a.db
            assert db is not None
            try_claim = db.try_claim

            def slow_loser(*args: Any) -> Any:
                state = try_claim(*args)
                if state[0] == "held":
                    time.sleep(0.3)  # (under db_timeout) the loser is slow to look again, the winner answers meanwhile
                return state

            db.try_claim = slow_loser  # type: ignore[method-assign]
            backend.redis_down()
            try:
                a.redis_breaker.trip("TimeoutError: Redis blackholed")  # claims go to the database at once
                first = asyncio.ensure_future(a.coordinator.claim("1090"))
                second = asyncio.ensure_future(a.coordinator.claim("1090"))
                pending: set[asyncio.Future[bool]] = {first, second}
                while pending and not any(f.done() and f.result() for f in (first, second)):
                    _done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                await answer(a, 90)
                assert sorted(await asyncio.gather(first, second)) == [False, True]
            finally:
                backend.redis_up()

    run(go())


def test_a_probe_begun_before_a_pause_does_not_confirm_both_down(backend: Backend) -> None:
    async def go() -> None:
        async with started(backend.store("A")) as a, started(backend.store("B")) as b:
            assert await b.coordinator.claim("1100")
            await answer(b, 100)
            trip_both(a)
            # A probe that began before this process was paused ended as it
            # resumed (its timeouts ran out during the pause), saying "down".
            ended: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            ended.set_result(None)
            a.coordinator._probing = ended
            a.coordinator._probe_started = time.monotonic() - a.settings.probe_interval - 1
            assert await a.coordinator.claim("1100") is False
            assert a.redis_ok and a.db_ok  # a probe of its own found both up

    run(go())


def test_after_a_stall_a_claim_waits_for_a_probe_before_trusting_the_breakers(backend: Backend) -> None:
    from plugins.memory.coordination import STALL

    async def go() -> None:
        async with started(backend.store("A")) as a:
            assert await a.coordinator.claim("1111")  # the heartbeat runs
            # A call in flight when the process was stopped timed out as it
            # resumed: the breaker says "down", Redis is up.
            a.redis_breaker.trip("TimeoutError: Timeout reading from socket")
            time.sleep(STALL + 0.5)  # the process is stopped: its event loop does not run
            await asyncio.sleep(0.01)  # it resumes: the overdue heartbeat runs before this wakes
            assert await a.coordinator.claim("1112")
            assert a.redis_ok  # the probe after the stall found Redis...
        assert backend.sql("SELECT COUNT(*) FROM claims")[0][0] == 0  # ...and the claim was taken there, where every instance looks

    run(go())


def test_a_reply_waiting_in_the_spool_stays_done_after_redis_loses_its_data(backend: Backend) -> None:
    async def go() -> None:
        async with started(backend.store("A")) as a, started(backend.store("B", spool_dir=backend.tmp_path / "spool-b")) as b:
            assert await a.coordinator.claim("1120")
            with database_cut(backend, a):
                a.db_breaker.trip("database cut")
                await answer(a, 120)  # sent, then queued: A's spool and the stream
                backend.flush()  # Redis loses the claim's "done" and the stream
                await a.probe()  # the database is still cut; Redis answers again
                # B, on Redis, must not answer a redelivery A's spool says was answered.
                assert await b.coordinator.claim("1120", sent_at=backend.clock.now()) is False

    run(go())


def test_a_probe_on_connections_the_server_closed_finds_redis_up(postgres_backend: Backend) -> None:
    """Real Redis only (fakeredis has no connections to close). After a
    pause, the pool's connections may all have been closed by the server:
    the probe that follows must not report that as an outage."""
    backend = postgres_backend
    assert backend.redis is not None

    async def go() -> None:
        async with started(backend.store("A")) as a:
            assert a.cache is not None
            await asyncio.gather(*(a.cache.run(("PING",)) for _ in range(3)))  # pooled connections exist
            with contextlib.closing(backend.redis.client()) as admin:
                admin.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
            a.redis_breaker.trip("ConnectionError: Connection closed by server.")
            await a.probe()
            assert a.redis_ok

    run(go())


def test_a_held_reply_whose_claim_redis_lost_puts_the_claim_back(backend: Backend) -> None:
    async def go() -> None:
        async with started(backend.store("A")) as a, started(backend.store("B")) as b:
            assert await a.coordinator.claim("1130")
            held_long(a, "1130")  # A generates its reply slowly (or was paused)
            backend.flush()  # Redis loses A's claim
            assert await a.coordinator.still_mine("1130") is True  # nobody answered: A sends...
            assert await b.coordinator.claim("1130") is False  # ...and a redelivery to B waits on A's claim, put back

    run(go())


def test_a_reply_held_past_its_claim_is_not_sent_when_redis_lost_the_claim_and_the_database_cannot_tell(
    backend: Backend,
) -> None:
    async def go() -> None:
        async with started(backend.store("A", claim_ttl=30)) as a:
            assert await a.coordinator.claim("1131")
            held_long(a, "1131")  # A was paused past its claim
            backend.clock.advance(31)
            backend.flush()  # Redis lost the claim, and whatever "done" another instance left
            with database_cut(backend, a):
                a.db_breaker.trip("database cut")
                assert await a.coordinator.still_mine("1131") is False

    run(go())


def test_a_reply_whose_claim_expired_is_checked_however_briefly_it_was_held(backend: Backend) -> None:
    async def go() -> None:
        async with started(backend.store("A", claim_ttl=30)) as a, started(backend.store("B", claim_ttl=30)) as b:
            assert await a.coordinator.claim("1140")
            # A stopped right after winning the claim (before it held it for
            # long by its own reckoning); the claim expired meanwhile.
            backend.clock.advance(31)
            assert await b.coordinator.claim("1140")  # a redelivery to B
            await answer(b, 140)
            assert await a.coordinator.still_mine("1140") is False

    run(go())


def test_a_quick_reply_whose_claim_redis_lost_meanwhile_is_checked_before_sending(backend: Backend) -> None:
    # Found by the chaos soak: a FLUSHALL between a claim and its quick reply
    # let a redelivery elsewhere win the empty key and answer too. The other
    # instance reads the epoch with its claim, sees the flush and waits for
    # the reports (A's lists the message); the holder saw the flush (its
    # context read found the epoch gone), checks, puts its claim back and
    # answers.
    async def go() -> None:
        async with started(backend.store("A")) as a, started(backend.store("B")) as b:
            now = backend.clock.now()
            assert await a.coordinator.claim("1020", sent_at=now)
            backend.flush()
            assert await b.coordinator.claim("1020", sent_at=now) is False  # the empty key, but A reports it
            assert a.cache is not None
            await a.cache.refresh_epoch()  # A builds its context: the epoch is gone
            assert await a.coordinator.still_mine("1020") is True
            assert await b.coordinator.claim("1020", sent_at=now) is False  # A's claim is back

    run(go())
