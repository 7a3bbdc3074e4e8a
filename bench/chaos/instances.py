"""Driving one soak bot process: the harness's :class:`WorkerInstance`
started as :mod:`bench.chaos.worker`, plus pause/resume (SIGSTOP/SIGCONT)
and the worker's ``sent`` events (a reply the moment it is sent)."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable
from typing import Any

from harness.instances import WorkerInstance

WORKER_MODULE = "bench.chaos.worker"


class SoakInstance(WorkerInstance):
    """A bot process; ``generation`` counts restarts of the same name.
    ``on_event(name, event)`` receives each event line the worker writes."""

    worker_module = WORKER_MODULE

    def __init__(self, *args: Any, generation: int = 1,
                 on_event: Callable[[str, dict[str, Any]], None] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.generation = generation
        self.paused = False
        self.on_event = on_event

    def worker_env(self) -> dict[str, str]:
        # The process runs the world's clock itself (CLOCK_MONOTONIC is the
        # machine's), so time passes for it while it is paused, as it would
        # for a real bot, instead of standing still until the next request.
        clock = self.clock
        return {"CHAOS_CLOCK": f"{clock.base!r},{clock.t0!r},{clock.speed!r}"}

    def _event(self, line: dict[str, Any]) -> bool:
        # Event lines: a reply is seen when it is sent, even if the process
        # is killed before its delivery returns.
        if "event" not in line:
            return False
        if self.on_event is not None:
            self.on_event(self.name, line)
        return True

    def alive(self) -> bool:
        return self.process is not None and self.process.returncode is None

    def pause(self) -> None:
        if self.alive() and self.pid:
            with contextlib.suppress(ProcessLookupError):  # it died meanwhile
                os.kill(self.pid, signal.SIGSTOP)
                self.paused = True

    def resume(self) -> None:
        if self.paused and self.alive() and self.pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGCONT)
        self.paused = False
