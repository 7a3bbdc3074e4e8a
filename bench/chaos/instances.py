"""Driving one soak bot process: the harness's :class:`WorkerInstance`
started as :mod:`bench.chaos.worker`, plus pause/resume (SIGSTOP/SIGCONT)."""

from __future__ import annotations

import os
import signal
from typing import Any

from tests.harness.instances import WorkerInstance

WORKER_MODULE = "bench.chaos.worker"


class SoakInstance(WorkerInstance):
    """A bot process; ``generation`` counts restarts of the same name."""

    worker_module = WORKER_MODULE

    def __init__(self, *args: Any, generation: int = 1, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.generation = generation
        self.paused = False

    def worker_env(self) -> dict[str, str]:
        # The process runs the world's clock itself (CLOCK_MONOTONIC is the
        # machine's), so time passes for it while it is paused, as it would
        # for a real bot, instead of standing still until the next request.
        clock = self.clock
        return {"CHAOS_CLOCK": f"{clock.base!r},{clock.t0!r},{clock.speed!r}"}

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.returncode is None

    def pause(self) -> None:
        if self.alive and self.pid:
            os.kill(self.pid, signal.SIGSTOP)
            self.paused = True

    def resume(self) -> None:
        if self.paused and self.alive and self.pid:
            os.kill(self.pid, signal.SIGCONT)
        self.paused = False
