"""After the database fails over: put back what an asynchronous standby lost
(rule R4 of docs/MEMORY.md).

A standby that streams asynchronously may be promoted without the last
transactions the old primary committed: messages the memory had accepted
(G1) would be gone. The memory notices the failover as another server
answering after an outage (its address, port and start time), and each
instance then writes back, idempotently (D2: the first stored version wins,
so nothing newer is overwritten), the messages and sessions of the
conversations it served lately (:class:`~plugins.memory.recent.RecentConversations`,
which holds every message it wrote or read there). What was accepted only
in the outbox is replayed as ever (D3).
"""

from __future__ import annotations

import logging
from typing import Any

from plugins.memory import records
from plugins.memory.durable import DurableStore
from plugins.memory.recent import RecentConversations

log = logging.getLogger("plugins.memory.failover")


async def write_back(db: DurableStore, recent: RecentConversations, now: float) -> tuple[int, int]:
    """Insert every message and session ``recent`` holds that the database
    lacks; ``(messages, sessions)`` inserted."""
    sessions: list[dict[str, Any]] = []
    rows: list[tuple[Any, ...]] = []
    for scope in recent.scopes(len(recent)):
        data = recent.session(scope)
        if data is None or recent.is_provisional(data["id"]):
            continue  # a provisional session is settled by its own rules (S)
        sessions.append(data)
        rows += [records.to_row(r, now) for r in recent.window(data["id"]) or []]

    def insert_all() -> tuple[int, int]:
        with db.db.atomic():
            added = sum(1 for row in rows if db.insert_message(row))
            opened = sum(1 for data in sessions if db.insert_session_if_missing(data))
        return added, opened

    added, opened = await db.run(insert_all, slow=True)
    if added or opened:
        log.warning(
            "memory: the database failed over and lacked %d messages and %d sessions this instance had stored; written back",
            added,
            opened,
        )
    return added, opened
