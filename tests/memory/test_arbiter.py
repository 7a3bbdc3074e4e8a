"""Who answers a message (docs/MEMORY.md, rules A1-A8), and session leases
(L1-L2), across instances, on both backend matrices."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import Any

from core.models import Role, Session
from plugins.memory.breaker import BackendDown
from plugins.memory.leases import current_fence
from tests.memory.conftest import Backend, database_cut, run, started
from tests.memory.helpers import SESSION, abandon, rec, replay_waits

QUICK = {"claim_ttl": 0.5}


def reply(n: int) -> Any:
    return rec(n + 1, role=Role.BOT, author="bot", id=f"reply:{1000 + n}", reply_to_id=str(1000 + n))


async def freeze(store: Any) -> None:
    """As if the process stopped (SIGSTOP, SIGKILL): nothing renews its claims."""
    task = store.arbiter._renewer
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


@contextlib.contextmanager
def database_cut_for_all(backend: Backend, *stores: Any) -> Any:
    """The database unreachable for every store (SQLite: one held lock cuts it for all)."""
    with contextlib.ExitStack() as stack:
        for store in stores[:1] if backend.kind == "sqlite" else stores:
            stack.enter_context(database_cut(backend, store))
        yield


async def answer(store: Any, n: int) -> None:
    """What the pipeline does after winning message ``n``: store its message, confirm, store the reply."""
    await store.store_message(rec(n))
    assert await store.arbiter.confirm(str(1000 + n))
    await store.store_message(reply(n))


async def write_back(store: Any) -> None:
    """``store`` probes, then writes back every claim it holds (A6). One
    renewal may fail on a busy database (SQLite's lock on a loaded machine):
    the renewer tries again each period; this tries again at once, within a
    bound."""
    await store.probe()
    async with asyncio.timeout(10):
        while True:
            if not store.db_ok:
                await store.probe()
            await store.arbiter.renew()
            if all(held.in_db for held in store.arbiter.held.values()):
                return
            await asyncio.sleep(0.05)


def test_a1_one_instance_claims_a_message_the_other_keeps_watch_until_it_is_answered(backend: Backend) -> None:
    async def go() -> None:
        async with started(backend.store("A")) as a, started(backend.store("B")) as b:
            assert await a.arbiter.claim("1001", None)
            standby = asyncio.create_task(b.arbiter.claim("1001", None))
            await asyncio.sleep(0.2)
            assert not standby.done()  # keeps watch while A holds it
            await answer(a, 1)
            assert await asyncio.wait_for(standby, 5) is False

    run(go())


def test_a1_an_answered_message_is_not_claimed_again_even_after_a_flush(backend: Backend) -> None:
    async def go() -> None:
        async with started(backend.store("A")) as a, started(backend.store("B")) as b:
            assert await a.arbiter.claim("1001", None)
            assert not await a.arbiter.claim("1001", None)  # a second delivery here
            await answer(a, 1)
            assert not await b.arbiter.claim("1001", None)
            backend.flush()
            assert not await b.arbiter.claim("1001", None)

    run(go())


def test_a3_a_standby_takes_over_a_holder_that_stopped_renewing(backend: Backend) -> None:
    async def go() -> None:
        async with started(backend.store("A", **QUICK)) as a, started(backend.store("B", **QUICK)) as b:
            assert await a.arbiter.claim("1001", None)
            await freeze(a)
            assert await asyncio.wait_for(b.arbiter.claim("1001", None), 10) is True

    run(go())


def test_a8_an_instance_started_again_ends_the_claims_and_leases_its_killed_life_held(backend: Backend) -> None:
    """A holds message 1001 and its session's lease and is killed (nothing
    renews or releases them); B received the message too and keeps watch.
    A's next life (same instance id) ends both at start: B takes the
    message over and the lease at once, not a claim period (30 s) later."""
    slow = {"claim_ttl": 30.0}

    async def go() -> None:
        async with started(backend.store("B", **slow)) as b:
            a = backend.store("A", **slow)
            await a.start()
            try:
                assert await a.arbiter.claim("1001", None)
                await a.store_message(rec(1))
                await a.leases.lease(SESSION.scope_key).__aenter__()
                await freeze(a)
                await a.leases.stop()
                a.arbiter.held.clear()  # killed: its stop releases nothing
                a.leases.held.clear()
            finally:
                await a.stop()
            standby = asyncio.create_task(b.arbiter.claim("1001", None))
            await asyncio.sleep(0.2)
            assert not standby.done()  # the killed life's claim is live for 30 s
            async with started(backend.store("A", **slow)) as again:
                assert again.arbiter.owner != a.arbiter.owner
                assert await asyncio.wait_for(standby, 10) is True
                async with asyncio.timeout(10):
                    async with b.leases.lease(SESSION.scope_key):
                        pass

    run(go())


def test_a2_a_renewing_holder_is_not_taken_over(backend: Backend) -> None:
    async def go() -> None:
        async with started(backend.store("A", **QUICK)) as a, started(backend.store("B", **QUICK)) as b:
            assert await a.arbiter.claim("1001", None)
            standby = asyncio.create_task(b.arbiter.claim("1001", None))
            await asyncio.sleep(4 * QUICK["claim_ttl"])  # a model call far longer than the claim's life
            assert not standby.done()
            await answer(a, 1)
            assert await asyncio.wait_for(standby, 5) is False

    run(go())


def test_a4_a_standby_whose_watch_was_cut_short_does_not_send(backend: Backend) -> None:
    # The core's hook timeout may cut a long watch short; whatever the core
    # does next, this instance does not hold the claim and must not send.
    async def go() -> None:
        async with started(backend.store("A")) as a, started(backend.store("B")) as b:
            assert await a.arbiter.claim("1001", None)
            standby = asyncio.create_task(b.arbiter.claim("1001", None))
            await asyncio.sleep(0.2)
            standby.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await standby
            assert await b.arbiter.confirm("1001") is False
            assert await a.arbiter.confirm("1001") is True

    run(go())


def test_a4_a_holder_taken_over_does_not_send(backend: Backend) -> None:
    async def go() -> None:
        async with started(backend.store("A", **QUICK)) as a, started(backend.store("B", **QUICK)) as b:
            assert await a.arbiter.claim("1001", None)
            await freeze(a)  # paused past its claim
            assert await asyncio.wait_for(b.arbiter.claim("1001", None), 10)
            assert await a.arbiter.confirm("1001") is False  # resumed: not sent
            assert await a.arbiter.confirm("1001") is False  # asked again (a streamed preview, then the core): still not
            assert await b.arbiter.confirm("1001") is True

    run(go())


def test_a2_a_claim_whose_pipeline_ended_without_a_reply_is_released(backend: Backend) -> None:
    async def go() -> None:
        async with started(backend.store("A")) as a, started(backend.store("B")) as b:
            assert await asyncio.create_task(a.arbiter.claim("1001", None))  # the task ends here
            await a.arbiter.renew()
            assert await asyncio.wait_for(b.arbiter.claim("1001", None), 5) is True

    run(go())


def test_a1_claims_stay_in_the_database_through_a_flush(backend: Backend) -> None:
    async def go() -> None:
        async with started(backend.store("A")) as a, started(backend.store("B")) as b:
            assert await a.arbiter.claim("1001", None)
            backend.flush()
            standby = asyncio.create_task(b.arbiter.claim("1001", None))
            await asyncio.sleep(0.3)
            assert not standby.done()
            await answer(a, 1)
            assert await asyncio.wait_for(standby, 5) is False

    run(go())


def test_a6_with_the_database_down_redis_decides_and_the_claim_is_written_back(backend: Backend) -> None:
    async def go() -> None:
        async with started(backend.store("A")) as a, started(backend.store("B")) as b:
            with database_cut_for_all(backend, a, b):
                assert await a.arbiter.claim("1001", None)
                assert not a.db_ok
                standby = asyncio.create_task(b.arbiter.claim("1001", None))
                await asyncio.sleep(0.2)
                assert not standby.done()
            await write_back(a)
            await b.probe()
            assert backend.sql("SELECT state FROM claims WHERE message_id = '1001'") == [("claimed",)]
            await asyncio.sleep(0.3)
            assert not standby.done()  # the database now says A holds it
            await answer(a, 1)
            assert await asyncio.wait_for(standby, 5) is False

    run(go())


def test_a6_a_claim_is_not_held_behind_recovery_work_that_waits(backend: Backend) -> None:
    """The database is cut while A's outbox replay waits (on a paused
    instance's locks): a claim whose statement fails learns from one ping
    that the database is down and Redis decides (H1), instead of waiting
    for the replay to end."""

    async def go() -> None:
        async with started(backend.store("A")) as a:
            with database_cut(backend, a):
                await a.store_message(rec(1))  # queued: something to replay
                await a.probe()
            go_on = replay_waits(a)
            await a.check()
            a.recover_soon()
            await until(lambda: a._recovering.locked() and not a.db_down_confirmed, "the replay began")
            with database_cut(backend, a):
                async with asyncio.timeout(5):  # (the claim is held while this task runs, A2)
                    assert await a.arbiter.claim("1002", backend.clock.now()) is True
                assert a.db_down_confirmed
            go_on.set()
            await write_back(a)
            assert backend.sql("SELECT state FROM claims WHERE message_id = '1002'") == [("claimed",)]

    run(go())

def test_a6_redis_does_not_decide_an_old_message(backend: Backend) -> None:
    """A flush or a restart while this process was paused may have taken
    the claim or the answer of an old message: it waits for the database."""

    async def go() -> None:
        async with started(backend.store("A", unarbitrated_max_age=10)) as a, started(backend.store("B")) as b:
            await roster_of_both(a, b)  # alone, nobody else could have claimed it
            with database_cut(backend, a):
                now = backend.clock.now()
                assert await a.arbiter.claim("1001", now - 1)  # young: Redis decides
                old = asyncio.create_task(a.arbiter.claim("1002", now - 30))
                await asyncio.sleep(0.5)
                assert not a.db_ok and not old.done()
            await a.probe()
            assert await asyncio.wait_for(old, 10) is True  # nobody had it: the database says so

    run(go())


def test_a6_redis_does_not_decide_a_message_received_before_it_lost_data(backend: Backend) -> None:
    """B holds the claim (database, mirror); a flush takes the mirror, then
    the database is cut: A, watching since before the flush, must not read
    the empty Redis as 'nobody holds it'."""

    async def go() -> None:
        async with started(backend.store("A", **QUICK)) as a, started(backend.store("B", **QUICK)) as b:
            assert await b.arbiter.claim("1001", None)
            standby = asyncio.create_task(a.arbiter.claim("1001", None))
            await asyncio.sleep(0.2)
            backend.flush()
            await a.probe()  # A sees Redis lost data
            with database_cut_for_all(backend, a, b):
                await a.probe()
                await asyncio.sleep(1.0)  # several looks at Redis, which is empty
                assert not standby.done()
            await a.probe()
            await b.probe()
            await answer(b, 1)
            assert await asyncio.wait_for(standby, 10) is False

    run(go())


def test_a6_a_claim_won_in_redis_is_safe_when_redis_goes_down_as_the_database_returns(backend: Backend) -> None:
    """A won in Redis during a database cut; Redis becomes unreachable just
    as the database returns, before A's renewal wrote the claim back: B, to
    whom the database says 'nobody', must wait a claim period."""

    async def go() -> None:
        async with started(backend.store("A", **QUICK)) as a, started(backend.store("B", **QUICK)) as b:
            await freeze(a)  # A's renewal comes later, by hand
            with database_cut_for_all(backend, a, b):
                await a.probe()
                await b.probe()  # B sees the cut too (every instance receives every message)
                assert await a.arbiter.claim("1001", None)  # Redis decided
                backend.redis_down()
            await b.probe()
            assert b.db_ok and not b.redis_ok
            standby = asyncio.create_task(b.arbiter.claim("1001", None))
            await asyncio.sleep(0.25)  # within one claim period of the database's return
            assert not standby.done()
            await write_back(a)
            await answer(a, 1)
            assert await asyncio.wait_for(standby, 10) is False
            backend.redis_up()

    run(go())


def test_a6_a_claim_won_in_redis_is_not_claimed_again_before_it_is_written_back(backend: Backend) -> None:
    async def go() -> None:
        async with started(backend.store("A")) as a, started(backend.store("B")) as b:
            with database_cut(backend, a):
                assert await a.arbiter.claim("1001", None)
            await a.probe()
            # B asks the database, which has no row yet: A's live mirror holds it back.
            standby = asyncio.create_task(b.arbiter.claim("1001", None))
            await asyncio.sleep(0.3)
            assert not standby.done()
            await answer(a, 1)
            assert await asyncio.wait_for(standby, 5) is False

    run(go())


def test_a6_a_breaker_a_slow_call_opened_does_not_let_redis_decide(backend: Backend) -> None:
    async def go() -> None:
        async with started(backend.store("A")) as a, started(backend.store("B")) as b:
            assert await a.arbiter.claim("1001", None)
            await asyncio.sleep(0.1)  # A's mirror lands...
            backend.flush()  # ...and is gone: nothing in Redis says A holds it
            b.db_breaker.trip("no answer within 0.5s")  # one slow call; no probe has seen the database down
            standby = asyncio.create_task(b.arbiter.claim("1001", None))
            await asyncio.sleep(0.3)
            assert not standby.done()  # it asked the database again, which says A holds it
            await answer(a, 1)
            assert await asyncio.wait_for(standby, 5) is False

    run(go())


def test_a7_with_both_backends_down_a_young_message_is_answered_an_old_one_waits_for_a_backend(backend: Backend) -> None:
    async def go() -> None:
        async with started(backend.store("A", unarbitrated_max_age=10, **QUICK)) as a:
            with database_cut(backend, a):
                backend.redis_down()
                now = backend.clock.now()
                assert await a.arbiter.claim("1001", now - 1) is True
                old = asyncio.create_task(a.arbiter.claim("1002", now - 30))
                assert await a.arbiter.confirm("1001") is True
                await asyncio.sleep(0.5)
                assert not old.done()  # too old to answer unarbitrated: it waits
                backend.redis_up()
            # Nobody held it: once the database answers, it is claimed and answered.
            assert await asyncio.wait_for(old, 10) is True

    run(go())


async def roster_of_both(a: Any, b: Any) -> None:
    for arbiter in (a.arbiter, b.arbiter, a.arbiter):
        await arbiter.announce()
    assert a.arbiter.roster == b.arbiter.roster and len(a.arbiter.roster) == 2


def test_a7_with_both_backends_down_one_instance_answers_each_message(backend: Backend) -> None:
    ids = [str(1000 + n) for n in range(1, 13)]

    async def go() -> None:
        async with started(backend.store("A", **QUICK)) as a, started(backend.store("B", **QUICK)) as b:
            await roster_of_both(a, b)
            with database_cut_for_all(backend, a, b):
                backend.redis_down()
                now = backend.clock.now()
                claims = {(s.instance_id, mid): asyncio.create_task(s.arbiter.claim(mid, now)) for mid in ids for s in (a, b)}
                answered: set[tuple[str, str]] = set()
                for _ in range(100):  # until each message has an answerer (bounded)
                    answered = {key for key, task in claims.items() if task.done() and task.result()}
                    if len(answered) >= len(ids):
                        break
                    await asyncio.sleep(0.05)
                await asyncio.sleep(0.3)  # nobody else answers meanwhile
                answered = {key for key, task in claims.items() if task.done() and task.result()}
                # Each message has exactly one answerer (the first of the
                # roster for it); both instances answer some.
                assert sorted(mid for _instance, mid in answered) == ids
                assert {instance for instance, _mid in answered} == {"A", "B"}
                for instance, mid in answered:
                    await answer(a if instance == "A" else b, int(mid) - 1000)  # into the outbox
                backend.redis_up()
            await asyncio.gather(a.probe(), b.probe())
            # The others kept watch; the backends back, the holders write their
            # claims back and the standbys concede.
            waiting = [task for key, task in claims.items() if key not in answered]
            assert len(waiting) == len(ids)
            assert await asyncio.wait_for(asyncio.gather(*waiting), 10) == [False] * len(ids)

    run(go())


def test_a7_an_instance_restarted_while_both_backends_are_down_keeps_its_roster(backend: Backend) -> None:
    async def go() -> None:
        async with started(backend.store("A", **QUICK)) as a, started(backend.store("B", **QUICK)) as b:
            await roster_of_both(a, b)
        # As its last life left it: A's renewal may run once more between B's
        # stop and its own and read a roster without B (seen under load).
        roster = a.arbiter.roster
        assert roster
        assert backend.store("A", **QUICK).arbiter.roster == roster  # its next life, before any database call

    run(go())


def test_a7_a_message_whose_ranked_instance_is_gone_is_answered_when_a_backend_returns(backend: Backend) -> None:
    async def go() -> None:
        async with started(backend.store("A", **QUICK)) as a, started(backend.store("B", **QUICK)) as b:
            await roster_of_both(a, b)
            mid = next(str(n) for n in range(3000, 3100) if b.arbiter.ranked_first(str(n)))
            await freeze(b)  # B did not receive it and stops (killed)
            with database_cut(backend, a):
                backend.redis_down()
                waiting = asyncio.create_task(a.arbiter.claim(mid, backend.clock.now()))
                await asyncio.sleep(0.5)
                assert not waiting.done()  # B's to answer: A keeps watch
                backend.redis_up()
            assert await asyncio.wait_for(waiting, 10) is True

    run(go())


async def until(condition: Any, what: str, timeout: float = 10.0) -> None:
    """A bounded wait on the event ``condition`` names."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.02)


async def past_the_last_read(reader: Any, member: str, writer: Any) -> None:
    """The database's clock has moved past ``reader``'s last read of
    ``member``'s announcement (its hold's mark, A7, or a later read): an
    announcement ``writer`` makes in the same tick (SQLite's clock counts
    milliseconds) is not after the mark, and the hold would last its whole
    claim period."""

    def read_ok() -> bool:
        read = reader.arbiter._reads.get(member)
        return read is not None and read[1].done() and not read[1].cancelled() and read[1].exception() is None

    await until(read_ok, f"a read of {member}'s announcement")
    _expiry, seen = reader.arbiter._reads[member][1].result()
    async with asyncio.timeout(5):
        while await writer.db.run(writer.arbiter._table._clock) <= seen:
            await asyncio.sleep(0.005)


def first_of(store: Any, n: int = 3000) -> str:
    """A message id ``store`` comes first for (A7)."""
    return next(str(i) for i in range(n, n + 100) if store.arbiter.ranked_first(str(i)))


async def both_down_then_back(backend: Backend, stores: tuple[Any, ...], asks: Any, ready: Any) -> Any:
    """Both backends down while ``asks`` starts the claims, back once
    ``ready`` says they saw the outage."""
    with database_cut_for_all(backend, *stores):
        backend.redis_down()
        waiting = asks()
        await until(ready, "the claims saw both backends down")
        await asyncio.sleep(0.1)
        backend.redis_up()
    return waiting


def saw_both_down(store: Any) -> Any:
    return lambda: not store.redis_ok and store.db_down_confirmed


def test_a7_after_a_double_outage_the_first_instance_for_a_message_claims_it_at_once(backend: Backend) -> None:
    """Nobody answered it unarbitrated (it was too old even for its first
    instance): no hold, whatever claim_ttl (6 s here) says."""

    async def go() -> None:
        async with started(backend.store("A")) as a, started(backend.store("B")) as b:
            await roster_of_both(a, b)
            await freeze(b)  # (its own announcements would end a hold too)
            mid = first_of(b)
            waiting = await both_down_then_back(
                backend, (a, b), lambda: asyncio.create_task(b.arbiter.claim(mid, backend.clock.now() - 30)), saw_both_down(b)
            )
            assert not waiting.done()
            assert await asyncio.wait_for(waiting, 3) is True

    run(go())


def test_a7_a_standby_holds_back_until_the_first_instance_announces_again(backend: Backend) -> None:
    """B received a message A comes first for (A did not receive it): after
    the outage B claims it once A announced itself again, not a claim
    period (6 s here) later."""

    async def go() -> None:
        async with started(backend.store("A")) as a, started(backend.store("B")) as b:
            await roster_of_both(a, b)
            await freeze(a)  # A announces only when told to here
            mid = first_of(a)
            waiting = await both_down_then_back(
                backend, (a, b), lambda: asyncio.create_task(b.arbiter.claim(mid, backend.clock.now())), saw_both_down(b)
            )
            await until(lambda: "A" in b.arbiter._reads and b.arbiter._reads["A"][1].done(), "B read A's announcement")
            assert not waiting.done()  # held back
            await until(lambda: a.db_ok, "A's probe closed its database breaker")
            await past_the_last_read(b, "A", a)
            await a.arbiter.announce()
            assert await asyncio.wait_for(waiting, 3) is True

    run(go())


def test_a7_a_failed_read_of_an_announcement_is_made_again(backend: Backend) -> None:
    """B's first read of A's announcement after the outage fails (a
    timeout, a worker pool replaced): its next look reads again, and
    claims once A announced, not a claim period (6 s here) later."""

    async def go() -> None:
        async with started(backend.store("A")) as a, started(backend.store("B")) as b:
            await roster_of_both(a, b)
            await freeze(a)
            mid = first_of(a)
            real_db, failed = b.arbiter._db, []

            async def first_read_fails(fn: Any, *args: Any) -> Any:
                if fn == b.arbiter._table.announcement and not failed:
                    failed.append(fn)
                    raise BackendDown("database", "no answer within 5s")
                return await real_db(fn, *args)

            b.arbiter._db = first_read_fails
            waiting = await both_down_then_back(
                backend, (a, b), lambda: asyncio.create_task(b.arbiter.claim(mid, backend.clock.now())), saw_both_down(b)
            )
            def read_again() -> bool:
                read = b.arbiter._reads.get("A")
                return bool(failed) and read is not None and read[1].done() and read[1].exception() is None

            await until(read_again, "B read A's announcement again")
            assert not waiting.done()  # held back
            await until(lambda: a.db_ok, "A's probe closed its database breaker")
            await past_the_last_read(b, "A", a)
            await a.arbiter.announce()
            assert await asyncio.wait_for(waiting, 3) is True

    run(go())


def test_a7_an_unarbitrated_reply_asks_the_database_whatever_its_breaker_says(backend: Backend) -> None:
    """A answered a message unarbitrated during a double outage; B claimed
    it in the database since. A's breaker still says the database is down
    (no probe yet) and Redis does not answer: before sending, A asks the
    database itself, finds the claim taken, and does not send."""

    async def go() -> None:
        async with started(backend.store("A")) as a, started(backend.store("B")) as b:
            await roster_of_both(a, b)
            mid = first_of(a)
            backend.redis_down()
            try:
                with database_cut_for_all(backend, a, b):
                    assert await a.arbiter.claim(mid, backend.clock.now())  # unarbitrated (A2: held while this task runs)
                    assert a.arbiter.held[mid].arbitrated is False
                assert not a.db_ok
                assert b.db is not None and b.arbiter._table is not None
                verdict, _holder, _dirty = await b.db.run(b.arbiter._table.claim, mid, b.arbiter.owner, b.arbiter.ttl)
                assert verdict == "mine"
                assert await a.arbiter.confirm(mid) is False
                assert not a.db_ok  # asked directly: the breaker was not needed
            finally:
                backend.redis_up()

    run(go())

def test_a7_an_instance_announces_itself_only_once_its_unarbitrated_claims_are_written_back(backend: Backend) -> None:
    """A answered a message unarbitrated; B, which received it too, holds
    back after the outage. An announcement of A's before its renewal wrote
    the claim back would let B claim it: a second reply."""

    async def go() -> None:
        async with started(backend.store("A")) as a, started(backend.store("B")) as b:
            await roster_of_both(a, b)
            await freeze(a)  # A renews and announces only when told to here
            mid = first_of(a)
            answered = asyncio.Future[bool]()
            reply_now = asyncio.Event()

            async def a_pipeline() -> None:
                # The claim is held while the task that won it runs (A2).
                answered.set_result(await a.arbiter.claim(mid, backend.clock.now()))
                await reply_now.wait()
                n = int(mid) - 1000
                await a.store_message(rec(n, id=mid))
                assert await a.arbiter.confirm(mid)
                await a.store_message(rec(n + 1, role=Role.BOT, author="bot", id=f"reply:{mid}", reply_to_id=mid))

            def asks() -> asyncio.Task[bool]:
                pipeline.append(asyncio.create_task(a_pipeline()))
                return asyncio.create_task(b.arbiter.claim(mid, backend.clock.now()))

            pipeline: list[asyncio.Task[None]] = []

            waiting = await both_down_then_back(backend, (a, b), asks, lambda: answered.done() and saw_both_down(b)())
            assert await answered is True  # unarbitrated: no row for it yet
            assert a.arbiter.held[mid].in_db is False
            await until(lambda: "A" in b.arbiter._reads and b.arbiter._reads["A"][1].done(), "B read A's announcement")
            await a.probe()  # (probes run only when asked, in these tests)
            assert a.db_ok and a.db is not None and a.arbiter._table is not None
            before = await a.db.run(a.arbiter._table.announced, "A")
            await a.arbiter.announce()  # too early: the claim has no row
            assert await a.db.run(a.arbiter._table.announced, "A") == before
            read = b.arbiter._reads["A"]
            await until(lambda: b.arbiter._reads["A"] is not read and b.arbiter._reads["A"][1].done(), "B read it again")
            assert not waiting.done()
            await write_back(a)  # the claim...
            await a.arbiter.announce()  # ...then says so
            assert (await a.db.run(a.arbiter._table.announced, "A") or 0.0) > (before or 0.0)
            await asyncio.sleep(0.5)
            assert not waiting.done()  # B sees A's claim now
            reply_now.set()
            await asyncio.wait_for(pipeline[0], 5)
            assert await asyncio.wait_for(waiting, 5) is False

    run(go())


def test_a7_the_hold_follows_the_roster_the_message_arrived_with(backend: Backend) -> None:
    """An outage longer than claim_ttl lets every announcement expire: B's
    roster, read again after it, may hold B alone. B must still wait for A,
    the first instance when the message arrived, which answered it."""

    async def go() -> None:
        async with started(backend.store("A")) as a, started(backend.store("B")) as b:
            await roster_of_both(a, b)
            await freeze(a)
            await freeze(b)
            mid = first_of(a)

            def asks() -> asyncio.Task[bool]:
                return asyncio.create_task(b.arbiter.claim(mid, backend.clock.now()))

            with database_cut_for_all(backend, a, b):
                backend.redis_down()
                assert await a.arbiter.claim(mid, backend.clock.now()) is True  # unarbitrated
                waiting = asks()
                await until(saw_both_down(b), "B saw both down")
                await asyncio.sleep(0.1)
                b.arbiter.roster = ["B"]  # its announcement after the outage found nobody else
                backend.redis_up()
            await until(lambda: waiting.done() or ("A" in b.arbiter._reads and b.arbiter._reads["A"][1].done()), "B looked")
            assert not waiting.done()  # held back for A
            await write_back(a)  # A writes its claim back...
            await past_the_last_read(b, "A", a)
            await a.arbiter.announce()  # ...and says so
            await asyncio.sleep(0.5)
            assert not waiting.done()  # A's claim is live
            await a.arbiter.release(mid)
            assert await asyncio.wait_for(waiting, 5) is True  # (A gave it up: B's now)

    run(go())


def test_a7_an_unarbitrated_claim_found_taken_when_written_back_is_not_sent(backend: Backend) -> None:
    async def go() -> None:
        async with started(backend.store("A")) as a, started(backend.store("B")) as b:
            await roster_of_both(a, b)
            await freeze(a)
            mid = first_of(a)
            with database_cut_for_all(backend, a, b):
                backend.redis_down()
                assert await a.arbiter.claim(mid, backend.clock.now()) is True  # unarbitrated
                backend.redis_up()
            assert b.arbiter._table is not None and b.db is not None
            verdict, _holder, _dirty = await b.db.run(b.arbiter._table.claim, mid, b.arbiter.owner, 60.0)
            assert verdict == "mine"  # as a standby that ended its hold too early would
            await write_back(a)  # and finds it taken
            assert await a.arbiter.confirm(mid) is False

    run(go())


def test_a7_a_life_does_not_announce_before_its_earlier_lifes_spool_is_in_the_database(backend: Backend) -> None:
    """An earlier life answered unarbitrated and was killed with the reply
    in its spool: the next life's announcement would end standbys' holds
    while the database knows nothing of that answer."""

    async def go() -> None:
        first = backend.store("A")
        await first.start()
        with database_cut(backend, first):
            backend.redis_unreachable()
            try:
                assert await first.store_message(reply(1)) is False  # the spool only
            finally:
                backend.redis_reachable()
        abandon(first)
        assert first.db is not None and first.arbiter._table is not None
        table = first.arbiter._table
        before = await first.db.run(table.announced, "A")
        backend.redis_unreachable()
        try:
            async with started(backend.store("A")) as second:
                await freeze(second)
                assert second.spool.files()
                await second.arbiter.announce()
                assert await first.db.run(table.announced, "A") == before
                await second.probe()  # replays the spool (Redis is not needed for it)
                assert not second.spool.files()
                await second.arbiter.announce()
                assert (await first.db.run(table.announced, "A") or 0.0) > (before or 0.0)
        finally:
            backend.redis_reachable()

    run(go())


def test_a7_a_paused_first_instance_does_not_send_after_the_standby_claimed(backend: Backend) -> None:
    """A answers a message unarbitrated and is paused before it wrote the
    claim back; B holds back one claim period, then claims and answers. A
    resumes with its breakers still open (nothing ran while it was
    stopped): before it sends, a backend that answers decides."""

    async def go() -> None:
        async with started(backend.store("A", **QUICK)) as a, started(backend.store("B", **QUICK)) as b:
            await roster_of_both(a, b)
            await freeze(a)  # paused: no renewal, no announcement
            mid = first_of(a)
            async def b_pipeline() -> bool:
                # B's claim is held while the task that won it runs (A2): it answers.
                if not await b.arbiter.claim(mid, backend.clock.now()):
                    return False
                n = int(mid) - 1000
                await b.store_message(rec(n, id=mid))
                assert await b.arbiter.confirm(mid)
                await b.store_message(rec(n + 1, role=Role.BOT, author="bot", id=f"reply:{mid}", reply_to_id=mid))
                return True

            with database_cut_for_all(backend, a, b):
                backend.redis_down()
                assert await a.arbiter.claim(mid, backend.clock.now()) is True  # unarbitrated
                waiting = asyncio.create_task(b_pipeline())
                await until(saw_both_down(b), "B saw both down")
                await asyncio.sleep(0.1)
                backend.redis_up()
            assert await asyncio.wait_for(waiting, 10) is True  # B's, after one claim period: B answered
            assert not a.db_ok  # A's probe has not run yet
            assert await a.arbiter.confirm(mid) is False  # else a second reply

    run(go())


async def _an_announcement_left_behind(backend: Backend, stall: str) -> None:
    """A's announcement is abandoned after db_timeout, its thread left
    waiting (``stall``: before the statement, or after its check said yes,
    as when the network stalls the write or the commit); A then answers a
    message unarbitrated; B holds back and reads A's announcement; then the
    left-behind call goes on. It must not end B's hold: A wrote nothing back."""
    async with started(backend.store("A")) as a, started(backend.store("B")) as b:
        await roster_of_both(a, b)
        await freeze(a)
        mid = first_of(a)
        assert a.arbiter._table is not None
        gate = threading.Event()
        owner, name = (a.arbiter._table, "announce") if stall == "before" else (a.arbiter, "_all_written")
        real = getattr(owner, name)

        def stalled(*args: Any) -> Any:
            if stall == "before":
                gate.wait(20)
                return real(*args)
            ok = real(*args)
            if threading.current_thread() is not threading.main_thread():
                gate.wait(20)
            return ok

        setattr(owner, name, stalled)
        await a.arbiter.announce()  # abandoned after db_timeout; its thread waits
        setattr(owner, name, real)
        with database_cut_for_all(backend, a, b):
            backend.redis_down()
            assert await a.arbiter.claim(mid, backend.clock.now()) is True  # unarbitrated
            assert await a.arbiter.confirm(mid) is True  # sent: both really down
            waiting = asyncio.create_task(b.arbiter.claim(mid, backend.clock.now()))
            await until(saw_both_down(b), "B saw both down")
            await asyncio.sleep(0.1)
            backend.redis_up()
        await until(lambda: "A" in b.arbiter._reads and b.arbiter._reads["A"][1].done(), "B read A's announcement")
        assert not waiting.done()
        gate.set()  # the left-behind call goes on now
        await asyncio.sleep(1.5)
        assert a.arbiter.held[mid].in_db is False
        assert not waiting.done()  # else B answers it too


def test_a7_an_announcement_left_behind_by_a_timeout_does_not_end_the_hold(backend: Backend) -> None:
    run(_an_announcement_left_behind(backend, "before"))


def test_a7_an_announcement_that_commits_late_after_its_check_does_not_end_the_hold(postgres_backend: Backend) -> None:
    """PostgreSQL only: SQLite's file lock, held through the stall, would
    stop B's claim anyway."""
    run(_an_announcement_left_behind(postgres_backend, "after"))


def test_a7_breakers_left_open_by_a_pause_are_probed_before_answering_unarbitrated(backend: Backend) -> None:
    async def go() -> None:
        async with started(backend.store("A")) as a, started(backend.store("B")) as b:
            assert await a.arbiter.claim("1001", None)
            await answer(a, 1)
            b.redis_breaker.trip("connection closed while the process was paused")
            b.db_breaker.trip("connection closed while the process was paused")
            assert await b.arbiter.claim("1001", backend.clock.now()) is False

    run(go())


# --- leases --------------------------------------------------------------------------------


def test_leases_serialise_a_scope_and_fence_out_a_stale_holder(backend: Backend) -> None:
    session = Session("s1", "scope", 1.0, 1.0, user_id="u")

    async def go() -> None:
        async with started(backend.store("A", **QUICK)) as a, started(backend.store("B", **QUICK)) as b:
            lease_a = a.leases.lease("scope")
            await lease_a.__aenter__()
            fence_a = current_fence.get()
            assert fence_a is not None and fence_a[0] == "scope"
            session.state = {"by": "A"}
            assert await a.save_session(session)
            # A pauses past its lease (nothing renews it); B takes the scope
            # over once it expires, with a newer token.
            await a.leases.stop()

            async def b_turn() -> None:
                async with b.leases.lease("scope"):
                    assert current_fence.get()[1] > fence_a[1]  # type: ignore[index]
                    s = Session("s1", "scope", 1.0, 2.0, user_id="u", state={"by": "B"})
                    assert await b.save_session(s)

            await asyncio.wait_for(asyncio.create_task(b_turn()), 10)
            session.state = {"by": "A, late"}
            assert await a.save_session(session) is False  # fenced out
            await lease_a.__aexit__(None, None, None)
            assert backend.sql("SELECT state FROM sessions WHERE session_id = 's1'") == [('{"by":"B"}',)]

    run(go())


def test_a_renewed_lease_outlives_claim_ttl(backend: Backend) -> None:
    async def go() -> None:
        async with started(backend.store("A", **QUICK)) as a, started(backend.store("B", **QUICK)) as b:
            entered = asyncio.Event()

            async def b_turn() -> None:
                async with b.leases.lease("room"):
                    entered.set()

            async with a.leases.lease("room"):
                waiter = asyncio.create_task(b_turn())
                await asyncio.sleep(4 * QUICK["claim_ttl"])  # a slow model call
                assert not entered.is_set()
            await asyncio.wait_for(waiter, 5)

    run(go())


def test_a_live_lease_makes_the_other_instance_wait(backend: Backend) -> None:
    async def go() -> None:
        async with started(backend.store("A")) as a, started(backend.store("B")) as b:
            order: list[str] = []
            inside, released = asyncio.Event(), asyncio.Event()

            async def holder() -> None:
                async with a.leases.lease("room"):
                    order.append("A in")
                    inside.set()
                    await released.wait()
                    order.append("A out")

            async def waiter() -> None:
                async with b.leases.lease("room"):
                    order.append("B in")

            task_a = asyncio.create_task(holder())
            await asyncio.wait_for(inside.wait(), 5)
            task_b = asyncio.create_task(waiter())
            await asyncio.sleep(0.1)
            assert order == ["A in"]
            released.set()
            await asyncio.wait_for(asyncio.gather(task_a, task_b), 5)
            assert order == ["A in", "A out", "B in"]

    run(go())


def test_fence_counter_lost_in_a_flush_continues_above_the_database(backend: Backend) -> None:
    async def go() -> None:
        async with started(backend.store("A")) as a:
            for _ in range(3):
                async with a.leases.lease("sc"):
                    await a.save_session(Session("s2", "sc", 1.0, 1.0))
            stored = backend.sql("SELECT fence FROM sessions WHERE session_id = 's2'")[0][0]
            backend.flush()
            async with a.leases.lease("sc"):
                assert current_fence.get()[1] > stored  # type: ignore[index]
                assert await a.save_session(Session("s2", "sc", 1.0, 5.0))

    run(go())


def test_without_redis_a_lease_is_the_in_process_lock_without_fencing(backend: Backend) -> None:
    async def go() -> None:
        async with started(backend.store("A")) as a:
            backend.redis_down()
            await a.probe()
            async with a.leases.lease("x"):
                assert current_fence.get() is None
            backend.redis_up()

    run(go())
