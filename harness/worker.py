"""A bot instance in its own OS process, driven by the harness.

Run as ``python -m harness.worker`` (repo root on ``PYTHONPATH``).
Requests and answers are JSON, one per line, on stdin/stdout; each request
carries an ``id`` that its answer repeats, and requests are served
concurrently (a rolling deploy delivers the next message before the last
one is answered). Anything the bot prints or logs goes to stderr.

Commands:

- ``start`` {instance_id, data_dir, sections, plugins, now}
- ``deliver`` {message, now} → {sent: [...], contexts: [...]}
- ``scope`` {message, now} → {scope}
- ``context`` {message, limit, now} → {scope, session_id, messages}
- ``clock`` {set?: t, advance?: s} → {now}
- ``health`` → {reports: [{component, ok, detail, metrics}]}
- ``reply_delay`` {seconds}: the test replier waits this long (a slow model)
- ``ping`` → {pid}
- ``stop``: shut the bot down (hooks run), then exit.

Killing the process (SIGKILL) is the harness's crash.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import traceback
from pathlib import Path
from typing import Any


def _protocol_stream() -> Any:
    # Keep the real stdout for answers; everything else printed goes to stderr.
    out = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return out


class Worker:
    # The recording plugin registered in the bot (None: the harness replier).
    replier_class: Any = None

    def __init__(self, out: Any) -> None:
        from core.clock import ManualClock

        self.out = out
        self.clock = ManualClock()
        self.bot: Any = None
        self.replier: Any = None
        self.instance = "?"
        self.stopping = asyncio.Event()

    def answer(self, payload: dict[str, Any]) -> None:
        self.out.write(json.dumps(payload) + "\n")
        self.out.flush()

    def _now(self, request: dict[str, Any]) -> None:
        # The harness's clock is the world's clock; every request brings it.
        if request.get("now") is not None:
            self.clock.set(max(self.clock.now(), float(request["now"])))

    async def _start(self, request: dict[str, Any]) -> dict[str, Any]:
        from harness.assembly import make_bot

        self.instance = request["instance_id"]
        self.bot, self.replier = make_bot(
            self.instance,
            Path(request["data_dir"]),
            request["sections"],
            self.clock,
            request.get("plugins"),
            replier_class=self.replier_class,
        )
        await self.bot.start()
        failed = [f"{i.name}: {i.reason}" for i in self.bot.plugins.listing() if i.state in ("failed", "unknown")]
        if failed:
            raise RuntimeError("plugins did not start: " + "; ".join(failed))
        return {"pid": os.getpid()}

    async def _context(self, request: dict[str, Any]) -> dict[str, Any]:
        from harness.assembly import context_view
        from harness.world import message_from_dict

        up_before = await self._backends_up()
        scope, session_id, lines = await context_view(
            self.bot, message_from_dict(request["message"]), int(request["limit"])
        )
        # degraded: a backend was routed around while the view was read (the
        # bot would have said memory is degraded in a reply).
        degraded = not (up_before and await self._backends_up())
        return {"scope": scope, "session_id": session_id, "messages": [line.__dict__ for line in lines],
                "degraded": degraded}

    async def _backends_up(self) -> bool:
        from harness.assembly import health

        reports = {r["component"]: r for r in await health(self.bot)}
        return all(reports.get(k, {"ok": True})["ok"] for k in ("redis", "database"))

    async def serve(self, request: dict[str, Any]) -> None:
        rid = request.get("id")
        try:
            result = await self.run(request)
            self.answer({"id": rid, "ok": True, **result})
        except Exception as exc:  # noqa: BLE001 - report, keep serving
            traceback.print_exc()
            self.answer({"id": rid, "ok": False, "error": f"{type(exc).__name__}: {exc}"})

    async def run(self, request: dict[str, Any]) -> dict[str, Any]:
        from harness.assembly import deliver, health, scope_of
        from harness.world import message_from_dict

        cmd = request.get("cmd")
        self._now(request)
        if cmd == "ping":
            return {"pid": os.getpid()}
        if cmd == "start":
            return await self._start(request)
        if cmd == "clock":
            if request.get("set") is not None:
                self.clock.set(float(request["set"]))
            if request.get("advance") is not None:
                self.clock.advance(float(request["advance"]))
            return {"now": self.clock.now()}
        if self.bot is None and cmd != "stop":
            raise RuntimeError(f"{cmd}: the bot is not started")
        if cmd == "deliver":
            before = len(self.replier.contexts)
            message = message_from_dict(request["message"])
            sent = await deliver(self.bot, self.instance, message)
            contexts = [c.to_dict() for c in self.replier.contexts[before:] if c.message_id == message.id]
            return {"sent": [s.to_dict() for s in sent], "contexts": contexts}
        if cmd == "scope":
            return {"scope": await scope_of(self.bot, message_from_dict(request["message"]))}
        if cmd == "context":
            return await self._context(request)
        if cmd == "health":
            return {"reports": await health(self.bot)}
        if cmd == "reply_delay":
            self.replier.delay = float(request["seconds"])
            return {}
        if cmd == "stop":
            if self.bot is not None:
                await self.bot.stop()
            self.stopping.set()
            return {}
        raise ValueError(f"unknown command {cmd!r}")


async def main() -> None:
    out = _protocol_stream()
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    worker = Worker(out)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=16 * 1024 * 1024)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    tasks: set[asyncio.Task[None]] = set()
    while not worker.stopping.is_set():
        line = await reader.readline()
        if not line:
            break
        try:
            request = json.loads(line)
        except ValueError:
            worker.answer({"id": None, "ok": False, "error": f"not JSON: {line[:80]!r}"})
            continue
        task = loop.create_task(worker.serve(request))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        if request.get("cmd") == "stop":
            await task
    if worker.bot is not None and worker.bot.started:
        await worker.bot.stop()


if __name__ == "__main__":
    asyncio.run(main())
