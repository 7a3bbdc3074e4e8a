"""Instance reports (plugins/memory/reports.py): a late message is answered
only when no other live instance may still hold a reply to it.

Each case here is a shape of doubled reply the 20,000-message chaos soak
found (docs/CHAOS.md): the first reply existed only in a process that was
paused or cut off, and no claim, database row or Redis key showed it.
"""

from __future__ import annotations

import asyncio
import contextlib

from core.models import Role
from plugins.memory.reports import REPORT_PREFIX
from plugins.memory.store import MemoryStore
from tests.memory.conftest import Backend, database_cut, run, started
from tests.memory.helpers import rec

FAST = {"report_interval": 0.05}


def reply_to(n: int) -> object:
    return rec(n + 1, role=Role.BOT, author="bot", id=f"reply:{1000 + n}", reply_to_id=str(1000 + n))


def late(backend: Backend) -> float:
    """A message timestamp well past ``late_message_age``: a redelivery."""
    return backend.clock.now() - 30


async def pause_reports(store: MemoryStore) -> None:
    """As if ``store``'s process were paused: it writes no more reports."""
    task = store._report_task
    assert task is not None
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def reported(store: MemoryStore) -> None:
    """Wait until ``store`` has written two reports (the second says how
    often it reports)."""
    for _ in range(100):
        if store.reports.number >= 2:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("no report written")


def test_a_late_redelivery_waits_for_a_reply_sent_and_not_yet_stored(backend: Backend) -> None:
    async def go() -> None:
        async with started(backend.store("A", **FAST)) as a, started(backend.store("B", **FAST)) as b:
            sent_at = late(backend)
            assert await a.coordinator.claim("1001", sent_at=sent_at)
            await a.store_message(rec(1))
            assert await a.coordinator.confirm("1001")  # A sends its reply...
            backend.flush()  # ...Redis loses A's claim before A stores the reply
            assert await b.coordinator.claim("1001", sent_at=sent_at) is False
            await a.store_message(reply_to(1))
            assert await b.coordinator.claim("1001", sent_at=sent_at) is False  # answered

    run(go())


def test_a_late_redelivery_is_not_answered_while_a_silent_instance_may_hold_it(backend: Backend) -> None:
    async def go() -> None:
        async with started(backend.store("A", **FAST)) as a, started(backend.store("B", **FAST)) as b:
            sent_at = late(backend)
            assert await a.coordinator.claim("1002", sent_at=sent_at)
            a.reports.number = 0
            await reported(a)  # A's last report lists 1002...
            await pause_reports(a)  # ...then A stalls
            backend.flush()  # and Redis loses A's claim
            assert await b.coordinator.claim("1002", sent_at=sent_at) is False
            # What A's report does not list, and A could not have claimed
            # since (an old message, which A would have reported before
            # deciding it), is not kept waiting on A.
            backend.clock.advance(5)
            assert await b.coordinator.claim("1003", sent_at=sent_at) is True
            # A young message long after the flush is claimed quickly, as usual.
            b.cache.epoch_changed_at = -1e9
            assert await b.coordinator.claim("1004", sent_at=backend.clock.now()) is True

    run(go())


def test_an_instance_silent_past_instance_timeout_is_not_waited_for(backend: Backend) -> None:
    async def go() -> None:
        async with started(backend.store("A", **FAST)) as a, started(backend.store("B", instance_timeout=60, **FAST)) as b:
            await reported(a)
            await pause_reports(a)
            backend.clock.advance(61)
            assert await b.coordinator.claim("1004", sent_at=late(backend)) is True

    run(go())


def test_a_reply_spooled_during_a_database_cut_holds_back_a_late_redelivery(backend: Backend) -> None:
    async def go() -> None:
        # Each instance has its own spool, as on separate machines.
        a_store = backend.store("A", spool_dir=backend.tmp_path / "spool-a", **FAST)
        b_store = backend.store("B", spool_dir=backend.tmp_path / "spool-b", **FAST)
        async with started(a_store) as a, started(b_store) as b:
            sent_at = late(backend)
            assert await a.coordinator.claim("1005", sent_at=sent_at)
            with database_cut(backend, a):
                await a.store_message(rec(5))
                assert await a.coordinator.confirm("1005")
                await a.store_message(reply_to(5))  # sent: the reply waits in A's spool
            assert "1005" in a.spooled_reply_ids()
            backend.flush()  # the shared stream and the "done" marker are gone
            # A's reports (in Redis while its database breaker is open) list
            # the spooled reply until it is replayed.
            assert await b.coordinator.claim("1005", sent_at=sent_at) is False
            await a.probe()  # A's spool reaches the database
            assert await b.coordinator.claim("1005", sent_at=sent_at) is False

    run(go())


def test_a_late_message_nobody_holds_is_answered_after_fresh_reports(backend: Backend) -> None:
    async def go() -> None:
        async with started(backend.store("A", **FAST)) as a, started(backend.store("B", **FAST)) as b:
            await reported(a)
            assert await b.coordinator.claim("1006", sent_at=late(backend)) is True

    run(go())


def test_a_clean_stop_withdraws_the_report(backend: Backend) -> None:
    async def go() -> None:
        a = backend.store("A", **FAST)
        async with started(a):
            await reported(a)
            assert "gone" not in backend.sql(f"SELECT value FROM bot_state WHERE key = '{REPORT_PREFIX}A'")[0][0]
        assert '"gone":true' in backend.sql(f"SELECT value FROM bot_state WHERE key = '{REPORT_PREFIX}A'")[0][0]
        async with started(backend.store("B", **FAST)) as b:
            assert await b.coordinator.claim("1007", sent_at=late(backend)) is True

    run(go())


def test_with_redis_down_a_database_claim_waits_for_a_redis_claimer_to_report(backend: Backend) -> None:
    # A claims in Redis; B, which cannot reach Redis, claims in the database
    # and cannot see A's claim: A's report shows it.
    async def go() -> None:
        async with started(backend.store("A", **FAST)) as a, started(backend.store("B", **FAST)) as b:
            now = backend.clock.now()
            assert await a.coordinator.claim("1008", sent_at=now)
            b.redis_breaker.trip("TimeoutError: Timeout reading from Redis")  # B alone cannot reach Redis
            a.reports.number = 0
            await reported(a)
            assert await b.coordinator.claim("1008", sent_at=now) is False

    run(go())


def test_a_stalled_instance_holds_back_only_what_it_could_have_claimed(backend: Backend) -> None:
    # G6: with Redis down every message is decided in the database and waits
    # for reports; a stalled instance must not silence the bot, only hold
    # back what was sent before it stopped reporting.
    async def go() -> None:
        async with started(backend.store("A", **FAST)) as a, started(backend.store("B", **FAST)) as b:
            await reported(a)
            await pause_reports(a)
            stalled_at = backend.clock.now()
            backend.clock.advance(5)
            b.redis_breaker.trip("TimeoutError: Timeout reading from Redis")  # B alone cannot reach Redis
            # Sent after A stalled: A cannot hold it.
            assert await b.coordinator.claim("1010", sent_at=backend.clock.now()) is True
            # Sent before: A may have claimed it and stalled before reporting it.
            assert await b.coordinator.claim("1011", sent_at=stalled_at - 0.5) is False

    run(go())


def test_a_report_that_reached_only_redis_outlives_a_flush(backend: Backend) -> None:
    # A cannot reach the database, so its report (listing a message it
    # holds) is only in Redis; B reads it and relays it to the database;
    # Redis is flushed; C, which never read Redis in time, still finds it.
    async def go() -> None:
        # A writes only the reports this test asks for.
        async with started(backend.store("A", report_interval=3600)) as a, started(backend.store("B", **FAST)) as b:
            sent_at = late(backend)
            assert await a.coordinator.claim("1012", sent_at=sent_at)
            a.db_breaker.trip("TimeoutError: no answer within 0.5s")  # A alone cannot reach the database
            await a.reports.publish()  # to Redis only
            await b.reports.publish()  # B reads A's report in Redis and relays it
            backend.flush()
            async with started(backend.store("C", **FAST)) as c:
                assert await c.coordinator.claim("1012", sent_at=sent_at) is False

    run(go())


def test_a_late_message_is_reported_before_it_is_decided(backend: Backend) -> None:
    # A wins the claim on a redelivery and stops before its next periodic
    # report; Redis loses the claim. A reported the message before deciding
    # it, so B, deciding the next redelivery, waits for A.
    async def go() -> None:
        async with started(backend.store("A", report_interval=3600)) as a, started(backend.store("B", **FAST)) as b:
            sent_at = late(backend)
            assert await a.coordinator.claim("1013", sent_at=sent_at)
            backend.flush()
            assert await b.coordinator.claim("1013", sent_at=sent_at) is False

    run(go())


def test_a_young_message_claimed_just_after_a_flush_waits_for_the_reports(backend: Backend) -> None:
    # Delivered to two instances at once: A wins the claim and answers at
    # once (a young message is not reported first); Redis is flushed before
    # B asks, so B wins the empty key. B saw the epoch change, so it waits
    # for A's next report, which lists the message.
    async def go() -> None:
        async with started(backend.store("A", **FAST)) as a, started(backend.store("B", **FAST)) as b:
            a.cache.epoch_changed_at = b.cache.epoch_changed_at = -1e9  # long after any flush
            sent_at = backend.clock.now()
            assert await a.coordinator.claim("1014", sent_at=sent_at)
            backend.flush()
            assert await b.coordinator.claim("1014", sent_at=sent_at) is False
            await a.store_message(rec(14))
            await a.store_message(reply_to(14))
            a.coordinator.answered("1014")
            assert await b.coordinator.claim("1014", sent_at=sent_at) is False  # answered

    run(go())


def test_with_the_database_down_a_late_message_waits_for_the_reports_in_redis(backend: Backend) -> None:
    # B cannot reach the database, so it cannot ask whether the message was
    # answered; Redis lost A's claim. A's report, in Redis, lists it.
    async def go() -> None:
        async with started(backend.store("A", **FAST)) as a, started(backend.store("B", **FAST)) as b:
            sent_at = backend.clock.now() - 5  # late, but young enough to answer unasked
            assert await a.coordinator.claim("1015", sent_at=sent_at)
            backend.flush()
            b.db_breaker.trip("TimeoutError: no answer within 0.5s")  # B alone cannot reach the database
            assert await b.coordinator.claim("1015", sent_at=sent_at) is False

    run(go())


def test_a_reply_is_reported_before_it_is_sent(backend: Backend) -> None:
    # A young message is claimed without a report; A writes one before it
    # sends the reply, then stops (no periodic report lists it); Redis
    # loses the claim. B, deciding a redelivery, finds it in A's last report.
    async def go() -> None:
        async with started(backend.store("A", report_interval=3600)) as a, started(backend.store("B", **FAST)) as b:
            backend.clock.advance(5)  # well after A's start-up report
            a.cache.epoch_changed_at = -1e9  # long after any flush: a quick claim
            sent_at = backend.clock.now()
            assert await a.coordinator.claim("1016", sent_at=sent_at)
            assert not a.reports.lists("1016")
            assert await a.coordinator.confirm("1016")  # A sends its reply...
            assert a.reports.lists("1016")
            backend.flush()  # ...and is paused while Redis loses its claim
            assert await b.coordinator.claim("1016", sent_at=sent_at) is False

    run(go())


def test_a_claim_put_back_after_a_pause_yields_to_a_reply_on_its_way_elsewhere(backend: Backend) -> None:
    # A was paused past its claim; B answered a redelivery and is sending;
    # Redis loses B's claim too. A resumes, finds the key empty and nothing
    # stored: B's report says B is sending, so A does not.
    async def go() -> None:
        async with started(backend.store("A", **FAST)) as a, started(backend.store("B", instance_timeout=60, **FAST)) as b:
            sent_at = backend.clock.now()
            assert await a.coordinator.claim("1017", sent_at=sent_at)
            a.coordinator.held_since["1017"] -= 60  # A is paused past its claim
            await pause_reports(a)  # and past instance_timeout: B counts it as gone
            backend.clock.advance(61)
            backend.flush()
            assert await b.coordinator.claim("1017", sent_at=sent_at)
            assert await b.coordinator.confirm("1017")  # B is sending
            backend.flush()
            assert await a.coordinator.still_mine("1017") is False

    run(go())


def test_a_report_redis_lost_before_anyone_read_it_holds_back_what_it_may_have_listed(backend: Backend) -> None:
    # A cannot reach the database: its report (listing a reply it is
    # sending) goes to Redis only, and a flush erases it before B reads it.
    # B saw Redis lose its data after A's last report it knows of, so A
    # may hold any young message sent up to then.
    async def go() -> None:
        quiet = {"report_interval": 3600}  # each writes only the reports this test asks for
        async with started(backend.store("A", **quiet)) as a, started(backend.store("B", **quiet)) as b:
            backend.clock.advance(5)  # well after A's start-up report
            sent_at = backend.clock.now()
            a.db_breaker.trip("TimeoutError: no answer within 0.5s")  # A alone cannot reach the database
            a.cache.epoch_changed_at = -1e9  # long after any flush: a quick claim
            assert await a.coordinator.claim("1018", sent_at=sent_at)
            assert await a.coordinator.confirm("1018")  # reported to Redis only; A is then paused
            backend.flush()
            assert await b.coordinator.claim("1018", sent_at=sent_at) is False
            backend.clock.advance(5)
            # Sent after the flush B saw: A's lost reports cannot list it.
            assert await b.coordinator.claim("1019", sent_at=backend.clock.now()) is True

    run(go())


def test_an_instance_waiting_on_a_claim_does_not_hold_back_its_winner(backend: Backend) -> None:
    # Two deliveries of a late message, one to each instance: the loser waits
    # on the winner's claim; the winner, checking the reports, must not take
    # that wait for a claim (or neither would answer).
    async def go() -> None:
        async with started(backend.store("A", **FAST)) as a, started(backend.store("B", **FAST)) as b:
            await reported(a)
            await reported(b)
            sent_at = late(backend)
            got = await asyncio.gather(a.coordinator.claim("1022", sent_at=sent_at), b.coordinator.claim("1022", sent_at=sent_at))
            assert sorted(got) == [False, True]

    run(go())


def test_a_reply_stored_lately_is_reported_for_an_instance_that_cannot_ask_the_database(backend: Backend) -> None:
    # A answered and stored its reply in the database; Redis lost the claim
    # and the "done". B cannot reach the database: A's report still lists
    # the message for a while, so B does not answer it again.
    async def go() -> None:
        async with started(backend.store("A", **FAST)) as a, started(backend.store("B", **FAST)) as b:
            sent_at = backend.clock.now() - 5  # late, but young enough to answer unasked
            assert await a.coordinator.claim("1023", sent_at=sent_at)
            assert await a.coordinator.confirm("1023")
            await a.store_message(rec(23))
            await a.store_message(reply_to(23))
            backend.flush()
            b.db_breaker.trip("TimeoutError: no answer within 0.5s")  # B alone cannot reach the database
            assert await b.coordinator.claim("1023", sent_at=sent_at) is False

    run(go())
