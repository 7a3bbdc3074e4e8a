"""Sample conversation data and bulk filling of message tables."""

from __future__ import annotations

import time
from typing import Any

from core.models import MessageRecord, Role, Session

CONTENT = (
    "Could you remind me what we decided about the release checklist yesterday? "
    "I think it was the migration step first."
)
BASE_TS = 1_700_000_000.0


def session(session_id: str, scope_key: str | None = None, user: str = "u1") -> Session:
    now = time.time()
    return Session(
        id=session_id, scope_key=scope_key or session_id, opened_at=now, last_active_at=now,
        guild_id="g1", channel_id="c1", user_id=user,
    )


def record(session_id: str, i: int, *, prefix: str = "m", scope_key: str | None = None) -> MessageRecord:
    """Message ``i`` of a session: users and bot alternate, timestamps rise."""
    user = i % 2 == 0
    return MessageRecord(
        id=f"{prefix}:{session_id}:{i}",
        session_id=session_id,
        scope_key=scope_key or session_id,
        role=Role.USER if user else Role.BOT,
        author_id="u1" if user else "bot",
        author_name="alice" if user else "bot",
        content=CONTENT,
        timestamp=BASE_TS + i,
        guild_id="g1",
        channel_id="c1",
    )


def row(rec: MessageRecord) -> tuple[Any, ...]:
    """A record as the contract's ``messages`` columns (see FILL_COLUMNS)."""
    return (
        rec.id, rec.session_id, rec.scope_key, rec.role.value, rec.author_id, rec.author_name, rec.content,
        rec.timestamp, rec.guild_id, rec.channel_id, rec.reply_to_id, "[]", time.time(),
    )


FILL_COLUMNS = (
    "message_id, session_id, scope_key, role, author_id, author_name, content, ts, "
    "guild_id, channel_id, reply_to_id, attachments, created_at"
)

FLOOR_TABLE_DDL = """
CREATE TABLE floor_messages (
    id BIGSERIAL PRIMARY KEY,
    message_id VARCHAR(128) NOT NULL UNIQUE,
    session_id VARCHAR(191) NOT NULL,
    scope_key VARCHAR(191) NOT NULL,
    role VARCHAR(16) NOT NULL,
    author_id VARCHAR(64) NOT NULL,
    author_name VARCHAR(255) NOT NULL,
    content TEXT NOT NULL,
    ts DOUBLE PRECISION NOT NULL,
    guild_id VARCHAR(64),
    channel_id VARCHAR(64),
    reply_to_id VARCHAR(128),
    attachments TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX floor_messages_session_ts ON floor_messages (session_id, ts);
CREATE INDEX floor_messages_author ON floor_messages (author_id);
"""

PER_FILL_SESSION = 100


def fill_rows(cur: Any, table: str, upto: int, *, tag: str) -> int:
    """Grow ``table`` to at least ``upto`` rows with messages of other
    sessions (100 per session), generated server-side: a million rows take
    seconds, not minutes. Returns the row count after."""
    cur.execute(f"SELECT count(*) FROM {table}")
    have = int(cur.fetchone()[0])
    if have < upto:
        cur.execute(
            f"""INSERT INTO {table} ({FILL_COLUMNS})
            SELECT 'fill:{tag}:' || g, 'fill:{tag}:' || (g / {PER_FILL_SESSION}), 'fill:{tag}:' || (g / {PER_FILL_SESSION}),
                   CASE WHEN g %% 2 = 0 THEN 'user' ELSE 'bot' END,
                   CASE WHEN g %% 2 = 0 THEN 'u' || (g / {PER_FILL_SESSION}) ELSE 'bot' END,
                   'someone', %s, {BASE_TS} + g, 'g1', 'c1', NULL, '[]', {BASE_TS}
            FROM generate_series(%s, %s) AS g""",
            (CONTENT, have, upto - 1),
        )
        cur.execute(f"ANALYZE {table}")
    cur.execute(f"SELECT count(*) FROM {table}")
    return int(cur.fetchone()[0])
