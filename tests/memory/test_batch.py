"""Group commit: message writes, session saves and reply lookups that arrive
together go to the database together, and each caller still hears its own
answer, only after its row is committed."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

from core.models import Role
from plugins.memory import records
from plugins.memory.durable import BATCH_LIMIT
from tests.memory.conftest import Backend, run, started
from tests.memory.helpers import SESSION, db_history, rec


def _count_batches(batcher: Any) -> list[int]:
    """Record the size of every batch ``batcher`` runs."""
    sizes: list[int] = []
    many = batcher.many

    def counting(items: list[Any]) -> Any:
        sizes.append(len(items))
        return many(items)

    batcher.many = counting
    return sizes


def test_concurrent_writes_share_commits_and_each_caller_gets_its_own_answer(backend: Backend) -> None:
    async def go() -> None:
        async with started(backend.store()) as store:
            assert store.db is not None
            sizes = _count_batches(store.db.insert)
            await store.store_message(rec(0))
            written = [rec(n) for n in range(1, 150)]
            # 1..149 new, and 1..9 a second time: a redelivery in the same batch.
            answers = await asyncio.gather(*(store.db.insert(records.to_row(r, 1.0)) for r in written + written[:9]))
        assert answers == [True] * 149 + [False] * 9
        assert db_history(backend) == [str(1000 + n) for n in range(150)]
        assert sizes[0] == 1  # a lone write does not wait for company
        assert max(sizes) <= BATCH_LIMIT
        assert len(sizes) < 1 + 158 // 2  # ...and concurrent ones do share

    run(go())


def test_batched_claims_answer_per_message(backend: Backend) -> None:
    async def go() -> None:
        async with started(backend.store()) as store:
            assert store.db is not None
            for n in (2, 4):
                await store.store_message(rec(n, id=f"reply:{1000 + n}", role=Role.BOT, author="bot"))
            found = await asyncio.gather(*(store.arbiter.claim(str(1000 + n), None) for n in range(1, 6)))
        assert found == [True, False, True, False, True]

    run(go())


def test_one_bad_row_fails_only_its_own_caller(backend: Backend) -> None:
    async def go() -> None:
        async with started(backend.store()) as store:
            assert store.db is not None
            good = [records.to_row(rec(n), 1.0) for n in range(1, 6)]
            bad = list(records.to_row(rec(9), 1.0))
            bad[1] = None  # session_id is NOT NULL: the database refuses this row
            results = await asyncio.gather(*(store.db.insert(row) for row in [*good[:2], tuple(bad), *good[2:]]), return_exceptions=True)
        assert [r for i, r in enumerate(results) if i != 2] == [True] * 5
        assert isinstance(results[2], Exception)
        assert db_history(backend) == [str(1000 + n) for n in range(1, 6)]

    run(go())


def test_session_saves_in_one_batch_keep_their_fences(backend: Backend) -> None:
    async def go() -> None:
        async with started(backend.store()) as store:
            assert store.db is not None
            data = records.session_to_dict(SESSION)
            later = {**data, "last_active_at": 5.0}
            stale = {**data, "last_active_at": 3.0}
            saved = await asyncio.gather(
                store.db.save_session((data, 1)), store.db.save_session((later, 5)), store.db.save_session((stale, 3))
            )
            loaded = await store.db.run(store.db.latest_session, SESSION.scope_key)
        assert saved == [True, True, False]  # the save fenced out by a newer token is refused, in its batch too
        assert loaded is not None and loaded["last_active_at"] == 5.0

    run(go())


def test_a_cancelled_caller_does_not_cancel_the_others(backend: Backend) -> None:
    async def go() -> None:
        async with started(backend.store()) as store:
            assert store.db is not None
            rows = [records.to_row(dataclasses.replace(rec(n)), 1.0) for n in range(1, 4)]
            first = asyncio.ensure_future(store.db.insert(rows[0]))
            doomed = asyncio.ensure_future(store.db.insert(rows[1]))
            last = asyncio.ensure_future(store.db.insert(rows[2]))
            await asyncio.sleep(0)
            doomed.cancel()
            assert await first is True and await last is True

    run(go())


def test_redis_operations_issued_together_share_round_trips(backend: Backend) -> None:
    async def go() -> None:
        async with started(backend.store()) as store:
            cache = store.cache
            assert cache is not None
            sends: list[int] = []
            send = cache.pipeline.send

            async def counting(groups: list[Any]) -> Any:
                sends.append(len(groups))
                return await send(groups)

            cache.pipeline.send = counting  # type: ignore[method-assign]
            key = f"{cache.prefix}test:list"
            replies = await asyncio.gather(
                *(cache.run(("RPUSH", key, str(n)), ("LLEN", key)) for n in range(40)),
                cache.run(("INCR", key)),  # wrong type: fails alone
                return_exceptions=True,
            )
            (items,) = await cache.run(("LRANGE", key, 0, -1))
        lengths = [r[1] for r in replies[:40]]
        assert sorted(lengths) == list(range(1, 41))  # each operation's commands stayed together
        assert isinstance(replies[40], Exception) and "WRONGTYPE" in str(replies[40])
        assert [int(i) for i in items] == list(range(40))  # sent in the order they were issued
        assert sends[0] == 41  # issued in one turn of the event loop: one round trip

    run(go())


def test_a_redis_caller_cancelled_in_flight_fails_no_other_call(backend: Backend) -> None:
    """Two operations share a round trip; the task of the first is
    cancelled (a hook's timeout, a watch cut short) while it is in flight:
    the second still gets its reply, not a failure that would open the
    breaker of a healthy Redis."""

    async def go() -> None:
        async with started(backend.store()) as store:
            cache = store.cache
            assert cache is not None
            entered, gate = asyncio.Event(), asyncio.Event()
            send = cache.pipeline.send

            async def held(groups: list[Any]) -> Any:
                entered.set()
                await gate.wait()
                return await send(groups)

            cache.pipeline.send = held  # type: ignore[method-assign]
            first = asyncio.ensure_future(cache.run(("SET", f"{cache.prefix}test:a", "1")))
            second = asyncio.ensure_future(cache.run(("SET", f"{cache.prefix}test:b", "2")))
            await asyncio.wait_for(entered.wait(), 5)
            first.cancel()
            gate.set()
            assert await second == [True]
            assert first.cancelled() and store.redis_ok

    run(go())


def test_a_window_larger_than_one_lua_call_can_take_fills_whole(backend: Backend) -> None:
    async def go() -> None:
        async with started(backend.store(window_size=3000)) as store:
            cache = store.cache
            assert cache is not None
            entries = [records.encode_entry(rec(n)) for n in range(2500)]
            assert await cache.fill(SESSION.id, entries, None, cache.epoch)
            assert not await cache.fill(SESSION.id, entries, None, cache.epoch)  # it exists now
            (length,) = await cache.run(("LLEN", cache.window_key(SESSION.id)))
            window = await store.load_messages(SESSION, 3000)
        assert length == 2500
        assert [r.id for r in window] == [str(1000 + n) for n in range(2500)]

    run(go())


def test_a_message_the_database_refuses_never_shows_in_the_window(backend: Backend) -> None:
    async def go() -> None:
        async with started(backend.store()) as store:
            assert store.db is not None
            await store.store_message(rec(1))
            await store.load_messages(SESSION, 10)
            await store.refill(SESSION.id)  # the window exists: the next append lands in it
            insert = store.db.insert

            async def refusing(row: Any) -> Any:
                if row[0] == "1002":
                    raise ValueError("refused by a constraint")
                return await insert(row)

            store.db.insert = refusing  # type: ignore[method-assign]
            try:
                await store.store_message(rec(2))
            except ValueError:
                pass
            else:
                raise AssertionError("the refusal did not reach the caller")
            assert [r.id for r in await store.load_messages(SESSION, 10)] == ["1001"]
        assert db_history(backend) == ["1001"]

    run(go())


def test_a_message_stored_before_in_another_session_never_shows_in_the_new_one(backend: Backend) -> None:
    async def go() -> None:
        later = dataclasses.replace(SESSION, id="sess-2", opened_at=2000.0, last_active_at=2000.0)
        async with started(backend.store()) as store:
            await store.store_message(rec(1))
            await store.store_message(rec(5, session=later))
            await store.load_messages(later, 10)
            await store.refill(later.id)  # the newer session's window exists
            # A redelivery of message 1, resolved into the newer session this time.
            await store.store_message(rec(1, session=later))
            assert [r.id for r in await store.load_messages(later, 10)] == ["1005"]
        assert db_history(backend, later.id) == ["1005"]
        assert db_history(backend) == ["1001"]

    run(go())
