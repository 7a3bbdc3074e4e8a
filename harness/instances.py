"""Bot instances the harness runs: in this process, or in a worker process
(``python -m harness.worker``) that speaks line-delimited JSON.

Both have the same async interface, used on the harness's event loop.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

from core.clock import ManualClock
from core.models import IncomingMessage
from harness.assembly import (
    ContextLine,
    RecordedContext,
    SentReply,
    context_view,
    deliver,
    health,
    make_bot,
    scope_of,
)
from harness.world import message_to_dict

REPO_ROOT = Path(__file__).resolve().parents[1]
# Environment variables that must not leak from a developer's shell into a
# bot the harness builds (the harness passes every setting explicitly).
LEAKY_ENV = ("DATABASE_URL", "REDIS_URL", "BOT_CONFIG", "DISCORD_TOKEN")
LEAKY_PREFIXES = ("MEMORY_", "SESSIONS_")


class Instance:
    name: str
    in_process: bool
    contexts: list[RecordedContext]

    async def start(self) -> None: ...
    async def deliver(self, message: IncomingMessage) -> list[SentReply]: ...
    async def scope_of(self, probe: IncomingMessage) -> str: ...
    async def context_view(self, probe: IncomingMessage, limit: int) -> tuple[str, str | None, list[ContextLine]]: ...
    async def set_clock(self, now: float) -> None: ...
    async def health(self) -> list[dict[str, Any]]: ...
    async def stop(self) -> None: ...


class InProcessInstance(Instance):
    """A :class:`core.bot.Bot` on the harness's loop, sharing its clock."""

    in_process = True

    def __init__(
        self,
        name: str,
        data_dir: Path,
        sections: dict[str, Any],
        clock: ManualClock,
        plugins: list[str],
        extra_plugins: list[Any] | None = None,
    ) -> None:
        self.name = name
        self.bot, self.replier = make_bot(name, data_dir, sections, clock, plugins)
        for i, make in enumerate(extra_plugins or []):
            self.bot.plugins.pm.register(make(), name=f"harness_extra_{i}")
        self.contexts = self.replier.contexts

    async def start(self) -> None:
        await self.bot.start()
        failed = [i for i in self.bot.plugins.listing() if i.state in ("failed", "unknown")]
        if failed:
            details = "; ".join(f"{i.name}: {i.reason}" for i in failed)
            raise RuntimeError(f"instance {self.name}: plugins did not start: {details}")

    async def deliver(self, message: IncomingMessage) -> list[SentReply]:
        return await deliver(self.bot, self.name, message)

    async def scope_of(self, probe: IncomingMessage) -> str:
        return await scope_of(self.bot, probe)

    async def context_view(self, probe: IncomingMessage, limit: int) -> tuple[str, str | None, list[ContextLine]]:
        return await context_view(self.bot, probe, limit)

    async def set_clock(self, now: float) -> None:
        # Shares the harness's clock object: nothing to do.
        return None

    async def health(self) -> list[dict[str, Any]]:
        return await health(self.bot)

    async def stop(self) -> None:
        await self.bot.stop()


class WorkerError(RuntimeError):
    pass


class WorkerInstance(Instance):
    """A bot in its own OS process; the harness drives it over stdin/stdout."""

    in_process = False
    # The module run as the bot process; the chaos soak runs its own.
    worker_module = "harness.worker"

    def __init__(self, name: str, data_dir: Path, sections: dict[str, Any], clock: ManualClock, plugins: list[str]) -> None:
        self.name = name
        self.data_dir = data_dir
        self.sections = sections
        self.clock = clock
        self.plugins = plugins
        self.contexts: list[RecordedContext] = []
        self.process: asyncio.subprocess.Process | None = None
        self.log_path = data_dir / "worker.log"
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._next = 0
        self._reader: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def worker_env(self) -> dict[str, str]:
        """Extra environment for the bot process (the chaos soak's clock)."""
        return {}

    async def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if k not in LEAKY_ENV and not k.startswith(LEAKY_PREFIXES)}
        env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        env.update(self.worker_env())
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child owns it
        try:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", self.worker_module,
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

    def _event(self, line: dict[str, Any]) -> bool:
        """A line the worker sent on its own (not an answer); ``True`` when
        handled. Subclasses that expect such lines override it."""
        return False

    async def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        while True:
            line = await self.process.stdout.readline()
            if not line:
                break
            try:
                answer = json.loads(line)
            except ValueError:
                continue
            if self._event(answer):
                continue
            future = self._pending.pop(answer.get("id", -1), None)
            if future is not None and not future.done():
                future.set_result(answer)
        error = WorkerError(f"worker {self.name} exited (code {await self._returncode()}); log: {self.log_tail()}")
        for future in self._pending.values():
            if not future.done():
                future.set_exception(error)
        self._pending.clear()

    async def _returncode(self) -> int | None:
        if self.process is None:
            return None
        try:
            return await asyncio.wait_for(self.process.wait(), 2)
        except asyncio.TimeoutError:
            return None

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    async def request(self, cmd: str, **payload: Any) -> dict[str, Any]:
        if self.process is None or self.process.stdin is None or self.process.returncode is not None:
            raise WorkerError(f"worker {self.name} is not running")
        self._next += 1
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[self._next] = future
        self.process.stdin.write(json.dumps({"id": self._next, "cmd": cmd, **payload}).encode() + b"\n")
        await self.process.stdin.drain()
        answer = await future
        if not answer.get("ok"):
            raise WorkerError(f"worker {self.name}: {cmd} failed: {answer.get('error')}")
        return answer

    async def deliver(self, message: IncomingMessage) -> list[SentReply]:
        answer = await self.request("deliver", message=message_to_dict(message), now=self.clock.now())
        self.contexts.extend(RecordedContext.from_dict(c) for c in answer.get("contexts", []))
        return [SentReply.from_dict(s) for s in answer.get("sent", [])]

    async def scope_of(self, probe: IncomingMessage) -> str:
        return str((await self.request("scope", message=message_to_dict(probe), now=self.clock.now()))["scope"])

    async def context_view(self, probe: IncomingMessage, limit: int) -> tuple[str, str | None, list[ContextLine]]:
        answer = await self.request("context", message=message_to_dict(probe), limit=limit, now=self.clock.now())
        return answer["scope"], answer["session_id"], [ContextLine(**m) for m in answer["messages"]]

    async def set_clock(self, now: float) -> None:
        await self.request("clock", set=now)

    async def health(self) -> list[dict[str, Any]]:
        return list((await self.request("health"))["reports"])

    async def worker_now(self) -> float:
        return float((await self.request("clock"))["now"])

    async def stop(self) -> None:
        if self.process is None or self.process.returncode is not None:
            return
        try:
            await asyncio.wait_for(self.request("stop"), 15)
        except (WorkerError, asyncio.TimeoutError):
            pass
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            await asyncio.wait_for(self.process.wait(), 10)
        except asyncio.TimeoutError:
            self.kill()
            await self.process.wait()

    async def set_reply_delay(self, seconds: float) -> None:
        await self.request("reply_delay", seconds=seconds)

    def pause(self) -> None:
        """SIGSTOP: the process holds what it holds and does nothing (a long
        GC pause, a VM stalled) until :meth:`resume`."""
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL: no shutdown hooks, nothing flushed."""
        if self.process is not None and self.process.returncode is None:
            self.process.kill()

    async def wait_dead(self) -> int | None:
        if self.process is None:
            return None
        return await asyncio.wait_for(self.process.wait(), 10)
