"""Decoding in worker processes: one user's image never stalls the bot.

A thread cannot be stopped and shares the bot's memory, so image work runs
in a few long-lived worker processes instead. Each task gets a wall-clock
timeout; each worker has an address-space cap (``RLIMIT_AS``) above what it
used at start. A worker that runs out of time is killed and replaced; one
that runs out of memory refuses the image (Pillow raises ``MemoryError``).
At most ``workers`` images are decoded at once; more wait their turn.

The refusals name the limit: ``ImageRejected("decoding took longer than
3 s ...")``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import multiprocessing.connection
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from plugins.images.sanitize import ImageRejected

log = logging.getLogger("plugins.images")

MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class DecodeBudget:
    """What one decode may cost: wall-clock seconds and memory above the
    worker's own footprint; ``workers`` decodes run at once."""

    timeout: float = 3.0
    memory_bytes: int = 512 * MIB
    workers: int = 2


def _limit_memory(headroom: int) -> None:
    import resource

    with open("/proc/self/status", encoding="ascii") as status:
        size_kib = next(int(line.split()[1]) for line in status if line.startswith("VmSize:"))
    cap = size_kib * 1024 + headroom
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))


def _serve(conn: multiprocessing.connection.Connection, headroom: int) -> None:
    """The worker's loop: run ``(function, args, kwargs)`` and answer
    ``("ok", result)``, ``("rejected", reason)`` or ``("error", text)``."""
    try:
        _limit_memory(headroom)
    except (OSError, ValueError, StopIteration) as exc:  # not Linux: time is still bounded
        log.warning("image worker runs without a memory cap: %s", exc)
    conn.send(("ready", None))
    while True:
        try:
            function, args, kwargs = conn.recv()
        except EOFError:
            return
        try:
            conn.send(("ok", function(*args, **kwargs)))
        except ImageRejected as exc:
            conn.send(("rejected", str(exc)))
        except MemoryError:
            conn.send(("memory", ""))
        except Exception as exc:  # noqa: BLE001 - reported to the caller, the worker goes on
            conn.send(("error", f"{type(exc).__name__}: {exc}"))


class _Worker:
    def __init__(self, context: Any, headroom: int) -> None:
        self.conn, child = context.Pipe()
        self.process = context.Process(target=_serve, args=(child, headroom), daemon=True, name="image-decoder")
        self.process.start()
        child.close()
        # Blocking: a task's time starts once the worker is up, never with its boot.
        if not self.conn.poll(60) or self.conn.recv()[0] != "ready":
            self.kill()
            raise RuntimeError("an image worker did not start")

    def call(self, function: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], timeout: float) -> Any:
        """Blocking: run in a thread. ``None`` on timeout, else the answer."""
        self.conn.send((function, args, kwargs))
        if not self.conn.poll(timeout):
            return None
        try:
            return self.conn.recv()
        except EOFError:
            return ("died", "")

    def kill(self) -> None:
        with contextlib.suppress(Exception):
            self.process.kill()
            self.process.join(5)
        with contextlib.suppress(Exception):
            self.conn.close()


class DecodePool:
    """Worker processes for image work, bounded in number, time and memory."""

    def __init__(self, budget: DecodeBudget) -> None:
        self.budget = budget
        # forkserver: workers start from a clean process, never a fork of the
        # bot's threads and event loop.
        methods = multiprocessing.get_all_start_methods()
        self._context = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
        self._idle: asyncio.Queue[_Worker] | None = None
        self._workers: list[_Worker] = []

    async def _start(self) -> asyncio.Queue[_Worker]:
        if self._idle is None:
            self._idle = asyncio.Queue()
            for _ in range(max(1, self.budget.workers)):
                self._idle.put_nowait(await asyncio.to_thread(self._new_worker))
        return self._idle

    def _new_worker(self) -> _Worker:
        worker = _Worker(self._context, self.budget.memory_bytes)
        self._workers.append(worker)
        return worker

    def _replace(self, worker: _Worker) -> _Worker:
        worker.kill()
        with contextlib.suppress(ValueError):
            self._workers.remove(worker)
        return self._new_worker()

    async def run(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``function(*args, **kwargs)`` in a worker; raises
        :class:`ImageRejected` when it refuses, runs out of time or memory."""
        idle = await self._start()
        worker = await idle.get()
        budget = self.budget
        try:
            answer = await asyncio.to_thread(worker.call, function, args, kwargs, budget.timeout)
        except BaseException:
            # Cancelled while the worker is busy: it cannot be trusted to be free.
            idle.put_nowait(await asyncio.to_thread(self._replace, worker))
            raise
        if answer is None or answer[0] in ("died", "memory"):
            worker = await asyncio.to_thread(self._replace, worker)
        idle.put_nowait(worker)
        if answer is None:
            raise ImageRejected(f"decoding took longer than {budget.timeout:g} s, the limit per image")
        kind, value = answer
        if kind == "ok":
            return value
        if kind == "rejected":
            raise ImageRejected(value)
        if kind in ("memory", "died"):
            raise ImageRejected(f"decoding needs more than {budget.memory_bytes // MIB} MiB, the limit per image")
        raise RuntimeError(f"image worker failed: {value}")

    def close(self) -> None:
        for worker in self._workers:
            worker.kill()
        self._workers.clear()
        self._idle = None
