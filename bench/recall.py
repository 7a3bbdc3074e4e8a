"""``python -m bench.recall``: how long the recall step takes, and what it
adds to a reply, at 10k and 1M stored messages per backend.

Per backend and size: one fresh database (PostgreSQL: created for the run
and dropped after it; SQLite: a file in a temporary directory; MariaDB when
``--mysql`` and one answers on 127.0.0.1:3306), brought to schema 4, loaded
in bulk (PostgreSQL ``COPY``, SQLite and MariaDB batched inserts in one
transaction), then migrated to schema 5 as an upgrading bot would (the
full-text index is built over the loaded rows; its time is reported).

Each user has about ``--per-user`` messages (so 1M messages are 2,000 users
of 500): the table grows, a user's history does not, and a flat latency from
10k to 1M is the goal. Messages are sentences drawn from a 5,000-word
vocabulary with a Zipf-like frequency; every user has three facts.

Measured: the recall search as the bot runs it (``RecallQueries.search``
through the memory's database thread pool, facts and messages in one call),
for a new message of eight random words by a random user in one of their
places, ``--queries`` times after a warm-up; p50/p99/max in ms. The token
cost is what :func:`plugins.recall.service.choose` adds to the context with
the default settings (300 tokens at most), per reply: mean, p99 and the
mean number of recalled lines.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from core.models import Context, Session
from plugins.memory import records
from plugins.memory.durable import DurableStore
from plugins.memory.schema import migrate
from plugins.recall.facts import Fact
from plugins.recall.queries import RecallQueries, Where, terms
from plugins.recall.service import choose
from plugins.sessions.tokens import estimate_tokens

from bench.servers import PostgresDatabase
from bench.stats import percentile

VOCABULARY = 5000
GUILDS = 50
FACTS = [Fact("name", "Ada"), Fact("lives in", "Lisbon"), Fact("favourite colour", "teal")]


def _words(seed: int) -> list[str]:
    rng = random.Random(seed)
    syllables = ["ka", "lo", "mi", "ter", "son", "da", "ve", "ri", "pa", "nu", "shi", "gor", "bel", "tan", "xi", "que"]
    out: set[str] = set()
    while len(out) < VOCABULARY:
        out.add("".join(rng.choice(syllables) for _ in range(rng.randint(2, 4))))
    return sorted(out)


class Corpus:
    """Deterministic users, places and sentences."""

    def __init__(self, size: int, per_user: int, seed: int = 7) -> None:
        self.size = size
        self.users = max(20, size // per_user)
        self.rng = random.Random(seed)
        self.vocabulary = _words(seed)
        # Zipf-like: word i is drawn with weight 1/(i+1).
        self.weights = [1 / (i + 1) for i in range(VOCABULARY)]
        self.cumulative = list(_accumulate(self.weights))

    def sentence(self, n: int | None = None) -> str:
        count = n or self.rng.randint(6, 18)
        return " ".join(self.rng.choices(self.vocabulary, cum_weights=self.cumulative, k=count))

    def user(self, n: int) -> str:
        return str(10_000 + n)

    def place_of(self, user: int) -> list[str | None]:
        """A user speaks in two guilds and in DMs."""
        return [str(100 + user % GUILDS), str(100 + (user * 7 + 3) % GUILDS), None]

    def rows(self) -> Any:
        now = 1_700_000_000.0
        for i in range(self.size):
            user = self.rng.randrange(self.users)
            guild = self.rng.choice(self.place_of(user))
            channel = f"{guild or 'dm'}-1"
            scope = f"g:{guild}:c:{channel}:u:{self.user(user)}" if guild else f"dm:{self.user(user)}"
            yield (
                str(1_000_000_000 + i), f"s-{user}-{i // 5000}", scope, "user", self.user(user), f"user{user}",
                self.sentence(), now + i, guild, channel, None, "[]", now + i,
            )


def _accumulate(values: list[float]) -> Any:
    total = 0.0
    for v in values:
        total += v
        yield total


# --- loading ---------------------------------------------------------------------------


def _tsv(value: Any) -> str:
    if value is None:
        return "\\N"
    return str(value).replace("\\", "\\\\").replace("\t", " ").replace("\n", " ")


def load_postgres(store: DurableStore, corpus: Corpus) -> None:
    conn = store.db.connection()
    cols = ", ".join(records.ROW_COLUMNS)
    batch = io.StringIO()
    count = 0
    with conn.cursor() as cur:
        for row in corpus.rows():
            batch.write("\t".join(_tsv(v) for v in row) + "\n")
            count += 1
            if count % 100_000 == 0:
                batch.seek(0)
                cur.copy_expert(f"COPY messages ({cols}) FROM STDIN", batch)
                batch = io.StringIO()
        batch.seek(0)
        cur.copy_expert(f"COPY messages ({cols}) FROM STDIN", batch)
    conn.commit()


def load_batched(store: DurableStore, corpus: Corpus) -> None:
    cols = ", ".join(records.ROW_COLUMNS)
    marks = ", ".join([store.db.param] * len(records.ROW_COLUMNS))
    sql = f"INSERT INTO messages ({cols}) VALUES ({marks})"
    rows = corpus.rows()
    with store.db.atomic():
        cursor = store.db.cursor()
        while True:
            chunk = [r for _, r in zip(range(5000), rows)]
            if not chunk:
                break
            cursor.executemany(sql, chunk)


def load_facts(store: DurableStore, queries: RecallQueries, corpus: Corpus) -> None:
    for user in range(corpus.users):
        for guild in corpus.place_of(user):
            place = f"g:{guild}" if guild else "dm"
            queries.save_facts(corpus.user(user), place, FACTS, f"fact-{user}", 1_700_000_000.0)


# --- measuring -------------------------------------------------------------------------


async def measure(store: DurableStore, corpus: Corpus, queries: int, warmup: int) -> dict[str, Any]:
    search = RecallQueries(store)
    session = Session(id="s", scope_key="k", user_id="u", guild_id=None, channel_id=None, opened_at=0.0, last_active_at=0.0)
    rng = random.Random(11)
    latencies: list[float] = []
    tokens: list[int] = []
    lines: list[int] = []
    for n in range(warmup + queries):
        user = rng.randrange(corpus.users)
        guild = rng.choice(corpus.place_of(user))
        text = corpus.sentence(8)
        where = Where(corpus.user(user), guild)
        start = time.perf_counter()
        found = await store.run(search.search, where, terms(text), 3 + 10, 10, 0.2)
        elapsed = (time.perf_counter() - start) * 1000
        if n < warmup:
            continue
        latencies.append(elapsed)
        chosen = choose(found, Context(session, "", []), 300, estimate_tokens, 3)
        tokens.append(sum(r.tokens for r in chosen) + (30 if chosen else 0))
        lines.append(len(chosen))
    latencies.sort()
    tokens.sort()
    return {
        "p50_ms": round(percentile(latencies, 50), 2),
        "p99_ms": round(percentile(latencies, 99), 2),
        "max_ms": round(latencies[-1], 2),
        "tokens_mean": round(statistics.fmean(tokens), 1),
        "tokens_p99": round(percentile([float(t) for t in tokens], 99), 1),
        "lines_mean": round(statistics.fmean(lines), 2),
    }


async def run_one(backend: str, size: int, args: argparse.Namespace) -> dict[str, Any]:
    corpus = Corpus(size, args.per_user)
    pg: PostgresDatabase | None = None
    tmp = tempfile.TemporaryDirectory(prefix="bench-recall-")
    mysql_name = None
    if backend == "postgres":
        pg = PostgresDatabase()
        pg.create()
        url = pg.url
    elif backend == "mysql":
        mysql_name = f"bench_recall_{random.randrange(1 << 30)}"
        _mysql_admin(f"CREATE DATABASE {mysql_name} CHARACTER SET utf8mb4")
        url = f"mysql://root@127.0.0.1:3306/{mysql_name}"
    else:
        url = f"sqlite:///{Path(tmp.name) / 'recall.db'}"
    store = DurableStore(url, timeout=30.0, slow_timeout=3600.0, threads=4)
    try:
        started = time.perf_counter()
        await store.run(migrate, store.m, 4, slow=True)
        loader = load_postgres if backend == "postgres" else load_batched
        await store.run(loader, store, corpus, slow=True)
        loaded = time.perf_counter() - started
        started = time.perf_counter()
        await store.run(migrate, store.m, slow=True)
        if backend == "postgres":
            await store.run(lambda: store.db.execute_sql("ANALYZE messages"), slow=True)
        indexed = time.perf_counter() - started
        await store.run(load_facts, store, RecallQueries(store), corpus, slow=True)
        store.timeout = 5.0
        if args.explain:
            await store.run(explain, store, corpus)
        result = await measure(store, corpus, args.queries, args.warmup)
        return {"backend": backend, "messages": size, "users": corpus.users, "load_s": round(loaded, 1), "index_s": round(indexed, 1), **result}
    finally:
        await store.close()
        if pg is not None:
            pg.drop()
        if mysql_name:
            _mysql_admin(f"DROP DATABASE IF EXISTS {mysql_name}")
        tmp.cleanup()


def explain(store: DurableStore, corpus: Corpus) -> None:
    """Print the plan of one search (``--explain``)."""
    queries = RecallQueries(store)
    captured: list[tuple[str, Any]] = []
    real = store.db.execute_sql

    def capture(sql: str, params: Any = None, *a: Any, **k: Any) -> Any:
        captured.append((sql, params))
        return real(sql, params, *a, **k)

    store.db.execute_sql = capture  # type: ignore[method-assign]
    try:
        queries.search(Where(corpus.user(3), corpus.place_of(3)[0]), terms(corpus.sentence(8)), 13, 10, 1.0)
    finally:
        store.db.execute_sql = real  # type: ignore[method-assign]
    sql, params = captured[-1]
    prefix = "EXPLAIN ANALYZE " if store.dialect == "postgres" else "EXPLAIN QUERY PLAN " if store.dialect == "sqlite" else "EXPLAIN "
    for row in real(prefix + sql, params).fetchall():
        print("   ", " | ".join(str(c) for c in row))


def _mysql_admin(sql: str) -> None:
    import pymysql

    conn = pymysql.connect(host="127.0.0.1", port=3306, user="root", password="", connect_timeout=2)
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
    finally:
        conn.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.recall", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sizes", default="10000,1000000", help="stored messages per run, comma-separated")
    parser.add_argument("--backends", default="postgres,sqlite", help="postgres, sqlite, mysql (comma-separated)")
    parser.add_argument("--per-user", type=int, default=500, help="messages per user, about")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--explain", action="store_true", help="print the plan of one search per run")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    results = []
    for backend in [b.strip() for b in args.backends.split(",") if b.strip()]:
        for size in [int(s) for s in args.sizes.split(",") if s.strip()]:
            result = asyncio.run(run_one(backend, size, args))
            results.append(result)
            print(
                f"{backend:9} {size:>9,} messages ({result['users']:,} users): recall p50 {result['p50_ms']} ms,"
                f" p99 {result['p99_ms']} ms, max {result['max_ms']} ms; adds {result['tokens_mean']} tokens"
                f" (p99 {result['tokens_p99']}, {result['lines_mean']} lines) per reply;"
                f" load {result['load_s']} s, index {result['index_s']} s",
                flush=True,
            )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
