"""Discord-style snowflake ids for transports that have no platform ids."""

from __future__ import annotations

import itertools
import threading

DISCORD_EPOCH_MS = 1_420_070_400_000

_counter = itertools.count()
_lock = threading.Lock()


def snowflake(timestamp: float, worker: int = 0) -> str:
    """An id that sorts by ``timestamp`` (to the millisecond), unique within
    this process: 42 bits of time, 10 of worker, 12 of sequence."""
    with _lock:
        sequence = next(_counter) & 0xFFF
    ms = int(timestamp * 1000) - DISCORD_EPOCH_MS
    return str((ms << 22) | ((worker & 0x3FF) << 12) | sequence)


def snowflake_time(snowflake_id: str) -> float:
    return ((int(snowflake_id) >> 22) + DISCORD_EPOCH_MS) / 1000
