"""Timing: rounds of repeated calls, summarised as p50/p99 in milliseconds."""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any

AsyncOp = Callable[[int], Awaitable[Any]]


@dataclass(slots=True)
class Result:
    """One measured figure. ``p50``/``p99`` are the medians over rounds of
    each round's own p50/p99, so one noisy round cannot move the figure."""

    p50: float
    p99: float
    unit: str = "ms"
    n: int = 0
    rounds: int = 0
    round_p50s: list[float] = field(default_factory=list)
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def single(cls, value: float, unit: str, note: str = "") -> Result:
        return cls(p50=value, p99=value, unit=unit, n=1, rounds=1, round_p50s=[value], note=note)


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return float("nan")
    rank = max(0, min(len(sorted_values) - 1, math.ceil(q / 100 * len(sorted_values)) - 1))
    return sorted_values[rank]


def summarise(rounds: list[list[float]], unit: str = "ms", note: str = "") -> Result:
    p50s, p99s = [], []
    for samples in rounds:
        ordered = sorted(samples)
        p50s.append(percentile(ordered, 50))
        p99s.append(percentile(ordered, 99))
    return Result(
        p50=statistics.median(p50s),
        p99=statistics.median(p99s),
        unit=unit,
        n=sum(len(r) for r in rounds),
        rounds=len(rounds),
        round_p50s=[round(v, 4) for v in p50s],
        note=note,
    )


@dataclass(slots=True)
class Op:
    """An operation to time: ``run(i)`` is timed, ``before(i)`` is not
    (e.g. flushing the cache before a cold read)."""

    run: AsyncOp
    before: AsyncOp | None = None


async def measure(ops: dict[str, Op], *, rounds: int, iterations: int, warmup: int) -> dict[str, Result]:
    """Time every op, interleaving them round by round so that drift of the
    machine hits ours, the floor and the peer alike."""
    samples: dict[str, list[list[float]]] = {name: [] for name in ops}
    counter = 0
    for name, op in ops.items():
        for _ in range(warmup):
            if op.before:
                await op.before(counter)
            await op.run(counter)
            counter += 1
    for _ in range(rounds):
        for name, op in ops.items():
            times = []
            for _ in range(iterations):
                if op.before:
                    await op.before(counter)
                start = time.perf_counter_ns()
                await op.run(counter)
                times.append((time.perf_counter_ns() - start) / 1e6)
                counter += 1
            samples[name].append(times)
    return {name: summarise(rounds_) for name, rounds_ in samples.items()}
