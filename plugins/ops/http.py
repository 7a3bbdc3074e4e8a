"""The HTTP listener: ``/healthz``, ``/readyz`` and ``/metrics``.

It runs on the bot's own event loop (aiohttp, already a dependency of the
HTTP providers), so a scrape sees the same objects the pipeline uses and
needs no locking.

- ``/healthz``: the process and its event loop answer. Always 200 while
  they do; a liveness probe that fails means "restart me".
- ``/readyz``: can the bot answer a message now? 200 with each backend
  ``ok`` or ``degraded`` and the reason; 503 only when it cannot answer at
  all (not started, or its transport is not connected). A degraded memory
  still answers (G6), so it is never a reason to take the bot out of
  service.
- ``/metrics``: Prometheus text format (:mod:`plugins.ops.metrics`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from core.models import HealthReport
from plugins.ops.metrics import StateCollector

log = logging.getLogger("plugins.ops")


@dataclass(slots=True)
class Readiness:
    """What ``/readyz`` answers."""

    ready: bool
    transport: str
    transport_ok: bool
    transport_detail: str
    reports: list[HealthReport] = field(default_factory=list)

    @property
    def status(self) -> str:
        if not self.ready:
            return "unavailable"
        return "ok" if all(r.ok for r in self.reports) else "degraded"

    def as_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "transport": {"name": self.transport, "ok": self.transport_ok, "detail": self.transport_detail},
            "components": {
                r.component: {"status": "ok" if r.ok else "degraded", "detail": r.detail} for r in self.reports
            },
        }


def transport_state(bot: Any) -> tuple[str, bool, str]:
    """Which transport this instance serves and whether it is connected.

    Discord is connected once its client is ready (the gateway handshake is
    done); the terminal and the test transport are connected while the bot
    runs.
    """
    name = bot.running_transport or "none"
    if name == "discord":
        client = getattr(bot, "discord_client", None)
        if client is None:
            return name, False, "not started"
        if client.is_closed():
            return name, False, "disconnected"
        return (name, True, "connected") if client.is_ready() else (name, False, "connecting to the gateway")
    return name, bool(bot.started), "running" if bot.started else "not started"


async def readiness(bot: Any, timeout: float) -> Readiness:
    name, transport_ok, detail = transport_state(bot)
    try:
        reports = await asyncio.wait_for(bot.health(), timeout)
    except TimeoutError:
        reports = [HealthReport("health", False, f"health reports took longer than {timeout:g} s")]
    return Readiness(bool(bot.started) and transport_ok, name, transport_ok, detail, reports)


async def outbox_oldest(bot: Any, reports: list[HealthReport]) -> float | None:
    """Age in seconds of the oldest write waiting in the outbox, looked up
    only when the outbox report says something waits, and cheaply: the
    first line of each spool file (they are append-only) in a thread, and
    the id of the stream's first entry (a Redis stream id starts with the
    entry's insertion time in milliseconds). Never the whole outbox: a
    scrape during a long outage must not read it all on the event loop."""
    outbox = next((r for r in reports if r.component == "outbox"), None)
    memory = getattr(bot, "plugin_state", {}).get("memory")
    if outbox is None or outbox.ok or memory is None:
        return None
    stamps: list[float] = []
    spooled = await asyncio.get_running_loop().run_in_executor(None, _first_spooled, memory.spool.files())
    stamps.extend(spooled)
    cache = getattr(memory, "cache", None)
    if cache is not None and memory.redis_ok and memory.outbox.stream_key:
        first = await cache.call(cache.r.xrange(memory.outbox.stream_key, count=1))
        if first:
            entry_id = first[0][0].decode() if isinstance(first[0][0], bytes) else str(first[0][0])
            stamps.append(int(entry_id.split("-")[0]) / 1000)
    return max(0.0, time.time() - min(stamps)) if stamps else None


def _first_spooled(files: list[Any]) -> list[float]:
    stamps = []
    for path in files:
        try:
            with open(path, "rb") as fh:
                first = json.loads(fh.readline() or b"{}")
        except (OSError, ValueError):
            continue
        if isinstance(first.get("at"), (int, float)):
            stamps.append(float(first["at"]))
    return stamps


class OpsServer:
    """The listener; :meth:`start` binds, :meth:`stop` closes."""

    def __init__(self, bot: Any, registry: CollectorRegistry, state: StateCollector, timeout: float) -> None:
        self.bot = bot
        self.registry = registry
        self.state = state
        self.timeout = timeout
        self.runner: web.AppRunner | None = None
        self.port: int | None = None

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        app.router.add_get("/metrics", self.metrics)
        return app

    async def start(self, host: str, port: int) -> None:
        self.runner = web.AppRunner(self.app(), access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, host, port)
        try:
            await site.start()
        except OSError as exc:
            await self.runner.cleanup()
            self.runner = None
            raise RuntimeError(f"ops: cannot listen on {host}:{port}: {exc.strerror or exc}") from None
        server = getattr(site, "_server", None)
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else port
        log.info("ops: serving /healthz, /readyz and /metrics on %s:%s", host, self.port)

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    async def healthz(self, _request: web.Request) -> web.Response:
        return web.json_response({"status": "alive", "instance": self.bot.instance_id})

    async def readyz(self, _request: web.Request) -> web.Response:
        state = await readiness(self.bot, self.timeout)
        body = {"instance": self.bot.instance_id, **state.as_json()}
        return web.json_response(body, status=200 if state.ready else 503)

    async def metrics(self, _request: web.Request) -> web.Response:
        state = await readiness(self.bot, self.timeout)
        try:
            oldest = await asyncio.wait_for(outbox_oldest(self.bot, state.reports), self.timeout)
        except Exception:  # noqa: BLE001 - a timeout or a backend error: a scrape reports what it can
            oldest = None
        self.state.update(state.reports, state.ready, oldest)
        return web.Response(body=generate_latest(self.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})
