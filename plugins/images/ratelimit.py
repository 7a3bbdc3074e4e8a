"""A per-user sliding-window rate limit that reads the bot's clock."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable


class RateLimiter:
    """At most ``limit`` events per ``window`` seconds per key."""

    def __init__(self, limit: int, window: float, now: Callable[[], float]) -> None:
        self.limit = limit
        self.window = window
        self._now = now
        self._events: dict[str, deque[float]] = {}

    def try_acquire(self, key: str) -> float:
        """Record an event for ``key`` and return 0, or return how many
        seconds to wait before the next one is allowed (nothing recorded)."""
        now = self._now()
        events = self._events.setdefault(key, deque())
        while events and events[0] <= now - self.window:
            events.popleft()
        if len(events) >= self.limit:
            return max(0.0, events[0] + self.window - now)
        events.append(now)
        return 0.0

    def refund(self, key: str) -> None:
        """Give back the last event (the work failed through no fault of the user)."""
        events = self._events.get(key)
        if events:
            events.pop()
