"""Claims (one reply per message) and leases with fencing, across instances."""

from __future__ import annotations

import asyncio

from core.models import Role, Session
from plugins.memory.coordination import current_fence
from tests.memory.conftest import Backend, run, started
from tests.memory.helpers import rec


def test_only_one_instance_claims_a_message(backend: Backend) -> None:
    async def go() -> None:
        async with started(backend.store("A")) as a, started(backend.store("B")) as b:
            got = await asyncio.gather(a.coordinator.claim("m1"), b.coordinator.claim("m1"))
            assert sorted(got) == [False, True]

    run(go())


def test_a_redelivered_answered_message_is_not_claimed_again(backend: Backend) -> None:
    async def go() -> None:
        async with started(backend.store("A")) as a, started(backend.store("B")) as b:
            assert await a.coordinator.claim("1001")
            assert not await a.coordinator.claim("1001")  # second delivery while handling
            await a.store_message(rec(1))
            await a.store_message(rec(2, role=Role.BOT, author="bot", id="reply:1001", reply_to_id="1001"))
            assert not await b.coordinator.claim("1001")
            # even after Redis lost every claim, the stored reply says "done"
            backend.flush()
            assert not await b.coordinator.claim("1001")
            assert not await a.coordinator.claim("1001")

    run(go())


def test_a_crashed_claimers_message_is_taken_over_after_expiry(backend: Backend) -> None:
    async def go() -> None:
        async with started(backend.store("A", claim_ttl=30)) as a, started(backend.store("B", claim_ttl=30)) as b:
            assert await a.coordinator.claim("m7")  # A dies holding it
            assert not await b.coordinator.claim("m7")  # still valid: B waits, then leaves it
            backend.clock.advance(31)
            assert await b.coordinator.claim("m7")

    run(go())


def test_leases_serialise_a_scope_and_fence_out_a_stale_holder(backend: Backend) -> None:
    session = Session("s1", "scope", 1.0, 1.0, user_id="u")

    async def go() -> None:
        async with started(backend.store("A", lease_ttl=10)) as a, started(backend.store("B", lease_ttl=10)) as b:
            lease_a = a.coordinator.lease("scope")
            await lease_a.__aenter__()
            fence_a = current_fence.get()
            assert fence_a is not None and fence_a[0] == "scope"
            session.state = {"by": "A"}
            assert await a.save_session(session)
            # A pauses past its lease; B takes the scope over with a newer token.
            backend.clock.advance(11)

            async def b_turn() -> None:
                async with b.coordinator.lease("scope"):
                    assert current_fence.get()[1] > fence_a[1]  # type: ignore[index]
                    s = Session("s1", "scope", 1.0, 2.0, user_id="u", state={"by": "B"})
                    assert await b.save_session(s)

            await asyncio.create_task(b_turn())
            session.state = {"by": "A, late"}
            assert await a.save_session(session) is False  # fenced out
            await lease_a.__aexit__(None, None, None)
            assert backend.sql("SELECT state FROM sessions WHERE session_id = 's1'") == [('{"by":"B"}',)]

    run(go())


def test_a_live_lease_makes_the_other_instance_wait(backend: Backend) -> None:
    async def go() -> None:
        async with started(backend.store("A", lease_wait=5)) as a, started(backend.store("B", lease_wait=5)) as b:
            order: list[str] = []
            released = asyncio.Event()

            async def holder() -> None:
                async with a.coordinator.lease("room"):
                    order.append("A in")
                    await released.wait()
                    order.append("A out")

            async def waiter() -> None:
                async with b.coordinator.lease("room"):
                    order.append("B in")

            task_a = asyncio.create_task(holder())
            while not order:
                await asyncio.sleep(0.01)
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
                async with a.coordinator.lease("sc"):
                    await a.save_session(Session("s2", "sc", 1.0, 1.0))
            stored = backend.sql("SELECT fence FROM sessions WHERE session_id = 's2'")[0][0]
            backend.flush()
            async with a.coordinator.lease("sc"):
                assert current_fence.get()[1] > stored  # type: ignore[index]
                assert await a.save_session(Session("s2", "sc", 1.0, 5.0))

    run(go())


def test_claims_move_to_the_database_while_redis_is_down(backend: Backend) -> None:
    async def go() -> None:
        async with started(backend.store("A", claim_ttl=30)) as a, started(backend.store("B", claim_ttl=30)) as b:
            await a.store_message(rec(2, role=Role.BOT, author="bot", id="reply:555", reply_to_id="555"))
            backend.redis_down()
            assert not await a.coordinator.claim("555")  # answered: the database says so
            got = await asyncio.gather(a.coordinator.claim("556"), b.coordinator.claim("556"))
            assert sorted(got) == [False, True]
            loser = b if got[0] else a
            assert not await loser.coordinator.claim("556")
            # the claimer dies (and restarts, holding nothing); once its
            # claim expires the other takes over
            winner = a if loser is b else b
            winner.coordinator._forget("556")
            backend.clock.advance(31)
            assert await loser.coordinator.claim("556")
            async with a.coordinator.lease("x"):
                assert current_fence.get() is None  # no fencing without Redis
            backend.redis_up()

    run(go())
