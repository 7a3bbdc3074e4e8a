"""Replicated backends on loopback, started by the tests themselves: a Redis
Cluster with replicas, Redis with a replica and three Sentinels, and a
PostgreSQL primary with a streaming standby. Every server is private (free
ports, a temporary directory) and never the machine's shared one.

Each class starts its servers in ``start()``, stops them in ``stop()`` and
offers the faults a failover test needs: kill a master (or stop the
primary), wait for the promotion, and look inside.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from harness.backends import REDIS_SERVER, FaultError, free_port

REDIS_CLI = os.environ.get("HARNESS_REDIS_CLI", "redis-cli")
PG_BIN = Path(os.environ.get("HARNESS_PG_BIN", "/usr/lib/postgresql/15/bin"))


def _wait(what: str, check: Any, timeout: float = 30.0, every: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except FaultError:
            raise
        except Exception as exc:  # noqa: BLE001 - not yet
            last = exc
        time.sleep(every)
    raise RuntimeError(f"{what}: not within {timeout:.0f} s (last: {last!r})")


def _redis(port: int) -> Any:
    import redis

    return redis.Redis(host="127.0.0.1", port=port, socket_timeout=2, socket_connect_timeout=2)


class RedisNode:
    """One redis-server process with extra arguments; killable, restartable."""

    def __init__(self, directory: Path, extra: list[str], port: int | None = None, sentinel: bool = False) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.extra = extra
        self.sentinel = sentinel
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        if self.sentinel:
            conf = self.directory / "sentinel.conf"
            conf.write_text("\n".join([f"port {self.port}", "bind 127.0.0.1", "protected-mode no", f"dir {self.directory}", *self.extra]) + "\n")
            args = [REDIS_SERVER, str(conf), "--sentinel"]
        else:
            args = [
                REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--protected-mode", "no",
                "--save", "", "--appendonly", "no", "--dir", str(self.directory),
                *self.extra,
            ]  # fmt: skip
        log = open(self.directory / "redis.log", "ab")  # noqa: SIM115 - the child keeps it
        self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        _wait(f"redis-server on {self.port}", self._ping, timeout=10)

    def _ping(self) -> Any:
        assert self.process is not None
        if self.process.poll() is not None:  # it will not come up: say why now
            tail = (self.directory / "redis.log").read_text(errors="replace").splitlines()[-3:]
            raise FaultError(f"redis-server on {self.port} exited ({self.process.returncode}): {' | '.join(tail)}")
        return _redis(self.port).ping()

    def client(self) -> Any:
        return _redis(self.port)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def pause(self) -> None:
        if self.alive:
            assert self.process is not None
            self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self.alive:
            assert self.process is not None
            self.process.send_signal(signal.SIGCONT)

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


def check_redis_cli() -> None:
    if shutil.which(REDIS_CLI) is None:
        raise FaultError(f"{REDIS_CLI!r} not found on PATH: a Redis Cluster is created with redis-cli --cluster create")


class RedisClusterServers:
    """``masters`` masters with ``replicas`` replicas each (redis-cli
    ``--cluster create``). ``node-timeout`` is 1 s so that a killed master's
    replica is promoted within a few seconds."""

    def __init__(self, directory: Path, masters: int = 3, replicas: int = 1, node_timeout_ms: int = 1000) -> None:
        check_redis_cli()
        self.directory = directory
        self.nodes: list[RedisNode] = []
        for n in range(masters * (replicas + 1)):
            d = directory / f"node{n}"
            bus = free_port()
            extra = [
                "--cluster-enabled", "yes", "--cluster-config-file", str(d / "nodes.conf"),
                "--cluster-node-timeout", str(node_timeout_ms), "--cluster-port", str(bus),
                # A replica is promoted however long it was cut off (tests kill and pause).
                "--cluster-replica-validity-factor", "0",
            ]  # fmt: skip
            self.nodes.append(RedisNode(d, extra))
        self.replicas = replicas

    def start(self) -> None:
        for node in self.nodes:
            node.start()
        addresses = [f"127.0.0.1:{n.port}" for n in self.nodes]
        subprocess.run(
            [REDIS_CLI, "--cluster", "create", *addresses, "--cluster-replicas", str(self.replicas), "--cluster-yes"],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        self.wait_ok()

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Every live node says the cluster is ok and sees all slots served,
        and every live replica's link to its master is up (synced)."""

        def ok() -> bool:
            for node in self.nodes:
                if node.alive:
                    info = node.client().cluster("info")
                    if info.get("cluster_state") != "ok" or int(info.get("cluster_slots_ok", 0)) != 16384:
                        return False
                    replication = node.client().info("replication")
                    if replication.get("role") == "slave" and replication.get("master_link_status") != "up":
                        return False
            return True

        _wait("the Redis Cluster to be ok", ok, timeout)

    def client(self) -> Any:
        import redis
        from redis.cluster import ClusterNode

        live = [ClusterNode("127.0.0.1", n.port) for n in self.nodes if n.alive]
        return redis.RedisCluster(startup_nodes=live, socket_timeout=2, socket_connect_timeout=2)

    def node_of_port(self, port: int) -> RedisNode:
        return next(n for n in self.nodes if n.port == port)

    def master_of(self, key: str) -> RedisNode:
        with contextlib.closing(self.client()) as c:
            node = c.get_node_from_key(key)
            return self.node_of_port(int(node.port))

    def replica_of(self, key: str) -> RedisNode:
        """A replica of the master serving ``key``."""
        master = self.master_of(key).client()
        my_id = master.cluster("myid")
        my_id = my_id.decode() if isinstance(my_id, bytes) else my_id
        for address, node in master.cluster("nodes").items():
            if node.get("master_id") == my_id:
                return self.node_of_port(int(address.rsplit(":", 1)[1].split("@")[0]))
        raise RuntimeError(f"the master of {key!r} has no replica")

    def masters(self) -> list[RedisNode]:
        with contextlib.closing(self.client()) as c:
            return [self.node_of_port(int(n.port)) for n in c.get_primaries()]

    def kill_master_of(self, key: str) -> RedisNode:
        """SIGKILL the master serving ``key``; returns it (not waited for)."""
        master = self.master_of(key)
        master.kill()
        return master

    def wait_promoted(self, key: str, old: RedisNode, timeout: float = 30.0) -> RedisNode:
        """Wait until another node serves ``key``'s slot and the cluster is ok."""

        def promoted() -> RedisNode | None:
            survivor = next(n for n in self.nodes if n.alive)
            slot = survivor.client().cluster("keyslot", key)
            for start, end, master, *_ in survivor.client().cluster("slots"):
                if start <= slot <= end and int(master[1]) != old.port:
                    return self.node_of_port(int(master[1]))
            return None

        node = _wait(f"a replica to take over {key!r}", promoted, timeout)
        self.wait_ok(timeout)
        return node

    def flushall(self) -> None:
        for node in self.masters():
            node.client().flushall()

    def keys(self) -> list[str]:
        out: list[str] = []
        for node in self.masters():
            out += [k.decode() for k in node.client().keys("*")]
        return sorted(out)

    def kill_all(self) -> None:
        for node in self.nodes:
            node.kill()

    def start_all(self) -> None:
        """Start every node again, empty, with its cluster configuration."""
        for node in self.nodes:
            if not node.alive:
                node.start()
        self.wait_ok()

    def pause_all(self) -> None:
        for node in self.nodes:
            node.pause()

    def resume_all(self) -> None:
        for node in self.nodes:
            node.resume()

    def drop_connections(self) -> int:
        dropped = 0
        for node in self.nodes:
            if node.alive:
                dropped += int(node.client().client_kill_filter(_type="normal", skipme=True) or 0)
        return dropped

    def stop(self) -> None:
        for node in self.nodes:
            node.resume()
            node.kill()


class RedisSentinelServers:
    """A master, one replica and three Sentinels watching service ``name``
    (quorum 2, ``down-after-milliseconds`` 1000)."""

    def __init__(self, directory: Path, name: str = "bot", down_after_ms: int = 1000) -> None:
        self.name = name
        self.master = RedisNode(directory / "master", [])
        self.replica = RedisNode(directory / "replica", [])
        self.replica.extra = ["--replicaof", "127.0.0.1", str(self.master.port)]
        self.sentinels = [
            RedisNode(
                directory / f"sentinel{n}",
                [
                    f"sentinel monitor {name} 127.0.0.1 {self.master.port} 2",
                    f"sentinel down-after-milliseconds {name} {down_after_ms}",
                    f"sentinel failover-timeout {name} 10000",
                    f"sentinel parallel-syncs {name} 1",
                ],
                sentinel=True,
            )
            for n in range(3)
        ]

    def start(self) -> None:
        self.master.start()
        self.replica.start()
        _wait("the replica to sync", lambda: self.replica.client().info("replication").get("master_link_status") == "up")
        for s in self.sentinels:
            s.start()
        # Every Sentinel has found the replica and the other Sentinels.
        _wait(
            "the Sentinels to see each other",
            lambda: all(
                int(s.client().sentinel_master(self.name).get("num-other-sentinels", 0)) == 2
                and int(s.client().sentinel_master(self.name).get("num-slaves", 0)) == 1
                for s in self.sentinels
            ),
        )

    @property
    def url(self) -> str:
        return "redis+sentinel://" + ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels) + f"/{self.name}"

    def current_master_port(self) -> int:
        for s in self.sentinels:
            with contextlib.suppress(Exception):
                return int(s.client().sentinel_get_master_addr_by_name(self.name)[1])
        raise RuntimeError("no Sentinel answers")

    def current_master(self) -> RedisNode:
        port = self.current_master_port()
        return self.master if port == self.master.port else self.replica

    def kill_master(self) -> RedisNode:
        node = self.current_master()
        node.kill()
        return node

    def wait_promoted(self, old: RedisNode, timeout: float = 30.0) -> RedisNode:
        _wait("the Sentinels to promote the replica", lambda: self.current_master_port() != old.port, timeout)
        new = self.current_master()
        _wait("the new master to accept writes", lambda: new.client().info("replication").get("role") == "master", timeout)
        return new

    def stop(self) -> None:
        for node in [*self.sentinels, self.replica, self.master]:
            node.kill()


class PostgresPair:
    """A PostgreSQL primary and a streaming (asynchronous) standby made with
    ``initdb`` and ``pg_basebackup -R``, in temporary directories, on free
    ports, trust authentication on 127.0.0.1. When this process runs as
    root the servers run as the ``postgres`` user."""

    def __init__(self, database: str = "bot") -> None:
        if not (PG_BIN / "initdb").exists():
            raise FaultError(f"PostgreSQL programs not found in {PG_BIN} (set HARNESS_PG_BIN)")
        # Its own temporary directory: pytest's are private to root, and the
        # servers may run as the postgres user.
        self.directory = Path(tempfile.mkdtemp(prefix="bot-pg-pair-"))
        self.database = database
        self.primary_dir = self.directory / "primary"
        self.standby_dir = self.directory / "standby"
        self.primary_port = free_port()
        self.standby_port = free_port()
        self.running: dict[Path, int] = {}

    def _run(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        cmd = list(args)
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(cmd, check=check, capture_output=True, text=True, timeout=timeout)

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.directory, "postgres", "postgres")
        self._run(str(PG_BIN / "initdb"), "-D", str(self.primary_dir), "-U", "postgres", "--auth=trust", "--no-sync")
        with open(self.primary_dir / "postgresql.conf", "a") as conf:
            conf.write(
                "listen_addresses = '127.0.0.1'\nunix_socket_directories = ''\nwal_level = replica\n"
                "max_wal_senders = 4\nfsync = off\nfull_page_writes = off\nsynchronous_commit = on\n"
            )
        with open(self.primary_dir / "pg_hba.conf", "a") as hba:
            hba.write("host replication all 127.0.0.1/32 trust\n")
        self._pg_ctl(self.primary_dir, self.primary_port, "start")
        self._run(
            str(PG_BIN / "psql"), "-h", "127.0.0.1", "-p", str(self.primary_port), "-U", "postgres", "-d", "postgres",
            "-c", f"CREATE DATABASE {self.database}",
        )  # fmt: skip
        self._run(
            str(PG_BIN / "pg_basebackup"), "-h", "127.0.0.1", "-p", str(self.primary_port), "-U", "postgres",
            "-D", str(self.standby_dir), "-R", "-X", "stream", "--no-sync", "--checkpoint=fast",
        )  # fmt: skip
        self._pg_ctl(self.standby_dir, self.standby_port, "start")
        _wait("the standby to stream", lambda: self.replication_state() == "streaming")

    def _pg_ctl(self, data: Path, port: int, action: str) -> None:
        args = [str(PG_BIN / "pg_ctl"), "-D", str(data), "-w", "-t", "60"]
        if action == "start":
            args += ["-o", f"-p {port}", "-l", str(data / "server.log"), "start"]
            self.running[data] = port
        elif action == "stop":
            args += ["-m", "immediate", "stop"]
            self.running.pop(data, None)
        else:
            args += [action]
        self._run(*args)

    @property
    def url(self) -> str:
        """Both servers, the one that takes writes wanted (libpq picks it)."""
        return (
            f"postgresql://postgres@127.0.0.1:{self.primary_port},127.0.0.1:{self.standby_port}/{self.database}"
            "?target_session_attrs=read-write"
        )

    def connect(self, port: int) -> Any:
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", port=port, user="postgres", dbname=self.database, connect_timeout=3)
        conn.autocommit = True
        return conn

    def query(self, port: int, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with contextlib.closing(self.connect(port)) as conn, conn.cursor() as cur:
            cur.execute(sql, params)
            return list(cur.fetchall())

    def replication_state(self) -> str | None:
        rows = self.query(self.primary_port, "SELECT state FROM pg_stat_replication")
        return rows[0][0] if rows else None

    def wait_replayed(self) -> None:
        """The standby has replayed everything the primary wrote so far."""
        (lsn,) = self.query(self.primary_port, "SELECT pg_current_wal_lsn()::text")[0]
        _wait(
            "the standby to replay the primary's WAL",
            lambda: self.query(self.standby_port, "SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (lsn,))[0][0],
        )

    def stop_streaming(self) -> None:
        """The standby stops receiving WAL (its primary_conninfo emptied):
        later commits on the primary are what an asynchronous standby
        lacks when it is promoted."""
        with contextlib.closing(self.connect(self.standby_port)) as conn, conn.cursor() as cur:
            cur.execute("ALTER SYSTEM SET primary_conninfo = ''")
            cur.execute("SELECT pg_reload_conf()")
        _wait("the standby to stop streaming", lambda: self.replication_state() is None)

    def stop_primary(self) -> None:
        """Immediate shutdown: no checkpoint, as a crash."""
        self._pg_ctl(self.primary_dir, self.primary_port, "stop")

    def promote_standby(self) -> None:
        self._pg_ctl(self.standby_dir, self.standby_port, "promote")
        _wait("the standby to leave recovery", lambda: not self.query(self.standby_port, "SELECT pg_is_in_recovery()")[0][0])

    def stop(self) -> None:
        for data in list(self.running):
            with contextlib.suppress(Exception):
                self._pg_ctl(data, self.running[data], "stop")
        shutil.rmtree(self.directory, ignore_errors=True)


# --- as scenario backends ---------------------------------------------------------


def sentinel_backends(tmp_path: Path) -> Any:
    """Redis behind three Sentinels (``redis+sentinel://``) and a fresh
    PostgreSQL database behind a proxy."""
    from harness.backends import RealBackends

    class SentinelBackends(RealBackends):
        name = "sentinel"

        def __init__(self) -> None:
            super().__init__(tmp_path)
            self.sentinels = RedisSentinelServers(tmp_path / "sentinel")
            try:
                self.sentinels.start()
            except BaseException:
                self.close()
                raise
            self.redis_url = self.sentinels.url

        def redis_client(self) -> Any:
            return self.sentinels.current_master().client()

        def close(self) -> None:
            if hasattr(self, "sentinels"):
                self.sentinels.stop()
            super().close()

    return SentinelBackends()


def pg_standby_backends(tmp_path: Path) -> Any:
    """A private redis-server behind a proxy and a PostgreSQL primary with a
    streaming standby; ``DATABASE_URL`` names both (``target_session_attrs=read-write``)."""
    from harness.backends import RealBackends

    class PgStandbyBackends(RealBackends):
        name = "pg_standby"

        def __init__(self) -> None:
            super().__init__(tmp_path)
            self.pair = PostgresPair()
            try:
                self.pair.start()
            except BaseException:
                self.close()
                raise
            self.database_url = self.pair.url
            self.primary_port = self.pair.primary_port

        def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
            return self.pair.query(self.primary_port, self.sql(sql), params)

        def close(self) -> None:
            if hasattr(self, "pair"):
                self.pair.stop()
            super().close()

    return PgStandbyBackends()
