"""The durable store: peewee on SQLite, PostgreSQL or MySQL/MariaDB.

peewee is synchronous, so every call runs on a small thread pool owned by the
store, never on the event loop. Each worker thread keeps its own connection
(peewee's connection state is thread-local) and reuses it; a dropped
connection is closed and reopened, and an idempotent call is retried once on
the fresh connection. A call that hangs (a blackholed server) is abandoned
after ``timeout``: the pool is replaced so later calls do not queue behind
the stuck thread, whose socket timeouts end it eventually.

The calls every message makes (store it and its reply, save its session,
ask whether its reply is stored) are **group-committed**: while one such call is in flight, the ones
that arrive meanwhile queue and then go to the database together, as one
statement in one transaction. A lone message pays what it paid before; under
load the commit and the thread hop are shared across sessions, and a caller
still hears back only after its row is committed (G1).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import sqlite3
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar
from urllib.parse import parse_qs, unquote, urlparse

import orjson
import peewee as pw
from playhouse import db_url

from plugins.memory import records
from plugins.memory.breaker import BackendDown
from plugins.memory.grouping import Grouped
from plugins.memory.schema import Models, make_models, migrate

log = logging.getLogger("plugins.memory.durable")

T = TypeVar("T")
# Rows per group commit: far below every driver's parameter limit.
BATCH_LIMIT = 64

DIRTY_PREFIX = "memory.cache_dirty."


class DatabaseURLError(ValueError):
    """DATABASE_URL is malformed; the message never holds the password."""


def describe_url(url: str) -> str:
    """``scheme://host:port/db`` without user or password, for messages."""
    try:
        p = urlparse(url)
        if "," in p.netloc:
            return f"{p.scheme}://{p.netloc.rpartition('@')[2]}{p.path}"
        host = p.hostname or ""
        port = f":{p.port}" if p.port else ""
        return f"{p.scheme}://{host}{port}{p.path}"
    except ValueError:
        return "(unparseable URL)"


def open_database(url: str, timeout: float) -> pw.Database:
    """Build (without connecting) the peewee database ``url`` names, with
    timeouts short enough that an outage is noticed quickly."""
    try:
        scheme = urlparse(url).scheme
    except ValueError as exc:
        raise DatabaseURLError(f"not a URL ({exc})") from None
    if scheme not in db_url.schemes:
        raise DatabaseURLError(f"unsupported scheme {scheme!r} (use sqlite://, postgresql:// or mysql://)")
    base = scheme.split("+")[0]
    params: dict[str, Any] = {}
    seconds = max(1, int(round(timeout)))
    if base.startswith("postgres"):
        # libpq: connect_timeout is whole seconds (min 2); tcp_user_timeout
        # and keepalives end a query stuck on a dead peer.
        params.update(
            connect_timeout=max(2, seconds),
            keepalives=1,
            keepalives_idle=5,
            keepalives_interval=2,
            keepalives_count=2,
            tcp_user_timeout=int(max(timeout, 2) * 1000 * 2),
        )
    elif base in ("mysql", "mariadbconnector", "mysqlconnector"):
        params.update(connect_timeout=seconds, read_timeout=seconds * 3, write_timeout=seconds * 3, charset="utf8mb4")
    elif base == "sqlite":
        # A lock held elsewhere must fail a write before the call's own
        # timeout does, so the breaker trips on a clean error.
        busy = max(0.05, timeout * 0.8)
        # secure_delete: a deleted row's bytes are overwritten, not left in a
        # free page where /forget would leave them readable on disk (many
        # SQLite builds default to it; not all).
        params.update(
            timeout=busy,
            pragmas={"journal_mode": "wal", "synchronous": "normal", "busy_timeout": int(busy * 1000), "secure_delete": 1},
        )
    try:
        if base.startswith("postgres") and "," in urlparse(url).netloc:
            db = _several_hosts(url, params)
        else:
            db = db_url.connect(url, unquote_password=True, unquote_user=True, **params)
    except (RuntimeError, ValueError, TypeError) as exc:
        raise DatabaseURLError(str(exc).replace(url, describe_url(url))) from None
    # Connections are opened explicitly per worker thread.
    db.autoconnect = False
    if isinstance(db, pw.SqliteDatabase):
        # Every transaction takes the write lock at BEGIN: one that reads
        # and then writes fails at once, without waiting, when another
        # connection wrote in between (claims, announcements, settles run
        # beside /forget, retention and recall in the same process).
        plain_atomic = db.atomic

        def atomic(lock_type: str | None = "IMMEDIATE") -> Any:
            return plain_atomic(lock_type)

        db.atomic = atomic  # type: ignore[method-assign]
    return db


def _several_hosts(url: str, params: dict[str, Any]) -> pw.Database:
    """``postgresql://user:pw@a:5432,b:5432/db?target_session_attrs=read-write``:
    a primary and its standbys, as libpq takes them (``host`` and ``port``
    as lists). libpq tries them in order and, with ``read-write`` (the
    default here when several hosts are given), keeps the one that takes
    writes, so a promoted standby is found by the next connection."""
    p = urlparse(url)
    userinfo, _, hostlist = p.netloc.rpartition("@")
    hosts, ports = [], []
    for part in hostlist.split(","):
        host, _, port = part.rpartition(":") if not part.endswith("]") and ":" in part else (part, "", "")
        hosts.append(host.strip("[]"))
        ports.append(port or "5432")
    user, _, password = userinfo.partition(":")
    query = {k: v[-1] for k, v in parse_qs(p.query).items()}
    query.setdefault("target_session_attrs", "read-write")
    kwargs: dict[str, Any] = {**params, **query, "host": ",".join(hosts), "port": ",".join(ports)}
    if user:
        kwargs["user"] = unquote(user)
    if password:
        kwargs["password"] = unquote(password)
    return pw.PostgresqlDatabase(unquote(p.path.lstrip("/")), **kwargs)


def _is_connection_error(exc: BaseException) -> bool:
    if isinstance(exc, (pw.OperationalError, pw.InterfaceError)):
        return True
    return isinstance(exc, OSError)


class DurableStore:
    """Async facade over one peewee database."""

    def __init__(self, url: str, *, timeout: float = 0.5, slow_timeout: float = 60.0, threads: int = 4) -> None:
        self.url = url
        self.where = describe_url(url)
        self.timeout = timeout
        self.slow_timeout = slow_timeout
        self.threads = threads
        self.db = open_database(url, timeout)
        self.m: Models = make_models(self.db)
        self.dialect = "postgres" if isinstance(self.db, pw.PostgresqlDatabase) else "mysql" if isinstance(self.db, pw.MySQLDatabase) else "sqlite"
        self._executor = self._new_executor()
        self._probe_executor = self._new_executor(1, "memory-db-probe")
        self._prepare_sql()
        self.closed = False
        self.connection_errors = 0
        self.insert = Batcher(self, self.insert_rows, self.insert_message)
        self.save_session = Batcher(self, self.upsert_sessions, lambda item: self.upsert_session(*item))

    # --- plumbing ---------------------------------------------------------------

    def _new_executor(self, threads: int | None = None, name: str = "memory-db") -> concurrent.futures.ThreadPoolExecutor:
        return concurrent.futures.ThreadPoolExecutor(threads or self.threads, thread_name_prefix=name)

    def _prepare_sql(self) -> None:
        p = self.db.param
        cols = ", ".join(records.ROW_COLUMNS)
        marks = ", ".join([p] * len(records.ROW_COLUMNS))
        if self.dialect == "postgres":
            self.sql_insert = f"INSERT INTO messages ({cols}) VALUES ({marks}) ON CONFLICT (message_id) DO NOTHING"
            id_order = 'message_id COLLATE "C"'
            length = "LENGTH"
        elif self.dialect == "mysql":
            self.sql_insert = f"INSERT IGNORE INTO messages ({cols}) VALUES ({marks})"
            id_order = "message_id"
            length = "CHAR_LENGTH"
        else:
            # Not INSERT OR IGNORE: that would also drop a row breaking any
            # other constraint, silently, and call it a duplicate.
            self.sql_insert = f"INSERT INTO messages ({cols}) VALUES ({marks}) ON CONFLICT (message_id) DO NOTHING"
            id_order = "message_id"
            length = "LENGTH"
        self.sql_last = (
            f"SELECT {cols} FROM messages WHERE session_id = {p} "
            f"ORDER BY ts DESC, {length}(message_id) DESC, {id_order} DESC LIMIT {p}"
        )
        self.sql_cols = cols
        self._row_marks = f"({marks})"
        self.multi_row_returning = self.dialect == "postgres" or (self.dialect == "sqlite" and sqlite3.sqlite_version_info >= (3, 35))

    def _in_thread(self, fn: Callable[..., T], args: tuple[Any, ...], retry: bool) -> T:
        db = self.db
        fresh = False
        if db.is_closed():
            db.connect()
            fresh = True
        try:
            return fn(*args)
        except Exception as exc:
            if not _is_connection_error(exc):
                self._end_implicit_transaction()
                raise
            # Counted: the next connection may reach another server (a
            # promoted standby), which the memory then checks (R4).
            self.connection_errors += 1
            # The connection may be broken: drop it so the next call reconnects.
            try:
                db.close()
            except Exception:  # noqa: BLE001
                pass
            if retry and not fresh and self.dialect != "sqlite":
                db.connect()
                return fn(*args)
            raise

    def _end_implicit_transaction(self) -> None:
        """After a statement failed on SQLite, drop the connection: the
        failed statement may stay unfinished and keep its read snapshot, and
        the next write on this connection then fails at once with "database
        is locked" (a stale snapshot; seen once a trigger writes beside the
        row: recall's search index). The next call reconnects."""
        if self.dialect != "sqlite" or self.db.is_closed():
            return
        try:
            self.db.close()
        except Exception:  # noqa: BLE001
            pass

    async def run(self, fn: Callable[..., T], *args: Any, retry: bool = True, slow: bool = False) -> T:
        """Run ``fn(*args)`` on a worker thread with a connection open.

        Raises :class:`BackendDown` when the database cannot be reached or
        does not answer within ``timeout`` (``slow_timeout`` for bulk work:
        migrations, export, forget, outbox replay).
        """
        return await self._submit(self._executor, fn, args, retry, self.slow_timeout if slow else self.timeout)

    async def _submit(
        self, executor: concurrent.futures.ThreadPoolExecutor, fn: Callable[..., T], args: tuple[Any, ...], retry: bool, timeout: float
    ) -> T:
        if self.closed:
            raise BackendDown("database", "store closed")
        loop = asyncio.get_running_loop()
        try:
            future = loop.run_in_executor(executor, self._in_thread, fn, args, retry)
        except RuntimeError:
            # The pool was just abandoned by another call's timeout.
            raise BackendDown("database", "worker pool replaced after a timeout") from None
        try:
            async with asyncio.timeout(timeout):
                return await future
        except TimeoutError:
            self._abandon(executor)
            raise BackendDown("database", f"no answer within {timeout}s") from None
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if future.cancelled() and task is not None and not task.cancelling():
                # Our queued call was dropped with an abandoned pool; we were not cancelled.
                raise BackendDown("database", "call dropped with an abandoned worker pool") from None
            raise
        except Exception as exc:
            if _is_connection_error(exc):
                raise BackendDown("database", _short(exc)) from exc
            raise

    def _abandon(self, executor: concurrent.futures.ThreadPoolExecutor) -> None:
        """A worker hangs: route later calls to a fresh pool."""
        executor.shutdown(wait=False, cancel_futures=True)
        if executor is self._executor:
            self._executor = self._new_executor()
        elif executor is self._probe_executor:
            self._probe_executor = self._new_executor(1, "memory-db-probe")

    async def ping(self, timeout: float | None = None) -> None:
        """Raise :class:`BackendDown` unless a trivial query answers (within
        ``timeout``, by default the message path's)."""
        # A connection the server closed while this process was paused says
        # nothing of now: one fresh attempt, within the same timeout.
        await self._submit(self._probe_executor, self._ping, (), True, timeout or self.timeout)

    def _ping(self) -> None:
        if self.dialect == "sqlite":
            # SQLite readers pass a held write lock (WAL): probe writability.
            conn = self.db.connection()
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("ROLLBACK")
        else:
            self.db.execute_sql("SELECT 1").fetchall()

    async def close(self) -> None:
        self.closed = True
        for executor in (self._executor, self._probe_executor):
            # Each worker closes its own thread-local connection.
            futures = [executor.submit(self._close_conn) for _ in range(self.threads)]
            executor.shutdown(wait=False, cancel_futures=False)
            await asyncio.get_running_loop().run_in_executor(None, concurrent.futures.wait, futures, 2.0)

    def _close_conn(self) -> None:
        try:
            if not self.db.is_closed():
                self.db.close()
        except Exception:  # noqa: BLE001
            pass
        time.sleep(0.01)  # lets each pool thread take one close job

    # --- schema -------------------------------------------------------------------

    async def migrate(self) -> list[int]:
        return await self.run(migrate, self.m, retry=False, slow=True)

    # --- messages -----------------------------------------------------------------

    def insert_message(self, row: tuple[Any, ...]) -> bool:
        cursor = self.db.execute_sql(self.sql_insert, row)
        return bool(cursor.rowcount)

    def insert_messages(self, rows: Iterable[tuple[Any, ...]]) -> int:
        count = 0
        with self.db.atomic():
            for row in rows:
                count += bool(self.db.execute_sql(self.sql_insert, row).rowcount)
        return count

    def insert_rows(self, rows: list[tuple[Any, ...]]) -> list[bool]:
        """Insert ``rows`` in one transaction; per row, whether it was new.
        Within one batch the first row of an id is the one that counts."""
        if len(rows) == 1:
            return [bool(self.db.execute_sql(self.sql_insert, rows[0]).rowcount)]
        if self.multi_row_returning:
            unique = list({row[0]: row for row in reversed(rows)}.values())
            values = ", ".join([self._row_marks] * len(unique))
            sql = f"INSERT INTO messages ({self.sql_cols}) VALUES {values} ON CONFLICT (message_id) DO NOTHING RETURNING message_id"
            params = [value for row in unique for value in row]
            new = {found[0] for found in self.db.execute_sql(sql, params).fetchall()}
        else:
            new = set()
            with self.db.atomic():
                for row in rows:
                    if self.db.execute_sql(self.sql_insert, row).rowcount:
                        new.add(row[0])
        out = []
        for row in rows:
            out.append(row[0] in new)
            new.discard(row[0])
        return out

    def last_messages(self, session_id: str, limit: int) -> list[tuple[Any, ...]]:
        rows = list(self.db.execute_sql(self.sql_last, (session_id, limit)).fetchall())
        rows.reverse()
        return rows

    # --- edits and deletions (docs/MEMORY.md, E) ------------------------------------

    def edit_message(self, message_id: str, author_id: str, content: str, edited_at: float) -> str | None:
        """Apply an edit to a user's message (E2: only a newer edit wins);
        return the session it changed, or ``None`` when nothing changed."""
        p = self.db.param
        with self.db.atomic():
            changed = self.db.execute_sql(
                f"UPDATE messages SET content = {p}, edited_at = {p} WHERE message_id = {p} AND author_id = {p} "
                f"AND role = 'user' AND (edited_at IS NULL OR edited_at < {p})",
                (content, edited_at, message_id, author_id, edited_at),
            ).rowcount
            if not changed:
                return None
            row = self.db.execute_sql(f"SELECT session_id FROM messages WHERE message_id = {p}", (message_id,)).fetchone()
        return str(row[0]) if row else None

    def delete_messages(self, ids: list[str], deleted_at: float) -> list[str]:
        """Tombstone ``ids`` (E3), delete them and the bot's replies to them
        (E4); return the sessions that lost messages."""
        p = self.db.param
        ignore = "INSERT IGNORE INTO" if self.dialect == "mysql" else "INSERT INTO"
        conflict = "" if self.dialect == "mysql" else " ON CONFLICT (message_id) DO NOTHING"
        targets = [*ids, *(f"reply:{i}" for i in ids)]
        marks = ", ".join([p] * len(targets))
        with self.db.atomic():
            for message_id in ids:
                self.db.execute_sql(f"{ignore} deleted_messages (message_id, deleted_at) VALUES ({p}, {p}){conflict}",
                                    (message_id, deleted_at))
            rows = self.db.execute_sql(f"SELECT DISTINCT session_id FROM messages WHERE message_id IN ({marks})",
                                       tuple(targets)).fetchall()
            self.db.execute_sql(f"DELETE FROM messages WHERE message_id IN ({marks})", tuple(targets))
        return sorted(str(r[0]) for r in rows)

    def delete_member(self, user_id: str, guild_id: str, until: float, known: list[str]) -> list[str]:
        """A member left a guild that forgets its leavers (E6): the ids of
        what they wrote there up to ``until`` (platform time), with the ids
        ``known`` from elsewhere (the outbox), go the way of a bulk delete
        (:meth:`delete_messages`: tombstones, replies). The facts told
        there and the vectors of those messages go too. Idempotent;
        returns the sessions that lost messages."""
        p = self.db.param
        sql = (f"SELECT message_id FROM messages WHERE author_id = {p} AND guild_id = {p} AND role = 'user'"
               f" AND ts <= {p}")
        ids = sorted({*known, *(str(r[0]) for r in self.db.execute_sql(sql, (user_id, guild_id, until)).fetchall())})
        sessions: set[str] = set()
        for start in range(0, len(ids), 500):
            sessions.update(self.delete_messages(ids[start : start + 500], until))
        with self.db.atomic():
            if self.db.table_exists("facts"):
                self.db.execute_sql(f"DELETE FROM facts WHERE user_id = {p} AND place = {p}", (user_id, f"g:{guild_id}"))
            if self.db.table_exists("message_vectors"):
                self.db.execute_sql(f"DELETE FROM message_vectors WHERE user_id = {p} AND guild_id = {p} AND ts <= {p}",
                                    (user_id, guild_id, until))
        return sorted(sessions)

    def insert_unless_deleted(self, row: tuple[Any, ...]) -> bool:
        """An outbox replay's insert: a message deleted meanwhile (or the
        reply to one) stays deleted (E3)."""
        message_id = str(row[0])
        asked = message_id[len("reply:"):] if message_id.startswith("reply:") else message_id
        p = self.db.param
        if self.db.execute_sql(f"SELECT 1 FROM deleted_messages WHERE message_id = {p}", (asked,)).fetchone():
            return False
        return self.insert_message(row)

    def messages_by_id(self, ids: list[str]) -> list[tuple[Any, ...]]:
        marks = ", ".join([self.db.param] * len(ids))
        return list(self.db.execute_sql(f"SELECT {self.sql_cols} FROM messages WHERE message_id IN ({marks})", tuple(ids)).fetchall())

    def count_messages(self, session_id: str) -> int:
        rows = self.db.execute_sql(f"SELECT COUNT(*) FROM messages WHERE session_id = {self.db.param}", (session_id,)).fetchall()
        return int(rows[0][0])

    # --- sessions ----------------------------------------------------------------

    def upsert_session(self, data: dict[str, Any], fence: int | None) -> bool:
        """Insert or replace a session row. With a ``fence``, a write whose
        token is older than the stored one is rejected (returns ``False``)."""
        if self.dialect != "mysql":
            return self._upsert_session_one_statement(data, fence)
        S = self.m.SessionRow
        row = _session_row(data)
        with self.db.atomic():
            current = _one(S.select(S.fence).where(S.session_id == data["id"]).tuples())
            if current is None:
                S.insert(**row, fence=fence or 0).on_conflict_ignore().execute()
                return True
            stored = current[0] or 0
            if fence is not None and fence < stored:
                return False
            S.update(**row, fence=max(stored, fence or 0)).where(S.session_id == data["id"]).execute()
            return True

    def insert_session_if_missing(self, data: dict[str, Any]) -> bool:
        """Insert a session row unless one with its id exists (never an update)."""
        S = self.m.SessionRow
        return bool(S.insert(**_session_row(data), fence=0).on_conflict_ignore().execute())

    def server_identity(self) -> str | None:
        """Which server answers (PostgreSQL: address, port, start time): it
        changes when a standby is promoted or the server restarted. ``None``
        for the others (one file, or no failover to follow)."""
        if self.dialect != "postgres":
            return None
        row = self.db.execute_sql("SELECT inet_server_addr()::text, inet_server_port(), pg_postmaster_start_time()::text").fetchone()
        return " ".join(str(v) for v in row) if row else None

    def upsert_sessions(self, items: list[tuple[dict[str, Any], int | None]]) -> list[bool]:
        """:meth:`upsert_session` for each ``(data, fence)``, in order, in
        one transaction."""
        with self.db.atomic():
            return [self.upsert_session(data, fence) for data, fence in items]

    _SESSION_COLS = ("session_id", "scope_key", "user_id", "guild_id", "channel_id", "opened_at", "last_active_at", "closed_at", "state", "fence")

    def _upsert_session_one_statement(self, data: dict[str, Any], fence: int | None) -> bool:
        """PostgreSQL and SQLite: one round trip; the fence check is the
        upsert's ``WHERE``."""
        p = self.db.param
        cols = self._SESSION_COLS
        greatest = "GREATEST" if self.dialect == "postgres" else "MAX"
        updates = ", ".join(f"{c} = excluded.{c}" for c in cols[1:-1])
        sql = (
            f"INSERT INTO sessions ({', '.join(cols)}) VALUES ({', '.join([p] * len(cols))}) "
            f"ON CONFLICT (session_id) DO UPDATE SET {updates}, fence = {greatest}(sessions.fence, excluded.fence) "
            f"WHERE {p} OR sessions.fence <= excluded.fence"
        )
        params = (
            data["id"],
            data["scope_key"],
            data.get("user_id"),
            data.get("guild_id"),
            data.get("channel_id"),
            data["opened_at"],
            data["last_active_at"],
            data.get("closed_at"),
            orjson.dumps(data.get("state") or {}).decode(),
            fence or 0,
            fence is None,
        )
        return bool(self.db.execute_sql(sql, params).rowcount)

    def _session_dict(self, row: Any) -> dict[str, Any]:
        return {
            "id": row.session_id,
            "scope_key": row.scope_key,
            "user_id": row.user_id,
            "guild_id": row.guild_id,
            "channel_id": row.channel_id,
            "opened_at": row.opened_at,
            "last_active_at": row.last_active_at,
            "closed_at": row.closed_at,
            "state": orjson.loads(row.state or "{}"),
        }

    def provisional_sessions(self) -> list[dict[str, Any]]:
        """Every session still marked provisional (a scan of the sessions
        table: run once per process, see MemoryStore._settle_known)."""
        S = self.m.SessionRow
        rows = S.select().where(S.state.contains('"provisional"'))
        return [d for d in (self._session_dict(r) for r in rows) if (d["state"] or {}).get("provisional")]

    def fresh_sessions(self, scope_keys: list[str], since: float) -> list[dict[str, Any]]:
        """Sessions of these scopes (their past was just written late),
        opened since ``since``, marked ``fresh`` (opened because nothing
        known continued, MEMORY_SESSIONS.md rule 11), with an earlier session
        in their scope."""
        S = self.m.SessionRow
        E = S.alias()
        earlier = E.select(pw.SQL("1")).where((E.scope_key == S.scope_key) & (E.opened_at < S.opened_at))
        where = S.scope_key.in_(scope_keys) & (S.opened_at >= since) & S.state.contains('"fresh"')
        rows = S.select().where(where & pw.fn.EXISTS(earlier))
        return [d for d in (self._session_dict(r) for r in rows) if (d["state"] or {}).get("fresh")]

    def latest_session(self, scope_key: str) -> dict[str, Any] | None:
        S = self.m.SessionRow
        row = _one(S.select().where(S.scope_key == scope_key).order_by(S.opened_at.desc(), S.last_active_at.desc()))
        if row is None:
            return None
        data = self._session_dict(row)
        if data["closed_at"] is None:
            # Touches reach the row only now and then (session_touch_interval);
            # every message is stored, so the newest one says when it was active.
            sql = f"SELECT created_at FROM messages WHERE session_id = {self.db.param} ORDER BY ts DESC LIMIT 1"
            newest = self.db.execute_sql(sql, (data["id"],)).fetchall()
            if newest and newest[0][0] is not None:
                data["last_active_at"] = max(data["last_active_at"], float(newest[0][0]))
        return data

    def user_sessions(self, user_id: str, limit: int) -> list[dict[str, Any]]:
        S = self.m.SessionRow
        rows = S.select().where(S.user_id == user_id).order_by(S.last_active_at.desc()).limit(limit)
        return [self._session_dict(r) for r in rows]

    def session_fence(self, session_id: str) -> int:
        S = self.m.SessionRow
        row = _one(S.select(S.fence).where(S.session_id == session_id).tuples())
        return int(row[0] or 0) if row else 0

    # --- people's data ---------------------------------------------------------------

    def _user_message_query(self, user_id: str) -> Any:
        M = self.m.Message
        own = M.select(M.message_id).where(M.author_id == user_id)
        return M.select().where((M.author_id == user_id) | ((M.role == "bot") & M.reply_to_id.in_(own)))

    @staticmethod
    def _exported(m: Any) -> dict[str, Any]:
        return {
            "id": m.message_id,
            "session_id": m.session_id,
            "scope_key": m.scope_key,
            "role": m.role,
            "author_id": m.author_id,
            "author_name": m.author_name,
            "content": m.content,
            "timestamp": m.ts,
            "guild_id": m.guild_id,
            "channel_id": m.channel_id,
            "reply_to_id": m.reply_to_id,
            "attachments": orjson.loads(m.attachments or "[]"),
        }

    def export_user(self, user_id: str) -> dict[str, Any]:
        M = self.m.Message
        messages = [self._exported(m) for m in self._user_message_query(user_id).order_by(M.ts, M.message_id)]
        sessions = self.user_sessions(user_id, 1_000_000)
        return {"messages": messages, "sessions": sessions}

    def export_guild(self, guild_id: str) -> dict[str, Any]:
        """Every message stored in ``guild_id`` (the bot's replies too) and
        every session there, shared ones included; nothing of another
        guild or of DMs."""
        M, S = self.m.Message, self.m.SessionRow
        messages = [self._exported(m) for m in M.select().where(M.guild_id == guild_id).order_by(M.ts, M.message_id)]
        rows = S.select().where(S.guild_id == guild_id).order_by(S.opened_at, S.session_id)
        return {"messages": messages, "sessions": [self._session_dict(r) for r in rows]}

    def forget_user(self, user_id: str) -> dict[str, Any]:
        """Delete the user's messages (and the bot's replies to them), their
        sessions and the claims on their messages; return counts and what
        the cache must drop (session ids, scope keys, message ids)."""
        M, S = self.m.Message, self.m.SessionRow
        with self.db.atomic():
            rows = list(self._user_message_query(user_id).select(M.id, M.session_id, M.scope_key, M.message_id).tuples())
            ids = [r[0] for r in rows]
            touched = {r[1] for r in rows}
            scopes = {r[2] for r in rows}
            message_ids = [r[3] for r in rows]
            deleted = 0
            for start in range(0, len(ids), 500):
                deleted += M.delete().where(M.id.in_(ids[start : start + 500])).execute()
            for start in range(0, len(message_ids), 500):
                chunk = message_ids[start : start + 500]
                marks = ", ".join([self.db.param] * len(chunk))
                self.db.execute_sql(f"DELETE FROM claims WHERE message_id IN ({marks})", tuple(chunk))
            own = list(S.select(S.session_id, S.scope_key).where(S.user_id == user_id).tuples())
            touched |= {r[0] for r in own}
            scopes |= {r[1] for r in own}
            sessions = S.delete().where(S.user_id == user_id).execute()
        if self.dialect == "sqlite":
            self._truncate_wal()
        return {
            "messages": deleted,
            "sessions": sessions,
            "touched": sorted(touched),
            "scopes": sorted(scopes),
            "message_ids": message_ids,
        }

    def _truncate_wal(self) -> None:
        """Copy the write-ahead log into the database file and empty it: the
        log still holds the forgotten rows as they were before the delete.
        A reader in the middle of a read keeps the log from being emptied;
        that is reported, and the next forget or SQLite's own checkpoint
        finishes the job."""
        busy, _frames, _done = self.db.execute_sql("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        if busy:
            log.warning("memory: after a forget, the SQLite write-ahead log could not be emptied yet (a read was in progress)")

    # --- bot state -------------------------------------------------------------------

    def get_state(self, key: str) -> Any:
        B = self.m.BotState
        row = _one(B.select(B.value).where(B.key == key).tuples())
        return orjson.loads(row[0]) if row else None

    def set_state(self, key: str, value: Any) -> None:
        B = self.m.BotState
        encoded = orjson.dumps(value).decode()
        with self.db.atomic():
            if B.update(value=encoded).where(B.key == key).execute() == 0:
                B.insert(key=key, value=encoded).on_conflict_ignore().execute()
                B.update(value=encoded).where(B.key == key).execute()

    def delete_state(self, key: str) -> int:
        B = self.m.BotState
        return B.delete().where(B.key == key).execute()

    def dirty_flags(self) -> list[tuple[str, str]]:
        B = self.m.BotState
        return [(r[0], r[1]) for r in B.select(B.key, B.value).where(B.key.startswith(DIRTY_PREFIX)).tuples()]

    def states_with_prefix(self, prefix: str) -> dict[str, Any]:
        """Every state whose key starts with ``prefix``, decoded."""
        B = self.m.BotState
        return {r[0]: orjson.loads(r[1]) for r in B.select(B.key, B.value).where(B.key.startswith(prefix)).tuples()}

    def state_raw(self, key: str) -> str | None:
        """``key``'s value as stored (for :meth:`replace_state_if`)."""
        B = self.m.BotState
        row = _one(B.select(B.value).where(B.key == key).tuples())
        return str(row[0]) if row else None

    def replace_state_if(self, key: str, raw_value: str, value: Any) -> int:
        """Set ``key`` to ``value`` only if it still holds ``raw_value`` (as stored)."""
        B = self.m.BotState
        return B.update(value=orjson.dumps(value).decode()).where((B.key == key) & (B.value == raw_value)).execute()

    def delete_state_if(self, key: str, raw_value: str) -> int:
        """Delete ``key`` only if it still holds ``raw_value`` (as stored)."""
        B = self.m.BotState
        return B.delete().where((B.key == key) & (B.value == raw_value)).execute()

    def counts(self) -> dict[str, int]:
        return {
            table: int(self.db.execute_sql(f"SELECT COUNT(*) FROM {table}").fetchall()[0][0]) for table in ("messages", "sessions")
        }


def _one(query: Any) -> Any:
    """The first row or ``None``, with the cursor read to the end: an
    unfinished SQLite statement keeps its read snapshot open, and later reads
    on that connection would not see newer writes (WAL)."""
    rows = list(query.limit(1))
    return rows[0] if rows else None


def _session_row(data: dict[str, Any]) -> dict[str, Any]:
    """A session's column values (all but the fence) from its stored form."""
    return {
        "session_id": data["id"],
        "scope_key": data["scope_key"],
        "user_id": data.get("user_id"),
        "guild_id": data.get("guild_id"),
        "channel_id": data.get("channel_id"),
        "opened_at": data["opened_at"],
        "last_active_at": data["last_active_at"],
        "closed_at": data.get("closed_at"),
        "state": orjson.dumps(data.get("state") or {}).decode(),
    }


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:200]




class Batcher(Grouped):
    """Group commit for one kind of database call: ``await batcher(item)``
    (see :class:`~plugins.memory.grouping.Grouped`; at most
    :data:`BATCH_LIMIT` items a batch). If a batch fails for a reason other
    than the database being down, its items are retried one by one, so one
    bad row fails only its own caller.
    """

    limit = BATCH_LIMIT
    task_name = "memory-db-batch"

    def __init__(self, store: DurableStore, many: Callable[[list[Any]], list[Any]], one: Callable[[Any], Any]) -> None:
        super().__init__()
        self.store = store
        self.many = many
        self.one = one

    async def send(self, items: list[Any]) -> list[Any]:
        try:
            return await self.store.run(self.many, items)
        except BackendDown:
            raise
        except Exception as exc:
            if len(items) == 1:
                return [exc]
            log.warning("memory: a batch of %d database calls failed; retrying them one by one", len(items), exc_info=True)
        outcomes: list[Any] = []
        for item in items:
            try:
                outcomes.append(await self.store.run(self.one, item))
            except Exception as exc:  # noqa: BLE001 - handed to its caller
                outcomes.append(exc)
        return outcomes

    def copy_error(self, exc: BaseException) -> BaseException:
        if isinstance(exc, BackendDown):
            return BackendDown(exc.backend, exc.reason)
        return BackendDown("database", "store closed")
