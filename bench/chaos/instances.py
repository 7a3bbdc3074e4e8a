"""Driving one soak bot process: the harness's :class:`WorkerInstance`
started as :mod:`bench.chaos.worker`, plus pause/resume (SIGSTOP/SIGCONT)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from typing import Any

from tests.harness.instances import LEAKY_ENV, LEAKY_PREFIXES, REPO_ROOT, WorkerInstance

WORKER_MODULE = "bench.chaos.worker"


class SoakInstance(WorkerInstance):
    """A bot process; ``generation`` counts restarts of the same name."""

    def __init__(self, *args: Any, generation: int = 1, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.generation = generation
        self.paused = False

    async def start(self) -> None:
        # As WorkerInstance.start, with the chaos worker module.
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if k not in LEAKY_ENV and not k.startswith(LEAKY_PREFIXES)}
        env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child owns it
        try:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", WORKER_MODULE,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
                cwd=str(self.data_dir),
                env=env,
                limit=16 * 1024 * 1024,
            )
        finally:
            log.close()
        self._reader = asyncio.get_running_loop().create_task(self._read())
        await self.request(
            "start",
            instance_id=self.name,
            data_dir=str(self.data_dir),
            sections=self.sections,
            plugins=self.plugins,
            now=self.clock.now(),
        )

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
