"""The backend matrices a scenario runs on, and their fault controls.

- ``fast``: fakeredis inside this process (``fakeredis://<unique name>``) and
  a SQLite file in the scenario's temp dir. Scenarios with bot instances in
  other OS processes get a fakeredis TCP server behind a proxy instead (an
  in-process fakeredis cannot be shared across processes).
- ``real``: a private ``redis-server`` on a free port (never the machine's
  shared 6379) and a fresh PostgreSQL database on 127.0.0.1:5432, each behind
  a :class:`~harness.proxy.TcpProxy`; the bot talks to the proxies, the
  harness's own checks talk to the servers directly.
- ``cluster`` (opt-in, ``--backend cluster``): a private Redis Cluster of
  three masters with a replica each, and PostgreSQL as in ``real``.

Every fault control here is exercised by ``tests/harness/test_faults.py``,
which proves that the fault really happens.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import sqlite3
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Any

PG_HOST = os.environ.get("HARNESS_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("HARNESS_PG_PORT", "5432"))
PG_USER = os.environ.get("HARNESS_PG_USER", "postgres")
PG_ADMIN_DB = os.environ.get("HARNESS_PG_DB", "test")
REDIS_SERVER = os.environ.get("HARNESS_REDIS_SERVER", "redis-server")

HOW_TO_START = (
    "The real matrix needs PostgreSQL on {pg} and the redis-server program.\n"
    "Start them with:\n"
    "  pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start\n"
    '  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no\n'
    "(the harness starts its own redis-server per scenario; it only needs the program on PATH)\n"
    "or run the fast matrix only: ./test.sh --backend fast"
)


class BackendUnavailable(Exception):
    """The real matrix cannot run here; the message says how to fix it."""


class FaultError(Exception):
    """A fault control was used where it cannot be honest (e.g. blackhole on
    an in-process fakeredis); the message says what to do instead."""


# Ports the harness hands out lie below the kernel's ephemeral range
# (32768-60999 on Linux): a port taken from bind(0) is in that range, and by
# the time a server binds it an outgoing connection of another test process may
# hold it as its local port. That happened under xdist: a cluster node could not
# start. Each xdist worker takes its own slice, so two workers never hand out
# the same port.
_PORTS_LOW, _PORTS_HIGH = 12000, 32000
_next_port: list[int] = []


def _port_slice() -> tuple[int, int]:
    workers = max(1, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1))
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    index = int(worker) % workers if worker.isdigit() else 0
    width = (_PORTS_HIGH - _PORTS_LOW) // workers
    low = _PORTS_LOW + index * width
    return low, low + width


def free_port() -> int:
    """A loopback port nothing is bound to. Ports come in turn within this
    process's slice (from a start that differs per process), so one process
    never hands out the port it handed out a moment ago while that server is
    still starting."""
    low, high = _port_slice()
    if not _next_port:
        _next_port.append(low + (os.getpid() * 7919) % (high - low))
    for _ in range(high - low):
        port = _next_port[0]
        _next_port[0] = low if port + 1 >= high else port + 1
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise OSError(f"no free loopback port in {low}-{high}")


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def check_real_services(pg_port: int = PG_PORT, redis_server: str = REDIS_SERVER) -> None:
    """Raise :class:`BackendUnavailable` with instructions when PostgreSQL
    cannot be reached or redis-server cannot be found."""
    problems = []
    if shutil.which(redis_server) is None:
        problems.append(f"redis-server program {redis_server!r} not found on PATH")
    try:
        import psycopg2

        conn = psycopg2.connect(host=PG_HOST, port=pg_port, user=PG_USER, dbname=PG_ADMIN_DB, connect_timeout=3)
        conn.close()
    except Exception as exc:  # noqa: BLE001 - any failure means "not reachable"
        problems.append(f"PostgreSQL at {PG_HOST}:{pg_port} not reachable: {str(exc).strip().splitlines()[0]}")
    if problems:
        raise BackendUnavailable("; ".join(problems) + "\n" + HOW_TO_START.format(pg=f"{PG_HOST}:{pg_port}"))


# --- Redis ---------------------------------------------------------------


class RedisServer:
    """A private redis-server process on a fixed port, killable and
    restartable on the same port."""

    def __init__(self, directory: Path, port: int | None = None) -> None:
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = directory / "redis.log"

    def start(self, keep_data: bool = False) -> None:
        dump = self.directory / "dump.rdb"
        if not keep_data and dump.exists():
            dump.unlink()
        args = [
            REDIS_SERVER,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.directory),
            "--dbfilename", "dump.rdb",
            "--logfile", str(self.log_path),
            "--protected-mode", "no",
        ]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server on port {self.port} exited: see {self.log_path}")
            if self._ping():
                return
            time.sleep(0.01)
        raise RuntimeError(f"redis-server on port {self.port} did not answer PING within 10 s")

    def _ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def client(self) -> Any:
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2, socket_connect_timeout=2)

    def save(self) -> None:
        with contextlib.closing(self.client()) as client:
            client.save()

    def kill(self) -> None:
        """SIGKILL: no shutdown, no save."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        self.kill()


def _handler_keeping_connections_open() -> Any:
    """fakeredis's TCP handler, answering an error reply the way a real Redis
    does: on the same connection, which stays open.

    fakeredis 2.40's ``TCPFakeRequestHandler`` closes the client's connection
    after ANY error reply (``read_response`` raises it and the handler loop
    breaks). The memory plugin probes with ``INFO`` once, which fakeredis does
    not know, so a bot process's pooled connection died under it. A real
    server never does that; this keeps the fast matrix about the bot, not
    about the double.
    """
    import redis
    from fakeredis._clients._tcp_server import TCPFakeRequestHandler

    class KeepOpen(TCPFakeRequestHandler):  # type: ignore[misc]
        def setup(self) -> None:
            super().setup()
            read_response = self.current_client.read_response

            def read_keeping_connection(**kwargs: Any) -> Any:
                try:
                    return read_response(**kwargs)
                except redis.ResponseError as exc:
                    return exc  # the handler writes an Exception as an error reply

            self.current_client.read_response = read_keeping_connection

    return KeepOpen


class FakeRedisTcp:
    """fakeredis served over TCP (for scenarios with bot processes)."""

    def __init__(self) -> None:
        from fakeredis import TcpFakeServer

        self.port = free_port()
        self.server = TcpFakeServer(("127.0.0.1", self.port))
        self.server.RequestHandlerClass = _handler_keeping_connections_open()
        self.thread = threading.Thread(target=self.server.serve_forever, name="fakeredis-tcp", daemon=True)
        self.thread.start()

    @property
    def fake_server(self) -> Any:
        return self.server.fake_server

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def find_fake_server(name: str) -> Any:
    """The in-process fakeredis server that ``fakeredis://<name>`` names.

    The memory plugin may keep its own registry (``plugins.memory`` exposing
    ``fake_server(name)`` or ``FAKE_SERVERS``); otherwise fakeredis's own
    server map is searched for a key naming ``name``.
    """
    with contextlib.suppress(ImportError):
        import importlib

        for module_name in ("plugins.memory.cache", "plugins.memory.redis_cache", "plugins.memory.fake", "plugins.memory"):
            try:
                module = importlib.import_module(module_name)
            except ImportError:
                continue
            getter = getattr(module, "fake_server", None)
            if callable(getter):
                with contextlib.suppress(Exception):
                    server = getter(name)
                    if server is not None:
                        return server
            registry = getattr(module, "FAKE_SERVERS", None)
            if isinstance(registry, dict) and name in registry:
                return registry[name]
    from fakeredis import FakeServer

    for key, server in FakeServer._servers_map.items():
        if key == name or key.startswith(f"{name}:") or f":{name}:" in key or key.split(":")[0] == name:
            return server
    raise FaultError(
        f"cannot find the in-process fakeredis server for fakeredis://{name}: the memory plugin must create it "
        "with fakeredis.FakeServer.get_server(...) keyed by the name, or expose fake_server(name)"
    )


# --- SQLite --------------------------------------------------------------


class SqliteCut:
    """Cut a SQLite database honestly: hold its write lock.

    Another connection takes ``BEGIN EXCLUSIVE`` and keeps it: every write by
    anyone else fails with ``database is locked`` once its busy timeout runs
    out (as when a backup or a migration holds the lock). In rollback-journal
    mode reads fail too; in WAL mode reads still succeed (SQLite lets WAL
    readers through any writer). The harness's own assertions read through
    the locking connection while the cut lasts.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.conn: sqlite3.Connection | None = None

    @property
    def active(self) -> bool:
        return self.conn is not None

    def cut(self, timeout: float = 10.0) -> None:
        if self.conn is not None:
            return
        conn = sqlite3.connect(str(self.path), timeout=timeout, isolation_level=None, check_same_thread=False)
        conn.execute("BEGIN EXCLUSIVE")
        self.conn = conn

    def restore(self) -> None:
        if self.conn is None:
            return
        with contextlib.suppress(sqlite3.Error):
            self.conn.execute("ROLLBACK")
        self.conn.close()
        self.conn = None

    def journal_mode(self) -> str:
        conn = self.conn or sqlite3.connect(str(self.path), timeout=5)
        try:
            return str(conn.execute("PRAGMA journal_mode").fetchone()[0])
        finally:
            if conn is not self.conn:
                conn.close()


# --- PostgreSQL ------------------------------------------------------------


class PostgresDatabase:
    """A fresh database on the shared server, dropped afterwards."""

    def __init__(self) -> None:
        self.name = f"bot_it_{uuid.uuid4().hex[:12]}"
        self._admin("CREATE DATABASE {}")

    def _admin(self, sql: str) -> None:
        import psycopg2

        conn = psycopg2.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname=PG_ADMIN_DB, connect_timeout=5)
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(sql.format(f'"{self.name}"'))
        finally:
            conn.close()

    def connect(self, port: int | None = None, connect_timeout: int = 5) -> Any:
        import psycopg2

        return psycopg2.connect(
            host=PG_HOST, port=port or PG_PORT, user=PG_USER, dbname=self.name, connect_timeout=connect_timeout
        )

    def drop(self) -> None:
        self._admin("DROP DATABASE IF EXISTS {} WITH (FORCE)")


# --- the two matrices ---------------------------------------------------------


class Backends:
    """Common interface; see :class:`FastBackends` and :class:`RealBackends`."""

    name = "?"
    redis_url: str
    database_url: str
    paramstyle = "?"

    def memory_section(self) -> dict[str, Any]:
        return {"redis_url": self.redis_url, "database_url": self.database_url}

    # Redis
    def redis_client(self) -> Any:
        """A plain synchronous client on the scenario's Redis that bypasses
        the fault proxy (for looking inside; close it after use)."""
        raise NotImplementedError

    def flush_redis(self) -> None: ...
    def kill_redis(self, keep_data: bool = False) -> None: ...
    def start_redis(self) -> None: ...
    def redis_unreachable(self, mode: str = "drop") -> None: ...
    def redis_reachable(self) -> None: ...
    def redis_drop_connections(self) -> int: ...
    def redis_keys(self) -> list[str]: ...

    def snapshot_redis(self) -> None:
        """Take a snapshot (``SAVE``) that a later
        :meth:`restart_redis_from_snapshot` goes back to."""
        raise NotImplementedError

    def restart_redis_from_snapshot(self) -> None:
        """Kill Redis and start it again holding the last snapshot only:
        whatever was written after it is gone, as with periodic RDB saves."""
        raise NotImplementedError

    def evict_redis_keys(self, keep: int = 2) -> list[str]:
        """Delete every ``keep``-th key but the first (sorted by name), as
        memory-pressure eviction would take some keys and leave others;
        return the keys deleted."""
        client = self.redis_client()
        try:
            keys = sorted(client.keys("*"))
            doomed = keys[1::keep]
            if doomed:
                client.delete(*doomed)
        finally:
            client.close()
        return [k.decode() if isinstance(k, bytes) else k for k in doomed]

    # database
    def cut_database(self, mode: str = "drop") -> None: ...
    def restore_database(self) -> None: ...
    def block_writes(self) -> None: ...
    def unblock_writes(self) -> int: ...
    def database_drop_connections(self) -> int: ...
    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]: ...

    def restore_all(self) -> None: ...
    def close(self) -> None: ...

    def sql(self, sql: str) -> str:
        """Write queries with ``?``; this turns them into the driver's style."""
        return sql if self.paramstyle == "?" else sql.replace("?", "%s")


class FastBackends(Backends):
    """fakeredis + SQLite."""

    name = "fast"

    def __init__(self, tmp_path: Path, tcp_redis: bool = False) -> None:
        self.tmp_path = tmp_path
        self.db_path = tmp_path / "memory.db"
        self.database_url = f"sqlite:///{self.db_path}"
        self.sqlite = SqliteCut(self.db_path)
        self.fake_name = f"harness-{uuid.uuid4().hex[:12]}"
        self.tcp: FakeRedisTcp | None = None
        self.proxy: Any = None
        self._killed_keep: dict[int, Any] | None = None
        if tcp_redis:
            from harness.proxy import TcpProxy

            self.tcp = FakeRedisTcp()
            self.proxy = TcpProxy("127.0.0.1", self.tcp.port, name="redis-proxy")
            self.redis_url = f"redis://127.0.0.1:{self.proxy.port}/0"
        else:
            self.redis_url = f"fakeredis://{self.fake_name}"

    def fake_server(self) -> Any:
        if self.tcp is not None:
            return self.tcp.fake_server
        return find_fake_server(self.fake_name)

    def redis_client(self) -> Any:
        import fakeredis

        return fakeredis.FakeRedis(server=self.fake_server())

    _client = redis_client

    def flush_redis(self) -> None:
        server = self.fake_server()
        if self.tcp is None and not server.connected:
            # A disconnected fakeredis refuses clients; the harness empties
            # it the way FLUSHALL does.
            with server.lock:
                for db in server.dbs.values():
                    db.clear()
            return
        self._client().flushall()

    def redis_keys(self) -> list[str]:
        server = self.fake_server()
        if self.tcp is None and not server.connected:
            with server.lock:
                keys = [k for db in server.dbs.values() for k in list(db.keys())]
        else:
            keys = self._client().keys("*")
        return sorted(k.decode() if isinstance(k, bytes) else k for k in keys)

    def snapshot_redis(self) -> None:
        # An in-process fakeredis lives and dies with the bot's process: it
        # cannot come back from an old snapshot while the bot keeps running.
        raise FaultError("restarting Redis from a snapshot needs a real redis-server: tag the scenario @real")

    restart_redis_from_snapshot = snapshot_redis

    def kill_redis(self, keep_data: bool = False) -> None:
        if not keep_data:
            self.flush_redis()
        if self.proxy is not None:
            self.proxy.set_mode("drop")
        else:
            self.fake_server().connected = False

    def start_redis(self) -> None:
        if self.proxy is not None:
            self.proxy.set_mode("pass")
        else:
            self.fake_server().connected = True

    def redis_unreachable(self, mode: str = "drop") -> None:
        if self.proxy is not None:
            self.proxy.set_mode(mode)
            return
        if mode != "drop":
            raise FaultError(
                f"Redis mode {mode!r} needs a TCP connection: an in-process fakeredis can only be disconnected. "
                "Tag the scenario @real."
            )
        self.fake_server().connected = False

    def redis_reachable(self) -> None:
        self.start_redis()

    def redis_drop_connections(self) -> int:
        if self.proxy is None:
            raise FaultError("an in-process fakeredis has no connections to drop; tag the scenario @real")
        return self.proxy.reset_connections()

    def cut_database(self, mode: str = "drop") -> None:
        # SQLite has no connection to cut: both modes hold the write lock
        # (callers wait out their busy timeout, then fail: like a blackhole).
        self.sqlite.cut()

    def restore_database(self) -> None:
        self.sqlite.restore()

    def database_drop_connections(self) -> int:
        raise FaultError("SQLite has no network connections to drop; tag the scenario @real")

    def block_writes(self) -> None:
        raise FaultError("SQLite locks the whole file, reads of other tables included; tag the scenario @real")

    def unblock_writes(self) -> int:
        raise FaultError("SQLite cannot block some writes; tag the scenario @real")

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        if self.sqlite.conn is not None:
            return list(self.sqlite.conn.execute(sql, params).fetchall())
        if not self.db_path.exists():
            raise AssertionError(f"the SQLite database {self.db_path} does not exist (did the memory plugin start?)")
        conn = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=5)
        try:
            return list(conn.execute(sql, params).fetchall())
        finally:
            conn.close()

    def restore_all(self) -> None:
        self.sqlite.restore()
        with contextlib.suppress(Exception):
            self.start_redis()

    def close(self) -> None:
        self.restore_all()
        if self.proxy is not None:
            self.proxy.close()
        if self.tcp is not None:
            self.tcp.stop()
        else:
            # Forget the scenario's server wherever it was registered.
            with contextlib.suppress(Exception):
                from fakeredis import FakeServer

                for key in [k for k in FakeServer._servers_map if self.fake_name in k]:
                    del FakeServer._servers_map[key]
            with contextlib.suppress(Exception):
                from plugins.memory import cache

                cache._FAKE_SERVERS.pop(self.fake_name, None)


class RealBackends(Backends):
    """A private redis-server and a fresh PostgreSQL database, each behind a
    proxy."""

    _writes_blocked: Any = None  # the connection holding block_writes' lock
    # The chaos soak's --keep: leave the database for reading after the run.
    keep_database = False

    name = "real"
    paramstyle = "%s"

    def __init__(self, tmp_path: Path) -> None:
        from harness.proxy import TcpProxy

        check_real_services()
        self.redis = RedisServer(tmp_path / "redis")
        self.redis.start()
        try:
            self.redis_proxy = TcpProxy("127.0.0.1", self.redis.port, name="redis-proxy")
            self.database = PostgresDatabase()
            self.pg_proxy = TcpProxy(PG_HOST, PG_PORT, name="pg-proxy")
        except BaseException:
            self.redis.stop()
            raise
        self.redis_url = f"redis://127.0.0.1:{self.redis_proxy.port}/0"
        self.database_url = f"postgresql://{PG_USER}@127.0.0.1:{self.pg_proxy.port}/{self.database.name}"
        self._conn: Any = None
        self._keep_data = False

    def redis_client(self) -> Any:
        return self.redis.client()

    def flush_redis(self) -> None:
        with contextlib.closing(self.redis.client()) as client:
            client.flushall()

    def redis_keys(self) -> list[str]:
        with contextlib.closing(self.redis.client()) as client:
            return sorted(k.decode() for k in client.keys("*"))

    def kill_redis(self, keep_data: bool = False) -> None:
        if keep_data:
            self.redis.save()
        self._keep_data = keep_data
        self.redis.kill()

    def start_redis(self) -> None:
        self.redis.start(keep_data=self._keep_data)

    def snapshot_redis(self) -> None:
        self.redis.save()
        self._snapshot_taken = True

    def restart_redis_from_snapshot(self) -> None:
        if not getattr(self, "_snapshot_taken", False):
            raise FaultError("no Redis snapshot was taken in this scenario")
        self.redis.kill()  # no save: dump.rdb stays the old snapshot
        self._keep_data = True
        self.redis.start(keep_data=True)

    def redis_unreachable(self, mode: str = "drop") -> None:
        self.redis_proxy.set_mode(mode)

    def redis_reachable(self) -> None:
        self.redis_proxy.set_mode("pass")

    def redis_drop_connections(self) -> int:
        return self.redis_proxy.reset_connections()

    def cut_database(self, mode: str = "drop") -> None:
        self.pg_proxy.set_mode(mode)

    def restore_database(self) -> None:
        self.pg_proxy.set_mode("pass")

    def database_drop_connections(self) -> int:
        return self.pg_proxy.reset_connections()

    def block_writes(self) -> None:
        """Reads go on, writes of messages and sessions wait: another
        transaction holds both tables in EXCLUSIVE mode (as a migration or a
        long maintenance lock would). Claims and the rest stay writable."""
        if self._writes_blocked is not None:
            return
        conn = self.database.connect()
        with conn.cursor() as cur:
            cur.execute("LOCK TABLE messages, sessions IN EXCLUSIVE MODE")
        self._writes_blocked = conn

    def unblock_writes(self) -> int:
        """End the writes that waited (their clients gave up at their
        timeout; a server-side statement timeout would end them too), then
        release the lock. Returns how many were ended."""
        conn, self._writes_blocked = self._writes_blocked, None
        if conn is None:
            return 0
        try:
            with conn.cursor() as cur:
                cur.execute(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
                )
                ended = int(cur.fetchone()[0])
            conn.rollback()
        finally:
            conn.close()
        return ended

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        import psycopg2

        if self._conn is None or self._conn.closed:
            self._conn = self.database.connect()
            self._conn.autocommit = True
        try:
            with self._conn.cursor() as cur:
                cur.execute(self.sql(sql), params)
                return list(cur.fetchall())
        except psycopg2.errors.UndefinedTable as exc:
            raise AssertionError(f"PostgreSQL database {self.database.name}: {exc}".strip()) from None

    def restore_all(self) -> None:
        self.redis_proxy.set_mode("pass")
        self.pg_proxy.set_mode("pass")
        with contextlib.suppress(Exception):
            self.unblock_writes()
        if not self.redis.alive:
            with contextlib.suppress(Exception):
                self.redis.start(keep_data=self._keep_data)

    def close(self) -> None:
        self.redis_proxy.close()
        self.pg_proxy.close()
        self.redis.stop()
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
        if not self.keep_database:
            self.database.drop()


class ClusterBackends(RealBackends):
    """A Redis Cluster of three masters with a replica each
    (:class:`harness.replicated.RedisClusterServers`, the bot connects with
    ``redis+cluster://``) and a fresh PostgreSQL database behind a proxy.

    The Cluster's faults are the real ones: ``FLUSHALL`` on every master;
    every node killed and started again empty (each keeps its cluster
    configuration, as a restarted node does); unreachable = every node
    paused (``SIGSTOP``: connections hang, as with a blackhole); dropped
    connections = ``CLIENT KILL`` on every node."""

    name = "cluster"

    def __init__(self, tmp_path: Path) -> None:
        from harness.proxy import TcpProxy
        from harness.replicated import RedisClusterServers

        check_real_services()
        self.cluster = RedisClusterServers(tmp_path / "cluster")
        try:
            self.cluster.start()
            self.database = PostgresDatabase()
            self.pg_proxy = TcpProxy(PG_HOST, PG_PORT, name="pg-proxy")
        except BaseException:
            self.cluster.stop()
            raise
        self.redis_url = self.cluster.url
        self.database_url = f"postgresql://{PG_USER}@127.0.0.1:{self.pg_proxy.port}/{self.database.name}"
        self._conn = None

    def redis_client(self) -> Any:
        return self.cluster.client()

    _client = redis_client

    def flush_redis(self) -> None:
        self.cluster.flushall()

    def redis_keys(self) -> list[str]:
        return self.cluster.keys()

    def evict_redis_keys(self, keep: int = 2) -> list[str]:
        doomed = self.cluster.keys()[1::keep]
        with contextlib.closing(self.cluster.client()) as client:
            for key in doomed:
                client.delete(key)
        return doomed

    def kill_redis(self, keep_data: bool = False) -> None:
        if keep_data:
            raise FaultError("the Cluster matrix restarts its nodes empty (no snapshot)")
        self.cluster.kill_all()

    def start_redis(self) -> None:
        self.cluster.start_all()

    def snapshot_redis(self) -> None:
        raise FaultError("the Cluster matrix has no snapshots: a master killed with its replica promoted is its stale copy")

    restart_redis_from_snapshot = snapshot_redis

    def redis_unreachable(self, mode: str = "drop") -> None:
        if mode == "drop":
            self.cluster.drop_connections()
        self.cluster.pause_all()

    def redis_reachable(self) -> None:
        self.cluster.resume_all()

    def redis_drop_connections(self) -> int:
        return self.cluster.drop_connections()

    def restore_all(self) -> None:
        self.pg_proxy.set_mode("pass")
        self.cluster.resume_all()
        if not all(node.alive for node in self.cluster.nodes):
            with contextlib.suppress(Exception):
                self.cluster.start_all()

    def close(self) -> None:
        self.pg_proxy.close()
        self.cluster.stop()
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
        self.database.drop()


def make_backends(name: str, tmp_path: Path, processes: bool = False) -> Backends:
    """``processes``: some bot instance will run in another OS process."""
    if name == "fast":
        return FastBackends(tmp_path, tcp_redis=processes)
    if name == "real":
        return RealBackends(tmp_path)
    if name == "cluster":
        return ClusterBackends(tmp_path)
    from harness import replicated

    if name == "sentinel":
        return replicated.sentinel_backends(tmp_path)
    if name == "pg_standby":
        return replicated.pg_standby_backends(tmp_path)
    raise ValueError(f"unknown backend {name!r} (fast, real, cluster, sentinel or pg_standby)")
