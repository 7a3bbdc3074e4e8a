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


# --- E6: a member leaving a guild that forgets its leavers ---------------------------


def guild_row(message_id: str, author: str, guild: str | None, ts: float, role: Role = Role.USER) -> tuple:
    record = MessageRecord(message_id, "s-" + (guild or "dm"), "k", role, author if role is Role.USER else "bot",
                           f"{author} said {message_id}", ts, guild_id=guild,
                           reply_to_id=message_id[len("reply:"):] if role is Role.BOT else None)
    return records.to_row(record, 0.0)


def test_a_leaver_loses_what_they_wrote_in_that_guild_before_leaving_and_nothing_else(db: Sync) -> None:
    for r in (
        guild_row("1", "u1", "g1", 10.0), guild_row("reply:1", "bot", "g1", 10.5, Role.BOT),
        guild_row("2", "u1", "g2", 11.0), guild_row("3", "u1", None, 12.0),
        guild_row("4", "u2", "g1", 13.0), guild_row("5", "u1", "g1", 50.0),
    ):
        db.insert_message(r)
    assert db.delete_member("u1", "g1", 20.0, ["queued-7"]) == ["s-g1"]
    left = sorted(r[0] for r in db.messages_by_id(["1", "reply:1", "2", "3", "4", "5"]))
    assert left == ["2", "3", "4", "5"], "only u1's words in g1 before leaving, and the bot's reply, go"
    assert not db.insert_unless_deleted(guild_row("1", "u1", "g1", 10.0)), "tombstoned like a deletion"
    assert not db.insert_unless_deleted(guild_row("queued-7", "u1", "g1", 15.0)), "ids found in the outbox too"
    assert db.delete_member("u1", "g1", 20.0, []) == [], "applying it again changes nothing"


def test_the_corrections_drop_a_leaver_s_words_and_the_replies_to_them() -> None:
    from plugins.memory.edits import Corrections

    def rec(mid: str, author: str, guild: str | None, ts: float, role: Role = Role.USER) -> MessageRecord:
        return MessageRecord(mid, "s", "k", role, author, "x", ts, guild_id=guild,
                             reply_to_id=mid[len("reply:"):] if role is Role.BOT else None)

    seen = Corrections()
    seen.note_member_left("u1", "g1", 20.0)
    window = [rec("1", "u1", "g1", 10.0), rec("reply:1", "bot", "g1", 10.5, Role.BOT), rec("2", "u1", "g2", 11.0),
              rec("3", "u1", None, 12.0), rec("4", "u2", "g1", 13.0), rec("5", "u1", "g1", 30.0)]
    assert [r.id for r in seen.overlay(window)] == ["2", "3", "4", "5"]
    assert seen.corrected(rec("reply:1", "bot", "g1", 10.5, Role.BOT)) is None, "a reply stored later goes too"


def test_a_leaver_s_queued_words_are_found_in_the_outbox() -> None:
    from plugins.memory.edits import _queued_by

    entries = [{"k": "msg", "d": list(guild_row(mid, a, g, ts))} for mid, a, g, ts in
               (("1", "u1", "g1", 10.0), ("2", "u1", "g2", 11.0), ("3", "u2", "g1", 12.0), ("4", "u1", "g1", 30.0))]
    entries.append({"k": "session", "d": {}})
    assert _queued_by(entries, "u1", "g1", 20.0) == ["1"]
