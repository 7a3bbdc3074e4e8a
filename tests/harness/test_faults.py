"""Each fault control of the harness really happens: no scenario may pass
because a fault silently did nothing.

Run per backend like the scenarios (``[fast]`` / ``[real]``).
"""

from __future__ import annotations

import contextlib
import os
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from core.storage import StorageBase
from harness.backends import (
    BackendUnavailable,
    FakeRedisTcp,
    FastBackends,
    RealBackends,
    SqliteCut,
    check_real_services,
    free_port,
)
from tests.harness.harness import Harness
from harness.instances import REPO_ROOT, WorkerInstance
from harness.proxy import TcpProxy

pytestmark = pytest.mark.fault

# Tests that take the ``harness`` fixture run once per selected backend
# (the fixture depends on ``backend``); the others run once.


# --- helpers -----------------------------------------------------------------


def redis_ping(harness: Harness, timeout: float = 5.0) -> str:
    """PING Redis the way the bot reaches it (through the proxy, or the
    in-process fakeredis with its ``connected`` flag); return the outcome."""
    import redis.asyncio as aioredis

    backends = harness.backends

    async def ping() -> str:
        if isinstance(backends, FastBackends) and backends.tcp is None:
            import fakeredis

            client = fakeredis.FakeAsyncRedis(server=backends.fake_server())
        else:
            client = aioredis.Redis.from_url(
                backends.redis_url, socket_timeout=timeout, socket_connect_timeout=timeout, retry=None
            )
        try:
            return "PONG" if await client.ping() else "no"
        except Exception as exc:  # noqa: BLE001 - the outcome is what we test
            return type(exc).__name__
        finally:
            await client.aclose()

    return harness.run(ping(), timeout=10, what="redis ping")


def direct_redis(harness: Harness):  # type: ignore[no-untyped-def]
    return harness.backends.redis_client()


class EchoServer:
    """A TCP server that echoes: the proxy's upstream in proxy tests."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    @staticmethod
    def _echo(conn: socket.socket) -> None:
        with conn:
            try:
                while data := conn.recv(4096):
                    conn.sendall(data)
            except OSError:
                pass  # the proxy resets connections on purpose

    def close(self) -> None:
        self.sock.close()


def roundtrip(sock: socket.socket, payload: bytes = b"hello") -> bytes:
    sock.sendall(payload)
    return sock.recv(4096)


# --- Redis -------------------------------------------------------------------


def test_flush_empties_redis(harness: Harness) -> None:
    client = direct_redis(harness)
    client.set("bot:probe", "1")
    client.rpush("bot:list", "a", "b")
    assert harness.backends.redis_keys() == ["bot:list", "bot:probe"]
    harness.backends.flush_redis()
    assert harness.backends.redis_keys() == []


def test_killed_redis_is_gone_and_comes_back_empty(harness: Harness) -> None:
    direct_redis(harness).set("bot:before", "1")
    assert redis_ping(harness) == "PONG"
    backends = harness.backends
    pid = backends.redis.process.pid if isinstance(backends, RealBackends) else None
    backends.kill_redis()
    if isinstance(backends, RealBackends):
        # The process is gone, and nothing listens on its port.
        assert backends.redis.process.poll() is not None
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # type: ignore[arg-type]
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", backends.redis.port), timeout=0.5).close()
    assert redis_ping(harness) != "PONG"
    backends.start_redis()
    assert redis_ping(harness) == "PONG"
    assert backends.redis_keys() == []
    if isinstance(backends, RealBackends):
        assert backends.redis.process.pid != pid


def test_killed_redis_can_come_back_with_its_data(harness: Harness) -> None:
    direct_redis(harness).set("bot:kept", "1")
    harness.backends.kill_redis(keep_data=True)
    assert redis_ping(harness) != "PONG"
    harness.backends.start_redis()
    assert harness.backends.redis_keys() == ["bot:kept"]


def test_redis_restarted_from_an_old_snapshot(harness: Harness, backend: str) -> None:
    from harness.backends import FaultError

    client = direct_redis(harness)
    client.set("bot:value", "old")
    if backend == "fast":
        with pytest.raises(FaultError, match="@real"):
            harness.backends.snapshot_redis()
        return
    harness.backends.snapshot_redis()
    client.set("bot:value", "new")
    client.set("bot:later", "1")
    client.close()
    pid = harness.backends.redis.process.pid  # type: ignore[attr-defined]
    harness.backends.restart_redis_from_snapshot()
    assert harness.backends.redis.process.pid != pid  # type: ignore[attr-defined]
    assert harness.backends.redis_keys() == ["bot:value"]
    with harness.backends.redis_client() as again:
        assert again.get("bot:value") == b"old"


def test_eviction_takes_some_keys_and_leaves_others(harness: Harness) -> None:
    client = direct_redis(harness)
    for name in ("a", "b", "c", "d", "e"):
        client.set(f"bot:{name}", name)
    client.close()
    assert harness.backends.evict_redis_keys() == ["bot:b", "bot:d"]
    assert harness.backends.redis_keys() == ["bot:a", "bot:c", "bot:e"]


def test_unreachable_redis_keeps_running_and_its_data(harness: Harness) -> None:
    direct_redis(harness).set("bot:kept", "1")
    harness.backends.redis_unreachable("drop")
    assert redis_ping(harness) in ("ConnectionError", "ConnectionResetError")
    # Redis itself is fine: the harness still reaches it directly.
    assert harness.backends.redis_keys() == ["bot:kept"]
    if isinstance(harness.backends, RealBackends):
        assert harness.backends.redis.alive
    harness.backends.redis_reachable()
    assert redis_ping(harness) == "PONG"


def test_blackholed_redis_never_answers(harness: Harness, backend: str) -> None:
    if backend == "fast":
        from harness.backends import FaultError

        with pytest.raises(FaultError, match="@real"):
            harness.backends.redis_unreachable("blackhole")
        return
    harness.backends.redis_unreachable("blackhole")
    assert redis_ping(harness, timeout=0.3) == "TimeoutError"
    harness.backends.redis_reachable()
    assert redis_ping(harness) == "PONG"


# --- the TCP proxy --------------------------------------------------------------


CUT = (ConnectionResetError, BrokenPipeError, EOFError)


def expect_cut(sock: socket.socket, payload: bytes = b"hello") -> None:
    """The connection is reset or closed: never answered, never timed out."""
    sock.settimeout(10)
    with pytest.raises(CUT):
        sock.sendall(payload)
        if sock.recv(4096) == b"":
            raise EOFError("closed")


def expect_new_connection_cut(address: tuple[str, int]) -> None:
    """A new connection is reset: during connect, or on first use."""
    try:
        sock = socket.create_connection(address, timeout=10)
    except CUT:
        return
    expect_cut(sock)


def test_proxy_modes() -> None:
    echo = EchoServer()
    proxy = TcpProxy("127.0.0.1", echo.port)
    try:
        open_conn = socket.create_connection(proxy.address, timeout=10)
        assert roundtrip(open_conn) == b"hello"

        proxy.set_mode("drop")
        # The open connection is reset, and a new one as soon as it is accepted.
        expect_cut(open_conn)
        expect_new_connection_cut(proxy.address)
        assert proxy.stats.reset_open >= 1 and proxy.stats.reset_on_accept >= 1

        proxy.set_mode("pass")
        kept = socket.create_connection(proxy.address, timeout=10)
        assert roundtrip(kept) == b"hello"

        proxy.set_mode("blackhole")
        # Connecting works (the kernel answers), but nothing ever comes back,
        # on new connections and on the open one.
        silent = socket.create_connection(proxy.address, timeout=0.3)
        with pytest.raises(TimeoutError):
            roundtrip(silent)
        kept.settimeout(0.3)
        with pytest.raises(TimeoutError):
            roundtrip(kept)
        assert proxy.stats.held >= 1 and proxy.stats.swallowed_bytes >= 5

        proxy.set_mode("pass")
        # Leaving the blackhole resets the connections that lost bytes.
        kept.settimeout(10)
        with pytest.raises(CUT):
            if kept.recv(10) == b"":
                raise EOFError("closed")
        again = socket.create_connection(proxy.address, timeout=10)
        assert roundtrip(again) == b"hello"
        assert proxy.reset_connections() == 1
    finally:
        proxy.close()
        echo.close()


def test_proxy_resets_the_client_when_upstream_is_down() -> None:
    # Bound but not listening: connecting is refused, and no other test can
    # take the port meanwhile.
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    proxy = TcpProxy("127.0.0.1", holder.getsockname()[1])
    try:
        expect_new_connection_cut(proxy.address)
        assert proxy.stats.upstream_refused == 1
    finally:
        proxy.close()
        holder.close()


# --- the database ----------------------------------------------------------------


def test_cut_database_is_unreachable_and_comes_back(harness: Harness, backend: str) -> None:
    backends = harness.backends
    if isinstance(backends, RealBackends):
        import psycopg2

        through_proxy = backends.database.connect(port=backends.pg_proxy.port)
        with through_proxy.cursor() as cur:
            cur.execute("CREATE TABLE probe (x int)")
        through_proxy.commit()

        backends.cut_database("drop")
        with pytest.raises(psycopg2.OperationalError):
            with through_proxy.cursor() as cur:
                cur.execute("SELECT 1")
        with pytest.raises(psycopg2.OperationalError):
            backends.database.connect(port=backends.pg_proxy.port, connect_timeout=2)
        # The harness's own assertions still reach the database directly.
        assert backends.query("SELECT count(*) FROM probe") == [(0,)]

        backends.cut_database("blackhole")
        started = time.monotonic()
        with pytest.raises(psycopg2.OperationalError):
            backends.database.connect(port=backends.pg_proxy.port, connect_timeout=1)
        assert time.monotonic() - started >= 0.9  # it hung until its own timeout

        backends.restore_database()
        conn = backends.database.connect(port=backends.pg_proxy.port)
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM probe")
            assert cur.fetchone() == (0,)
        conn.close()
        return

    assert isinstance(backends, FastBackends)
    setup = sqlite3.connect(backends.db_path)
    setup.execute("CREATE TABLE messages (message_id TEXT)")
    setup.commit()
    setup.close()
    backends.cut_database("drop")
    bot_side = sqlite3.connect(backends.db_path, timeout=0.2)
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        bot_side.execute("INSERT INTO messages VALUES ('x')")
    # The harness reads through the connection that holds the lock.
    assert backends.query("SELECT count(*) FROM messages") == [(0,)]
    backends.restore_database()
    bot_side.execute("INSERT INTO messages VALUES ('x')")
    bot_side.commit()
    assert backends.query("SELECT count(*) FROM messages") == [(1,)]
    bot_side.close()


@pytest.mark.parametrize("journal", ["delete", "wal"])
def test_sqlite_cut_blocks_writes_in_both_journal_modes(tmp_path: Path, journal: str) -> None:
    path = tmp_path / "db.sqlite"
    conn = sqlite3.connect(path, isolation_level=None, timeout=0.2)
    conn.execute(f"PRAGMA journal_mode={journal}")
    conn.execute("CREATE TABLE t (x)")
    cut = SqliteCut(path)
    cut.cut()
    assert cut.journal_mode() == journal
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        conn.execute("INSERT INTO t VALUES (1)")
    if journal == "delete":
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            conn.execute("SELECT count(*) FROM t").fetchone()
    else:
        # WAL readers pass any writer: documented in docs/TESTING_GUIDE.md.
        assert conn.execute("SELECT count(*) FROM t").fetchone() == (0,)
    cut.restore()
    conn.execute("INSERT INTO t VALUES (1)")
    conn.close()


def test_database_drop_connections(harness: Harness, backend: str) -> None:
    if backend == "fast":
        from harness.backends import FaultError

        with pytest.raises(FaultError):
            harness.backends.database_drop_connections()
        return
    import psycopg2

    backends = harness.backends
    assert isinstance(backends, RealBackends)
    conn = backends.database.connect(port=backends.pg_proxy.port)
    assert backends.database_drop_connections() == 1
    with pytest.raises(psycopg2.OperationalError):
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
    backends.database.connect(port=backends.pg_proxy.port).close()


def test_blocked_writes_wait_while_reads_and_claims_go_on(harness: Harness, backend: str) -> None:
    if backend == "fast":
        from harness.backends import FaultError

        with pytest.raises(FaultError):
            harness.backends.block_writes()
        return
    import psycopg2

    backends = harness.backends
    assert isinstance(backends, RealBackends)
    harness.start_instance("A")  # the schema
    conn = backends.database.connect(port=backends.pg_proxy.port)
    conn.autocommit = True
    backends.block_writes()
    with conn.cursor() as cur:
        cur.execute("SET lock_timeout = '300ms'")
        cur.execute("SELECT count(*) FROM messages")
        cur.execute("SELECT count(*) FROM claims")
        with pytest.raises(psycopg2.errors.LockNotAvailable):
            cur.execute("DELETE FROM sessions")
        with pytest.raises(psycopg2.errors.LockNotAvailable):
            cur.execute("DELETE FROM messages")
        cur.execute("DELETE FROM claims")  # other tables take writes
    waiting = backends.database.connect(port=backends.pg_proxy.port)
    waiting.autocommit = True
    stuck = threading.Thread(target=lambda: _quietly(waiting, "DELETE FROM messages"))
    stuck.start()
    harness.wait_until(lambda: _assert_waiting(backends), "a write waits on the lock")
    assert backends.unblock_writes() == 1  # the waiting write is ended
    stuck.join(10)
    with conn.cursor() as cur:
        cur.execute("DELETE FROM messages")  # writes go through again
    conn.close()


def _quietly(conn: object, sql: str) -> None:
    with contextlib.suppress(Exception), conn.cursor() as cur:  # type: ignore[attr-defined]
        cur.execute(sql)


def _assert_waiting(backends: RealBackends) -> None:
    found = backends.query(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    assert found[0][0] == 1, found


# --- bot instances, the clock -------------------------------------------------------


def test_restart_builds_a_new_bot_on_the_same_backends(harness: Harness) -> None:
    old = harness.start_instance("A")
    harness.say("alice", "#general", "before")
    old_bot = old.bot  # type: ignore[attr-defined]
    assert old.contexts
    new = harness.restart_instance("A")
    assert old_bot.started is False
    assert new.bot is not old_bot and new.bot.started  # type: ignore[attr-defined]
    assert new.contexts == []  # nothing of the old instance's memory
    assert harness.stored_ids()  # ... but the backends kept everything


def test_second_instance_in_process_shares_the_backends(harness: Harness) -> None:
    a = harness.start_instance("A")
    b = harness.start_instance("B")
    assert a.bot is not b.bot  # type: ignore[attr-defined]
    assert a.bot.clock is b.bot.clock is harness.clock  # type: ignore[attr-defined]
    assert a.bot.settings.sections["memory"] == b.bot.settings.sections["memory"]  # type: ignore[attr-defined]


@pytest.mark.multiprocess
def test_worker_instance_is_another_process_following_the_clock(harness: Harness) -> None:
    worker = harness.start_instance("B", process=True)
    assert isinstance(worker, WorkerInstance)
    assert worker.pid and worker.pid != os.getpid()
    assert os.path.exists(f"/proc/{worker.pid}")
    harness.advance_clock(3600)
    assert harness.run(worker.worker_now()) == harness.clock.now()
    message = harness.say("alice", "#general", "hello")
    assert [s.instance for s in harness.replies_to(message)] == ["B"]
    assert harness.context_of_reply(harness.message_said("hello")).instance == "B"
    pid = worker.pid
    code = harness.kill_instance("B")
    assert code == -9
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_the_clock_moves_without_sleeping(harness: Harness) -> None:
    instance = harness.start_instance("A")
    before = harness.clock.now()
    harness.advance_clock(31 * 60)
    # The bot reads the harness's ManualClock: half an hour passed at once.
    assert instance.bot.clock is harness.clock  # type: ignore[attr-defined]
    assert instance.bot.clock.now() == before + 31 * 60  # type: ignore[attr-defined]


def test_messages_look_like_discord(harness: Harness) -> None:
    from core.ids import snowflake_time

    harness.start_instance("A")
    first = harness.say("alice", "#general", "one")
    second = harness.say("alice", "thread plans in #general", "two")
    dm = harness.say("alice", "a DM", "three")
    assert int(first.id) < int(second.id) < int(dm.id)
    assert first.timestamp < second.timestamp < dm.timestamp
    assert snowflake_time(first.id) == pytest.approx(first.timestamp, abs=0.001)
    assert second.thread_id == second.channel_id and second.guild_id == first.guild_id
    assert dm.is_dm and dm.guild_id is None
    again = harness.deliver(first)
    assert harness.deliveries[first.id].times == 2
    assert again == [] or all(s.message_id == first.id for s in again)


# --- ports ------------------------------------------------------------------------------------


def test_free_ports_lie_below_the_ephemeral_range_and_come_in_turn() -> None:
    # An outgoing connection takes its local port from the ephemeral range; a server
    # told to bind a port from there can find it taken (a cluster node failed to start).
    low, high = (int(n) for n in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    ports = [free_port() for _ in range(50)]
    assert all(not low <= port <= high for port in ports)
    assert len(set(ports)) == 50
    with socket.socket() as held:
        held.bind(("127.0.0.1", ports[-1] + 1))
        assert free_port() != ports[-1] + 1  # a bound port is never handed out


def test_each_xdist_worker_has_its_own_ports(monkeypatch: pytest.MonkeyPatch) -> None:
    import harness.backends as backends

    seen = []
    for worker in ("gw0", "gw1", "gw2"):
        monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "3")
        monkeypatch.setenv("PYTEST_XDIST_WORKER", worker)
        monkeypatch.setattr(backends, "_next_port", [])
        seen.append({backends.free_port() for _ in range(20)})
    assert not (seen[0] & seen[1]) and not (seen[1] & seen[2]) and not (seen[0] & seen[2])


# --- the real matrix fails, never skips, without its services ------------------------------


def test_missing_services_are_a_clear_failure() -> None:
    with pytest.raises(BackendUnavailable) as caught:
        check_real_services(pg_port=free_port(), redis_server="no-such-redis-server")
    text = str(caught.value)
    assert "no-such-redis-server" in text and "not reachable" in text
    assert "pg_ctlcluster" in text and "redis-server --daemonize yes" in text


def test_real_matrix_fails_when_postgres_is_missing(tmp_path: Path) -> None:
    env = dict(os.environ, HARNESS_PG_PORT=str(free_port()))
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "tests/features/test_duplicates.py", "--backend", "real", "-q",
         "-p", "no:cacheprovider", "-k", "stored_once and not flush"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode != 0, result.stdout
    assert "skipped" not in result.stdout
    assert "pg_ctlcluster" in result.stdout


# --- the harness catches a broken memory ----------------------------------------------------


class RedisOnlyMemory(StorageBase):
    """A memory that keeps messages only in Redis: G1 violated on purpose."""

    def __init__(self, server: object) -> None:
        import fakeredis

        self.redis = fakeredis.FakeRedis(server=server)
        self.sessions: dict[str, object] = {}

    from core.plugins import hookimpl

    @hookimpl
    def register_storage(self, register):  # type: ignore[no-untyped-def]
        register(self)

    def store_message(self, record, session):  # type: ignore[no-untyped-def]
        import json

        self.redis.rpush(f"m:{session.id}", json.dumps(record.to_dict()))
        return True

    def load_messages(self, session, limit):  # type: ignore[no-untyped-def]
        import json

        from core.models import MessageRecord

        return [MessageRecord.from_dict(json.loads(r)) for r in self.redis.lrange(f"m:{session.id}", -limit, -1)]

    def load_session(self, scope_key):  # type: ignore[no-untyped-def]
        return self.sessions.get(scope_key)

    def save_session(self, session):  # type: ignore[no-untyped-def]
        self.sessions[session.scope_key] = session


@pytest.mark.parametrize("backend", ["fast"], indirect=True)
def test_the_flush_scenario_catches_a_redis_only_memory(harness: Harness) -> None:
    """The broken stand-in uses the in-process fakeredis: fast matrix only."""
    from tests.harness.steps import then_context_table

    assert isinstance(harness.backends, FastBackends)
    server = harness.backends.fake_server()
    harness.plugins = ["sessions"]
    harness.extra_plugins.append(lambda: RedisOnlyMemory(server))
    harness.start_instance("A")
    harness.say("alice", "#general", "one")
    table = [["author", "content"], ["alice", "one"], ["bot", "ok one"]]
    then_context_table(harness, "alice", "#general", table)  # passes before the flush
    harness.backends.flush_redis()
    with pytest.raises(AssertionError, match="differs"):
        then_context_table(harness, "alice", "#general", table)


def test_fake_redis_tcp_server_serves_and_stops() -> None:
    server = FakeRedisTcp()
    try:
        import redis

        client = redis.Redis(port=server.port, socket_timeout=2)
        client.set("k", "v")
        assert client.get("k") == b"v"
        client.close()
    finally:
        server.stop()


def test_worker_answers_ping_directly(tmp_path: Path) -> None:
    """The worker protocol works on its own: one JSON line in, one out."""
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    proc = subprocess.run(
        [sys.executable, "-m", "harness.worker"],
        input='{"id": 1, "cmd": "ping"}\n{"id": 2, "cmd": "clock", "set": 5}\n',
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60,
    )
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert '"id": 1' in lines[0] and '"pid"' in lines[0]
    assert '"now": 5.0' in lines[1]



class AlwaysClaim:
    """Every instance handles every message: what a missing claim does."""

    from core.plugins import hookimpl

    @hookimpl(tryfirst=True)
    def claim_message(self):  # type: ignore[no-untyped-def]
        return True


@pytest.mark.parametrize("backend", ["fast"], indirect=True)
def test_one_reply_per_message_catches_instances_that_both_answer(harness: Harness) -> None:
    from tests.harness.steps import then_one_reply_each

    harness.extra_plugins.append(AlwaysClaim)
    harness.start_instance("A")
    harness.start_instance("B")
    harness.say("alice", "#general", "one")
    with pytest.raises(AssertionError, match="'one' got 2 replies"):
        then_one_reply_each(harness)


@pytest.mark.parametrize("backend", ["fast"], indirect=True)
def test_no_duplicates_catches_a_copy_under_another_id(harness: Harness) -> None:
    from tests.harness.steps import then_each_once, then_no_duplicates

    harness.start_instance("A")
    harness.say("alice", "#general", "one")
    then_no_duplicates(harness)
    then_each_once(harness)
    harness.stop_instance("A")
    assert isinstance(harness.backends, FastBackends)
    conn = sqlite3.connect(harness.backends.db_path)
    columns = [row[1] for row in conn.execute("PRAGMA table_info(messages)") if row[1] not in ("id",)]
    names = ", ".join(columns)
    picked = ", ".join("'copy-1'" if c == "message_id" else c for c in columns)
    conn.execute(f"INSERT INTO messages ({names}) SELECT {picked} FROM messages WHERE role = 'user'")
    conn.commit()
    conn.close()
    with pytest.raises(AssertionError, match="2 copies of user message 'one'"):
        then_no_duplicates(harness)
