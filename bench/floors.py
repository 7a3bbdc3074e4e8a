"""The physical floors: the least any design could do for each figure, with
the same client libraries and modes the project uses (redis-py asyncio,
psycopg2 autocommit), measured in the same run as ours."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import orjson

from bench import data

WINDOW = 200
HOT = 50

COLD_SQL = """SELECT {cols} FROM {table} WHERE session_id = %s
ORDER BY ts DESC, length(message_id) DESC, message_id DESC LIMIT 50"""


def cache_entry(record: data.MessageRecord) -> bytes:
    """The leanest cache entry: a JSON array of the fields the key does not
    already name (session id and scope live in the key)."""
    raw = record.to_dict()
    del raw["session_id"], raw["scope_key"]
    return orjson.dumps(list(raw.values()))


class Floors:
    """Raw operations on the private Redis and the run's PostgreSQL database."""

    def __init__(self, redis: Any, pg: Any, prefix: str) -> None:
        self.redis = redis  # redis.asyncio.Redis
        self.pg = pg  # psycopg2 connection, autocommit
        self.prefix = prefix
        self.hot_key = f"{prefix}floor:hot"
        self.append_key = f"{prefix}floor:append"
        self.payload = cache_entry(data.record("floor", 0))
        self.cold_session = "floor:cold"

    async def setup(self) -> None:
        records = [cache_entry(data.record("floor", i)) for i in range(HOT)]
        await self.redis.delete(self.hot_key)
        await self.redis.rpush(self.hot_key, *records)
        self.setup_db()

    def setup_db(self) -> None:
        with self.pg.cursor() as cur:
            cur.execute(data.FLOOR_TABLE_DDL)
            # The cold-read session: 200 messages, of which the last 50 are read.
            for i in range(WINDOW):
                cur.execute(
                    f"INSERT INTO floor_messages ({data.FILL_COLUMNS}) VALUES ({', '.join(['%s'] * 13)})",
                    data.row(data.record(self.cold_session, i)),
                )

    async def hot_read_orjson(self, _i: int) -> list[Any]:
        return [orjson.loads(item) for item in await self.redis.lrange(self.hot_key, -HOT, -1)]

    async def hot_read_json(self, _i: int) -> list[Any]:
        return [json.loads(item) for item in await self.redis.lrange(self.hot_key, -HOT, -1)]

    async def redis_append(self, _i: int) -> None:
        pipe = self.redis.pipeline(transaction=False)
        pipe.rpush(self.append_key, self.payload)
        pipe.ltrim(self.append_key, -WINDOW, -1)
        await pipe.execute()

    def pg_insert_sync(self, i: int) -> None:
        with self.pg.cursor() as cur:
            cur.execute(
                f"INSERT INTO floor_messages ({data.FILL_COLUMNS}) VALUES ({', '.join(['%s'] * 13)}) "
                "ON CONFLICT (message_id) DO NOTHING",
                data.row(data.record("floor:write", i, prefix=f"w{id(self)}")),
            )

    async def pg_insert(self, i: int) -> None:
        self.pg_insert_sync(i)

    async def pg_insert_thread(self, i: int) -> None:
        await asyncio.to_thread(self.pg_insert_sync, i)

    async def write_through(self, i: int) -> None:
        """Raw write-through: the append pipeline, then the durable INSERT."""
        await self.redis_append(i)
        self.pg_insert_sync(i + 10_000_000)

    def cold_select_sync(self) -> list[dict[str, Any]]:
        with self.pg.cursor() as cur:
            cur.execute(COLD_SQL.format(cols=data.FILL_COLUMNS, table="floor_messages"), (self.cold_session,))
            names = [d[0] for d in cur.description]
            rows = cur.fetchall()
        return [dict(zip(names, r)) for r in reversed(rows)]

    async def cold_select(self, _i: int) -> list[dict[str, Any]]:
        return self.cold_select_sync()

    async def cold_select_window(self, _i: int) -> list[dict[str, Any]]:
        """The whole hot window (200) rather than 50: what a rebuild that
        refills the window reads."""
        with self.pg.cursor() as cur:
            cur.execute(COLD_SQL.format(cols=data.FILL_COLUMNS, table="floor_messages").replace("LIMIT 50", f"LIMIT {WINDOW}"),
                        (self.cold_session,))
            names = [d[0] for d in cur.description]
            rows = cur.fetchall()
        return [dict(zip(names, r)) for r in reversed(rows)]

    def pg_batch_insert(self, batch: int, start: int) -> None:
        """``batch`` rows in one transaction: what committing across
        sessions would cost per message."""
        from psycopg2.extras import execute_values

        self.pg.autocommit = False
        try:
            with self.pg.cursor() as cur:
                execute_values(
                    cur,
                    f"INSERT INTO floor_messages ({data.FILL_COLUMNS}) VALUES %s",
                    [data.row(data.record("floor:batch", start + k, prefix=f"b{id(self)}")) for k in range(batch)],
                )
            self.pg.commit()
        finally:
            self.pg.autocommit = True


class SqliteFloors:
    """The same floors on SQLite (stdlib sqlite3, WAL, synchronous=NORMAL,
    autocommit), beside the Redis append."""

    def __init__(self, path: str, redis_floor: Floors) -> None:
        import sqlite3

        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode=wal")
        self.conn.execute("PRAGMA synchronous=normal")
        self.redis_floor = redis_floor
        ddl = data.FLOOR_TABLE_DDL.replace("BIGSERIAL PRIMARY KEY", "INTEGER PRIMARY KEY AUTOINCREMENT")
        ddl = ddl.replace("DOUBLE PRECISION", "REAL")
        self.conn.executescript(ddl)
        self.insert_sql = (f"INSERT OR IGNORE INTO floor_messages ({data.FILL_COLUMNS}) "
                           f"VALUES ({', '.join(['?'] * 13)})")
        for i in range(WINDOW):
            self.conn.execute(self.insert_sql, data.row(data.record("floor:cold", i)))

    def fill(self, upto: int) -> None:
        have = self.conn.execute("SELECT count(*) FROM floor_messages").fetchone()[0]
        if have < upto:
            self.conn.execute(
                f"""INSERT INTO floor_messages ({data.FILL_COLUMNS})
                WITH RECURSIVE g(n) AS (SELECT ? UNION ALL SELECT n + 1 FROM g WHERE n < ?)
                SELECT 'fill:' || n, 'fill:' || (n / {data.PER_FILL_SESSION}), 'fill:' || (n / {data.PER_FILL_SESSION}),
                       'user', 'u', 'someone', ?, {data.BASE_TS} + n, 'g1', 'c1', NULL, '[]', {data.BASE_TS}
                FROM g""",
                (have, upto - 1, data.CONTENT),
            )
            self.conn.execute("ANALYZE")

    async def write_through(self, i: int) -> None:
        await self.redis_floor.redis_append(i)
        self.conn.execute(self.insert_sql, data.row(data.record("floor:write", i, prefix="sqlite")))

    async def cold_select(self, _i: int) -> list[dict[str, Any]]:
        cur = self.conn.execute(
            COLD_SQL.format(cols=data.FILL_COLUMNS, table="floor_messages").replace("%s", "?"), ("floor:cold",))
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r)) for r in reversed(cur.fetchall())]

    def close(self) -> None:
        self.conn.close()
