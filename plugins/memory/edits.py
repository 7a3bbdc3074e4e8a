"""Edits and deletions of stored messages: the rules are E1-E5 in
docs/MEMORY.md.

- An edit or a deletion is a write like a message (E1): applied to the
  database when it answers, else queued in the outbox behind the writes
  before it, and replayed in that order.
- The database decides (E2, E3): a newer edit replaces the text of the
  user's own message (``edited_at`` compared), an older one changes nothing;
  a deletion leaves a tombstone, so a message deleted before it reached the
  database (still in an outbox, or in the pipeline) is never stored after.
- The bot's reply to a deleted message goes with it (E4).
- Redis holds copies only (D4): the windows of the sessions an edit or a
  deletion changed are dropped and rebuilt whole from the database.
- Every instance receives every edit and deletion (the gateway's delivery)
  and keeps the latest it saw, bounded, in :class:`Corrections` (E5): what
  it stores afterwards and what it reads back (from Redis, the database or
  its own copy) shows them, also while the database is away.
- A member leaving a guild that forgets its leavers (E6) is a deletion
  named by author and guild instead of ids: the ids are found where they
  are (the outbox here, the database when it applies it) and the rest is
  the path above, the same outbox entry included.
"""

from __future__ import annotations

import dataclasses
import logging
import weakref
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from core.models import MessageDeletion, MessageEdit, MessageRecord, ReplyId, Role
from plugins.memory.breaker import BackendDown

if TYPE_CHECKING:
    from plugins.memory.durable import DurableStore
    from plugins.memory.store import MemoryStore

log = logging.getLogger("plugins.memory")

MAX_KEPT = 10_000


class Corrections:
    """The edits and deletions this instance saw (bounded, newest kept)."""

    def __init__(self) -> None:
        self.edits: OrderedDict[str, MessageEdit] = OrderedDict()
        self.deleted: OrderedDict[str, None] = OrderedDict()
        # Members who left a guild that forgets its leavers (E6): what they
        # wrote there up to that time, by (author, guild).
        self.leavers: OrderedDict[tuple[str, str], float] = OrderedDict()

    def note_edit(self, edit: MessageEdit) -> None:
        known = self.edits.get(edit.id)
        if known is None or known.edited_at < edit.edited_at:
            self.edits[edit.id] = edit
        self.edits.move_to_end(edit.id)
        while len(self.edits) > MAX_KEPT:
            self.edits.popitem(last=False)

    def note_deletion(self, ids: list[str]) -> None:
        for message_id in ids:
            self.deleted[message_id] = None
            self.deleted.move_to_end(message_id)
            self.edits.pop(message_id, None)
        while len(self.deleted) > MAX_KEPT:
            self.deleted.popitem(last=False)

    def note_member_left(self, user_id: str, guild_id: str, at: float) -> None:
        key = (user_id, guild_id)
        self.leavers[key] = max(at, self.leavers.get(key, at))
        self.leavers.move_to_end(key)
        while len(self.leavers) > MAX_KEPT:
            self.leavers.popitem(last=False)

    def _left(self, record: MessageRecord) -> bool:
        """Written by a member before they left this guild (E6). Noted as
        deleted, so the reply to it (``reply:<id>``) goes too."""
        if not self.leavers or record.role is not Role.USER or record.guild_id is None:
            return False
        until = self.leavers.get((record.author_id, record.guild_id))
        if until is None or record.timestamp > until:
            return False
        self.note_deletion([record.id])
        return True

    def is_deleted(self, record_id: str) -> bool:
        if not self.deleted:
            return False
        reply = ReplyId.parse(record_id)
        return record_id in self.deleted or (reply is not None and reply.message_id in self.deleted)

    def corrected(self, record: MessageRecord) -> MessageRecord | None:
        """``record`` as the edits and deletions seen say it is now;
        ``None`` when it was deleted."""
        if self.is_deleted(record.id) or self._left(record):
            return None
        edit = self.edits.get(record.id) if self.edits else None
        if edit is None or record.role is not Role.USER or record.author_id != edit.author_id or record.content == edit.content:
            return record
        return dataclasses.replace(record, content=edit.content)

    def overlay(self, records: list[MessageRecord]) -> list[MessageRecord]:
        if not (self.edits or self.deleted or self.leavers):
            return records
        return [c for r in records if (c := self.corrected(r)) is not None]


_CORRECTIONS: weakref.WeakKeyDictionary[Any, Corrections] = weakref.WeakKeyDictionary()


def corrections_of(store: MemoryStore) -> Corrections:
    found = _CORRECTIONS.get(store)
    if found is None:
        found = _CORRECTIONS[store] = Corrections()
    return found


def apply_correction(db: DurableStore, kind: str, data: dict[str, Any]) -> list[str]:
    """Apply a queued edit or deletion (outbox replay, in write order);
    return the sessions it changed."""
    if kind == "edit":
        sid = db.edit_message(data["id"], data["author"], data["content"], float(data["at"]))
        return [sid] if sid else []
    ids = [str(i) for i in data["ids"]]
    if data.get("author") and data.get("guild"):
        return db.delete_member(str(data["author"]), str(data["guild"]), float(data["at"]), ids)
    return db.delete_messages(ids, float(data["at"]))


async def edit(store: MemoryStore, change: MessageEdit) -> None:
    corrections_of(store).note_edit(change)
    if len(change.content.encode("utf-8")) > store.settings.max_content_bytes:
        log.info("memory: edit of %s ignored: longer than max_content_bytes", change.id)
        return
    data = {"id": change.id, "author": change.author_id, "content": change.content, "at": change.edited_at}
    if store.db_ok:
        assert store.db is not None
        try:
            sid = await store.db.run(store.db.edit_message, change.id, change.author_id, change.content, change.edited_at)
        except BackendDown as exc:
            store.db_failed(exc)
        else:
            if sid:
                await store._invalidate({sid}, set())
            return
    await store._queue(store.outbox.entry("edit", data))


async def delete(store: MemoryStore, deletion: MessageDeletion) -> None:
    ids = [str(i) for i in deletion.ids]
    member = _leaver(deletion)
    corrections = corrections_of(store)
    corrections.note_deletion(ids)
    queued = await store._outbox_may_hold_entries()
    if member is not None:
        corrections.note_member_left(*member)
        if queued:
            ids += _queued_by(await store.pending_entries(), *member)
    targets = {*ids, *(str(ReplyId(i)) for i in ids)}
    if queued:
        # The queue first: a replay must not bring a deleted message back.
        await store.outbox.forget(lambda e: e.get("k") == "msg" and str(e["d"][0]) in targets, store.redis_ok)
    data: dict[str, Any] = {"ids": ids, "at": deletion.deleted_at}
    if member is not None:
        data.update(author=member[0], guild=member[1])
    if store.db_ok:
        assert store.db is not None
        try:
            # A leaver's messages may be many: bulk work's timeout.
            sessions = await store.db.run(apply_correction, store.db, "delete", data, slow=member is not None)
        except BackendDown as exc:
            store.db_failed(exc)
        else:
            await store._invalidate(set(sessions), set())
            return
    await store._queue(store.outbox.entry("delete", data))


def _leaver(deletion: MessageDeletion) -> tuple[str, str, float] | None:
    """(author, guild, until) of a member's deletion (E6), else ``None``."""
    if deletion.author_id and deletion.guild_id:
        return deletion.author_id, deletion.guild_id, deletion.deleted_at
    return None


def _queued_by(entries: list[dict[str, Any]], author: str, guild: str, until: float) -> list[str]:
    """The ids of what ``author`` wrote in ``guild`` up to ``until`` that
    still waits in the outbox (records.ROW_COLUMNS order)."""
    return [
        str(d[0])
        for e in entries
        if e.get("k") == "msg" and (d := e.get("d")) and d[3] == Role.USER.value and d[4] == author and d[8] == guild
        and float(d[7]) <= until
    ]
