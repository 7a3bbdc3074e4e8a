"""How a :class:`~core.models.MessageRecord` is checked and encoded.

Two encodings: a database row (dict of column values) and a compact cache
entry (an orjson array without the session fields, which the cache key
already names). Decoding the cache entry is the hot read path, so it builds
the dataclass positionally.
"""

from __future__ import annotations

from typing import Any

import orjson

from core.errors import Refused
from core.models import Attachment, MessageRecord, Role, Session

_ROLES = {r.value: r for r in Role}
MAX_ID_LENGTH = 128


def check_record(record: MessageRecord, max_content_bytes: int) -> MessageRecord:
    """Validate ``record`` before anything is stored.

    A user's message that cannot be stored faithfully is refused with a clear
    reply (:class:`Refused`) so nothing is half-stored. A bot reply has already
    been sent, so it is stored in a repaired form (NUL and unencodable
    characters replaced, over-long content cut) rather than lost.
    """
    if not record.id or len(record.id) > MAX_ID_LENGTH:
        raise Refused(f"This message has an unusable id (empty or over {MAX_ID_LENGTH} characters); it was not stored.")
    content = record.content
    is_user = record.role is not Role.BOT
    try:
        size = len(content.encode("utf-8"))
    except UnicodeEncodeError:
        if is_user:
            raise Refused("Your message holds characters that are not valid text (broken UTF-8); nothing was stored.") from None
        content = content.encode("utf-8", "replace").decode("utf-8")
        size = len(content.encode("utf-8"))
    if "\x00" in content:
        # PostgreSQL cannot store NUL in text; refuse everywhere, the same on every backend.
        if is_user:
            raise Refused("Your message contains a NUL character, which cannot be stored; nothing was stored.")
        content = content.replace("\x00", "\ufffd")
    if size > max_content_bytes:
        if is_user:
            raise Refused(
                f"Your message is {size:,} bytes; memory keeps at most {max_content_bytes:,} bytes per message. "
                "Nothing was stored: please send it in shorter parts."
            )
        content = content.encode("utf-8")[:max_content_bytes].decode("utf-8", "ignore")
    if content is not record.content:
        record.content = content
    record.author_name = _clean(record.author_name)
    return record


def _clean(text: str | None) -> str:
    if not text:
        return ""
    return text.encode("utf-8", "replace").decode("utf-8").replace("\x00", "\ufffd")


def attachments_json(record: MessageRecord) -> str:
    return orjson.dumps([a.to_dict() for a in record.attachments]).decode()


def to_row(record: MessageRecord, created_at: float) -> tuple[Any, ...]:
    """Column values in :data:`ROW_COLUMNS` order."""
    return (
        record.id,
        record.session_id,
        record.scope_key,
        record.role.value,
        record.author_id,
        record.author_name or "",
        record.content,
        record.timestamp,
        record.guild_id,
        record.channel_id,
        record.reply_to_id,
        attachments_json(record),
        created_at,
    )


ROW_COLUMNS = (
    "message_id",
    "session_id",
    "scope_key",
    "role",
    "author_id",
    "author_name",
    "content",
    "ts",
    "guild_id",
    "channel_id",
    "reply_to_id",
    "attachments",
    "created_at",
)


def from_row(row: tuple[Any, ...]) -> MessageRecord:
    """Inverse of :func:`to_row` (``created_at`` ignored)."""
    raw_attachments = row[11]
    return MessageRecord(
        row[0],
        row[1],
        row[2],
        _ROLES[row[3]],
        row[4],
        row[6],
        float(row[7]),
        row[5] or "",
        row[8],
        row[9],
        row[10],
        [Attachment.from_dict(a) for a in orjson.loads(raw_attachments)] if raw_attachments and raw_attachments != "[]" else [],
    )


def encode_entry(record: MessageRecord) -> bytes:
    """The cache entry: everything but the session fields."""
    return orjson.dumps(
        (
            record.id,
            record.role.value,
            record.author_id,
            record.content,
            record.timestamp,
            record.author_name,
            record.guild_id,
            record.channel_id,
            record.reply_to_id,
            [a.to_dict() for a in record.attachments] if record.attachments else 0,
        )
    )


def decode_entries(entries: list[bytes], session: Session) -> list[MessageRecord]:
    """Decode window entries (one orjson call for all of them)."""
    sid, scope = session.id, session.scope_key
    roles = _ROLES
    rows = orjson.loads(b"[" + b",".join(entries) + b"]")
    return [
        MessageRecord(
            i, sid, scope, roles[role], author, content, ts, name, guild, channel, reply_to,
            [Attachment.from_dict(a) for a in att] if att else [],
        )
        for i, role, author, content, ts, name, guild, channel, reply_to, att in rows
    ]


def entry_sort_key(raw: bytes) -> tuple[float, int, str]:
    item = orjson.loads(raw)
    return (item[4], len(item[0]), item[0])


def is_ordered(records: list[MessageRecord]) -> bool:
    """Strictly increasing by sort key, and no message id twice (the same id
    written twice with different timestamps sorts apart)."""
    prev = None
    seen: set[str] = set()
    for r in records:
        key = (r.timestamp, len(r.id), r.id)
        if (prev is not None and key <= prev) or r.id in seen:
            return False
        seen.add(r.id)
        prev = key
    return True


def session_to_dict(session: Session) -> dict[str, Any]:
    return {
        "id": session.id,
        "scope_key": session.scope_key,
        "opened_at": session.opened_at,
        "last_active_at": session.last_active_at,
        "guild_id": session.guild_id,
        "channel_id": session.channel_id,
        "user_id": session.user_id,
        "closed_at": session.closed_at,
        "state": session.state,
    }


def session_from_dict(raw: dict[str, Any]) -> Session:
    return Session(
        id=raw["id"],
        scope_key=raw["scope_key"],
        opened_at=float(raw["opened_at"]),
        last_active_at=float(raw["last_active_at"]),
        guild_id=raw.get("guild_id"),
        channel_id=raw.get("channel_id"),
        user_id=raw.get("user_id"),
        closed_at=float(raw["closed_at"]) if raw.get("closed_at") is not None else None,
        state=raw.get("state") or {},
    )
