"""Deciding whether a message or command is within the limits.

Pure logic plus the counters: no pluggy, so it is tested on its own. Every
check returns ``None`` (go ahead) or the text to send the user.

When Redis is configured but fails (timeout, refused, flushed mid-call), the
limiter stops using it for ``redis_retry_after`` seconds and meanwhile does
what ``when_redis_down`` says:

- ``local``: counts in this process (limits hold per instance, so N
  instances allow up to N times the rate);
- ``open``: allows everything (availability first);
- ``closed``: refuses everything that is rate limited (abuse protection first).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from core.models import IncomingMessage
from plugins.limits.config import LimitsSettings, Rate, describe_period
from plugins.limits.counters import Counters, LocalCounters, RedisCounters

log = logging.getLogger("plugins.limits")

LIMITS_UNAVAILABLE = "Rate limits cannot be checked right now, so I am not taking requests. Please try again in a minute."


@dataclass(frozen=True, slots=True)
class Rule:
    """One window to count an event against."""

    key: str
    rate: Rate
    refusal: str  # format string: {limit}, {retry}


def _rules(*specs: tuple[str, Rate | None, str]) -> list[Rule]:
    """The rules whose rate is switched on."""
    return [Rule(key, rate, refusal) for key, rate, refusal in specs if rate is not None]


def _retry_text(seconds: float) -> str:
    seconds = max(1, math.ceil(seconds))
    if seconds < 90:
        return f"{seconds} s"
    return f"{math.ceil(seconds / 60)} min"


class Limiter:
    """Counts messages, images and commands per user and per channel."""

    def __init__(
        self,
        settings: LimitsSettings,
        clock: Any,
        redis_factory: Callable[[], Any] | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.local = LocalCounters()
        self._redis_factory = redis_factory
        self._redis: RedisCounters | None = None
        self._redis_loop: asyncio.AbstractEventLoop | None = None
        self._redis_down_until = 0.0
        # window key -> clock time until which its over-limit messages are
        # dropped without a reply (the user was told once already).
        self._quiet_until: dict[str, float] = {}
        # noise key -> the notice not yet sent: the answer that went over
        # the noise limit was already sent, so the next message carries it.
        self._notice_owed: dict[str, Rule] = {}
        # Ids of messages a rate rule already looked at (the rest of what the
        # core answers is "noise": unknown commands, refusals of bad input).
        self._counted: OrderedDict[str, None] = OrderedDict()
        # What the limits refused, by kind (message, command, notice,
        # dropped): read by the ops plugin's metrics.
        self.refusals: Counter[str] = Counter()
        self.redis_failures = 0
        self.last_redis_error = ""

    # --- what to check -----------------------------------------------------

    def check_attachments(self, message: IncomingMessage) -> str | None:
        """Attachment count and size (no counting involved)."""
        limit = self.settings.max_attachments
        if len(message.attachments) > limit:
            return (
                f"You sent {len(message.attachments)} attachments; the limit is {limit} per message. "
                "Nothing was stored: please send fewer at a time."
            )
        max_bytes = self.settings.max_attachment_bytes
        for attachment in message.attachments:
            size = max(attachment.size or 0, len(attachment.data) if attachment.data is not None else 0)
            if size > max_bytes:
                return (
                    f"{attachment.filename!r} is {_mb(size)}; the limit is {_mb(max_bytes)} per attachment. "
                    "Nothing was stored: please send a smaller file."
                )
        return None

    def message_rules(self, message: IncomingMessage) -> list[Rule]:
        s = self.settings
        user, channel = self._keys(message)
        rules = _rules(
            (f"{user}:msg", s.user_messages, ("You are sending messages too fast (the limit is {limit}). "
             "Try again in {retry}; this message was not stored.")),
            (f"{channel}:msg", s.channel_messages, ("This channel is busy (the bot answers {limit} here). "
             "Try again in {retry}; this message was not stored.")),
        )
        if any(a.is_image for a in message.attachments):
            rules += self._image_rules(user, channel)
        return rules

    def command_rules(self, name: str, message: IncomingMessage) -> list[Rule]:
        s = self.settings
        user, channel = self._keys(message)
        rules = _rules(
            (f"{user}:cmd", s.user_commands, ("You are using commands too fast (the limit is {limit}). "
             "Try again in {retry}.")),
            (f"{channel}:cmd", s.channel_commands, ("Commands are busy in this channel (the limit is {limit}). "
             "Try again in {retry}.")),
        )
        if name.lower() in s.image_commands:
            rules += self._image_rules(user, channel)
        return rules

    def _image_rules(self, user: str, channel: str) -> list[Rule]:
        s = self.settings
        return _rules(
            (f"{user}:img", s.user_images, "You have reached the image limit ({limit}). Try again in {retry}."),
            (f"{channel}:img", s.channel_images, ("This channel has reached its image limit ({limit}). "
             "Try again in {retry}.")),
        )

    @staticmethod
    def _keys(message: IncomingMessage) -> tuple[str, str]:
        return f"{message.transport}:u:{message.author_id}", f"{message.transport}:c:{message.channel_id}"

    def is_quiet(self, message: IncomingMessage, command: str | None = None) -> bool:
        """Whether ``message`` should be dropped without a reply: its user or
        channel was refused and told so, and that window is still full.
        ``command`` names the command the message calls, if any: commands and
        messages are quieted separately (a user told to slow down their
        messages can still ask ``/session``). In-process and cheap (no
        Redis): a flood costs one reply per window per instance, not one
        reply per message."""
        if not self._quiet_until or (command is not None and command.lower() in self.settings.data_rights_commands):
            return False
        now = self.clock.now()
        rules = self.command_rules(command, message) if command is not None else self.message_rules(message)
        rules += self.noise_rules(message)
        return any(self._quiet_until.get(rule.key, 0.0) > now for rule in rules)

    def noise_rules(self, message: IncomingMessage) -> list[Rule]:
        user, _channel = self._keys(message)
        return _rules((f"{user}:noise", self.settings.user_noise, ("Too many requests I cannot act on "
                       "(the limit is {limit}). Try again in {retry}.")))

    def counted(self, message_id: str) -> None:
        """Remember that a rate rule looked at this message."""
        self._counted[message_id] = None
        while len(self._counted) > 10_000:
            self._counted.popitem(last=False)

    async def check_answered(self, message: IncomingMessage, owner_ids: Sequence[str] = ()) -> None:
        """Count an answer the core gave without any rate rule seeing the
        message (unknown command, permission refusal, empty or too long
        input). Over ``user_noise`` the user is quieted like any flood; the
        answer itself was already sent."""
        if message.id in self._counted or self.is_exempt(message, owner_ids):
            return
        rules = self.noise_rules(message)
        if await self.acquire(f"noise:{message.id}", rules) and self.settings.quiet_after_notice:
            self._notice_owed[rules[0].key] = rules[0]

    def owed_notice(self, message: IncomingMessage) -> str | None:
        """The noise notice this user is owed, once, while the quiet lasts."""
        if not self._notice_owed:
            return None
        rule = self._notice_owed.pop(self._keys(message)[0] + ":noise", None)
        if rule is None:
            return None
        left = self._quiet_until.get(rule.key, 0.0) - self.clock.now()
        if left <= 0:
            return None
        self.counted(message.id)  # the notice itself is not more noise
        return rule.refusal.format(limit=rule.rate.describe(), retry=_retry_text(left)) + " Until then I will not answer you."

    def _quiet(self, key: str, until: float) -> None:
        if len(self._quiet_until) > 10_000:
            now = self.clock.now()
            self._quiet_until = {k: t for k, t in self._quiet_until.items() if t > now}
        self._quiet_until[key] = until

    def is_exempt(self, message: IncomingMessage, owner_ids: Sequence[str]) -> bool:
        return self.settings.exempt_owners and (message.is_owner or message.author_id in owner_ids)

    async def check_message(self, message: IncomingMessage, owner_ids: Sequence[str] = ()) -> str | None:
        self.counted(message.id)
        problem = self.check_attachments(message)
        if problem or self.is_exempt(message, owner_ids):
            return problem
        return await self.acquire(message.id, self.message_rules(message))

    async def check_command(self, name: str, message: IncomingMessage, owner_ids: Sequence[str] = ()) -> str | None:
        self.counted(message.id)
        if self.is_exempt(message, owner_ids):
            return None
        return await self.acquire(f"cmd:{message.id}", self.command_rules(name, message))

    # --- counting ------------------------------------------------------------

    async def acquire(self, event_id: str, rules: list[Rule]) -> str | None:
        """Count ``event_id`` against every rule; all or nothing: when one
        rule refuses, the slots taken in the others are given back."""
        if not rules:
            return None
        counters = await self._counters()
        if counters is None:
            if self.settings.when_redis_down == "open":
                return None
            return LIMITS_UNAVAILABLE
        now = self.clock.now()
        taken: list[Rule] = []
        try:
            for rule in rules:
                hit = await counters.hit(rule.key, event_id, now, rule.rate.count, rule.rate.seconds)
                if not hit.allowed:
                    for done in taken:
                        await counters.undo(done.key, event_id)
                    if self.settings.quiet_after_notice:
                        self._quiet(rule.key, now + hit.retry_after)
                    return rule.refusal.format(limit=rule.rate.describe(), retry=_retry_text(hit.retry_after))
                taken.append(rule)
        except Exception as exc:
            if counters is self.local:
                raise
            self._redis_failed(exc)
            return await self.acquire(event_id, rules)
        return None

    async def _counters(self) -> Counters | None:
        """Redis when configured and believed up, else the fallback (``None``
        means: no counters, apply ``open``/``closed``)."""
        if self._redis_factory is None:
            return self.local
        if self.clock.now() < self._redis_down_until:
            return self.local if self.settings.when_redis_down == "local" else None
        return self._redis_for_this_loop()

    def _redis_for_this_loop(self) -> RedisCounters:
        # A redis.asyncio client belongs to the loop it first ran on; tests and
        # tools that run several loops get one client per loop.
        loop = asyncio.get_running_loop()
        if self._redis is None or self._redis_loop is not loop:
            assert self._redis_factory is not None
            self._redis = RedisCounters(self._redis_factory(), self.settings.key_prefix, self.settings.redis_timeout)
            self._redis_loop = loop
        return self._redis

    def _redis_failed(self, exc: BaseException) -> None:
        self.redis_failures += 1
        self.last_redis_error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        if self.clock.now() >= self._redis_down_until:
            log.warning(
                "limits: Redis failed (%s); %s for %.0f s",
                self.last_redis_error,
                {"local": "counting in this process", "open": "allowing everything",
                 "closed": "refusing rate-limited requests"}[self.settings.when_redis_down],
                self.settings.redis_retry_after,
            )
        # At least a tiny pause, so a zero setting cannot retry a dead Redis within one event.
        self._redis_down_until = self.clock.now() + max(self.settings.redis_retry_after, 1e-6)

    @property
    def redis_configured(self) -> bool:
        return self._redis_factory is not None

    def redis_believed_up(self) -> bool:
        return self.redis_configured and self.clock.now() >= self._redis_down_until

    async def ping(self) -> bool:
        """Probe Redis (health): a success ends a believed outage early."""
        if not self.redis_configured:
            return False
        try:
            ok = await self._redis_for_this_loop().ping()
        except Exception as exc:  # noqa: BLE001
            self._redis_failed(exc)
            return False
        if ok:
            self._redis_down_until = 0.0
        return ok

    async def close(self) -> None:
        if self._redis is not None:
            try:
                await self._redis.close()
            except Exception as exc:  # noqa: BLE001 - closing a dead connection may fail; nothing to keep
                log.debug("limits: closing the Redis client failed: %s", exc)
            self._redis = None


def _mb(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MB"


def describe(settings: LimitsSettings) -> str:
    """A one-line summary of the active rates, for health and logs."""
    parts = []
    names = ("user_messages", "channel_messages", "user_images", "channel_images", "user_commands", "channel_commands",
             "user_noise")
    for name in names:
        rate = getattr(settings, name)
        parts.append(f"{name}={rate.count}/{describe_period(rate.seconds)}" if rate else f"{name}=off")
    return ", ".join(parts)
