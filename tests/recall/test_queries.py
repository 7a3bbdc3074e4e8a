"""The recall plugin's SQL on each engine (``fast``: SQLite, ``real``:
PostgreSQL): isolation, one fact per key, deleted stays deleted, forget."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from plugins.memory import records
from plugins.memory.durable import DurableStore
from plugins.recall.embeddings import pack
from plugins.recall.facts import Fact
from plugins.recall.queries import RecallQueries, Where, terms
from tests.memory.conftest import Backend, run

from core.models import MessageRecord, Role


@asynccontextmanager
async def durable(backend: Backend) -> AsyncIterator[DurableStore]:
    store = DurableStore(backend.database_url, timeout=5.0)
    try:
        await store.migrate()
        yield store
    finally:
        await store.close()


def message(n: int, author: str, text: str, guild: str | None = "g1", role: Role = Role.USER) -> tuple[Any, ...]:
    record = MessageRecord(
        id=str(1000 + n), session_id=f"s-{author}", scope_key=f"k-{author}", role=role, author_id=author,
        content=text, timestamp=float(n), guild_id=guild, channel_id="c1",
    )
    return records.to_row(record, float(n))


async def store_rows(store: DurableStore, rows: list[tuple[Any, ...]]) -> None:
    await store.run(store.insert_messages, rows)


def found_texts(found: Any) -> list[str]:
    return sorted(h.content for h in found.messages)


def test_terms_drop_short_and_common_words() -> None:
    assert terms("Which colour should I paint my room, the colour?") == ["colour", "paint", "room"]
    assert len(terms(" ".join(f"word{n}" for n in range(20)))) == 8


def test_a_search_finds_only_the_users_own_messages_in_the_same_place(backend: Backend) -> None:
    async def go() -> None:
        async with durable(backend) as store:
            q = RecallQueries(store)
            await store_rows(store, [
                message(1, "alice", "we adopted a kitten"),
                message(2, "bob", "my kitten bites"),
                message(3, "alice", "kitten food is expensive", guild="g2"),
                message(4, "alice", "a kitten in my DM", guild=None),
                message(5, "alice", "the kitten reply", role=Role.BOT),
                message(6, "alice", "nothing about cats"),
            ])
            here = await store.run(q.search, Where("alice", "g1"), ["kitten"], 10, 0, 1.0)
            dm = await store.run(q.search, Where("alice", None), ["kitten"], 10, 0, 1.0)
            everywhere = await store.run(q.search, Where("alice", "g1", everywhere=True), ["kitten"], 10, 0, 1.0)
            bob = await store.run(q.search, Where("bob", "g1"), ["adopted"], 10, 0, 1.0)
        assert found_texts(here) == ["we adopted a kitten"]
        assert found_texts(dm) == ["a kitten in my DM"]
        assert found_texts(everywhere) == ["a kitten in my DM", "kitten food is expensive", "we adopted a kitten"]
        assert found_texts(bob) == []

    run(go())


def test_a_newer_fact_supersedes_and_the_same_one_twice_changes_nothing(backend: Backend) -> None:
    async def go() -> None:
        async with durable(backend) as store:
            q = RecallQueries(store)
            first = await store.run(q.save_facts, "alice", "g:1", [Fact("lives in", "Lisbon")], "m1", 10.0)
            again = await store.run(q.save_facts, "alice", "g:1", [Fact("lives in", "Lisbon")], "m1", 10.0)
            newer = await store.run(q.save_facts, "alice", "g:1", [Fact("lives in", "Porto")], "m2", 20.0)
            older = await store.run(q.save_facts, "alice", "g:1", [Fact("lives in", "Faro")], "m0", 5.0)
            facts = await store.run(q.list_facts, "alice")
        assert (first, again, newer, older) == (1, 0, 1, 0)
        assert [(f.key, f.value, f.source_id, f.timestamp) for f in facts] == [("lives in", "Porto", "m2", 20.0)]

    run(go())


def test_two_instances_saving_the_same_facts_at_once_store_each_once(backend: Backend) -> None:
    async def go() -> None:
        async with durable(backend) as a, durable(backend) as b:
            qa, qb = RecallQueries(a), RecallQueries(b)
            facts = [Fact("name", "Ada"), Fact("favourite colour", "teal")]
            await asyncio.gather(*(
                store.run(q.save_facts, "alice", "g:1", facts, f"m{n % 3}", 10.0 + n % 3)
                for n in range(12)
                for store, q in ((a, qa), (b, qb))
            ))
            rows = await a.run(lambda: a.db.execute_sql("SELECT fact_key, value, source_id FROM facts").fetchall())
        assert sorted(tuple(r) for r in rows) == [("favourite colour", "teal", "m2"), ("name", "Ada", "m2")]

    run(go())


def test_a_deleted_fact_stays_deleted_and_its_messages_are_not_recalled(backend: Backend) -> None:
    async def go() -> None:
        async with durable(backend) as store:
            q = RecallQueries(store)
            await store_rows(store, [
                message(1, "alice", "my favourite colour is teal"),
                message(2, "alice", "My favourite colour is blue. The sky is nice"),
                message(3, "alice", "I painted the kitchen a nice colour"),
            ])
            await store.run(q.save_facts, "alice", "g:g1", [Fact("favourite colour", "blue")], "1002", 2.0)
            deleted = await store.run(q.delete_fact, "alice", "favourite colour", 100.0)
            # Told before the deletion, stored after it (an outbox replay):
            replayed = await store.run(q.save_facts, "alice", "g:g1", [Fact("favourite colour", "teal")], "1005", 5.0)
            after = await store.run(q.search, Where("alice", "g1"), ["colour", "favourite"], 10, 10, 1.0)
            again = await store.run(q.save_facts, "alice", "g:g1", [Fact("favourite colour", "green")], "1009", 200.0)
            facts = await store.run(q.list_facts, "alice")
        assert deleted == (1, 2)
        assert replayed == 0
        assert after.facts == [] and found_texts(after) == ["I painted the kitchen a nice colour"]
        assert again == 1 and [(f.key, f.value) for f in facts] == [("favourite colour", "green")]

    run(go())


def test_forget_deletes_facts_tombstones_and_hidden_sources(backend: Backend) -> None:
    async def go() -> None:
        async with durable(backend) as store:
            q = RecallQueries(store)
            await store_rows(store, [message(1, "alice", "my favourite colour is teal"), message(2, "bob", "teal is nice")])
            await store.run(q.save_facts, "alice", "g:g1", [Fact("favourite colour", "teal"), Fact("name", "Ada")], "1001", 1.0)
            await store.run(q.delete_fact, "alice", "favourite colour", 10.0)
            await store.run(q.save_vector, "1001", "alice", "g1", 1.0, "test-model", pack([1.0, 2.0]))
            exported = await store.run(q.export_user, "alice")
            await store.run(lambda: store.db.execute_sql("DELETE FROM messages WHERE author_id = 'alice'").rowcount)
            forgotten = await store.run(q.forget_user, "alice")
            left = await store.run(lambda: [
                store.db.execute_sql(f"SELECT count(*) FROM {t} WHERE user_id = 'alice'").fetchall()[0][0]
                for t in ("facts", "recall_hidden")
            ])
            bob = await store.run(q.search, Where("bob", "g1"), ["teal"], 10, 0, 1.0)
        assert [f["key"] for f in exported["facts"]] == ["name"] and exported["recall_hidden"] == ["1001"]
        assert [(v["message_id"], v["model"]) for v in exported["message_vectors"]] == [("1001", "test-model")]
        assert forgotten == {"facts": 2, "recall_hidden": 1, "message_vectors": 1}
        assert left == [0, 0]
        assert found_texts(bob) == ["teal is nice"]

    run(go())


# --- MariaDB, when one answers on 127.0.0.1:3306 -----------------------------------------

from tests.memory.test_mysql import mysql_backend  # noqa: E402, F401 - the fixture


def test_recall_on_mariadb(mysql_backend: Backend) -> None:  # noqa: F811
    """The same rules on MariaDB: own messages in the place, one fact per
    key, a deleted fact's messages hidden, forget."""
    test_a_search_finds_only_the_users_own_messages_in_the_same_place(mysql_backend)


def test_facts_on_mariadb(mysql_backend: Backend) -> None:  # noqa: F811
    test_a_newer_fact_supersedes_and_the_same_one_twice_changes_nothing(mysql_backend)


def test_deleted_facts_on_mariadb(mysql_backend: Backend) -> None:  # noqa: F811
    test_a_deleted_fact_stays_deleted_and_its_messages_are_not_recalled(mysql_backend)
