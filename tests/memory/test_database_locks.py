"""Rule D6 (docs/MEMORY.md): no instance stalls the others' writes.

PostgreSQL only: the row locks, the idle-transaction limit and the
deadlocks are the server's. A paused instance in the middle of a write held
its row locks for its whole pause, and two instances replaying overlapping
rows in another order deadlocked; either tripped the database breaker of
instances whose database was fine (the chaos soak's 69-second "outage" of an
instance whose database never went down).
"""

from __future__ import annotations

import asyncio
import threading
import time

import psycopg2
import pytest

from plugins.memory.durable import IDLE_IN_TRANSACTION_MS, DurableStore
from tests.memory.conftest import run

pytestmark = pytest.mark.real


def _table(url: str) -> None:
    conn = psycopg2.connect(url.replace("postgresql://", "postgres://"))
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE rows (id int PRIMARY KEY, n int NOT NULL)")
        cur.execute("INSERT INTO rows VALUES (1, 0), (2, 0)")
    conn.close()


def test_a_transaction_left_idle_by_a_paused_process_is_ended_and_frees_its_rows(pg_url: str) -> None:
    _table(pg_url)
    paused = DurableStore(pg_url, timeout=0.5)
    other = DurableStore(pg_url, timeout=0.5)
    held = threading.Event()
    resume = threading.Event()

    def write_then_pause() -> None:
        with paused.db.atomic():
            paused.db.execute_sql("UPDATE rows SET n = n + 1 WHERE id = 1")
            held.set()
            resume.wait(10)  # the process is stopped here, its transaction open

    async def go() -> None:
        assert (await other.run(lambda: other.db.execute_sql("SHOW idle_in_transaction_session_timeout").fetchone()[0])) == f"{IDLE_IN_TRANSACTION_MS // 1000}s"
        pausing = asyncio.get_running_loop().run_in_executor(None, write_then_pause)
        await asyncio.get_running_loop().run_in_executor(None, held.wait, 5)
        started = time.monotonic()
        # The other instance's write of the same row waits for the lock, then
        # goes through once the server ends the idle transaction.
        await other.run(lambda: other.db.execute_sql("UPDATE rows SET n = n + 10 WHERE id = 1"), slow=True)
        waited = time.monotonic() - started
        resume.set()
        with pytest.raises(Exception):  # the paused one finds its session ended
            await pausing
        assert waited < IDLE_IN_TRANSACTION_MS / 1000 + 3, waited
        assert (await other.run(lambda: other.db.execute_sql("SELECT n FROM rows WHERE id = 1").fetchone()[0])) == 10

    try:
        run(go())
    finally:
        resume.set()
        run(paused.close())
        run(other.close())


def test_a_write_the_server_rolls_back_to_break_a_deadlock_runs_again(pg_url: str) -> None:
    _table(pg_url)
    a = DurableStore(pg_url, timeout=0.5)
    b = DurableStore(pg_url, timeout=0.5)
    both = threading.Barrier(2, timeout=5)
    runs = {"a": 0, "b": 0}

    def crossing(store: DurableStore, name: str, first: int, second: int) -> int:
        runs[name] += 1
        with store.db.atomic():
            store.db.execute_sql("UPDATE rows SET n = n + 1 WHERE id = %s", (first,))
            if runs[name] == 1:
                both.wait()  # each holds one row and asks for the other's
            store.db.execute_sql("UPDATE rows SET n = n + 1 WHERE id = %s", (second,))
        return runs[name]

    async def go() -> None:
        # PostgreSQL looks for deadlocks after deadlock_timeout (1 s by default).
        done = await asyncio.gather(
            a.run(crossing, a, "a", 1, 2, slow=True), b.run(crossing, b, "b", 2, 1, slow=True)
        )
        assert sorted(done) == [1, 2]  # one was rolled back and ran again
        assert a.connection_errors == b.connection_errors == 0  # not taken for a broken connection
        assert (await a.run(lambda: a.db.execute_sql("SELECT sum(n) FROM rows").fetchone()[0])) == 4

    try:
        run(go())
    finally:
        run(a.close())
        run(b.close())


def test_the_idle_limit_is_added_to_the_options_a_url_gives() -> None:
    from plugins.memory.durable import open_database

    limit = f"-c idle_in_transaction_session_timeout={IDLE_IN_TRANSACTION_MS}"
    assert open_database("postgresql://bot@db.example/bot", 0.5).connect_params["options"] == limit
    given = open_database("postgresql://bot@db.example/bot?options=-c%20search_path%3Dmem", 0.5)
    assert given.connect_params["options"] == f"-c search_path=mem {limit}"
    several = open_database("postgresql://bot@a:5432,b:5432/bot?options=-c%20search_path%3Dmem", 0.5)
    assert several.connect_params["options"] == f"-c search_path=mem {limit}"
