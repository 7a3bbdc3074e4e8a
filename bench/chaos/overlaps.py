"""When faults overlap: the fault events of a soak as time intervals, which
of them a message lived through, and which of those overlapped each other.

Times are seconds since the soak started (the fault lanes' ``at`` / ``end``).
A fault's effect outlasts its restore a little: an instance sees a backend
back at its next probe (every 0.5 s) and after the recovery work (outbox
replay, cache rebuild), and a restarted process needs a moment to settle.
:data:`AFTERMATH` extends every fault by that much, both when asking whether
a message lived through it and when asking whether two faults overlapped; a
FLUSHALL (no hold) thus counts as a fault of :data:`AFTERMATH` seconds.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

AFTERMATH = 2.0
NO_FAULT = "no fault"


@dataclass(frozen=True)
class Fault:
    kind: str
    start: float
    end: float  # restored (the lanes' ``end``)
    instance: str | None = None

    @property
    def until(self) -> float:
        """When its effects are over (:data:`AFTERMATH` after the restore)."""
        return self.end + AFTERMATH

    def describe(self) -> str:
        where = f" {self.instance}" if self.instance else ""
        return f"{self.kind}{where} {self.start:.1f}-{self.end:.1f}s"


def faults_from(events: list[dict[str, Any]]) -> list[Fault]:
    """The lanes' events as faults (one still under way at the end counts
    from its start to its start: the lanes restore every fault before the
    checker runs, so that only happens to a lane that failed)."""
    out = []
    for e in events:
        start = float(e["at"])
        out.append(Fault(e["kind"], start, float(e.get("end", start)), e.get("instance")))
    return sorted(out, key=lambda f: (f.start, f.kind))


def during(faults: list[Fault], t0: float, t1: float) -> list[Fault]:
    """The faults whose time (with their aftermath) meets ``[t0, t1]``."""
    return [f for f in faults if f.start <= t1 and f.until >= t0]


def overlapping(faults: list[Fault], t0: float, t1: float) -> list[Fault]:
    """Those of ``faults`` that overlapped another one of them at some moment
    within ``[t0, t1]``."""
    out = []
    for i, f in enumerate(faults):
        for j, g in enumerate(faults):
            if i != j and max(f.start, g.start, t0) <= min(f.until, g.until, t1):
                out.append(f)
                break
    return out


def label(faults: list[Fault]) -> str:
    """``"db_cut + redis_restart"``, ``"bot_pause x2"``, or ``"no fault"``."""
    if not faults:
        return NO_FAULT
    kinds = Counter(f.kind for f in faults)
    return " + ".join(k if n == 1 else f"{k} x{n}" for k, n in sorted(kinds.items()))


def coverage(faults: list[Fault], t0: float, t1: float) -> tuple[float, float]:
    """Seconds of ``[t0, t1]`` with at least one fault under way, and with
    two or more (each with its aftermath)."""
    points: list[tuple[float, int]] = []
    for f in faults:
        a, b = max(f.start, t0), min(f.until, t1)
        if a < b:
            points += [(a, 1), (b, -1)]
    points.sort()
    any_s = two_s = 0.0
    level, last = 0, t0
    for t, step in points:
        if level >= 1:
            any_s += t - last
        if level >= 2:
            two_s += t - last
        level, last = level + step, t
    return round(any_s, 1), round(two_s, 1)


def both_down(events: list[dict[str, Any]]) -> list[tuple[float, float]]:
    """The times when Redis and the database were both really unreachable:
    a Redis restart or blackhole overlapping a database cut (no aftermath)."""
    redis = [(e["at"], e["end"]) for e in events if e["kind"] in ("redis_restart", "redis_blackhole") and "end" in e]
    db = [(e["at"], e["end"]) for e in events if e["kind"] == "db_cut" and "end" in e]
    out = []
    for r0, r1 in redis:
        for d0, d1 in db:
            start, end = max(r0, d0), min(r1, d1)
            if start < end:
                out.append((start, end))
    return sorted(out)
