"""Fixtures for the memory store's tests: real backends, one test at a time.

- ``sqlite`` backend: a SQLite file in the test's temp dir + an in-process
  fakeredis server with a unique name.
- ``postgres`` backend: a fresh PostgreSQL database on 127.0.0.1:5432
  (``mem_<random>``, dropped afterwards) + a private ``redis-server`` on a
  free port started for the session (never the shared 6379); each test uses
  its own key prefix and the server is flushed between tests.

Tests are plain functions that run their coroutine with :func:`run`
(bounded, so nothing hangs).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from core.clock import ManualClock
from plugins.memory.settings import MemorySettings
from plugins.memory.store import MemoryStore
from harness.backends import PG_ADMIN_DB, PG_HOST, PG_PORT, PG_USER, free_port

T = TypeVar("T")

PG = {"host": PG_HOST, "port": PG_PORT, "user": PG_USER, "dbname": PG_ADMIN_DB}


def run(coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
    """Run ``coro`` on a fresh loop, bounded by ``timeout`` seconds."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


class PrivateRedis:
    """A redis-server process of our own, killable and restartable on its port."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(self.directory)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    return
            time.sleep(0.02)
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def client(self) -> Any:
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2)


@pytest.fixture(scope="session")
def private_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateRedis]:
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not on PATH: install it (apt-get install redis-server) to run the real-backend tests")
    server = PrivateRedis(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.kill()


@pytest.fixture
def redis_server(private_redis: PrivateRedis) -> Iterator[PrivateRedis]:
    """The private redis-server, running and empty for this test."""
    if not private_redis.alive:
        private_redis.start()
    else:
        private_redis.process.send_signal(signal.SIGCONT)  # a test that failed while it was paused
    with contextlib.closing(private_redis.client()) as c:
        c.flushall()
    yield private_redis
    if not private_redis.alive:
        private_redis.start()


@pytest.fixture
def pg_url() -> Iterator[str]:
    import psycopg2

    name = f"mem_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg2.connect(connect_timeout=5, **PG)
    except Exception as exc:  # noqa: BLE001
        pytest.fail(f"PostgreSQL on 127.0.0.1:5432 is not reachable ({exc}); start it to run the real-backend tests")
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@dataclass
class Backend:
    kind: str
    database_url: str
    redis_url: str
    tmp_path: Path
    redis: PrivateRedis | None = None
    fake_name: str | None = None
    prefix: str = field(default_factory=lambda: f"t{uuid.uuid4().hex[:8]}:")
    clock: ManualClock = field(default_factory=ManualClock)

    def settings(self, **overrides: Any) -> MemorySettings:
        values: dict[str, Any] = {
            "database_url": self.database_url,
            "redis_url": self.redis_url,
            "key_prefix": self.prefix,
            "spool_dir": self.tmp_path / "spool",
            # The tests drive recovery by calling probe() themselves.
            "probe_interval": 3600,
            "db_timeout": 0.5,
        }
        values.update(overrides)
        return MemorySettings(**values)

    def store(self, instance_id: str = "A", **overrides: Any) -> MemoryStore:
        return MemoryStore(self.settings(**overrides), data_dir=self.tmp_path, instance_id=instance_id, clock=self.clock)

    def sql(self, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Read the database directly (never through the plugin)."""
        if self.kind == "sqlite":
            import sqlite3

            conn = sqlite3.connect(self.database_url[len("sqlite:///") :], timeout=5)
            try:
                return list(conn.execute(query, params).fetchall())
            finally:
                conn.close()
        import psycopg2

        conn = psycopg2.connect(self.database_url, connect_timeout=5)
        try:
            with conn.cursor() as cur:
                cur.execute(query.replace("?", "%s"), params)
                return list(cur.fetchall())
        finally:
            conn.close()

    def redis_down(self) -> None:
        if self.fake_name is not None:
            from plugins.memory.cache import fake_server

            fake_server(self.fake_name).connected = False
        else:
            assert self.redis is not None
            self.redis.kill()

    def redis_up(self) -> None:
        if self.fake_name is not None:
            from plugins.memory.cache import fake_server

            fake_server(self.fake_name).connected = True
        else:
            assert self.redis is not None
            if not self.redis.alive:
                self.redis.start()

    def redis_unreachable(self) -> None:
        """Redis stops answering but keeps its data (real: the server is
        paused with SIGSTOP; fast: every command raises ConnectionError).
        Undo with :meth:`redis_reachable`."""
        if self.fake_name is not None:
            from plugins.memory.cache import fake_server

            fake_server(self.fake_name).connected = False
        else:
            assert self.redis is not None and self.redis.process is not None
            self.redis.process.send_signal(signal.SIGSTOP)

    def redis_reachable(self) -> None:
        if self.fake_name is not None:
            from plugins.memory.cache import fake_server

            fake_server(self.fake_name).connected = True
        else:
            assert self.redis is not None and self.redis.process is not None
            self.redis.process.send_signal(signal.SIGCONT)

    def flush(self) -> None:
        if self.fake_name is not None:
            import fakeredis

            from plugins.memory.cache import fake_server

            fakeredis.FakeRedis(server=fake_server(self.fake_name)).flushall()
        else:
            assert self.redis is not None
            with contextlib.closing(self.redis.client()) as c:
                c.flushall()


@pytest.fixture
def sqlite_backend(tmp_path: Path) -> Iterator[Backend]:
    name = f"t-{uuid.uuid4().hex[:10]}"
    yield Backend("sqlite", f"sqlite:///{tmp_path / 'memory.db'}", f"fakeredis://{name}", tmp_path, fake_name=name)
    from plugins.memory import cache

    cache._FAKE_SERVERS.pop(name, None)


@pytest.fixture
def postgres_backend(tmp_path: Path, pg_url: str, redis_server: PrivateRedis) -> Backend:
    return Backend("postgres", pg_url, f"redis://127.0.0.1:{redis_server.port}/0", tmp_path, redis=redis_server)


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> Backend:
    """Parametrized by the harness's ``--backend`` matrix: ``fast`` is
    SQLite + fakeredis, ``real`` is PostgreSQL + a private redis-server."""
    name = getattr(request, "param", "fast")
    return request.getfixturevalue("sqlite_backend" if name == "fast" else "postgres_backend")


@contextlib.asynccontextmanager
async def started(store: MemoryStore) -> AsyncIterator[MemoryStore]:
    await store.start()
    try:
        yield store
    finally:
        await store.stop()


@pytest.fixture(autouse=True)
def _no_env_urls(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DATABASE_URL", "REDIS_URL", "MEMORY_DATABASE_URL", "MEMORY_REDIS_URL", "MEMORY_KEY_PREFIX"):
        monkeypatch.delenv(name, raising=False)


class database_cut:
    """Make the database unreachable for ``store`` (really: hold SQLite's
    write lock; point PostgreSQL calls at a closed port)."""

    def __init__(self, backend: Backend, store: MemoryStore) -> None:
        self.backend = backend
        self.store = store
        self.conn = None
        self.saved = None

    def __enter__(self) -> database_cut:
        if self.backend.kind == "sqlite":
            import sqlite3

            self.conn = sqlite3.connect(self.backend.database_url[len("sqlite:///") :], timeout=5, isolation_level=None, check_same_thread=False)
            self.conn.execute("BEGIN EXCLUSIVE")
        else:
            db = self.store.db
            assert db is not None
            self.saved = dict(db.db.connect_params)
            db.db.connect_params["port"] = free_port()  # nothing listens there
            # drop the pooled connections so the next calls reconnect (and fail)
            db._executor.shutdown(wait=True)
            db._probe_executor.shutdown(wait=True)
            db._executor = db._new_executor()
            db._probe_executor = db._new_executor(1, "memory-db-probe")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.conn is not None:
            self.conn.execute("ROLLBACK")
            self.conn.close()
        if self.saved is not None:
            assert self.store.db is not None
            self.store.db.db.connect_params.clear()
            self.store.db.db.connect_params.update(self.saved)
