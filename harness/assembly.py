"""Assembling one real bot instance for the harness, the same way in this
process and in a worker process.

The bot is :class:`core.bot.Bot` with plugins discovered through the
``discord_bot.plugins`` entry points (by default ``memory`` and ``sessions``
enabled), plus one test plugin registered directly: :class:`RecordingReplier`,
which answers every message first (``tryfirst``) and records the context the
answer was generated from.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.bot import Bot
from core.clock import ManualClock
from core.ids import snowflake
from core.models import Context, IncomingMessage, MessageRecord, Reply, Role, Sent
from core.plugins import hookimpl
from core.settings import BotSection, EnvSettings, PluginsSection, Settings

DEFAULT_PLUGINS = ["memory", "sessions"]
BOT_NAME = "bot"


def build_settings(
    instance_id: str,
    data_dir: Path,
    sections: dict[str, dict[str, Any]],
    plugins: list[str] | None = None,
) -> Settings:
    """Settings built in code: no ``.env`` file, no ``bot.toml``."""
    env = EnvSettings(_env_file=None, data_dir=data_dir, instance_id=instance_id)  # type: ignore[call-arg]
    return Settings(
        env=env,
        # ``[bot]`` keys a scenario sets (e.g. plugin_state_refresh) go to the core.
        bot=BotSection(name=BOT_NAME, **sections.get("bot", {})),
        plugins=PluginsSection(enabled=list(plugins if plugins is not None else DEFAULT_PLUGINS)),
        sections={k: dict(v) for k, v in sections.items() if k != "bot"},
    )


def reply_text(message: IncomingMessage) -> str:
    """What the test reply plugin answers: ``ok <the message's text>``."""
    return f"ok {message.content}"


@dataclass
class ContextLine:
    """One message of a recorded context."""

    id: str
    role: str
    author_id: str
    author_name: str
    content: str
    timestamp: float
    session_id: str

    @classmethod
    def of(cls, record: MessageRecord) -> ContextLine:
        role = record.role.value if isinstance(record.role, Role) else str(record.role)
        return cls(record.id, role, record.author_id, record.author_name, record.content, record.timestamp, record.session_id)


@dataclass
class RecordedContext:
    """The context one reply was generated from."""

    instance: str
    message_id: str
    session_id: str
    scope_key: str
    messages: list[ContextLine]
    notes: list[str] = field(default_factory=list)
    token_budget: int | None = None
    tokens_used: int | None = None
    # What extend_context added (the recall plugin): kind, content, timestamp, source_id, tokens.
    recalled: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> RecordedContext:
        raw = dict(raw)
        raw["messages"] = [ContextLine(**m) for m in raw["messages"]]
        return cls(**raw)


@dataclass
class SentReply:
    """One reply the transport sent."""

    instance: str
    message_id: str
    channel_id: str
    content: str
    notes: list[str]
    sent_id: str
    timestamp: float

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> SentReply:
        return cls(**raw)


class RecordingReplier:
    """The test reply plugin: answers ``ok <text>`` and records the context."""

    def __init__(self, instance: str) -> None:
        self.instance = instance
        self.contexts: list[RecordedContext] = []
        # Seconds each reply takes, as a slow model would.
        self.delay = 0.0
        # Something another part of a test does while the next reply is
        # being generated (once).
        self.meanwhile: Callable[[], Awaitable[None]] | None = None

    @hookimpl(tryfirst=True)
    async def generate_reply(self, context: Context, message: IncomingMessage) -> Reply:
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.meanwhile is not None:
            meanwhile, self.meanwhile = self.meanwhile, None
            await meanwhile()
        self.contexts.append(
            RecordedContext(
                instance=self.instance,
                message_id=message.id,
                session_id=context.session.id,
                scope_key=context.session.scope_key,
                messages=[ContextLine.of(m) for m in context.messages],
                notes=list(context.notes),
                token_budget=context.token_budget,
                tokens_used=context.tokens_used,
                recalled=[dataclasses.asdict(r) for r in context.recalled],
            )
        )
        return Reply(reply_text(message))


def make_bot(
    instance_id: str,
    data_dir: Path,
    sections: dict[str, dict[str, Any]],
    clock: ManualClock,
    plugins: list[str] | None = None,
    replier_class: Any = None,
) -> tuple[Bot, Any]:
    """A bot on ``sections`` with a recording plugin registered first
    (``replier_class``, default :class:`RecordingReplier`)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    bot = Bot(build_settings(instance_id, data_dir, sections, plugins), clock=clock, instance_id=instance_id)
    replier = (replier_class or RecordingReplier)(instance_id)
    bot.plugins.pm.register(replier, name="harness_replier")
    return bot, replier


async def deliver(bot: Bot, instance: str, message: IncomingMessage) -> list[SentReply]:
    """Hand ``message`` to ``bot`` as the transport would; return what it sent."""
    sent: list[SentReply] = []

    async def send(reply: Reply) -> Sent:
        now = bot.clock.now()
        sent_id = snowflake(now, worker=2)
        sent.append(
            SentReply(instance, message.id, message.channel_id, reply.content, list(reply.notes), sent_id, now)
        )
        return Sent(id=sent_id, timestamp=now)

    # A copy: plugins may change the message they are given (prepare_message),
    # and the other instance must receive the message as Discord sent it.
    await bot.handle(dataclasses.replace(message), send)
    return sent


async def scope_of(bot: Bot, probe: IncomingMessage) -> str:
    scope = await bot.hooks.first("session_scope", message=probe)
    return scope or bot.default_session(probe).scope_key


async def context_view(bot: Bot, probe: IncomingMessage, limit: int) -> tuple[str, str | None, list[ContextLine]]:
    """What the bot would read for ``probe``'s conversation now, read-only:
    ``session_scope`` → ``load_session`` → ``load_messages``.

    Returns ``(scope_key, session_id, messages)``.
    """
    scope = await scope_of(bot, probe)
    session = await bot.storage.load_session(scope)
    if session is None:
        return scope, None, []
    records = await bot.storage.load_messages(session, limit)
    return scope, session.id, [ContextLine.of(r) for r in records]


async def health(bot: Bot) -> list[dict[str, Any]]:
    """The bot's health reports as plain dicts (component, ok, detail, metrics)."""
    return [dataclasses.asdict(r) for r in await bot.health()]
