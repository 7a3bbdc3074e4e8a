"""``python -m bench.storage_size``: bytes each stored message costs, on disk
in PostgreSQL (table, indexes and TOAST) and in Redis (a full window), for
the capacity projection in docs/SCALING.md.

Messages are written the way the memory writes them (``DurableStore``,
``Cache.fill``), as conversations of 40 messages (a user message of
``--user-chars`` and a reply of ``--reply-chars``, alternating), into a
fresh PostgreSQL database and a private redis-server (never the shared ones).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

from bench.servers import PostgresDatabase, RedisServer
from core.models import MessageRecord, Role
from plugins.memory import records
from plugins.memory.cache import Cache, make_client
from plugins.memory.durable import DurableStore


def _messages(conversations: int, per: int, user_chars: int, reply_chars: int) -> list[MessageRecord]:
    out = []
    for c in range(conversations):
        for n in range(per):
            bot = n % 2 == 1
            out.append(
                MessageRecord(
                    id=str(10**17 + c * per + n),
                    session_id=f"s-{c:06d}-{'x' * 20}",
                    scope_key=f"{10**17 + c}:{2 * 10**17 + c}:{3 * 10**17 + c}",
                    role=Role.BOT if bot else Role.USER,
                    author_id="bot" if bot else str(3 * 10**17 + c),
                    author_name="bot" if bot else "someone",
                    content=("r" if bot else "u") * (reply_chars if bot else user_chars),
                    timestamp=1.7e9 + c * per + n,
                    guild_id=str(10**17 + c),
                    channel_id=str(2 * 10**17 + c),
                )
            )
    return out


async def measure(args: argparse.Namespace) -> dict[str, float]:
    pg = PostgresDatabase()
    pg.create()
    redis = RedisServer()
    redis.start()
    db = DurableStore(pg.url, timeout=5, slow_timeout=600)
    client = make_client(redis.url, 5)
    try:
        await db.migrate()
        found = _messages(args.conversations, 40, args.user_chars, args.reply_chars)
        now = time.time()
        rows = [records.to_row(r, now) for r in found]
        for start in range(0, len(rows), 1000):
            await db.run(db.insert_messages, rows[start : start + 1000], slow=True)
        (size,) = await db.run(lambda: db.db.execute_sql("SELECT pg_total_relation_size('messages')").fetchone(), slow=True)
        cache = Cache(client, prefix="size:", window_size=200, ttl=3600, timeout=5)
        before = int((await client.info("memory"))["used_memory"])
        by_session: dict[str, list[MessageRecord]] = {}
        for r in found:
            by_session.setdefault(r.session_id, []).append(r)
        for sid, msgs in by_session.items():
            await cache.fill(sid, [records.encode_entry(r) for r in msgs], None, cache.epoch)
        after = int((await client.info("memory"))["used_memory"])
        return {
            "messages": len(found),
            "user_chars": args.user_chars,
            "reply_chars": args.reply_chars,
            "postgres_bytes_per_message": round(size / len(found), 1),
            "redis_bytes_per_window_entry": round((after - before) / len(found), 1),
        }
    finally:
        await client.aclose()
        await db.close()
        redis.stop()
        pg.drop()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.storage_size", description=__doc__.split("\n\n")[0])
    parser.add_argument("--conversations", type=int, default=500)
    parser.add_argument("--user-chars", type=int, default=120)
    parser.add_argument("--reply-chars", type=int, default=600)
    print(json.dumps(asyncio.run(measure(parser.parse_args())), indent=2))


if __name__ == "__main__":
    main()
