"""Database schema (peewee models) and versioned migrations.

Models are built per database by :func:`make_models`, because several bots
(each with its own database) may run in one process. ``migrate`` brings any
database, empty or populated, to :data:`SCHEMA_VERSION`; each step runs in
a transaction where the backend allows DDL in one (SQLite, PostgreSQL) and
is written to be re-runnable where it does not (MySQL).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import peewee as pw
from playhouse.migrate import SchemaMigrator, migrate as run_migrations

log = logging.getLogger("plugins.memory.schema")

SCHEMA_VERSION = 6


@dataclass
class Models:
    """The model classes bound to one database."""

    db: pw.Database
    Message: Any
    SessionRow: Any
    BotState: Any
    SchemaVersion: Any

    @property
    def all(self) -> list[Any]:
        return [self.Message, self.SessionRow, self.BotState, self.SchemaVersion]


def make_models(db: pw.Database) -> Models:
    class Base(pw.Model):
        class Meta:
            database = db

    class Message(Base):
        id = pw.AutoField()
        message_id = pw.CharField(max_length=128, unique=True)
        session_id = pw.CharField(max_length=191)
        scope_key = pw.CharField(max_length=191)
        role = pw.CharField(max_length=16)
        author_id = pw.CharField(max_length=64)
        author_name = pw.CharField(max_length=255, default="")
        content = pw.TextField()
        ts = pw.DoubleField()
        guild_id = pw.CharField(max_length=64, null=True)
        channel_id = pw.CharField(max_length=64, null=True)
        reply_to_id = pw.CharField(max_length=128, null=True)
        attachments = pw.TextField(default="[]")
        created_at = pw.DoubleField()
        edited_at = pw.DoubleField(null=True)

        class Meta:
            table_name = "messages"
            indexes = ((("session_id", "ts"), False), (("author_id",), False))

    class SessionRow(Base):
        session_id = pw.CharField(max_length=191, primary_key=True)
        scope_key = pw.CharField(max_length=191, index=True)
        user_id = pw.CharField(max_length=64, null=True, index=True)
        guild_id = pw.CharField(max_length=64, null=True)
        channel_id = pw.CharField(max_length=64, null=True)
        opened_at = pw.DoubleField()
        last_active_at = pw.DoubleField()
        closed_at = pw.DoubleField(null=True)
        state = pw.TextField(default="{}")
        fence = pw.BigIntegerField(default=0)

        class Meta:
            table_name = "sessions"

    class BotState(Base):
        key = pw.CharField(max_length=191, primary_key=True)
        value = pw.TextField()

        class Meta:
            table_name = "bot_state"

    class SchemaVersion(Base):
        version = pw.IntegerField()

        class Meta:
            table_name = "schema_version"
            primary_key = False

    return Models(db, Message, SessionRow, BotState, SchemaVersion)


# --- migrations -----------------------------------------------------------------


def _v1(m: Models) -> None:
    """The first released schema: messages (no author index), sessions
    (no fence, no user index), bot_state."""
    db = m.db
    db.execute_sql(
        _ddl(
            db,
            "CREATE TABLE IF NOT EXISTS messages ("
            " id {autopk},"
            " message_id VARCHAR(128) NOT NULL,"
            " session_id VARCHAR(191) NOT NULL,"
            " scope_key VARCHAR(191) NOT NULL,"
            " role VARCHAR(16) NOT NULL,"
            " author_id VARCHAR(64) NOT NULL,"
            " author_name VARCHAR(255) NOT NULL DEFAULT '',"
            " content {text} NOT NULL,"
            " ts {double} NOT NULL,"
            " guild_id VARCHAR(64),"
            " channel_id VARCHAR(64),"
            " reply_to_id VARCHAR(128),"
            " attachments {text} NOT NULL,"
            " created_at {double} NOT NULL"
            "){table_opts}",
        )
    )
    _create_index(db, "messages", "messages_message_id", "message_id", unique=True)
    _create_index(db, "messages", "messages_session_id_ts", "session_id, ts")
    db.execute_sql(
        _ddl(
            db,
            "CREATE TABLE IF NOT EXISTS sessions ("
            " session_id VARCHAR(191) NOT NULL PRIMARY KEY,"
            " scope_key VARCHAR(191) NOT NULL,"
            " user_id VARCHAR(64),"
            " guild_id VARCHAR(64),"
            " channel_id VARCHAR(64),"
            " opened_at {double} NOT NULL,"
            " last_active_at {double} NOT NULL,"
            " closed_at {double},"
            " state {text} NOT NULL"
            "){table_opts}",
        )
    )
    _create_index(db, "sessions", "sessions_scope_key", "scope_key")
    db.execute_sql(
        _ddl(
            db,
            "CREATE TABLE IF NOT EXISTS bot_state ("
            " {key} VARCHAR(191) NOT NULL PRIMARY KEY,"
            " value {text} NOT NULL"
            "){table_opts}",
        )
    )


def _v2(m: Models) -> None:
    """Fencing tokens on sessions; indexes for per-user export/forget."""
    migrator = SchemaMigrator.from_database(m.db)
    columns = {c.name for c in m.db.get_columns("sessions")}
    if "fence" not in columns:
        run_migrations(migrator.add_column("sessions", "fence", pw.BigIntegerField(default=0)))
    _create_index(m.db, "messages", "messages_author_id", "author_id")
    _create_index(m.db, "sessions", "sessions_user_id", "user_id")


def _v3(m: Models) -> None:
    """Claims on incoming messages, for when Redis (which holds them
    normally) is unreachable."""
    m.db.execute_sql(
        _ddl(
            m.db,
            "CREATE TABLE IF NOT EXISTS claims ("
            " message_id VARCHAR(128) NOT NULL PRIMARY KEY,"
            " owner VARCHAR(191) NOT NULL,"
            " token VARCHAR(64) NOT NULL,"
            " expires_at {double} NOT NULL"
            "){table_opts}",
        )
    )
    _create_index(m.db, "claims", "claims_expires_at", "expires_at")


def _v4(m: Models) -> None:
    """A claim's state (claimed, sending, done): the database arbitrates
    every claim now (docs/MEMORY.md, A1-A4), and expiry is on its clock."""
    columns = {c.name for c in m.db.get_columns("claims")}
    if "state" not in columns:
        migrator = SchemaMigrator.from_database(m.db)
        run_migrations(migrator.add_column("claims", "state", pw.CharField(max_length=16, default="claimed")))


def _v5(m: Models) -> None:
    """Recall (plugins/recall, docs/RECALL.md): each engine's way to search
    the messages, the facts users told the bot (``pinned`` ones outlive
    retention), and the messages a deleted fact keeps out of recall; an
    index for retention (plugins/memory/retention.py)."""
    db = m.db
    db.execute_sql(
        _ddl(
            db,
            "CREATE TABLE IF NOT EXISTS facts ("
            " id {autopk},"
            " user_id VARCHAR(64) NOT NULL,"
            " place VARCHAR(80) NOT NULL,"
            " fact_key VARCHAR(100) NOT NULL,"
            " value {text} NOT NULL,"
            " source_id VARCHAR(128),"
            " ts {double} NOT NULL,"
            " pinned INTEGER NOT NULL DEFAULT 0,"
            " deleted INTEGER NOT NULL DEFAULT 0"
            "){table_opts}",
        )
    )
    _create_index(db, "facts", "facts_user_place_key", "user_id, place, fact_key", unique=True)
    db.execute_sql(
        _ddl(
            db,
            "CREATE TABLE IF NOT EXISTS recall_hidden ("
            " message_id VARCHAR(128) NOT NULL PRIMARY KEY,"
            " user_id VARCHAR(64) NOT NULL"
            "){table_opts}",
        )
    )
    _create_index(db, "recall_hidden", "recall_hidden_user_id", "user_id")
    # Optional semantic recall: a message's embedding (float32, normalised)
    # beside it, by the model that made it.
    db.execute_sql(
        _ddl(
            db,
            "CREATE TABLE IF NOT EXISTS message_vectors ("
            " message_id VARCHAR(128) NOT NULL PRIMARY KEY,"
            " user_id VARCHAR(64) NOT NULL,"
            " guild_id VARCHAR(64),"
            " ts {double} NOT NULL,"
            " model VARCHAR(100) NOT NULL,"
            " vector {blob} NOT NULL"
            "){table_opts}",
        )
    )
    _create_index(db, "message_vectors", "message_vectors_user_id_ts", "user_id, ts")
    # Retention deletes the oldest messages first. Time leads, so a search
    # for one user's words in one guild is never planned through this index
    # (a guild holds far more rows than one user does there).
    _create_index(db, "messages", "messages_ts_guild_id", "ts, guild_id")
    _full_text_index(db)


def _full_text_index(db: pw.Database) -> None:
    """How each engine searches ``messages.content`` (measured:
    docs/PERFORMANCE.md, "Recall")."""
    if isinstance(db, pw.PostgresqlDatabase):
        # A stored column, so a search reads the vector instead of parsing
        # every candidate row's text again ('simple': no stemming, no
        # language guess; the query side drops common words). No GIN index:
        # a search reads one user's rows by (author_id, ts) and matches
        # their vectors, so its cost follows that user's history, not the
        # table; a GIN (author_id, search) scan reads every posting of the
        # common words, 5 ms at 1M rows and growing (docs/PERFORMANCE.md).
        db.execute_sql(
            "ALTER TABLE messages ADD COLUMN IF NOT EXISTS search tsvector"
            " GENERATED ALWAYS AS (to_tsvector('simple', content)) STORED"
        )
        _create_index(db, "messages", "messages_author_id_ts", "author_id, ts")
    elif isinstance(db, pw.MySQLDatabase):
        # No FULLTEXT index: MATCH ... AGAINST reads it for every row holding
        # a common word before the author filter (19 ms at 10k rows, over
        # 5 s at 1M); a search reads one user's rows by (author_id, ts) and
        # ranks them.
        _create_index(db, "messages", "messages_author_id_ts", "author_id, ts")
    else:
        # An external-content FTS5 table kept in step by triggers: the text
        # is stored once (in messages), the index beside it. author_id is
        # indexed too, so a search is one index lookup for "this user's
        # messages with these words".
        db.execute_sql(
            "CREATE VIRTUAL TABLE IF NOT EXISTS messages_search USING fts5("
            "content, author_id, content='messages', content_rowid='id')"
        )
        db.execute_sql(
            "CREATE TRIGGER IF NOT EXISTS messages_search_insert AFTER INSERT ON messages BEGIN"
            " INSERT INTO messages_search(rowid, content, author_id) VALUES (new.id, new.content, new.author_id); END"
        )
        db.execute_sql(
            "CREATE TRIGGER IF NOT EXISTS messages_search_delete AFTER DELETE ON messages BEGIN"
            " INSERT INTO messages_search(messages_search, rowid, content, author_id)"
            " VALUES ('delete', old.id, old.content, old.author_id); END"
        )
        db.execute_sql(
            "CREATE TRIGGER IF NOT EXISTS messages_search_update AFTER UPDATE OF content, author_id ON messages BEGIN"
            " INSERT INTO messages_search(messages_search, rowid, content, author_id)"
            " VALUES ('delete', old.id, old.content, old.author_id);"
            " INSERT INTO messages_search(rowid, content, author_id) VALUES (new.id, new.content, new.author_id); END"
        )
        db.execute_sql("INSERT INTO messages_search(messages_search) VALUES ('rebuild')")


def _v6(m: Models) -> None:
    """Edits and deletions (docs/MEMORY.md, E1-E4): the platform time of a
    message's latest edit (an older edit never overwrites a newer one), and
    a tombstone per deleted message id (a deleted message is never stored
    again, whatever arrives late)."""
    columns = {c.name for c in m.db.get_columns("messages")}
    if "edited_at" not in columns:
        migrator = SchemaMigrator.from_database(m.db)
        run_migrations(migrator.add_column("messages", "edited_at", pw.DoubleField(null=True)))
    m.db.execute_sql(
        _ddl(
            m.db,
            "CREATE TABLE IF NOT EXISTS deleted_messages ("
            " message_id VARCHAR(128) NOT NULL PRIMARY KEY,"
            " deleted_at {double} NOT NULL"
            "){table_opts}",
        )
    )


MIGRATIONS: list[tuple[int, Callable[[Models], None]]] = [(1, _v1), (2, _v2), (3, _v3), (4, _v4), (5, _v5), (6, _v6)]


def _ddl(db: pw.Database, template: str) -> str:
    if isinstance(db, pw.PostgresqlDatabase):
        kinds = {"autopk": "SERIAL PRIMARY KEY", "text": "TEXT", "double": "DOUBLE PRECISION", "table_opts": "", "key": "key", "blob": "BYTEA"}
    elif isinstance(db, pw.MySQLDatabase):
        kinds = {
            "autopk": "BIGINT AUTO_INCREMENT PRIMARY KEY",
            "text": "LONGTEXT",
            "double": "DOUBLE",
            "table_opts": " CHARACTER SET utf8mb4 COLLATE utf8mb4_bin",
            "key": "`key`",
            "blob": "LONGBLOB",
        }
    else:
        kinds = {"autopk": "INTEGER PRIMARY KEY AUTOINCREMENT", "text": "TEXT", "double": "REAL", "table_opts": "", "key": '"key"', "blob": "BLOB"}
    return template.format(**kinds)


def _create_index(db: pw.Database, table: str, name: str, columns: str, unique: bool = False) -> None:
    existing = {i.name for i in db.get_indexes(table)}
    if name in existing:
        return
    db.execute_sql(f"CREATE {'UNIQUE ' if unique else ''}INDEX {name} ON {table} ({columns})")


def current_version(m: Models) -> int:
    if not m.db.table_exists("schema_version"):
        return 0
    rows = m.db.execute_sql("SELECT MAX(version) FROM schema_version").fetchall()
    return int(rows[0][0] or 0) if rows else 0


def migrate(m: Models, target: int = SCHEMA_VERSION) -> list[int]:
    """Apply the pending migrations up to ``target``; return the versions
    applied. Safe to call on every start."""
    db = m.db
    # Versions only go up, so a schema already current needs no lock: an
    # instance that started while the database was away must not wait on
    # the lock (held by a session the server has not yet seen die) to learn
    # that nothing is to be done (seen in the chaos soak: 19 s of an open
    # database breaker while the database was up).
    if db.table_exists("schema_version") and current_version(m) >= target:
        return []
    with _migration_lock(db):
        return _migrate_locked(m, target)


@contextlib.contextmanager
def _migration_lock(db: pw.Database) -> Iterator[None]:
    """Two instances starting at once on a fresh database must not both
    migrate it (SQLite serialises writers by itself)."""
    if isinstance(db, pw.PostgresqlDatabase):
        db.execute_sql("SELECT pg_advisory_lock(727274)")
        try:
            yield
        finally:
            db.execute_sql("SELECT pg_advisory_unlock(727274)")
    elif isinstance(db, pw.MySQLDatabase):
        db.execute_sql("SELECT GET_LOCK('discord_bot_memory_migrate', 60)")
        try:
            yield
        finally:
            db.execute_sql("SELECT RELEASE_LOCK('discord_bot_memory_migrate')")
    else:
        yield


def _migrate_locked(m: Models, target: int) -> list[int]:
    db = m.db
    if not db.table_exists("schema_version"):
        db.execute_sql("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    applied = []
    version = current_version(m)
    for number, step in MIGRATIONS:
        if number <= version or number > target:
            continue
        log.info("memory: migrating database schema to version %d", number)
        with db.atomic():
            step(m)
            db.execute_sql(f"INSERT INTO schema_version (version) VALUES ({int(number)})")
        applied.append(number)
    return applied
