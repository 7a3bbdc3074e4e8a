"""The database side of edits and deletions (docs/MEMORY.md, E2-E4), on
both backends: the newer edit wins, a deletion leaves a tombstone, takes the
bot's reply along, and a replayed insert never brings a deleted message back."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from core.models import MessageRecord, Role
from plugins.memory import records
from plugins.memory.durable import DurableStore
from tests.memory.conftest import Backend, run


@pytest.fixture
def db(backend: Backend) -> Iterator[Sync]:
    store = DurableStore(backend.database_url, timeout=5.0)
    run(store.migrate())
    yield Sync(store)
    run(store.close())


def row(message_id: str, content: str, *, role: Role = Role.USER, author: str = "u1") -> tuple:
    record = MessageRecord(message_id, "s1", "k", role, author if role is Role.USER else "bot", content, 1.0,
                           reply_to_id=message_id[len("reply:"):] if role is Role.BOT else None)
    return records.to_row(record, 0.0)


class Sync:
    """The store's database calls, each run the way the store runs them
    (in its database thread)."""

    def __init__(self, store: DurableStore) -> None:
        self.store = store

    def __getattr__(self, name: str):  # noqa: ANN204
        method = getattr(self.store, name)
        return lambda *args: run(self.store.run(method, *args))


def content(db: Sync, message_id: str) -> list[str]:
    return [r[6] for r in db.messages_by_id([message_id])]


def test_the_newer_edit_wins_whatever_order_they_come_in(db: Sync) -> None:
    db.insert_message(row("1", "v1"))
    assert db.edit_message("1", "u1", "v3", 30.0) == "s1"
    assert db.edit_message("1", "u1", "v2", 20.0) is None
    assert db.edit_message("1", "u1", "v3", 30.0) is None  # the same edit again: idempotent
    assert content(db, "1") == ["v3"]


def test_only_the_author_edits_their_own_message(db: Sync) -> None:
    db.insert_message(row("1", "mine"))
    db.insert_message(row("reply:1", "the bot's", role=Role.BOT))
    assert db.edit_message("1", "someone-else", "theirs", 5.0) is None
    assert db.edit_message("reply:1", "u1", "forged", 5.0) is None
    assert content(db, "1") == ["mine"] and content(db, "reply:1") == ["the bot's"]


def test_a_deletion_takes_the_reply_along_and_is_idempotent(db: Sync) -> None:
    db.insert_message(row("1", "secret"))
    db.insert_message(row("reply:1", "ok secret", role=Role.BOT))
    db.insert_message(row("2", "kept"))
    assert db.delete_messages(["1"], 9.0) == ["s1"]
    assert db.delete_messages(["1"], 9.5) == []
    assert db.messages_by_id(["1", "reply:1"]) == [] and content(db, "2") == ["kept"]


def test_a_replayed_insert_of_a_deleted_message_stays_deleted(db: Sync) -> None:
    db.delete_messages(["7"], 1.0)  # the deletion overtook the message
    assert db.insert_unless_deleted(row("7", "late copy")) is False
    assert db.insert_unless_deleted(row("reply:7", "late reply", role=Role.BOT)) is False
    assert db.insert_unless_deleted(row("8", "other")) is True
    assert db.messages_by_id(["7", "reply:7"]) == [] and content(db, "8") == ["other"]


def test_an_edit_of_a_deleted_message_changes_nothing(db: Sync) -> None:
    db.insert_message(row("3", "x"))
    db.delete_messages(["3"], 1.0)
    assert db.edit_message("3", "u1", "y", 2.0) is None
    assert db.messages_by_id(["3"]) == []
