"""``python -m bench [--quick]``: run every figure, print the table, write JSON."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import re
import shutil
import statistics
import sys
import tempfile
import time
import tracemalloc
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

from bench import data
from bench import floors as floors_mod
from bench import ours as ours_mod
from bench import peers as peers_mod
from bench.breakdown import Breakdown, Trips
from bench.report import Row, machine, markdown, ratio, table, versions, write_json
from bench.servers import Blackhole, PostgresDatabase, RedisServer, free_port
from bench.stats import Op, Result, measure, summarise

RESULTS_DIR = Path(__file__).resolve().parent / "results"
log = logging.getLogger("bench")


@dataclass(slots=True)
class Config:
    quick: bool
    rounds: int
    iterations: int
    warmup: int
    cold_iterations: int
    small_rows: int
    large_rows: int
    concurrency: int
    per_session: int
    outage_replies: int
    sessions: int

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Config:
        if args.quick:
            base = cls(True, 3, 40, 10, 20, 10_000, 100_000, 64, 4, 30, 300)
        else:
            base = cls(False, 5, 200, 30, 60, 10_000, 1_000_000, 64, 20, 100, 10_000)
        for name in ("rounds", "iterations", "small_rows", "large_rows", "sessions"):
            value = getattr(args, name)
            if value is not None:
                setattr(base, name, value)
        if args.iterations is not None:
            base.cold_iterations = min(base.cold_iterations, args.iterations)
            base.warmup = min(base.warmup, args.iterations)
            base.per_session = min(base.per_session, max(1, args.iterations))
            base.outage_replies = min(base.outage_replies, max(3, args.iterations))
        return base


class Run:
    """One benchmark run: private servers, then every figure in turn."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.rows: list[Row] = []
        self.prefix = f"bench{uuid.uuid4().hex[:8]}:"
        self.redis_server = RedisServer()
        self.db = PostgresDatabase()
        self.peer_status = peers_mod.available()
        self.ours_status = ours_mod.available()
        self.floors: floors_mod.Floors | None = None
        self.peers: peers_mod.Peers | None = None
        self.ours: ours_mod.Ours | None = None
        self.floor_results: dict[str, Result] = {}
        self.redis: Any = None
        self.pg: Any = None
        self.meta: dict[str, Any] = {}
        self.breakdown: list[tuple[str, float, int, float]] = []
        self.per_message: dict[str, float] = {}
        self.warnings: dict[str, dict[str, int]] = {}

    # --- plumbing ---------------------------------------------------------------

    def measure(self, ops: dict[str, Op], iterations: int | None = None) -> dict[str, Result]:
        return asyncio.get_event_loop().run_until_complete(self._measure(ops, iterations))

    async def _measure(self, ops: dict[str, Op], iterations: int | None = None) -> dict[str, Result]:
        n = iterations or self.cfg.iterations
        return await measure(ops, rounds=self.cfg.rounds, iterations=n, warmup=min(self.cfg.warmup, n))

    def add(self, row: Row) -> Row:
        if row.peer_name and row.peer is None:
            row.extra.setdefault("peer_status", "not installed" if self.peer_status else "-")
        self.rows.append(row)
        return row

    def skipped(self, key: str, figure: str, goal: str, why: str) -> None:
        self.add(Row(key, figure, goal=goal, status=why))

    # --- set-up -------------------------------------------------------------------------

    async def setup(self) -> None:
        import redis.asyncio as aioredis

        self.redis_server.start()
        self.db.create()
        self.redis = aioredis.Redis.from_url(self.redis_server.url)
        self.pg = self.db.connect()
        info = await self.redis.info("server")
        with self.pg.cursor() as cur:
            cur.execute("SHOW server_version")
            pg_version = cur.fetchone()[0]
        self.meta = {"machine": machine(), "versions": versions(info.get("redis_version", ""), pg_version)}
        self.floors = floors_mod.Floors(self.redis, self.pg, self.prefix)
        await self.floors.setup()
        if self.peer_status is None:
            try:
                self.peers = peers_mod.Peers(self.redis_server.url, self.db.sqlalchemy_url, self.prefix)
                self.peers.setup(self.pg, self.cfg.small_rows)
            except Exception as exc:  # noqa: BLE001 - a broken peer must not stop the run
                self.peer_status = f"failed: {type(exc).__name__}: {exc}"
                self.peers = None
        if self.ours_status is None:
            try:
                self.ours = ours_mod.Ours(self.redis_server.url, self.db.url, self.prefix)
                await self.ours.start()
            except Exception as exc:  # noqa: BLE001
                self.ours_status = f"ours failed to start: {type(exc).__name__}: {exc}"
                self.ours = None

    async def teardown(self) -> None:
        if self.ours:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.ours.stop(), 30)
        if self.peers:
            with contextlib.suppress(Exception):
                self.peers.close()
        with contextlib.suppress(Exception):
            await self.redis.aclose()
        with contextlib.suppress(Exception):
            self.pg.close()
        self.db.drop()
        self.redis_server.stop()

    # --- figures -------------------------------------------------------------------

    async def hot_read(self) -> None:
        f = self.floors
        assert f is not None
        ops = {"floor_orjson": Op(f.hot_read_orjson), "floor_json": Op(f.hot_read_json)}
        session = data.session("ours:hot")
        if self.ours:
            await self.ours.fill_session(session, floors_mod.WINDOW)
            ours = self.ours

            async def ours_hot(_i: int) -> Any:
                return await ours.load(session, ours_mod.HOT)

            ops["ours"] = Op(ours_hot)
        if self.peers:
            ops["peer"] = Op(self.peers.redis_messages)
        res = await self._measure(ops)
        self.floor_results["hot_read"] = res["floor_orjson"]
        ours_r, floor_r, peer_r = res.get("ours"), res["floor_orjson"], res.get("peer")
        row = self.add(Row(
            "hot_read", "hot context read, last 50 (Redis)", ours=ours_r, floor=floor_r, peer=peer_r,
            peer_name="LangChain RedisChatMessageHistory.messages", goal="<=1.3x floor; peer >=2x",
            floor_ratio=ratio(ours_r, floor_r), peer_ratio=ratio(peer_r, ours_r), status=self.ours_status or "",
        ))
        if ours_r:
            row.met = row.floor_ratio is not None and row.floor_ratio <= 1.3 and (
                row.peer_ratio is None or row.peer_ratio >= 2.0)
        self.add(Row("floor_hot_read_json", "  floor: LRANGE + json.loads (50)", floor=res["floor_json"],
                     status="(floor only)"))

    async def durable_write(self) -> None:
        f = self.floors
        assert f is not None
        ops = {
            "redis_append": Op(f.redis_append), "pg_insert": Op(f.pg_insert),
            "pg_insert_thread": Op(f.pg_insert_thread), "write_through": Op(f.write_through),
        }
        if self.ours:
            ours = self.ours
            session = data.session("ours:write")
            tag = uuid.uuid4().hex[:6]

            async def ours_write(i: int) -> Any:
                return await ours.store(data.record(session.id, i, prefix=f"w{tag}"), session)

            ops["ours"] = Op(ours_write)
        if self.peers:
            ops["peer_sql"] = Op(self.peers.sql_add)
            ops["peer_redis"] = Op(self.peers.redis_add)
        res = await self._measure(ops)
        self.floor_results["write"] = res["write_through"]
        ours_r, floor_r = res.get("ours"), res["write_through"]
        row = self.add(Row(
            "durable_write", "durable write of one message", ours=ours_r, floor=floor_r, peer=res.get("peer_sql"),
            peer_name="LangChain SQLChatMessageHistory.add_message", goal="<=1.5x floor; faster than SQL peer",
            floor_ratio=ratio(ours_r, floor_r), peer_ratio=ratio(res.get("peer_sql"), ours_r),
            status=self.ours_status or "",
        ))
        if ours_r:
            row.met = row.floor_ratio is not None and row.floor_ratio <= 1.5 and (
                row.peer_ratio is None or row.peer_ratio > 1.0)
        self.add(Row("peer_redis_add", "  peer: LangChain Redis add_message (not durable)", ours=ours_r,
                     peer=res.get("peer_redis"), peer_name="LangChain RedisChatMessageHistory.add_message",
                     peer_ratio=ratio(res.get("peer_redis"), ours_r), status="(peer only)"))
        self.add(Row("floor_redis_append", "  floor: Redis RPUSH+LTRIM pipeline (asyncio)",
                     floor=res["redis_append"], status="(floor only)"))
        self.add(Row("floor_pg_insert", "  floor: PostgreSQL autocommit INSERT", floor=res["pg_insert"],
                     status="(floor only)"))
        self.add(Row("floor_pg_insert_thread", "  floor: same INSERT via asyncio.to_thread",
                     floor=res["pg_insert_thread"], status="(floor only)"))

    async def sqlite(self) -> None:
        """Durable write and cold read with SQLite as the database (the
        embedded default), beside the same floors on SQLite."""
        f = self.floors
        assert f is not None
        tmp = Path(tempfile.mkdtemp(prefix="bench-sqlite-"))
        floor = floors_mod.SqliteFloors(str(tmp / "floor.db"), f)
        floor.fill(self.cfg.small_rows)
        ops = {"floor_write": Op(floor.write_through), "floor_cold": Op(floor.cold_select)}
        ours = None
        status = self.ours_status or ""
        try:
            if self.ours:
                ours = ours_mod.Ours(self.redis_server.url, f"sqlite:///{tmp / 'memory.db'}", self.prefix + "lite:",
                                     plugins=["memory"], instance_id="bench-sqlite")
                await ours.start()
                cold = data.session("lite:cold")
                await ours.fill_session(cold, floors_mod.WINDOW, prefix="c")
                write = data.session("lite:write")
                tag = uuid.uuid4().hex[:6]
                bot = ours

                async def ours_write(i: int) -> Any:
                    return await bot.store(data.record(write.id, i, prefix=f"w{tag}"), write)

                async def ours_cold(_i: int) -> Any:
                    return await bot.load(cold, ours_mod.HOT)

                ops["ours_write"] = Op(ours_write)
                ops["ours_cold"] = Op(ours_cold, before=self._flush)
            write_res = await self._measure({k: v for k, v in ops.items() if k.endswith("write")})
            cold_res = await self._measure({k: v for k, v in ops.items() if k.endswith("cold")},
                                           self.cfg.cold_iterations)
        finally:
            if ours:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(ours.stop(), 30)
            floor.close()
            shutil.rmtree(tmp, ignore_errors=True)
        res = {**write_res, **cold_res}
        for key, figure, goal, limit in (("write", "durable write, SQLite", "<=1.5x floor", 1.5),
                                         ("cold", "cold read after flush, SQLite", "<=2x floor", 2.0)):
            o, fl = res.get(f"ours_{key}"), res[f"floor_{key}"]
            row = self.add(Row(f"sqlite_{key}", figure, ours=o, floor=fl, goal=goal, floor_ratio=ratio(o, fl),
                               status=status))
            if o:
                row.met = row.floor_ratio is not None and row.floor_ratio <= limit

    async def redis_commands(self) -> int:
        return int((await self.redis.info("stats"))["total_commands_processed"])

    async def _flush(self, _i: int) -> None:
        await self.redis.flushall()

    async def cold_reads(self) -> None:
        """Cold reads (cache flushed before every call) from a small and a
        large store side by side: two databases, one with ``small_rows``
        messages and one with ``large_rows``, measured interleaved so the
        growth ratio does not depend on when each was measured."""
        f = self.floors
        assert f is not None
        cfg = self.cfg
        large_db = PostgresDatabase()
        large_db.create()
        large_pg = large_db.connect()
        large_ours: ours_mod.Ours | None = None
        try:
            floor_large = floors_mod.Floors(self.redis, large_pg, self.prefix + "L:")
            floor_large.setup_db()
            with self.pg.cursor() as cur:
                small_count = data.fill_rows(cur, "floor_messages", cfg.small_rows, tag="floor")
            with large_pg.cursor() as cur:
                large_count = data.fill_rows(cur, "floor_messages", cfg.large_rows, tag="floor")
            ops = {"floor_small": Op(f.cold_select), "floor_window": Op(f.cold_select_window),
                   "floor_large": Op(floor_large.cold_select)}
            session = data.session("ours:cold")
            if self.ours:
                large_ours = ours_mod.Ours(self.redis_server.url, large_db.url, self.prefix + "L:",
                                           plugins=["memory"], instance_id="bench-large")
                await large_ours.start()
                for bot, pg, rows in ((self.ours, self.pg, cfg.small_rows), (large_ours, large_pg, cfg.large_rows)):
                    await bot.fill_session(session, floors_mod.WINDOW, prefix="c")
                    with pg.cursor() as cur:
                        data.fill_rows(cur, "messages", rows, tag="ours")

                def cold(bot: ours_mod.Ours) -> Op:
                    async def run(_i: int) -> Any:
                        got = await bot.load(session, ours_mod.HOT)
                        if len(got) != ours_mod.HOT:
                            raise RuntimeError(f"cold read gave {len(got)} messages, wanted {ours_mod.HOT}")
                        return got

                    return Op(run, before=self._flush)

                ops["ours_small"] = cold(self.ours)
                ops["ours_large"] = cold(large_ours)
            if self.peers:
                self.peers.fill(self.pg, cfg.small_rows)
                ops["peer"] = Op(self.peers.sql_messages)
            res = await self._measure(ops, cfg.cold_iterations)
        finally:
            if large_ours:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(large_ours.stop(), 30)
            large_pg.close()
            large_db.drop()
        self.floor_results["cold"] = res["floor_small"]
        ours_r, floor_r, peer_r = res.get("ours_small"), res["floor_small"], res.get("peer")
        row = self.add(Row(
            "cold_read", f"cold read after flush, {small_count:,} rows", ours=ours_r, floor=floor_r,
            peer=peer_r, peer_name="LangChain SQLChatMessageHistory.messages", goal="<=2x floor",
            floor_ratio=ratio(ours_r, floor_r), peer_ratio=ratio(peer_r, ours_r), status=self.ours_status or "",
        ))
        if ours_r:
            row.met = row.floor_ratio is not None and row.floor_ratio <= 2.0
        self.add(Row("floor_cold_window", f"  floor: same SELECT, LIMIT {floors_mod.WINDOW} (a whole window)",
                     floor=res["floor_window"], status="(floor only)"))
        ours_l, floor_l = res.get("ours_large"), res["floor_large"]
        self.add(Row(
            "cold_read_large", f"cold read after flush, {large_count:,} rows", ours=ours_l, floor=floor_l,
            floor_ratio=ratio(ours_l, floor_l), status=self.ours_status or "",
        ))
        growth_ours, growth_floor = ratio(ours_l, ours_r), ratio(floor_l, floor_r)
        g_row = self.add(Row(
            "cold_read_growth", f"  cold read {large_count // 1000:,}k / {small_count // 1000:,}k rows",
            ours=Result.single(growth_ours, "x") if growth_ours else None,
            floor=Result.single(growth_floor, "x") if growth_floor else None,
            goal="<=1.3", status=self.ours_status or "",
        ))
        if growth_ours is not None:
            g_row.met = growth_ours <= 1.3

    async def pipeline(self) -> None:
        floor_sum = None
        if {"write", "hot_read"} <= self.floor_results.keys():
            w, h = self.floor_results["write"], self.floor_results["hot_read"]
            floor_sum = Result(p50=2 * w.p50 + h.p50, p99=2 * w.p99 + h.p99, n=0, rounds=0,
                               note="2 x raw write-through + raw hot read, this run")
        if not self.ours:
            self.skipped("pipeline", "whole pipeline per message (offline reply)", "p50<=1.5x floor sum; p99<=3x p50",
                         self.ours_status or "")
            return
        ours = self.ours
        missing = [p for p in ours_mod.PIPELINE_PLUGINS if p not in ours.enabled]
        tag = uuid.uuid4().hex[:6]

        async def handle(i: int) -> Any:
            return await ours.handle(ours_mod.incoming(i, tag=tag))

        res = await self._measure({"ours": Op(handle)})
        ours_r = res["ours"]
        row = self.add(Row(
            "pipeline", "whole pipeline per message (offline reply)", ours=ours_r, floor=floor_sum,
            goal="p50<=1.5x floor sum; p99<=3x p50", floor_ratio=ratio(ours_r, floor_sum),
            extra={"p99_over_p50": ours_r.p99 / ours_r.p50, "plugins": ours.enabled, "missing_plugins": missing},
        ))
        row.met = row.floor_ratio is not None and row.floor_ratio <= 1.5 and ours_r.p99 <= 3 * ours_r.p50
        # Where the time goes: wall time per hook, over extra messages (not in the figure above).
        probe = Breakdown(ours.bot)
        n = max(20, self.cfg.iterations)
        cmds0, cpu0 = await self.redis_commands(), time.process_time()
        trips = Trips(ours.bot)
        before: list[tuple[int, int, int]] = []
        after: list[tuple[int, int, int]] = []
        sent: list[tuple[int, int, int]] = []

        async def send(reply: Any) -> Any:
            sent.append(trips.now())
            return await ours_mod.no_op_send(reply)

        try:
            for i in range(n):
                before.append(trips.now())
                await ours.bot.handle(ours_mod.incoming(10_000_000 + i, tag=tag), send)
                after.append(trips.now())
        finally:
            trips.stop()
            probe.stop()
        cpu = (time.process_time() - cpu0) * 1000 / n
        self.breakdown = probe.summary(n)

        def per(k: int, ends: list[tuple[int, int, int]]) -> float:
            return round(sum(e[k] - b[k] for b, e in zip(before, ends)) / n, 1)

        # The probe's own commands (INFO) and the bench's own queries are a few per run, not per message.
        self.per_message = {
            "redis_commands": round((await self.redis_commands() - cmds0) / n, 1),
            "process_cpu_ms": round(cpu, 3),
            "client_redis_commands": per(0, after),
            "redis_round_trips": per(1, after),
            "redis_round_trips_before_send": per(1, sent),
            "db_round_trips": per(2, after),
            "db_round_trips_before_send": per(2, sent),
        }
        row.extra["per_message"] = self.per_message
        row.extra["breakdown"] = [
            {"hook": k, "mean_ms_per_message": round(ms, 4), "calls_per_message": c, "p50_ms_per_call": round(p50, 4)}
            for k, ms, c, p50 in self.breakdown
        ]
        if missing:
            row.status = f"without {', '.join(missing)}"

    async def throughput(self) -> None:
        f = self.floors
        assert f is not None
        cfg = self.cfg
        # Floors: sequential autocommit INSERTs, and the same rows committed 64 at a time.
        n = max(64, cfg.iterations)
        start = time.perf_counter()
        for i in range(n):
            f.pg_insert_sync(50_000_000 + i)
        single = n / (time.perf_counter() - start)
        batches = max(2, n // cfg.concurrency)
        start = time.perf_counter()
        for b in range(batches):
            f.pg_batch_insert(cfg.concurrency, 60_000_000 + b * cfg.concurrency)
        batched = batches * cfg.concurrency / (time.perf_counter() - start)
        floor_single = Result.single(single, "msg/s", "rows/s, one autocommit INSERT each")
        self.add(Row("floor_pg_autocommit_rate", "  floor: PG autocommit INSERTs/s, 1 conn", floor=floor_single,
                     status="(floor only)"))
        self.add(Row("floor_pg_batched_rate", f"  floor: PG rows/s committed {cfg.concurrency} per txn",
                     floor=Result.single(batched, "msg/s"), status="(floor only)"))
        if not self.ours:
            self.skipped("throughput", f"throughput, {cfg.concurrency} concurrent sessions", ">=1,000 msg/s",
                         self.ours_status or "")
            return
        ours = self.ours
        tag = uuid.uuid4().hex[:6]

        async def user(u: int) -> None:
            for k in range(cfg.per_session):
                await ours.handle(ours_mod.incoming(k, user=f"t{u}", tag=tag))

        rates = []
        cpu_start = time.process_time()
        for _ in range(max(1, cfg.rounds)):
            tag = uuid.uuid4().hex[:6]
            start = time.perf_counter()
            await asyncio.wait_for(asyncio.gather(*(user(u) for u in range(cfg.concurrency))), 600)
            rates.append(cfg.concurrency * cfg.per_session / (time.perf_counter() - start))
        cpu_ms = (time.process_time() - cpu_start) * 1000 / (max(1, cfg.rounds) * cfg.concurrency * cfg.per_session)
        value = statistics.median(rates)
        res = Result(p50=value, p99=min(rates), unit="msg/s", n=len(rates), rounds=len(rates),
                     round_p50s=[round(r) for r in rates], note="incoming messages/s; 2 durable writes each")
        row = self.add(Row(
            "throughput", f"throughput, {cfg.concurrency} concurrent sessions", ours=res,
            floor=Result.single(single / 2, "msg/s", "autocommit floor / 2 writes per message"),
            goal=">=1,000 msg/s", extra={"rates": rates, "batched_floor_msgs_per_s": batched / 2,
                                        "process_cpu_ms_per_message": round(cpu_ms, 3)},
        ))
        row.floor_ratio = value / (single / 2)
        row.met = value >= 1000

    async def outage(self) -> None:
        goal = "first <= normal+0.5s; later <=1.2x DB-only"
        if not self.ours:
            self.skipped("outage_first", "first reply, Redis blackholed", goal, self.ours_status or "")
            return
        cfg = self.cfg
        proxy = Blackhole(self.redis_server.port)
        proxy.start()
        dead_port = free_port()  # nothing listens there: the database-only path
        # The DB-only instance gets a database of its own: its writes (which
        # reach only the database) would otherwise make the instance under
        # test invalidate its cache, as they should in production.
        db_only_db = PostgresDatabase()
        db_only_db.create()
        via_proxy = ours_mod.Ours(proxy.url, self.db.url, self.prefix + "bh:", instance_id="bench-bh")
        db_only = ours_mod.Ours(f"redis://127.0.0.1:{dead_port}/0", db_only_db.url, self.prefix + "db:",
                                instance_id="bench-db")
        tag = uuid.uuid4().hex[:6]
        try:
            await asyncio.wait_for(via_proxy.start(), 60)
            await asyncio.wait_for(db_only.start(), 60)

            async def timed(bot: ours_mod.Ours, i: int, user: str) -> float:
                start = time.perf_counter_ns()
                await asyncio.wait_for(bot.handle(ours_mod.incoming(i, user=user, tag=tag)), 60)
                return (time.perf_counter_ns() - start) / 1e6

            # Let the database-only instance notice Redis is absent, as it would in production.
            for i in range(5):
                await timed(db_only, i, "dbonly")
            n = cfg.outage_replies
            normal = []
            for i in range(5):
                await timed(via_proxy, i, "bh")
            for i in range(n):
                normal.append(await timed(via_proxy, 100 + i, "bh"))
            proxy.blackhole()
            first = await timed(via_proxy, 1000, "bh")
            # Interleaved with the DB-only instance, so both see the same machine.
            later, dbo = [], []
            for i in range(n):
                later.append(await timed(via_proxy, 1001 + i, "bh"))
                dbo.append(await timed(db_only, 1001 + i, "dbonly"))
            proxy.restore()
        finally:
            proxy.restore() if proxy.process else None
            for bot in (via_proxy, db_only):
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(bot.stop(), 30)
            proxy.stop()
            db_only_db.drop()
        normal_r, db_r, later_r = summarise([normal]), summarise([dbo]), summarise([later])
        first_r = Result.single(first, "ms", "one reply, right after the blackhole")
        row = self.add(Row("outage_first", "first reply after Redis blackholed", ours=first_r, floor=normal_r,
                           goal="<= normal + 500 ms", floor_ratio=ratio(first_r, normal_r),
                           extra={"normal_ms": normal_r.p50}))
        row.met = first <= normal_r.p50 + 500
        row = self.add(Row("outage_steady", "  later replies, Redis still down", ours=later_r, floor=db_r,
                           goal="<=1.2x DB-only (p50 and p99)", floor_ratio=ratio(later_r, db_r),
                           extra={"db_only": db_r.to_dict(), "max_ms": max(later)}))
        row.met = later_r.p50 <= 1.2 * db_r.p50 and later_r.p99 <= 1.2 * db_r.p99
        self.add(Row("outage_normal", "  normal reply (through the proxy)", ours=normal_r, status="(reference)"))

    async def memory(self) -> None:
        if not self.ours:
            self.skipped("memory_rss", "memory per active session", "Redis bytes bounded by window",
                         self.ours_status or "")
            return
        cfg = self.cfg
        ours = self.ours
        # A fresh instance under its own key prefix, started on a flushed
        # Redis once the earlier figures' background work has settled, so
        # the deltas hold only what the sessions below cost.
        await self.redis.flushall()
        prefix = self.prefix + "mem:"
        fresh = ours_mod.Ours(self.redis_server.url, self.db.url, prefix, instance_id="bench-mem")
        await fresh.start()
        tag = uuid.uuid4().hex[:6]
        try:
            await fresh.handle(ours_mod.incoming(0, user="warm", channel="mem", tag=tag))
            await asyncio.sleep(1.0)
            gc.collect()
            # RSS moves with the allocator's whims (it even shrinks when earlier
            # figures' garbage is returned); tracemalloc counts the Python
            # objects the sessions keep alive.
            tracemalloc.start()
            heap0 = tracemalloc.get_traced_memory()[0]
            rss0, mem0 = rss_bytes(), int((await self.redis.info("memory"))["used_memory"])
            keys0 = await self.prefix_bytes(prefix)
            # Fewer in flight than the throughput figure: this one measures memory, not the pool limit.
            sem = asyncio.Semaphore(16)

            async def one(u: int) -> None:
                async with sem:
                    await fresh.handle(ours_mod.incoming(0, user=f"s{u}", channel="mem", tag=tag))

            await asyncio.wait_for(asyncio.gather(*(one(u) for u in range(cfg.sessions))), 900)
            gc.collect()
            heap1 = tracemalloc.get_traced_memory()[0]
            tracemalloc.stop()
            rss1, mem1 = rss_bytes(), int((await self.redis.info("memory"))["used_memory"])
            keys1 = await self.prefix_bytes(prefix)
        finally:
            tracemalloc.stop()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(fresh.stop(), 30)
        n = cfg.sessions
        self.add(Row("memory_heap", f"Python heap kept per active session ({n:,} sessions)",
                     ours=Result.single((heap1 - heap0) / n, "bytes"), goal="(reported)",
                     extra={"heap_before": heap0, "heap_after": heap1}))
        self.add(Row("memory_rss", "  process RSS per active session (noisy)",
                     ours=Result.single((rss1 - rss0) / n, "bytes"), goal="(reported)",
                     extra={"rss_before": rss0, "rss_after": rss1}))
        self.add(Row("memory_redis", f"Redis bytes per active session ({n:,} sessions)",
                     ours=Result.single((mem1 - mem0) / n, "bytes"), goal="(reported)",
                     extra={"used_memory_before": mem0, "used_memory_after": mem1}))
        by_kind = {k: round((keys1.get(k, 0) - keys0.get(k, 0)) / n, 1) for k in sorted(set(keys1) | set(keys0))}
        self.add(Row("memory_redis_keys", "  of which the instance's keys (MEMORY USAGE)",
                     ours=Result.single(sum(by_kind.values()), "bytes"), status="(reported)",
                     extra={"bytes_per_session_by_key_kind": by_kind}))
        # Bounded by the window: a session with 1x and 3x the window stored.
        sizes = {}
        for mult in (1, 3):
            sess = data.session(f"ours:bound{mult}")
            await ours.fill_session(sess, floors_mod.WINDOW * mult, prefix=f"b{mult}")
            # A read rebuilds a missing window (possibly in the background): give it a moment.
            for _ in range(3):
                await ours.load(sess, ours_mod.HOT)
                await asyncio.sleep(0.2)
            sizes[mult] = await self.keys_bytes(sess.id)
        # A window of 200 entries takes tens of kB; less means no window was found.
        found = min(sizes.values()) > 1000
        bound = sizes[3] / sizes[1] if found else None
        row = self.add(Row("memory_bound", "  Redis bytes, 3x / 1x window of history",
                           ours=Result.single(bound, "x") if bound else None, goal="<=1.1 (bounded)",
                           extra={"bytes_1x": sizes[1], "bytes_3x": sizes[3]},
                           status="" if found else "no window found in Redis"))
        row.met = bound <= 1.1 if bound is not None else None

    async def prefix_bytes(self, prefix: str) -> dict[str, int]:
        """``MEMORY USAGE`` summed over every key under ``prefix``, by kind
        (the key's first segment after the prefix, e.g. ``w`` for windows)."""
        kinds: dict[str, int] = {}
        batch: list[bytes] = []

        async def flush() -> None:
            pipe = self.redis.pipeline(transaction=False)
            for key in batch:
                pipe.memory_usage(key)
            for key, used in zip(batch, await pipe.execute()):
                kind = key[len(prefix):].split(b":", 1)[0].decode(errors="replace")
                kinds[kind] = kinds.get(kind, 0) + int(used or 0)

        async for key in self.redis.scan_iter(match=f"{prefix}*", count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                await flush()
                batch = []
        if batch:
            await flush()
        return kinds

    async def keys_bytes(self, session_id: str) -> int:
        total = 0
        async for key in self.redis.scan_iter(match=f"*{session_id}*", count=1000):
            total += int(await self.redis.memory_usage(key) or 0)
        return total


class Warnings(logging.Handler):
    """Collects the warnings plugins log while one figure runs."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith(("plugins.", "core.")):
            self.messages.append(f"{record.name}: {record.getMessage()}"[:200])

    def summary(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for message in self.messages:
            # Numbers (epochs, ports, seconds) vary; the kind of warning does not.
            key = re.sub(r"\d+(\.\d+)?", "N", message)[:160]
            counts[key] = counts.get(key, 0) + 1
        return counts

    def __enter__(self) -> Self:
        logging.getLogger().addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        logging.getLogger().removeHandler(self)


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


FIGURES = ("hot_read", "durable_write", "cold_reads", "sqlite", "pipeline", "throughput", "outage", "memory")


async def run(cfg: Config, only: list[str]) -> tuple[list[Row], dict[str, Any]]:
    bench = Run(cfg)
    try:
        await bench.setup()
        for name in FIGURES:
            if only and name not in only:
                continue
            started = time.perf_counter()
            first_row = len(bench.rows)
            with Warnings() as seen:
                try:
                    await getattr(bench, name)()
                except Exception as exc:
                    log.exception("figure %s failed", name)
                    bench.add(Row(name, name, status=f"FAILED: {type(exc).__name__}: {exc}"[:120]))
            if seen.messages:
                # A figure measured while a plugin was routing around a failure is
                # not the figure it claims to be: say so next to it.
                bench.warnings[name] = seen.summary()
                for row in bench.rows[first_row:]:
                    row.extra["plugin_warnings"] = seen.summary()
            print(f"  {name}: {time.perf_counter() - started:.1f}s", file=sys.stderr, flush=True)
    finally:
        await bench.teardown()
    meta = dict(bench.meta)
    meta["pipeline_breakdown"] = bench.breakdown
    meta["pipeline_per_message"] = bench.per_message
    meta["plugin_warnings"] = bench.warnings
    meta.update({"quick": cfg.quick, "config": vars_of(cfg), "peers": bench.peer_status or "installed",
                 "ours": bench.ours_status or "available"})
    return bench.rows, meta


def vars_of(cfg: Config) -> dict[str, Any]:
    return {name: getattr(cfg, name) for name in cfg.__slots__}  # type: ignore[attr-defined]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, under a minute (CI)")
    parser.add_argument("--only", default="", help=f"comma-separated figures: {', '.join(FIGURES)}")
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--iterations", type=int, help="timed calls per round")
    parser.add_argument("--small-rows", type=int, dest="small_rows")
    parser.add_argument("--large-rows", type=int, dest="large_rows")
    parser.add_argument("--sessions", type=int, help="sessions for the memory figure")
    parser.add_argument("--profile", action="store_true",
                        help="profile the run with pyinstrument (pip-installed in .venv-bench); "
                             "writes a text and an HTML report next to the JSON")
    parser.add_argument("--out", type=Path, help="JSON file to write (default bench/results/<time>.json)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    cfg = Config.from_args(args)
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = [s for s in only if s not in FIGURES]
    if unknown:
        parser.error(f"unknown figure(s) {unknown}; known: {', '.join(FIGURES)}")
    started = time.perf_counter()
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out = args.out or RESULTS_DIR / f"{stamp}{'-quick' if cfg.quick else ''}.json"
    profiler = None
    if args.profile:
        from pyinstrument import Profiler

        profiler = Profiler(interval=0.0002, async_mode="disabled")
        profiler.start()
    rows, meta = asyncio.run(run(cfg, only))
    if profiler is not None:
        profiler.stop()
        out.parent.mkdir(parents=True, exist_ok=True)
        out.with_suffix(".profile.txt").write_text(profiler.output_text(unicode=True, show_all=False))
        out.with_suffix(".profile.html").write_text(profiler.output_html())
        print(f"profile: {out.with_suffix('.profile.txt')}", file=sys.stderr)
    meta["elapsed_s"] = round(time.perf_counter() - started, 1)
    print(table(rows))
    if meta.get("pipeline_breakdown"):
        print("\nwhole pipeline, wall time per hook implementation, nested hooks included:")
        print("  mean ms/msg  calls  p50 ms/call  hook (plugin)")
        for name, ms, calls, p50 in meta["pipeline_breakdown"]:
            print(f"  {ms:11.3f}  x{calls:<4}  {p50:11.3f}  {name}")
        pm = meta.get("pipeline_per_message") or {}
        print(f"  per message: {pm.get('redis_commands')} Redis commands (pipelined ones counted singly), "
              f"{pm.get('process_cpu_ms')} ms of process CPU (all threads)")
        print(f"  per message, sent by the client: {pm.get('client_redis_commands')} Redis commands (a script is one) "
              f"in {pm.get('redis_round_trips')} round trips ({pm.get('redis_round_trips_before_send')} before the reply "
              f"is sent); {pm.get('db_round_trips')} database round trips ({pm.get('db_round_trips_before_send')} before "
              f"the reply is sent; a statement, BEGIN or COMMIT is one)")
    for figure, counts in (meta.get("plugin_warnings") or {}).items():
        print(f"plugin warnings during {figure}:")
        for message, count in sorted(counts.items(), key=lambda kv: -kv[1])[:6]:
            print(f"  {count:5d} x {message}")
    for row in rows:
        if row.key == "memory_redis_keys":
            kinds = row.extra.get("bytes_per_session_by_key_kind", {})
            print("Redis bytes per session by key kind: " + ", ".join(f"{k}: {v:,.0f}" for k, v in kinds.items()))
        if row.key == "throughput" and "process_cpu_ms_per_message" in row.extra:
            print(f"throughput: {row.extra['process_cpu_ms_per_message']} ms of process CPU per message "
                  f"(all threads); batched-commit floor {row.extra['batched_floor_msgs_per_s']:,.0f} msg/s")
    m, v = meta.get("machine", {}), meta.get("versions", {})
    print(f"\nmachine: {m.get('nproc')} CPUs, {m.get('cpu')}, {m.get('ram_gib')} GiB; "
          + ", ".join(f"{k} {val}" for k, val in v.items()))
    print(f"peers: {meta['peers']}; ours: {meta['ours']}; elapsed {meta['elapsed_s']} s")
    print(f"wrote {write_json(out, rows, meta)}")
    out.with_suffix(".md").write_text(markdown(rows, meta), encoding="utf-8")
    # A missed goal is a finding, not an error; a figure that could not be
    # measured at all means the benchmark (or what it drives) has rotted.
    broken = [r.key for r in rows if r.status.startswith("FAILED")]
    if broken or str(meta["ours"]).startswith("ours failed"):
        print(f"error: could not measure {', '.join(broken) or 'ours'}", file=sys.stderr)
        return 1
    return 0
