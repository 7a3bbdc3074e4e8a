"""Abuse limits: per-user and per-channel rates on messages, images and
commands, plus attachment count and size limits.

Counters live in Redis (``LIMITS_REDIS_URL`` or ``REDIS_URL``) so they hold
across bot instances, with an in-process fallback; see
:mod:`plugins.limits.limiter` for what happens while Redis is down. A user
over a limit gets a clear reply saying which limit and when to retry; the
message is not stored. Settings: :mod:`plugins.limits.config`.
"""

from __future__ import annotations

import logging
from typing import Any

from core.commands import parse as parse_command
from core.errors import Refused
from core.logs import secret_filter, secret_values
from core.models import HealthReport, IncomingMessage, Session
from core.plugins import hookimpl
from plugins.limits.config import LimitsSettings
from plugins.limits.limiter import Limiter, describe

log = logging.getLogger("plugins.limits")

# Abuse protection for everyone: a server's administrators cannot switch it
# off in their server; only the bot's owners can, for the whole bot.
SWITCHED_BY_OWNERS_ONLY = True

# One fakeredis server per name, shared by every bot in this process that
# names it (tests run several instances on the "same Redis").
_FAKE_SERVERS: dict[str, Any] = {}


def redis_factory(url: str, timeout: float) -> Any:
    """A function that builds a redis.asyncio client for ``url``."""
    if url.startswith("fakeredis://"):
        import fakeredis

        name = url[len("fakeredis://"):] or "default"
        server = _FAKE_SERVERS.setdefault(name, fakeredis.FakeServer())
        return lambda: fakeredis.FakeAsyncRedis(server=server)
    if url.split("://", 1)[0] in ("redis+sentinel", "redis+cluster", "rediss+cluster"):
        # The memory's client factory reads these URLs (the memory is an
        # essential plugin: it is always installed). One key per command
        # here, so a Cluster serves the counters too.
        from plugins.memory.redis_client import make_client

        return lambda: make_client(url, timeout)
    import redis.asyncio as aioredis

    return lambda: aioredis.from_url(
        url, socket_timeout=timeout, socket_connect_timeout=timeout, retry_on_timeout=False
    )


def build_limiter(settings: LimitsSettings, clock: Any) -> Limiter:
    factory = None
    if settings.redis_url is not None and settings.redis_url.get_secret_value():
        url = settings.redis_url.get_secret_value()
        # The password inside the URL, not the whole URL: host and port stay readable in logs.
        secret_filter().add_all(v for v in secret_values(settings) if v != url)
        factory = redis_factory(url, settings.redis_timeout)
    return Limiter(settings, clock, factory)


def _limiter(bot: Any) -> Limiter:
    limiter = bot.plugin_state.get("limits")
    if limiter is None:
        # A bot whose startup did not run this plugin (enabled at run time
        # before start) still gets limits.
        limiter = build_limiter(bot.settings.for_plugin("limits", LimitsSettings), bot.clock)
        bot.plugin_state["limits"] = limiter
    return limiter


@hookimpl
def startup(bot: Any) -> None:
    settings = bot.settings.for_plugin("limits", LimitsSettings)
    limiter = bot.plugin_state["limits"] = build_limiter(settings, bot.clock)
    where = "Redis" if limiter.redis_configured else "this process only"
    log.info("limits: %s; counters in %s; when Redis is down: %s", describe(settings), where, settings.when_redis_down)


@hookimpl
async def shutdown(bot: Any) -> None:
    limiter = bot.plugin_state.get("limits")
    if limiter is not None:
        await limiter.close()
        bot.plugin_state.pop("limits", None)


@hookimpl(tryfirst=True)
def claim_message(message: IncomingMessage, bot: Any) -> bool | None:
    # False drops the message without a reply (the core's silent path); None
    # lets the other plugins (memory's cross-instance claim) decide as usual.
    limiter = _limiter(bot)
    if limiter.is_exempt(message, bot.settings.bot.owner_ids):
        return None
    parsed = parse_command(message.content, bot.settings.bot.command_prefix)
    command = parsed[0] if parsed and not message.attachments else None
    if command is not None and command in limiter.settings.data_rights_commands:
        return None
    notice = limiter.owed_notice(message)
    if notice:
        # The one notice of the noise limit, instead of silence.
        limiter.refusals["notice"] += 1
        raise Refused(notice)
    if not limiter.is_quiet(message, command):
        return None
    limiter.refusals["dropped"] += 1
    log.debug("limits: dropped message %s from %s quietly (already told about the limit)", message.id, message.author_id)
    return False


@hookimpl(tryfirst=True)
async def prepare_message(message: IncomingMessage, session: Session, bot: Any) -> None:
    # tryfirst: refuse before other plugins decode images or spend anything.
    limiter = _limiter(bot)
    problem = await limiter.check_message(message, bot.settings.bot.owner_ids)
    if problem:
        limiter.refusals["message"] += 1
        raise Refused(problem)


@hookimpl(tryfirst=True)
async def before_command(command: Any, message: IncomingMessage, bot: Any) -> None:
    limiter = _limiter(bot)
    problem = await limiter.check_command(command.name, message, bot.settings.bot.owner_ids)
    if problem:
        limiter.refusals["command"] += 1
        raise Refused(problem)


@hookimpl
async def message_answered(message: IncomingMessage, bot: Any) -> None:
    await _limiter(bot).check_answered(message, bot.settings.bot.owner_ids)


@hookimpl
async def health(bot: Any) -> HealthReport:
    limiter = _limiter(bot)
    mode = limiter.settings.when_redis_down
    if not limiter.redis_configured:
        return HealthReport("limits", True, "counters in this process only (no REDIS_URL)")
    if await limiter.ping():
        return HealthReport("limits", True, "counters in Redis", {"redis_failures": limiter.redis_failures})
    return HealthReport(
        "limits",
        False,
        f"Redis unreachable ({limiter.last_redis_error}); when_redis_down={mode}",
        {"redis_failures": limiter.redis_failures},
    )
