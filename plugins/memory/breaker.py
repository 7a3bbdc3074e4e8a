"""A circuit breaker per backend, closed again only by a health probe.

While a backend is down every call fails at once (no connect timeout per
message); a background task pings it every ``probe_interval`` and, once it
answers, runs the recovery work (cache invalidation, outbox replay) in a
task of its own before letting traffic through again; the pings go on
meanwhile (rule H1 of docs/MEMORY.md).
"""

from __future__ import annotations

import logging
import time

log = logging.getLogger("plugins.memory.breaker")


class BackendDown(Exception):
    """A backend is unreachable, too slow, or its breaker is open."""

    def __init__(self, backend: str, reason: str = "") -> None:
        super().__init__(f"{backend} unavailable{': ' + reason if reason else ''}")
        self.backend = backend
        self.reason = reason


class Breaker:
    """``ok`` is ``True`` while calls may go to the backend."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.ok = True
        self.reason = ""
        self.since = time.monotonic()
        self.failures = 0
        self.recoveries = 0
        # When (monotonic) a health probe last found the backend down: a
        # breaker a slow call opened is confirmed only by a probe after it.
        self.probed_down = -1e18

    def check(self) -> None:
        """Raise :class:`BackendDown` at once when the breaker is open."""
        if not self.ok:
            raise BackendDown(self.name, self.reason or "circuit open")

    def trip(self, reason: str, probed: bool = False) -> None:
        if self.ok:
            log.warning("memory: %s is down (%s); routing around it", self.name, reason)
            self.since = time.monotonic()
        self.ok = False
        self.reason = reason
        self.failures += 1
        if probed:
            self.probed_down = time.monotonic()

    def answered(self) -> None:
        """A health probe found the backend answering: whatever the recovery
        work still to do before the breaker closes, it is not known down."""
        self.probed_down = -1e18

    @property
    def confirmed(self) -> bool:
        """Open, and a probe since it opened found the backend down too."""
        return not self.ok and self.probed_down >= self.since

    def reset(self) -> None:
        if not self.ok:
            log.warning("memory: %s is back after %.1fs", self.name, time.monotonic() - self.since)
            self.since = time.monotonic()
            self.recoveries += 1
        self.ok = True
        self.reason = ""
