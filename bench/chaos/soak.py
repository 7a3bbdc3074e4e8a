"""The soak driver: starts the backends and the bot processes, sends the
traffic, runs the fault lanes, then restores everything, lets the outboxes
drain and checks the ledger (see :mod:`bench.chaos.ledger`).

Delivery models (``SoakConfig.delivery``):

- ``gateway`` (the default, Discord's): every bot process connected when a
  message is sent receives it, once; nothing is ever delivered again. A
  killed process's deliveries are gone, and a process that is down (killed,
  not yet started again) when a message is sent never receives it. A
  paused (SIGSTOPped) process stays connected: the message waits in its
  input pipe and is handled when it resumes, as a frozen bot's socket
  buffers the gateway's events (or, once the gateway has dropped it for
  missed heartbeats, its RESUME replays them to it): in both cases the same
  process receives each event once, late.
- ``redeliver`` (the model of earlier soaks, kept for comparison): each
  message goes to one process (10 % to two, 5 % twice to the same one), and
  a message without a reply is delivered again to another process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from core.bot import MEMORY_DEGRADED
from core.ids import snowflake
from core.models import IncomingMessage
from bench.chaos.faults import KINDS, PROCESS_KINDS, FaultLanes, FaultPlan
from bench.chaos.instances import SoakInstance
from bench.chaos.ledger import DIED, NOT_DELIVERED, Delivery, Entry, Ledger, Reply, Row, Rules, View, check
from bench.chaos.overlaps import both_down, coverage, faults_from
from harness.backends import PG_HOST, PG_PORT, RealBackends
from harness.instances import WorkerError
from harness.world import message_to_dict

log = logging.getLogger("bench.chaos")

PLUGINS = ["memory", "sessions", "llm"]
ENTITY_EPOCH = 1_600_000_000.0
NAMES = "ABC"
DELIVERY_MODELS = ("gateway", "redeliver")
# Reads of a conversation's context per instance before a view served
# degraded each time counts as a mismatch.
VIEW_TRIES = 3
WORDS = ("tea", "rain", "map", "bread", "river", "clock", "stone", "violin", "salt", "lamp", "garden", "owl")


@dataclass
class SoakConfig:
    messages: int = 20000
    seed: int = 7
    # Three: a pause (about 10 s) and a kill can then be under way at once
    # while one instance stays healthy, which is what 50+ of each need.
    instances: int = 3
    rate: float = 40.0  # messages sent per second (steady)
    duration: float | None = None  # stop sending after this many seconds
    speed: float = 10.0  # bot-clock seconds per real second
    faults: bool = True
    faults_per_kind: int = 60  # aimed for over the sending time
    delivery: str = "gateway"  # gateway | redeliver (see the module docstring)
    # Only with ``redeliver``:
    redelivery_share: float = 0.05  # delivered twice to the same instance
    rolling_share: float = 0.10  # delivered to two instances
    retry_after: float = 8.0  # redeliver elsewhere when no reply after this long (shorter than a pause)
    redeliver_delay: float = 1.0  # after every delivery ended without a reply
    max_in_flight: int = 400  # messages waiting for a reply before sending pauses (Discord never waits: redeliver only)
    window: int = 50  # sessions' window_messages (the default)
    idle_timeout: float = 1800.0  # sessions' idle_timeout, bot-clock seconds (the default)
    sample_conversations: int | None = None  # conversations whose context is read back (None: all)
    drain_timeout: float = 120.0
    label: str = ""
    kinds: tuple[str, ...] = KINDS


class SoakClock:
    """The world's clock: real time sped up by ``speed`` (so claims and
    leases, 60 bot-seconds by default, expire within a few real seconds)."""

    def __init__(self, speed: float, base: float = 1_760_000_000.0) -> None:
        self.speed = speed
        self.base = base
        self.t0 = time.monotonic()
        self._last = 0.0

    def now(self) -> float:
        value = self.base + (time.monotonic() - self.t0) * self.speed
        # Strictly increasing: two messages never share a timestamp.
        self._last = max(value, self._last + 0.001)
        return self._last


@dataclass
class Conversation:
    index: int
    user_id: str
    user_name: str
    channel_id: str
    guild_id: str | None
    messages: int = 0


@dataclass
class SoakResult:
    config: dict[str, Any]
    faults: dict[str, int]
    faults_skipped: dict[str, int]
    counts: dict[str, int]
    stats: dict[str, Any]
    examples: dict[str, Any]
    timings: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


class Soak:
    def __init__(self, config: SoakConfig, workdir: Path, keep: bool = False) -> None:
        self.cfg = config
        self.workdir = workdir
        self.keep = keep
        self.clock = SoakClock(config.speed)
        self.rng = random.Random(config.seed)
        self.pick_rng = random.Random(f"{config.seed}:targets")
        self.ledger = Ledger()
        self.backends: RealBackends | None = None  # type: ignore[assignment]
        self.instances: dict[str, SoakInstance] = {}
        self.busy: set[str] = set()  # instances under a process fault
        self.watching = False  # restart bots that exit on their own (while sending)
        self.conversations: list[Conversation] = []
        self.message_tasks: set[asyncio.Task[None]] = set()
        self.delivery_tasks: set[asyncio.Task[None]] = set()
        self.abandon = False
        self.sections: dict[str, dict[str, Any]] = {}
        self.t0 = time.monotonic()
        self.t0_wall = time.time()
        self.notes: list[str] = []
        self.restarts = 0
        self.degraded_views = 0  # views read again because a backend was routed around
        self.lost_requests = 0

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    # --- the world ---------------------------------------------------------------

    def _make_world(self) -> None:
        rng = random.Random(f"{self.cfg.seed}:world")
        n_conv = max(12, self.cfg.messages // 40)
        guilds = [snowflake(ENTITY_EPOCH, worker=1) for _ in range(4)]
        channels = [(g, snowflake(ENTITY_EPOCH, worker=1)) for g in guilds for _ in range(5)]
        users = [(snowflake(ENTITY_EPOCH, worker=1), f"user{i}") for i in range(max(8, n_conv // 2))]
        seen: set[tuple[str, str]] = set()
        while len(self.conversations) < n_conv:
            uid, uname = rng.choice(users)
            if rng.random() < 0.15:
                place: tuple[str | None, str] = (None, f"dm-{uid}")
            else:
                place = rng.choice(channels)
            if (uid, place[1]) in seen:
                continue
            seen.add((uid, place[1]))
            channel = snowflake(ENTITY_EPOCH, worker=3) if place[0] is None else place[1]
            self.conversations.append(Conversation(len(self.conversations), uid, uname, channel, place[0]))
        # Zipf-like weights: a few long conversations (longer than the window), many short ones.
        self.weights = [1.0 / (i + 1) ** 0.8 for i in range(n_conv)]

    def _message(self, conv: Conversation, content: str, ts: float) -> IncomingMessage:
        return IncomingMessage(
            id=snowflake(ts),
            author_id=conv.user_id,
            author_name=conv.user_name,
            channel_id=conv.channel_id,
            content=content,
            timestamp=ts,
            transport="test",
            guild_id=conv.guild_id,
            is_dm=conv.guild_id is None,
        )

    # --- instances -----------------------------------------------------------------

    def _new_instance(self, name: str, generation: int) -> SoakInstance:
        return SoakInstance(name, self.workdir / "instances" / name, self.sections, self.clock, PLUGINS,
                            generation=generation, on_event=self.on_event)

    async def _start(self, name: str, generation: int) -> SoakInstance:
        last: Exception | None = None
        for _attempt in range(5):
            instance = self._new_instance(name, generation)
            try:
                await asyncio.wait_for(instance.start(), 60)
                return instance
            except (WorkerError, asyncio.TimeoutError) as exc:
                last = exc
                log.warning("instance %s did not start: %r; again", name, exc)
                instance.kill()
                await asyncio.sleep(0.5)
        raise RuntimeError(f"instance {name} did not start: {last}")

    def ready(self, name: str) -> bool:
        inst = self.instances.get(name)
        return inst is not None and inst.alive and not inst.paused

    def pick_victim(self, rng: random.Random) -> str | None:
        """An instance for a process fault, or ``None`` when taking one
        would leave no healthy instance (one always keeps serving)."""
        free = [n for n in sorted(self.instances) if self.ready(n) and n not in self.busy]
        if len(free) < 2:
            return None
        name = rng.choice(free)
        self.busy.add(name)
        return name

    async def kill_instance(self, name: str) -> None:
        inst = self.instances[name]
        inst.kill()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(inst.wait_dead(), 10)

    async def restart_instance(self, name: str) -> None:
        try:
            old = self.instances[name]
            self.instances[name] = await self._start(name, old.generation + 1)
            self.restarts += 1
        finally:
            self.busy.discard(name)

    def pause_instance(self, name: str) -> None:
        self.instances[name].pause()

    def resume_instance(self, name: str) -> None:
        try:
            self.instances[name].resume()
        finally:
            self.busy.discard(name)

    def connected(self, name: str) -> bool:
        """Discord sees a killed process's connection close at once, but keeps
        sending to a paused one (its socket is open) until it times out."""
        inst = self.instances.get(name)
        return inst is not None and inst.alive

    def on_event(self, name: str, event: dict[str, Any]) -> None:
        """A reply the moment an instance sent it (the worker's event line)."""
        entry = self.ledger.entries.get(event.get("message_id", ""))
        if event.get("event") == "sent" and entry is not None:
            entry.replies.append(Reply(name, event["content"], MEMORY_DEGRADED in event.get("notes", []),
                                       at=round(float(event["at"]) - self.t0_wall, 3)))

    async def pick_target(self, exclude: set[str] = frozenset()) -> str:  # type: ignore[assignment]
        deadline = time.monotonic() + 60
        while True:
            ready = [n for n in sorted(self.instances) if self.connected(n)]
            preferred = [n for n in ready if n not in exclude]
            if preferred or ready:
                return self.pick_rng.choice(preferred or ready)
            if time.monotonic() > deadline:
                raise RuntimeError("no bot instance ready for 60 s")
            await asyncio.sleep(0.05)

    # --- traffic -------------------------------------------------------------------

    def _spawn(self, coro: Any, into: set[asyncio.Task[None]]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        into.add(task)
        task.add_done_callback(into.discard)
        return task

    async def deliver(self, entry: Entry, raw: dict[str, Any], name: str, kind: str) -> None:
        delivery = Delivery(name, kind, start=round(self.elapsed(), 3))
        entry.deliveries.append(delivery)
        try:
            await self._deliver(entry, raw, name, delivery)
        finally:
            delivery.end = round(self.elapsed(), 3)

    async def _deliver(self, entry: Entry, raw: dict[str, Any], name: str, delivery: Delivery) -> None:
        inst = self.instances.get(name)
        if inst is None or not inst.alive:
            delivery.outcome = NOT_DELIVERED
            return
        try:
            answer = await inst.request("deliver", message=raw, now=self.clock.now())
        except OSError:  # the pipe of a process killed meanwhile
            delivery.outcome = DIED
            return
        except WorkerError as exc:
            text = str(exc)
            # "not running": never written to it; "exited": killed with it in hand; else the bot failed on it.
            delivery.outcome = (NOT_DELIVERED if "is not running" in text else DIED if "exited" in text
                                else f"error: {text.splitlines()[0][:120] if text else ''}")
            return
        # The replies themselves arrived as events (on_event), before this answer.
        self.ledger.note_windows(entry.id, name, answer.get("contexts", []))
        delivery.outcome = "replied" if answer.get("sent") else "no-reply"

    async def _later(self, delay: float, entry: Entry, raw: dict[str, Any], name: str, kind: str) -> None:
        await asyncio.sleep(delay)
        await self.deliver(entry, raw, name, kind)

    async def broadcast(self, entry: Entry, raw: dict[str, Any]) -> None:
        """The gateway model: every connected instance receives the message
        once, now (the writes to their pipes happen in sending order)."""
        targets = [n for n in sorted(self.instances) if self.connected(n)]
        tasks = [self._spawn(self.deliver(entry, raw, name, "gateway"), self.delivery_tasks) for name in targets]
        if tasks:
            await asyncio.wait(tasks)

    async def run_message(self, entry: Entry, raw: dict[str, Any], pattern: str) -> None:
        """The redeliver model (see the module docstring)."""
        mine: set[asyncio.Task[None]] = set()
        names: dict[asyncio.Task[None], str] = {}

        def send(name: str, kind: str, delay: float = 0.0) -> None:
            coro = self._later(delay, entry, raw, name, kind) if delay else self.deliver(entry, raw, name, kind)
            task = self._spawn(coro, self.delivery_tasks)
            mine.add(task)
            names[task] = name

        first = await self.pick_target()
        send(first, "first")
        if pattern == "rolling":
            second = await self.pick_target({first})
            if second != first:
                send(second, "rolling")
        elif pattern == "redelivery":
            send(first, "redelivery", delay=self.pick_rng.uniform(0.01, 0.5))
        last_sent = time.monotonic()
        while not entry.replies and not entry.reply_stored and not self.abandon:
            pending = {t for t in mine if not t.done()}
            wait = last_sent + self.cfg.retry_after - time.monotonic()
            if pending and wait > 0:
                await asyncio.wait(pending, timeout=min(wait, 1.0), return_when=asyncio.FIRST_COMPLETED)
                continue
            if entry.replies or entry.reply_stored or self.abandon:
                break
            if not pending:
                # Every delivery ended without a reply (its instance died, or
                # a claim held by a dead or paused one): Discord redelivers.
                await asyncio.sleep(self.cfg.redeliver_delay)
                if entry.replies:
                    break
            busy = {names[t] for t in mine if not t.done()}
            send(await self.pick_target(busy), "retry")
            last_sent = time.monotonic()

    async def traffic(self) -> int:
        cfg = self.cfg
        start = time.monotonic()
        sent = 0
        for i in range(cfg.messages):
            if cfg.duration is not None and time.monotonic() - start >= cfg.duration:
                break
            delay = start + i / cfg.rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            while cfg.delivery == "redeliver" and len(self.message_tasks) >= cfg.max_in_flight:
                await asyncio.sleep(0.01)
            conv = self.rng.choices(self.conversations, self.weights)[0]
            words = " ".join(self.rng.choice(WORDS) for _ in range(self.rng.randint(1, 6)))
            roll = self.rng.random()
            pattern = (
                "redelivery" if roll < cfg.redelivery_share
                else "rolling" if roll < cfg.redelivery_share + cfg.rolling_share and len(self.instances) > 1
                else "single"
            )
            conv.messages += 1
            message = self._message(conv, f"m{i} c{conv.index} {words}", self.clock.now())
            entry = self.ledger.add(Entry(message.id, conv.index, conv.channel_id, message.content, message.timestamp,
                                          sent=round(self.elapsed(), 3)))
            raw = message_to_dict(message)
            job = self.broadcast(entry, raw) if cfg.delivery == "gateway" else self.run_message(entry, raw, pattern)
            self._spawn(job, self.message_tasks)
            sent += 1
        return sent

    async def ticker(self) -> None:
        """Keep every bot's clock moving even when no message arrives, and
        restart a bot that exited on its own (a crash, or a signal from
        outside the soak): the run must not go on quietly with fewer bots
        and fewer process faults than it says."""
        while True:
            await asyncio.sleep(0.5)
            now = self.clock.now()
            for name in list(self.instances):
                inst = self.instances[name]
                if self.ready(name):
                    task = asyncio.get_running_loop().create_task(inst.request("clock", set=now))
                    task.add_done_callback(_quiet)
                elif self.watching and not inst.alive and name not in self.busy:
                    code = inst.process.returncode if inst.process else None
                    self.notes.append(
                        f"instance {name} exited on its own (code {code}) at {self.elapsed():.1f} s; restarted")
                    log.warning("%s", self.notes[-1])
                    self.busy.add(name)
                    asyncio.get_running_loop().create_task(self.restart_instance(name)).add_done_callback(_quiet)

    def _loop_exception(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        # Requests to a process killed meanwhile fail by design; anything else is shown.
        exc = context.get("exception")
        if isinstance(exc, (WorkerError, OSError)):
            self.lost_requests += 1
            return
        loop.default_exception_handler(context)

    # --- the end -------------------------------------------------------------------

    async def _wait_tasks(self, tasks: set[asyncio.Task[None]], timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while tasks and time.monotonic() < deadline:
            await asyncio.wait(set(tasks), timeout=min(1.0, max(0.01, deadline - time.monotonic())))
        return len(tasks)

    async def _wait_replies(self, timeout: float) -> int:
        """Wait for the last messages' replies. A message whose reply is
        stored but was never reported (its instance was killed right after
        sending it) is answered, as Discord would show: its redeliveries are
        rightly not answered, so they stop (the checker counts it as
        ``replies_sent_unreported``)."""
        deadline = time.monotonic() + timeout
        while self.message_tasks and time.monotonic() < deadline:
            await self._wait_tasks(self.message_tasks, min(3.0, max(0.01, deadline - time.monotonic())))
            waiting = [e for e in self.ledger.entries.values() if not e.replies and not e.reply_stored]
            if self.message_tasks and waiting and self.backends is not None:
                marks = ",".join("?" * len(waiting))
                sql = self.backends.sql(f"SELECT reply_to_id FROM messages WHERE reply_to_id IN ({marks})")
                found = await asyncio.get_running_loop().run_in_executor(
                    None, self.backends.query, sql, tuple(e.id for e in waiting)
                )
                for (message_id,) in found:
                    self.ledger.entries[message_id].reply_stored = True
        return len(self.message_tasks)

    async def drain(self, timeout: float) -> dict[str, Any]:
        """Wait until every instance reports both backends up, an empty
        outbox, its recovery work done and every session it opened blind
        joined (the conversations are read next)."""
        deadline = time.monotonic() + timeout
        last: dict[str, Any] = {}
        while time.monotonic() < deadline:
            ok = True
            for name, inst in sorted(self.instances.items()):
                try:
                    reports = await asyncio.wait_for(inst.health(), 10)
                except (WorkerError, asyncio.TimeoutError) as exc:
                    last[name] = repr(exc)
                    ok = False
                    continue
                by = {r["component"]: r for r in reports}
                last[name] = {k: (v["ok"], v["detail"]) for k, v in by.items() if k in ("redis", "database", "outbox")}
                db_metrics = by.get("database", {}).get("metrics") or {}
                last[name]["unsettled"] = (db_metrics.get("recovering"), db_metrics.get("provisional"))
                if not all(by.get(k, {}).get("ok") for k in ("redis", "database", "outbox")):
                    ok = False
                elif db_metrics.get("recovering") or db_metrics.get("provisional"):
                    ok = False
            if ok:
                return {"drained": True, "health": last}
            await asyncio.sleep(0.5)
        return {"drained": False, "health": last}

    def rows(self) -> list[Row]:
        assert self.backends is not None
        raw = self.backends.query("SELECT message_id, session_id, role, content, ts, reply_to_id FROM messages")
        return [Row(r[0], r[1], r[2], r[3], float(r[4]), r[5]) for r in raw]

    def sample(self) -> list[Conversation]:
        """The conversations whose context is read back (all, by default)."""
        spoken = [c for c in self.conversations if c.messages]
        n = self.cfg.sample_conversations
        if n is None or len(spoken) <= n:
            return spoken
        return sorted(random.Random(f"{self.cfg.seed}:sample").sample(spoken, n), key=lambda c: c.index)

    async def views(self, phase: str) -> list[View]:
        """What every instance serves as each sampled conversation's context
        (read-only: the probe message is not stored)."""
        out = []
        stuck: dict[str, str] = {}

        async def one(conv: Conversation, name: str, inst: SoakInstance, probe: dict[str, Any]) -> View:
            if name in stuck:
                return View(conv.index, name, None, None, phase=phase,
                            error=f"instance did not answer earlier: {stuck[name]}")
            for attempt in range(VIEW_TRIES):
                try:
                    answer = await asyncio.wait_for(
                        inst.request("context", message=probe, limit=self.cfg.window, now=self.clock.now()), 30
                    )
                except (WorkerError, asyncio.TimeoutError) as exc:
                    # An instance that cannot serve a context is a mismatch, not a crash of the soak.
                    stuck[name] = f"{type(exc).__name__}: {exc}"[:200]
                    return View(conv.index, name, None, None, error=stuck[name], phase=phase)
                if not answer.get("degraded"):
                    break
                # Read while a backend was routed around (a database call timed
                # out under load): what a user would be told is degraded memory,
                # not a wrong context. Read again once the instance is well.
                self.degraded_views += 1
                if attempt + 1 < VIEW_TRIES:
                    await self.drain(30)
            else:
                return View(conv.index, name, answer["session_id"], None, phase=phase,
                            error=f"served degraded {VIEW_TRIES} times in a row")
            return View(conv.index, name, answer["session_id"], [m["id"] for m in answer["messages"]], phase=phase)

        for conv in self.sample():
            probe = message_to_dict(self._message(conv, "(probe)", self.clock.now()))
            out += await asyncio.gather(*(one(conv, n, i, probe) for n, i in sorted(self.instances.items())))
        return out

    async def read_back(self) -> list[View]:
        """Each conversation's context as the run left it, then rebuilt from
        the database after a FLUSHALL (what a user would get next)."""
        assert self.backends is not None
        views = []
        try:
            views += await self.views("cached")
            await asyncio.get_running_loop().run_in_executor(None, self.backends.flush_redis)
            views += await self.views("rebuilt")
        except Exception as exc:  # noqa: BLE001 - the ledger checks still run
            log.exception("reading the bots' views failed")
            self.notes.append(f"views not read: {type(exc).__name__}: {exc}")
        return views

    def _dump(self, lanes: FaultLanes | None) -> None:
        """The whole ledger and the fault events, as JSON lines in the work
        directory (kept with ``--keep``): what tracing a violation needs."""
        with open(self.workdir / "ledger.jsonl", "w") as fh:
            for event in lanes.events if lanes else []:
                fh.write(json.dumps({"fault": event}) + "\n")
            for entry in self.ledger.entries.values():
                fh.write(json.dumps({"id": entry.id, "conv": entry.conversation, "ts": entry.ts, "sent": entry.sent,
                                     "deliveries": [asdict(d) for d in entry.deliveries],
                                     "replies": [[r.instance, r.degraded, r.at] for r in entry.replies]}) + "\n")

    # --- the whole run -------------------------------------------------------------

    async def _settle(self) -> dict[str, Any]:
        """Every fault restored, every bot running: wait (bounded) for the
        deliveries to return and the outboxes to drain."""
        assert self.backends is not None
        timeout = self.cfg.drain_timeout
        await asyncio.get_running_loop().run_in_executor(None, self.backends.restore_all)
        for name, inst in list(self.instances.items()):
            inst.resume()
            if not inst.alive:
                self.instances[name] = await self._start(name, inst.generation + 1)
        unreplied_tasks = await self._wait_replies(timeout)
        if unreplied_tasks:
            self.notes.append(f"{unreplied_tasks} messages still had deliveries out after {timeout:.0f} s")
        self.abandon = True
        late = await self._wait_tasks(self.delivery_tasks, 30)
        if late:
            self.notes.append(f"{late} deliveries still unanswered 30 s after the end (not counted)")
        drained = await self.drain(timeout)
        if not drained["drained"]:
            self.notes.append(f"outboxes not drained within {timeout:.0f} s: {drained['health']}")
        return drained

    def _plan(self) -> FaultPlan:
        cfg = self.cfg
        expected = cfg.messages / cfg.rate
        if cfg.duration is not None:
            expected = min(expected, cfg.duration)
        ttl_real = 6.0  # claim_ttl (default): claims and leases expire on the backends' clocks, in real seconds
        # A pause outlasts the claims and leases (and the redeliver model's retry_after), whatever the model,
        # so runs under both models meet the same faults.
        hold = max(ttl_real, cfg.retry_after)
        plan = FaultPlan(gaps={}, pause_hold=(hold + 1.0, hold + 3.0))
        for kind in KINDS:
            pace = expected / max(1, cfg.faults_per_kind)
            # Process faults are paced start to start (their holds overlap); the others end to start.
            plan.gaps[kind] = max(0.3, pace if kind in PROCESS_KINDS else pace - plan.mean_hold(kind))
        return plan

    async def _judge(self, events: list[dict[str, Any]], sending_from: float, sending_to: float) -> dict[str, Any]:
        """Read the database and the bots' contexts, and check the ledger."""
        cfg = self.cfg
        rows = await asyncio.get_running_loop().run_in_executor(None, self.rows)
        views = await self.read_back()
        rules = Rules(window=cfg.window, idle_timeout=cfg.idle_timeout, speed=cfg.speed)
        result = check(self.ledger, rows, views, rules, events)
        result["stats"]["both_down_seconds"] = round(sum(e - s for s, e in both_down(events)), 1)
        faulty, overlapped = coverage(faults_from(events), sending_from, sending_to)
        result["stats"]["fault_seconds"] = faulty
        result["stats"]["fault_overlap_seconds"] = overlapped
        return result

    async def run(self) -> SoakResult:
        cfg = self.cfg
        asyncio.get_running_loop().set_exception_handler(self._loop_exception)
        self._make_world()
        self.backends = await asyncio.get_running_loop().run_in_executor(None, RealBackends, self.workdir / "backends")
        if self.keep:
            # What the bots stored, to read a violation's rows afterwards.
            self.backends.keep_database = True
            log.warning("database kept: %s on %s:%s (DROP DATABASE it when done)", self.backends.database.name, PG_HOST, PG_PORT)
        # The young-message rule (A7) is about real seconds of backlog: the
        # bots' clock runs `speed` times faster than real time here.
        memory = {**self.backends.memory_section(), "unarbitrated_max_age": 10.0 * cfg.speed}
        self.sections = {"memory": memory,
                         "sessions": {"window_messages": cfg.window, "idle_timeout": cfg.idle_timeout}, "llm": {}}
        timings: dict[str, float] = {}
        lanes: FaultLanes | None = None
        ticker: asyncio.Task[None] | None = None
        try:
            started = await asyncio.gather(*(self._start(NAMES[i], 1) for i in range(cfg.instances)))
            self.instances = {inst.name: inst for inst in started}
            timings["startup"] = round(self.elapsed(), 2)
            ticker = asyncio.get_running_loop().create_task(self.ticker())
            if cfg.faults:
                lanes = FaultLanes(self, self._plan(), cfg.seed, cfg.kinds)
                lanes.start()
            t_send = time.monotonic()
            self.watching = True
            sent = await self.traffic()
            self.watching = False
            timings["sending"] = round(time.monotonic() - t_send, 2)
            t_end = time.monotonic()
            if lanes is not None:
                await lanes.stop()
            drained = await self._settle()
            timings["settle"] = round(time.monotonic() - t_end, 2)
            result = await self._judge(lanes.events if lanes else [], t_send - self.t0, t_end - self.t0)
            self._dump(lanes)
            result["stats"]["sent"] = sent
            result["stats"]["restarts"] = self.restarts
            result["stats"]["views_read_again_degraded"] = self.degraded_views
            result["stats"]["send_rate"] = round(sent / max(0.001, timings["sending"]), 1)
            result["stats"]["drained"] = drained["drained"]
            timings["total"] = round(self.elapsed(), 2)
            return SoakResult(
                config=asdict(cfg),
                faults=dict(lanes.counts) if lanes else {k: 0 for k in cfg.kinds},
                faults_skipped=dict(lanes.skipped) if lanes else {},
                counts=result["counts"],
                stats=result["stats"],
                examples=result["examples"],
                timings=timings,
                notes=self.notes,
            )
        finally:
            if ticker is not None:
                ticker.cancel()
            if lanes is not None:
                await lanes.stop(10)
            self.abandon = True
            await self._shutdown()

    async def _shutdown(self) -> None:
        if self.backends is not None:
            with contextlib.suppress(Exception):
                await asyncio.get_running_loop().run_in_executor(None, self.backends.restore_all)
        for inst in list(self.instances.values()):
            inst.resume()
        await asyncio.gather(*(self._stop(i) for i in self.instances.values()), return_exceptions=True)
        for task in list(self.message_tasks | self.delivery_tasks):
            task.cancel()
        if self.backends is not None:
            with contextlib.suppress(Exception):
                await asyncio.get_running_loop().run_in_executor(None, self.backends.close)

    async def _stop(self, inst: SoakInstance) -> None:
        try:
            await asyncio.wait_for(inst.stop(), 30)
        except Exception:  # noqa: BLE001
            inst.kill()


def _quiet(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()


def run_soak(config: SoakConfig, keep: bool = False) -> SoakResult:
    """Run one soak in a fresh work directory (removed afterwards unless ``keep``)."""
    workdir = Path(tempfile.mkdtemp(prefix="chaos-"))
    try:
        return asyncio.run(Soak(config, workdir, keep).run())
    finally:
        if keep:
            log.warning("work directory kept: %s", workdir)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
