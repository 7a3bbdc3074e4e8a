"""Operations plugin: health and metrics over HTTP, and the admin commands
of the command line that need nothing but the core's hooks.

Hooks only; the logic is in :mod:`plugins.ops.metrics` (what is measured),
:mod:`plugins.ops.http` (the listener) and :mod:`plugins.ops.admin` (the
commands). The pipeline hooks are implemented ``tryfirst`` and answer
nothing: they only note when a message reached each stage. Each bot gets its
own :class:`Ops` as ``bot.ops`` (several bots may share a process).
"""

from __future__ import annotations

import logging
from typing import Any

from prometheus_client import CollectorRegistry

from core.bot import MEMORY_DEGRADED
from core.errors import ConfigError
from core.models import IncomingMessage, MessageRecord, Reply, Session
from core.plugins import hookimpl
from plugins.ops.http import OpsServer
from plugins.ops.metrics import PipelineMetrics, StateCollector
from plugins.ops.settings import OpsSettings

log = logging.getLogger("plugins.ops")

class Ops:
    """One bot's metrics registry, pipeline counters and listener."""

    def __init__(self, bot: Any, settings: OpsSettings) -> None:
        self.settings = settings
        self.registry = CollectorRegistry()
        self.pipeline = PipelineMetrics(self.registry, settings.active_window)
        self.state = StateCollector(bot)
        self.registry.register(self.state)  # type: ignore[arg-type]
        self.server = OpsServer(bot, self.registry, self.state, settings.health_timeout)


def _ops(bot: Any) -> Ops | None:
    ops = getattr(bot, "ops", None)
    return ops if isinstance(ops, Ops) else None


@hookimpl
async def startup(bot: Any) -> None:
    settings = bot.settings.for_plugin("ops", OpsSettings)
    ops = Ops(bot, settings)
    bot.ops = ops
    # An admin command of the command line runs beside the serving bot: it
    # must not take the serving bot's port.
    if settings.listen and not getattr(bot, "admin_command", None):
        host, port = settings.address()
        try:
            await ops.server.start(host, port)
        except RuntimeError as exc:
            raise ConfigError(str(exc)) from None


@hookimpl
async def shutdown(bot: Any) -> None:
    ops = _ops(bot)
    if ops is not None:
        await ops.server.stop()


@hookimpl(tryfirst=True)
def claim_message(message: IncomingMessage, bot: Any) -> None:
    if (ops := _ops(bot)) is not None:
        ops.pipeline.received_message(message.id, message.transport)


@hookimpl(tryfirst=True)
def resolve_session(message: IncomingMessage, bot: Any) -> None:
    if (ops := _ops(bot)) is not None:
        ops.pipeline.reached(message.id, "store")


@hookimpl(tryfirst=True)
def build_context(message: IncomingMessage, bot: Any) -> None:
    if (ops := _ops(bot)) is not None:
        ops.pipeline.reached(message.id, "context")


@hookimpl(tryfirst=True)
def generate_reply(message: IncomingMessage, bot: Any) -> None:
    if (ops := _ops(bot)) is not None:
        ops.pipeline.reached(message.id, "generate")


@hookimpl
def reply_sent(reply: Reply, record: MessageRecord, session: Session, message: IncomingMessage, bot: Any) -> None:
    if (ops := _ops(bot)) is not None:
        ops.pipeline.replied(message.id, message.transport, _degraded(reply), answer=False)
        ops.pipeline.session_active(session.id)


@hookimpl
def message_answered(message: IncomingMessage, reply: Reply, bot: Any) -> None:
    if (ops := _ops(bot)) is not None:
        ops.pipeline.replied(message.id, message.transport, _degraded(reply), answer=True)


def _degraded(reply: Reply) -> bool:
    return MEMORY_DEGRADED in reply.notes


@hookimpl
def register_admin_commands(register: Any) -> None:
    from plugins.ops.admin import COMMANDS

    for command in COMMANDS:
        register(command)
