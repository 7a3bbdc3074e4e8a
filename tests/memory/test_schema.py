"""Versioned migrations, run on empty and on populated databases."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import peewee as pw
import pytest

from plugins.memory import schema
from plugins.memory.durable import open_database
from tests.memory.conftest import Backend


STEPS = [number for number, _step in schema.MIGRATIONS]


def _populate_v1(db: pw.Database) -> None:
    m = schema.make_models(db)
    schema.migrate(m, target=1)
    assert schema.current_version(m) == 1
    p = db.param
    for n in range(50):
        db.execute_sql(
            "INSERT INTO messages (message_id, session_id, scope_key, role, author_id, author_name, content, ts, attachments, created_at)"
            f" VALUES ({', '.join([p] * 10)})",
            (str(n), "s", "k", "user", f"u{n % 3}", "", f"text {n}", float(n), "[]", 0.0),
        )
    db.execute_sql(
        f"INSERT INTO sessions (session_id, scope_key, user_id, opened_at, last_active_at, state) VALUES ({', '.join([p] * 6)})",
        ("s", "k", "u0", 1.0, 2.0, '{"x": 1}'),
    )


def _check_latest(db: pw.Database) -> None:
    m = schema.make_models(db)
    assert schema.current_version(m) == schema.SCHEMA_VERSION
    assert m.Message.select().count() == 50
    row = m.SessionRow.get(m.SessionRow.session_id == "s")
    assert row.fence == 0 and row.state == '{"x": 1}'
    assert db.table_exists("claims") and db.table_exists("deleted_messages")
    assert db.table_exists("facts") and db.table_exists("recall_hidden")
    _check_searchable(db)
    names = {i.name for i in db.get_indexes("messages")}
    assert {"messages_message_id", "messages_session_id_ts", "messages_author_id"} <= names
    # the unique index is real: a second row with the same message id is ignored
    m.Message.insert(message_id="1", session_id="s", scope_key="k", role="user", author_id="u", content="dup", ts=1.0, created_at=0.0).on_conflict_ignore().execute()
    assert m.Message.select().where(m.Message.message_id == "1").count() == 1


def _check_searchable(db: pw.Database) -> None:
    """Step 5 indexed the messages stored before it: each engine's own
    full-text search finds them."""
    if isinstance(db, pw.PostgresqlDatabase):
        sql = "SELECT count(*) FROM messages WHERE search @@ to_tsquery('simple', 'text')"
    elif isinstance(db, pw.MySQLDatabase):
        # Searched through the author's rows (no FULLTEXT index; docs/RECALL.md).
        assert "messages_author_id_ts" in {i.name for i in db.get_indexes("messages")}
        return
    else:
        sql = "SELECT count(*) FROM messages_search WHERE messages_search MATCH 'text'"
    assert db.execute_sql(sql).fetchall()[0][0] == 50


@pytest.fixture
def any_db(backend: Backend) -> Iterator[pw.Database]:
    db = open_database(backend.database_url, 5.0)
    db.connect()
    yield db
    db.close()


def test_migrations_upgrade_a_populated_v1_database(any_db: pw.Database) -> None:
    _populate_v1(any_db)
    assert schema.migrate(schema.make_models(any_db)) == STEPS[1:]
    _check_latest(any_db)


def test_migrating_twice_is_a_no_op(any_db: pw.Database) -> None:
    m = schema.make_models(any_db)
    assert schema.migrate(m) == STEPS
    assert schema.migrate(m) == []
    assert schema.current_version(m) == schema.SCHEMA_VERSION


def test_migrations_on_mysql_when_available() -> None:
    """MariaDB on 127.0.0.1:3306 (root, no password) when it runs here."""
    pymysql = pytest.importorskip("pymysql")
    try:
        admin = pymysql.connect(host="127.0.0.1", port=3306, user="root", password="", connect_timeout=2)
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"MariaDB not reachable: {exc}")
    name = f"mem_{uuid.uuid4().hex[:10]}"
    with admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE {name} CHARACTER SET utf8mb4")
    try:
        db = open_database(f"mysql://root@127.0.0.1:3306/{name}", 5.0)
        db.connect()
        try:
            _populate_v1(db)
            assert schema.migrate(schema.make_models(db)) == STEPS[1:]
            _check_latest(db)
        finally:
            db.close()
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE {name}")
        admin.close()
