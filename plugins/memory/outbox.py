"""The durable outbox: writes the database could not take, kept until it can.

Each entry is ``{"k": kind, "d": data, "at": seconds, "n": sequence}`` with
kind ``msg`` (a message row), ``session`` (a session save, with its fence)
or ``state`` (a bot-state value). Entries go both to a local append-only spool
file under ``spool_dir`` (one file per instance, JSON lines: survives a Redis
flush or loss) and to a Redis stream shared by all instances (so any instance
can replay them, and a process that dies leaves them with Redis). Replay applies entries oldest first; message inserts are
idempotent (G3), so an entry replayed twice, or written to both places, is
stored once.
"""

from __future__ import annotations

import asyncio
import fcntl
import itertools
import logging
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson

from plugins.memory.breaker import BackendDown
from plugins.memory.cache import Cache

log = logging.getLogger("plugins.memory.outbox")

Apply = Callable[[list[dict[str, Any]]], Awaitable[None]]


class Spool:
    """Append-only JSON-lines files, one per instance, locked with flock so
    a replaying instance and a writing one never interleave."""

    def __init__(self, folder: Path, instance_id: str) -> None:
        self.folder = folder
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in instance_id) or "instance"
        self.path = folder / f"{safe}.jsonl"

    def append(self, entry: dict[str, Any]) -> None:
        line = orjson.dumps(entry) + b"\n"
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT
        try:
            fd = os.open(self.path, flags, 0o600)
        except FileNotFoundError:
            # The folder is made on first use (a sent reply is journaled on
            # every message: no mkdir before each).
            self.folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, flags, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.write(fd, line)
        finally:
            os.close(fd)

    def files(self) -> list[Path]:
        """Spool files with something in them. Empty ones are left in place:
        unlinking could race a writer that already opened the file."""
        if not self.folder.is_dir():
            return []
        found = []
        for path in sorted(self.folder.glob("*.jsonl")):
            try:
                if path.stat().st_size:
                    found.append(path)
            except FileNotFoundError:
                continue
        return found

    def depth(self) -> int:
        total = 0
        for path in self.files():
            try:
                with open(path, "rb") as fh:
                    total += sum(1 for line in fh if line.strip())
            except OSError:
                pass
        return total

    def read(self, path: Path) -> tuple[list[dict[str, Any]], int]:
        """The entries of ``path`` and how many bytes they span. The lock is
        held only while reading (never while the entries are applied: a
        writer on the event loop must not wait on a replay that needs it)."""
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return [], 0
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            with os.fdopen(os.dup(fd), "rb") as fh:
                data = fh.read()
        finally:
            os.close(fd)
        # Only whole lines: a writer appends a line in one write under the lock.
        end = data.rfind(b"\n") + 1
        entries = []
        for line in data[:end].splitlines():
            if not line.strip():
                continue
            try:
                entries.append(orjson.loads(line))
            except orjson.JSONDecodeError:
                # A line cut by a crash mid-write: the rest is still good.
                log.error("memory: skipping a damaged line in spool %s", path.name)
        return entries, end

    def drop_prefix(self, path: Path, size: int) -> None:
        """Remove the first ``size`` bytes (entries now in the database),
        keeping whatever was appended since they were read."""
        if size <= 0:
            return
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            with os.fdopen(os.dup(fd), "rb") as fh:
                rest = fh.read()[size:]
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            if rest:
                os.write(fd, rest)
        finally:
            os.close(fd)

    def rewrite(self, keep: Callable[[dict[str, Any]], bool]) -> int:
        """Drop the entries ``keep`` rejects from every spool file; return
        how many were dropped."""
        dropped = 0
        for path in self.files():
            try:
                fd = os.open(path, os.O_RDWR)
            except FileNotFoundError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                with os.fdopen(os.dup(fd), "rb") as fh:
                    lines = [line for line in fh.read().splitlines() if line.strip()]
                kept = []
                for line in lines:
                    try:
                        ok = keep(orjson.loads(line))
                    except orjson.JSONDecodeError:
                        ok = True
                    if ok:
                        kept.append(line)
                dropped += len(lines) - len(kept)
                if len(kept) != len(lines):
                    os.ftruncate(fd, 0)
                    os.lseek(fd, 0, os.SEEK_SET)
                    os.write(fd, b"".join(line + b"\n" for line in kept))
            finally:
                os.close(fd)
        return dropped


class SentJournal:
    """Replies sent and not stored yet (rule D5 in docs/MEMORY.md).

    The pipeline stores a reply after sending it, and that store can wait
    on a slow database for a while: a process killed meanwhile lost a reply
    its user saw (the chaos soak found 20 at once). So a reply is written
    here, to a local file, before its store awaits anything; whatever no
    store of this process is running for (a killed process's entries, or a
    store that failed) is handed to the outbox by :meth:`hand_over`, which
    also drops the entries whose store finished.
    """

    def __init__(self, folder: Path, instance_id: str) -> None:
        self.spool = Spool(folder, instance_id)
        self.pending: set[str] = set()  # its store is running
        self.settled: set[str] = set()  # its store finished: accepted

    def note(self, row: list[Any]) -> None:
        self.pending.add(row[0])
        self.spool.append({"k": "msg", "d": row, "at": time.time()})

    def done(self, message_id: str, accepted: bool) -> None:
        self.pending.discard(message_id)
        if accepted:
            self.settled.add(message_id)

    def orphans(self) -> list[dict[str, Any]]:
        """Entries no store here is running for and none finished."""
        found = []
        for path in self.spool.files():
            entries, _size = self.spool.read(path)
            found += [e for e in entries if e["d"][0] not in self.pending and e["d"][0] not in self.settled]
        return found

    def forget(self, message_ids: set[str]) -> None:
        """Drop the entries of ``message_ids`` and the replies to them
        (/forget: nothing of a forgotten user stays on disk)."""
        # d[10] is reply_to_id (records.ROW_COLUMNS).
        self.spool.rewrite(lambda e: e["d"][0] not in message_ids and e["d"][10] not in message_ids)

    def hand_over(self, outbox: Outbox, orphans: list[dict[str, Any]], stored: set[str]) -> int:
        """Move the ``orphans`` (as :meth:`orphans` read them) that the
        database is not known to hold (``stored``) into the outbox's spool,
        and drop them and the entries whose store finished. Synchronous on
        purpose: no store can start or finish between the spool write and
        the rewrite. An orphan that appeared since ``orphans`` was read stays
        for the next hand-over."""
        considered = {e["d"][0] for e in orphans}
        handed = 0
        for entry in orphans:
            if entry["d"][0] not in stored:
                outbox.to_spool(outbox.entry("msg", entry["d"]))
                handed += 1
        finished = self.settled | considered
        self.spool.rewrite(lambda e: e["d"][0] in self.pending or e["d"][0] not in finished)
        self.settled.clear()
        return handed


class Outbox:
    """The stream plus the spool, with replay."""

    def __init__(self, cache: Cache | None, spool: Spool, instance_id: str = "") -> None:
        self.cache = cache
        self.instance_id = instance_id
        self.spool = spool
        self.stream_key = f"{cache.prefix}outbox" if cache else ""
        self.lock_key = f"{cache.prefix}outbox:lock" if cache else ""
        self._seq = itertools.count()
        self._replaying = asyncio.Lock()

    def entry(self, kind: str, data: Any) -> dict[str, Any]:
        return {"k": kind, "d": data, "at": time.time(), "i": self.instance_id, "n": next(self._seq)}

    async def to_stream(self, entry: dict[str, Any], redis_ok: bool) -> None:
        """Add ``entry`` to the Redis stream (raises :class:`BackendDown`)."""
        if self.cache is None or not redis_ok:
            raise BackendDown("redis", "circuit open")
        await self.cache.call(self.cache.r.xadd(self.stream_key, {"e": orjson.dumps(entry)}))

    def to_spool(self, entry: dict[str, Any]) -> None:
        self.spool.append(entry)

    async def stream_depth(self) -> int:
        if self.cache is None:
            return 0
        return int(await self.cache.call(self.cache.r.xlen(self.stream_key)))

    async def replay(self, apply: Apply, redis_ok: bool, batch: int = 200) -> int:
        """Apply every stream and spool entry, oldest first; remove each only
        after ``apply`` succeeded. Raises :class:`BackendDown` if the
        database fails midway (what is left stays queued)."""
        async with self._replaying:
            done = 0
            for path in self.spool.files():
                entries, size = self.spool.read(path)
                if entries:
                    await apply(sorted(entries, key=_order))
                self.spool.drop_prefix(path, size)
                done += len(entries)
            if redis_ok and self.cache is not None:
                done += await self._replay_stream(apply, batch)
            return done

    async def _replay_stream(self, apply: Apply, batch: int) -> int:
        assert self.cache is not None
        r = self.cache.r
        done = 0
        token = f"{os.getpid()}:{time.time()}"
        # One replayer at a time across instances keeps session saves in order.
        if not await self.cache.call(r.set(self.lock_key, token, nx=True, px=30_000)):
            return 0
        try:
            while True:
                items = await self.cache.call(r.xrange(self.stream_key, count=batch))
                if not items:
                    break
                entries = [orjson.loads(fields[b"e"]) for _id, fields in items]
                await apply(entries)
                await self.cache.call(r.xdel(self.stream_key, *[i for i, _ in items]))
                done += len(items)
        finally:
            try:
                if _text(await self.cache.call(r.get(self.lock_key))) == token:
                    await self.cache.call(r.delete(self.lock_key))
            except BackendDown:
                pass
        return done

    async def forget(self, predicate: Callable[[dict[str, Any]], bool], redis_ok: bool) -> int:
        """Remove every queued entry ``predicate`` matches (stream and spool);
        return how many distinct writes were removed."""
        removed: set[tuple[Any, Any]] = set()

        def doomed(entry: dict[str, Any]) -> bool:
            if predicate(entry):
                removed.add((entry.get("i"), entry.get("n")))
                return True
            return False

        await asyncio.get_running_loop().run_in_executor(None, self.spool.rewrite, lambda e: not doomed(e))
        if redis_ok and self.cache is not None:
            r = self.cache.r
            last = "-"
            while True:
                items = await self.cache.call(r.xrange(self.stream_key, min=last, count=500))
                if last != "-":
                    items = items[1:]
                if not items:
                    break
                ids = [i for i, f in items if doomed(orjson.loads(f[b"e"]))]
                if ids:
                    await self.cache.call(r.xdel(self.stream_key, *ids))
                last = items[-1][0]
        return len(removed)


def _order(entry: dict[str, Any]) -> tuple[float, int]:
    return (entry.get("at", 0.0), entry.get("n", 0))


def _text(value: Any) -> str | None:
    return value.decode() if isinstance(value, bytes) else value
