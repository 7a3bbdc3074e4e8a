"""Rule D5: a reply is durable from the moment it is sent, also when its
process dies before the store it started could finish."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest

from core.models import Role
from plugins.memory.outbox import Outbox, SentJournal, Spool
from tests.memory.conftest import Backend, run, started
from tests.memory.helpers import SESSION, Killed, ids, rec


def _reply(n: int) -> Any:
    return rec(n, id=f"reply:{1000 + n}", role=Role.BOT, author="bot", reply_to_id=str(1000 + n), content=f"answer {n}")


async def _killed_while_storing(store: Any, reply: Any) -> asyncio.Task[bool]:
    """Send ``reply`` through a store whose database never answers, and
    leave it there: as if the process were SIGKILLed mid-store (nothing of
    it runs again; the caller cancels the task at the end)."""

    async def database_never_answers(*_args: Any) -> bool:
        await asyncio.Event().wait()
        return True

    store._store_row = database_never_answers
    sending = asyncio.create_task(store.store_message(reply))
    await asyncio.sleep(0.05)
    return sending


def _journal_lines(store: Any) -> int:
    return sum(len(store.sent.spool.read(path)[0]) for path in store.sent.spool.files())


def test_d5_a_reply_whose_process_dies_before_storing_it_is_stored_by_its_next_life(backend: Backend) -> None:
    async def go() -> list[tuple[Any, ...]]:
        first = backend.store("A")
        await first.start()
        sending = await _killed_while_storing(first, _reply(1))
        # Its next life opens the same spool folder.
        async with started(backend.store("A")) as second:
            await second.probe()
            rows = backend.sql("SELECT message_id, content FROM messages")
        sending.cancel()
        await asyncio.gather(sending, return_exceptions=True)
        await first.stop()
        return rows

    assert run(go()) == [("reply:1001", "answer 1")]


def test_d5_the_next_life_hands_over_only_what_the_database_lacks(
    backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    async def go() -> list[tuple[Any, ...]]:
        first = backend.store("A")
        await first.start()
        await first.store_message(_reply(1))  # stored; the journal is trimmed at the next probe only
        sending = await _killed_while_storing(first, _reply(2))
        with caplog.at_level(logging.WARNING, logger="plugins.memory"):
            async with started(backend.store("A")) as second:
                await second.probe()
                rows = backend.sql("SELECT message_id FROM messages ORDER BY message_id")
        sending.cancel()
        await asyncio.gather(sending, return_exceptions=True)
        await first.stop()
        return rows

    assert run(go()) == [("reply:1001",), ("reply:1002",)]
    assert "memory: 1 sent replies whose store did not finish" in caplog.text


async def _reply_committed_then_killed(backend: Backend) -> tuple[Any, asyncio.Task[bool]]:
    """A's window holds message 1; A stores its reply, the insert commits
    and A dies before anything appends it (the caller cancels the task)."""
    first = backend.store("A")
    await first.start()
    await first.store_message(rec(1))
    assert ids(await first.load_messages(SESSION, 10)) == ["1001"]  # the window exists

    async def committed_then_killed(record: Any, row: Any, _reader: Any) -> bool:
        await first.db.insert(row)
        await asyncio.Event().wait()
        return True

    first._store_row = committed_then_killed
    sending = asyncio.create_task(first.store_message(_reply(1)))
    await asyncio.sleep(0.05)
    return first, sending


def test_d5_a_reply_its_dead_process_committed_but_never_put_in_the_window_is_in_the_next_context(
    backend: Backend,
) -> None:
    """The insert was in flight when its process died and committed anyway:
    the database holds the reply, the window does not (nobody appended it).
    The next life rebuilds that window from the database."""

    async def go() -> list[str]:
        first, sending = await _reply_committed_then_killed(backend)
        async with started(backend.store("A")) as second:
            found = ids(await second.load_messages(SESSION, 10))
        sending.cancel()
        await asyncio.gather(sending, return_exceptions=True)
        await first.stop()
        return found

    assert run(go()) == ["1001", "reply:1001"]


def test_d5_a_next_life_killed_once_its_journal_forgot_a_reply_leaves_no_window_without_it(backend: Backend) -> None:
    """As above, and the next life dies the moment its journal forgot the
    reply the database holds: that window must be gone already."""

    async def go() -> list[str]:
        first, sending = await _reply_committed_then_killed(backend)
        second = backend.store("A")
        hand_over = second.sent.hand_over

        def then_die(*args: Any) -> int:
            hand_over(*args)
            raise Killed

        second.sent.hand_over = then_die  # type: ignore[method-assign]
        try:
            with pytest.raises(Killed):
                await second.start()
            assert _journal_lines(second) == 0
            async with started(backend.store("B")) as other:
                return ids(await other.load_messages(SESSION, 10))
        finally:
            sending.cancel()
            await asyncio.gather(sending, return_exceptions=True)
            await first.stop()
            await second.stop()

    assert run(go()) == ["1001", "reply:1001"]


def test_d5_a_stored_reply_leaves_nothing_behind(backend: Backend) -> None:
    async def go() -> tuple[int, int, int]:
        async with started(backend.store("A")) as store:
            await store.store_message(rec(1))
            await store.store_message(_reply(1))
            written = _journal_lines(store)
            await store.probe()
            return written, _journal_lines(store), store.spool.depth()

    # Written before the store, dropped once it finished, never queued.
    assert run(go()) == (1, 0, 0)


def test_d5_a_store_that_failed_is_handed_to_the_outbox(tmp_path: Path) -> None:
    journal = SentJournal(tmp_path / "sent", "A")
    outbox = Outbox(None, Spool(tmp_path, "A"))
    for n in (1, 2, 3):
        journal.note([f"reply:{n}", "s1"])
    journal.done("reply:1", accepted=True)
    journal.done("reply:2", accepted=False)  # it raised: neither stored nor queued
    # reply:3's store is still running: it stays in the journal, untouched.
    assert journal.hand_over(outbox, journal.orphans(), set()) == 1
    assert [e["d"][0] for e in outbox.spool.read(outbox.spool.path)[0]] == ["reply:2"]
    assert [e["d"][0] for e in journal.spool.read(journal.spool.path)[0]] == ["reply:3"]
