"""The ``[limits]`` section: rates, attachment limits and where counters live.

::

    [limits]
    user_messages = "20/1m"      # per user, all channels
    channel_messages = "60/1m"   # per channel, all users
    user_images = "5/10m"        # messages with images + image commands
    channel_images = "20/10m"
    user_commands = "10/1m"
    channel_commands = "30/1m"
    user_noise = "10/1m"         # unknown commands, refused input: answered, then quiet
    max_attachments = 4
    max_attachment_bytes = 10485760
    when_redis_down = "local"    # local | open | closed

A rate is ``"COUNT/PERIOD"`` with the period in seconds or with a unit
(``30s``, ``1m``, ``2h``, ``1d``, ``minute``...); ``"off"`` switches a rule
off. ``redis_url`` comes from ``LIMITS_REDIS_URL`` or ``REDIS_URL``; without
one the counters are in-process (one instance only).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from core.settings import PluginSettings

_UNITS = {
    "": 1.0,
    "s": 1.0,
    "sec": 1.0,
    "second": 1.0,
    "m": 60.0,
    "min": 60.0,
    "minute": 60.0,
    "h": 3600.0,
    "hour": 3600.0,
    "d": 86400.0,
    "day": 86400.0,
}
_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d+(?:\.\d+)?)?\s*([a-z]*?)s?\s*$", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Rate:
    """At most ``count`` events per ``seconds`` (a sliding window)."""

    count: int
    seconds: float

    def describe(self) -> str:
        return f"{self.count} per {describe_period(self.seconds)}"


def describe_period(seconds: float) -> str:
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            n = int(seconds // size)
            return unit if n == 1 else f"{n} {unit}s"
    if seconds == 1:
        return "second"
    return f"{int(seconds)} seconds" if float(seconds).is_integer() else f"{seconds:g} seconds"


def parse_rate(value: Any) -> Rate | None:
    """``"20/1m"`` → ``Rate(20, 60.0)``; ``"off"``/``""``/``None`` → ``None``.

    Raises ``ValueError`` with the accepted forms when ``value`` is malformed.
    """
    if value is None or isinstance(value, Rate):
        return value
    if not isinstance(value, str):
        # pydantic turns ValueError (not TypeError) into a clear validation error.
        raise ValueError(f"a rate is a string like '20/1m', got {type(value).__name__}")  # noqa: TRY004
    text = value.strip().lower()
    if text in ("", "off", "none", "unlimited"):
        return None
    match = _RATE.match(text)
    if not match:
        raise ValueError(f"rate {value!r} is not COUNT/PERIOD, e.g. '20/1m', '5/30s', '100/1h' or 'off'")
    count, amount, unit = int(match.group(1)), match.group(2), match.group(3)
    if unit not in _UNITS:
        raise ValueError(f"rate {value!r}: unknown unit {unit!r} (use s, m, h or d)")
    seconds = float(amount or 1) * _UNITS[unit]
    if count < 1 or seconds <= 0:
        raise ValueError(f"rate {value!r}: count and period must be positive (use 'off' to switch a rule off)")
    return Rate(count, seconds)


# NoDecode: the environment gives '20/1m', not JSON.
OptionalRate = Annotated[Rate | None, NoDecode]


class LimitsSettings(PluginSettings):
    """Settings of the limits plugin (``[limits]``; env ``LIMITS_*``)."""

    model_config = SettingsConfigDict(env_prefix="LIMITS_", env_file=".env", extra="ignore")

    user_messages: OptionalRate = Field(default_factory=lambda: Rate(20, 60.0))
    channel_messages: OptionalRate = Field(default_factory=lambda: Rate(60, 60.0))
    user_images: OptionalRate = Field(default_factory=lambda: Rate(5, 600.0))
    channel_images: OptionalRate = Field(default_factory=lambda: Rate(20, 600.0))
    user_commands: OptionalRate = Field(default_factory=lambda: Rate(10, 60.0))
    channel_commands: OptionalRate = Field(default_factory=lambda: Rate(30, 60.0))
    # Answers the bot gives without doing anything (unknown commands,
    # permission refusals, empty or too long messages): over this, quiet.
    user_noise: OptionalRate = Field(default_factory=lambda: Rate(10, 60.0))
    # Commands that cost what an image costs (they also count against *_images).
    image_commands: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["imagine"])
    # Data-rights commands: never quieted, never counted as noise (a deletion
    # request must never be dropped); the command rate still applies, with a reply.
    data_rights_commands: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["forget", "export"])
    max_attachments: int = Field(4, ge=0)
    # Discord's upload limit for bots without boosts; the images plugin checks pixels and formats.
    max_attachment_bytes: int = Field(10 * 1024 * 1024, gt=0)
    # After one "slow down" reply, further messages over the same limit are
    # dropped silently until the window frees up: a flood gets one reply, not one per message.
    quiet_after_notice: bool = True
    # Configured bot owners are never rate limited (they need to fix things).
    exempt_owners: bool = True

    # A SecretStr: the URL may hold a password, and only the environment sets it.
    redis_url: SecretStr | None = Field(None, validation_alias=AliasChoices("redis_url", "LIMITS_REDIS_URL", "REDIS_URL"))
    key_prefix: str = "limits:"
    redis_timeout: float = Field(0.25, gt=0)
    # After a Redis failure, counters stay local for this long before Redis is tried again.
    redis_retry_after: float = Field(5.0, ge=0)
    when_redis_down: Literal["local", "open", "closed"] = "local"

    @field_validator(
        "user_messages", "channel_messages", "user_images", "channel_images", "user_commands", "channel_commands",
        "user_noise", mode="before",
    )
    @classmethod
    def _rate(cls, value: Any) -> Rate | None:
        return parse_rate(value)

    @field_validator("image_commands", "data_rights_commands", mode="before")
    @classmethod
    def _names(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [v.strip().lower() for v in value.split(",") if v.strip()]
        return [str(v).lower() for v in value] if isinstance(value, list) else value
