"""Settings of the sessions plugin: the ``[sessions]`` table, environment
variables ``SESSIONS_*`` overriding it.

::

    [sessions]
    scope = "user_channel"      # or "channel", "thread"; DMs are always per user
    idle_timeout = 1800         # seconds without a message before a session closes; 0 = never
    max_age = 86400             # seconds a session may live at most; absent = no limit
    window_messages = 50        # most messages in a context window, the current one included
    token_budget = 3000         # most tokens in a context window, the system prompt included
    token_counter = "estimate"  # a registered counter name or "module:function"

    [sessions.overrides."guild:123"]
    scope = "channel"
    system_prompt = "You are the help desk of the Example server."

    [sessions.overrides."channel:456"]
    scope = "thread"
    idle_timeout = 600

An override applies to one guild or one channel (a thread counts as a
channel); the most specific wins: thread, then channel, then guild, then the
table's own values. Every key an override leaves out falls back the same way.

Everything is validated when the plugin starts, so ``python -m core check``
reports a malformed scope or override as a :class:`core.errors.ConfigError`
naming the key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_settings import SettingsConfigDict

from core.errors import ConfigError
from core.models import IncomingMessage
from core.settings import PluginSettings

from plugins.sessions.tokens import resolve_counter

Scope = Literal["user_channel", "channel", "thread"]
SCOPES: tuple[str, ...] = ("user_channel", "channel", "thread")

_OVERRIDE_KEY = re.compile(r"^(guild|channel):([^:\s]+)$")


class ScopeOverride(BaseModel):
    """What one guild or channel changes; ``None`` means "as configured above"."""

    model_config = ConfigDict(extra="forbid")

    scope: Scope | None = None
    idle_timeout: float | None = Field(None, ge=0)
    max_age: float | None = Field(None, gt=0)
    window_messages: int | None = Field(None, ge=1)
    token_budget: int | None = Field(None, ge=1)
    system_prompt: str | None = None


class SessionsSettings(PluginSettings):
    """The ``[sessions]`` table; ``SESSIONS_<KEY>`` environment variables win
    (``SESSIONS_OVERRIDES`` as JSON)."""

    model_config = SettingsConfigDict(env_prefix="SESSIONS_", env_file=".env", extra="ignore")

    scope: Scope = "user_channel"
    idle_timeout: float = Field(1800.0, ge=0)
    max_age: float | None = Field(None, gt=0)
    window_messages: int = Field(50, ge=1)
    token_budget: int = Field(3000, ge=1)
    token_counter: str = "estimate"
    history_limit: int = Field(10, ge=1, le=100)
    overrides: dict[str, ScopeOverride] = Field(default_factory=dict)

    @field_validator("overrides")
    @classmethod
    def _keys_name_a_guild_or_channel(cls, value: dict[str, ScopeOverride]) -> dict[str, ScopeOverride]:
        for key in value:
            if not _OVERRIDE_KEY.match(key):
                raise ValueError(f"key {key!r} must look like 'guild:<id>' or 'channel:<id>'")
        return value

    @field_validator("token_counter")
    @classmethod
    def _counter_exists(cls, value: str) -> str:
        resolve_counter(value)  # raises ValueError naming what is wrong
        return value


@dataclass(slots=True, frozen=True)
class Effective:
    """The settings that apply to one message, overrides resolved."""

    scope: str
    idle_timeout: float
    max_age: float | None
    window_messages: int
    token_budget: int
    system_prompt: str | None


def load(settings: Any) -> SessionsSettings:
    """Validate the ``[sessions]`` table of ``settings`` (a
    :class:`core.settings.Settings`); raises :class:`ConfigError` naming the key."""
    try:
        return settings.for_plugin("sessions", SessionsSettings)
    except ConfigError:
        raise
    except ValueError as exc:  # an environment variable that is not valid JSON, say
        raise ConfigError(f"[sessions]: {exc}") from None


def effective(config: SessionsSettings, message: IncomingMessage) -> Effective:
    """The settings for ``message``: thread, channel, then guild overrides."""
    chain: list[ScopeOverride] = []
    if message.guild_id is not None and not message.is_dm:
        for key in (
            f"channel:{message.thread_id}" if message.thread_id else None,
            f"channel:{message.channel_id}",
            f"guild:{message.guild_id}",
        ):
            if key and key in config.overrides:
                chain.append(config.overrides[key])

    def pick(name: str) -> Any:
        for override in chain:
            value = getattr(override, name)
            if value is not None:
                return value
        return getattr(config, name, None)

    return Effective(
        scope=pick("scope"),
        idle_timeout=float(pick("idle_timeout")),
        max_age=pick("max_age"),
        window_messages=int(pick("window_messages")),
        token_budget=int(pick("token_budget")),
        system_prompt=pick("system_prompt"),
    )
