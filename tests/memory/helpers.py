"""Records and assertions shared by the memory tests."""

from __future__ import annotations

import asyncio
from typing import Any

from core.models import Attachment, MessageRecord, Role, Session

SESSION = Session(id="sess-1", scope_key="g:1:c:2:u:3", opened_at=1.0, last_active_at=1.0, guild_id="1", channel_id="2", user_id="u3")


def rec(n: int, ts: float | None = None, *, session: Session = SESSION, author: str = "u3", role: Role = Role.USER, content: str | None = None, **extra: Any) -> MessageRecord:
    """Message ``n`` of ``session`` (id ``str(1000 + n)``, time ``1000 + n``)."""
    return MessageRecord(
        id=extra.pop("id", str(1000 + n)),
        session_id=session.id,
        scope_key=session.scope_key,
        role=role,
        author_id=author,
        content=content if content is not None else f"message {n}",
        timestamp=float(1000 + n) if ts is None else ts,
        author_name=extra.pop("author_name", author),
        guild_id=session.guild_id,
        channel_id=session.channel_id,
        **extra,
    )


def ids(records: list[MessageRecord]) -> list[str]:
    return [r.id for r in records]


def db_history(backend: Any, session_id: str = SESSION.id) -> list[str]:
    """The session's message ids in conversation order, read with plain SQL."""
    rows = backend.sql("SELECT message_id, ts FROM messages WHERE session_id = ?", (session_id,))
    return [r[0] for r in sorted(rows, key=lambda r: (r[1], len(r[0]), r[0]))]


def with_attachment(record: MessageRecord) -> MessageRecord:
    record.attachments = [Attachment("cat.png", "image/png", 123, sha256="ab" * 32, width=4, height=3, description="a cat")]
    return record


async def warm(store: Any, session: Session = SESSION) -> list[MessageRecord]:
    """Read the session once and wait for its hot window to be rebuilt (the
    read path refills it in the background after a miss)."""
    got = await store.load_messages(session, 10)
    await store.refill(session.id)
    return got


class Killed(BaseException):
    """The process dies at this point (raised where a test kills it)."""


def dies_dropping(store: Any, session_id: str) -> None:
    """``store``'s process dies the moment it would drop ``session_id``'s window."""
    invalidate = store._invalidate

    async def die_there(sessions: set[str], scopes: set[str]) -> None:
        if session_id in sessions:
            raise Killed
        await invalidate(sessions, scopes)

    store._invalidate = die_there


def abandon(store: Any) -> None:
    """Leave a store as a killed process leaves it: nothing of it runs again."""
    for task in (store._probe_task, store.arbiter._renewer):
        if task is not None:
            task.cancel()


def replay_waits(store: Any) -> asyncio.Event:
    """``store``'s next outbox replay waits until the event is set, as one
    waiting on the row locks of an instance paused in its own replay."""
    replay, go_on = store._replay_outbox, asyncio.Event()

    async def waiting() -> int:
        await go_on.wait()
        return int(await replay())

    store._replay_outbox = waiting
    return go_on
