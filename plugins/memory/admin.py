"""The memory's admin commands: ``migrate``, ``outbox`` and ``cache``.

Each runs in its own process beside the serving instances, on the same
``DATABASE_URL``, ``REDIS_URL`` and data dir (the spool lives there). None
needs Discord. Exit codes are those of :mod:`core.admin`.

- ``migrate show`` reads the schema version without changing anything;
  ``migrate apply`` brings the database to the version this code expects
  (every instance also does so when it starts: this is for upgrades done
  before a rolling restart, or a database restored from an old backup).
- ``outbox status`` counts the writes waiting for the database, in the
  spool files and the shared Redis stream, without replaying them.
  ``outbox replay`` drains them into the database now, instead of at the
  next probe of a running instance (D3).
- ``retention show|run`` shows the ``[memory] retention`` rules, or
  deletes what is older than them now, with progress (the bot also runs
  it every ``retention_interval``; plugins/memory/retention.py).
- ``cache rebuild`` warms Redis from the database: the session and the
  window of the most recently active sessions, never overwriting what a
  running instance wrote meanwhile (the same fill as after a flush, D4).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from core.admin import EXIT_ATTENTION, EXIT_OK, EXIT_UNREACHABLE, EXIT_USAGE, AdminCommand, AdminError, Output
from plugins.memory import schema
from plugins.memory.breaker import BackendDown
from plugins.memory.cache import Cache, RedisURLError, make_client
from plugins.memory.durable import DatabaseURLError, DurableStore, describe_url
from plugins.memory.outbox import Outbox, Spool
from plugins.memory.settings import DEFAULT_REDIS_URL, MemorySettings
from plugins.memory.store import MemoryStore


def _settings(bot: Any) -> MemorySettings:
    return bot.settings.for_plugin("memory", MemorySettings)


def _database_url(bot: Any, settings: MemorySettings) -> str:
    if settings.database_url:
        return settings.database_url.get_secret_value()
    path = Path(bot.settings.data_dir) / "memory.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


@contextlib.asynccontextmanager
async def _database(bot: Any) -> AsyncIterator[DurableStore]:
    """The database alone, reached but not migrated."""
    settings = _settings(bot)
    url = _database_url(bot, settings)
    try:
        db = DurableStore(url, timeout=settings.db_timeout, slow_timeout=settings.db_slow_timeout, threads=1)
    except DatabaseURLError as exc:
        raise AdminError(f"DATABASE_URL is malformed: {exc}", EXIT_USAGE) from None
    try:
        try:
            await db.ping()
        except BackendDown as exc:
            raise AdminError(f"the database at {describe_url(url)} does not answer: {exc.reason}") from None
        yield db
    finally:
        await db.close()


@contextlib.asynccontextmanager
async def _store(bot: Any) -> AsyncIterator[MemoryStore]:
    """A memory store of its own (not the bot's plugins), started: both
    backends reached, the schema migrated, as an instance starts."""
    store = MemoryStore(
        _settings(bot), data_dir=bot.settings.data_dir, instance_id=f"{bot.instance_id}-admin", clock=bot.clock, serves_messages=False
    )
    try:
        await store.start()
    except RuntimeError as exc:
        raise AdminError(str(exc), EXIT_USAGE) from None
    try:
        yield store
    finally:
        await store.stop()


# --- migrate ---------------------------------------------------------------------


async def migrate(bot: Any, args: argparse.Namespace, out: Output) -> int:
    async with _database(bot) as db:
        current = await db.run(schema.current_version, db.m, slow=True)
        pending = [n for n, _step in schema.MIGRATIONS if current < n <= schema.SCHEMA_VERSION]
        out.data(database=db.where, schema_version=current, code_version=schema.SCHEMA_VERSION)
        if args.action == "show":
            out.data(pending=pending)
            out.line(f"database: {db.where}")
            out.line(f"schema version: {current} (this code expects {schema.SCHEMA_VERSION})")
            if current > schema.SCHEMA_VERSION:
                out.line("the database is newer than this code: upgrade the bot before running it")
                return EXIT_ATTENTION
            out.line(f"pending migrations: {', '.join(map(str, pending))}" if pending else "up to date")
            return EXIT_ATTENTION if pending else EXIT_OK
        applied = await db.migrate()
        out.data(applied=applied, schema_version=applied[-1] if applied else current)
        out.line(f"applied migrations: {', '.join(map(str, applied))}" if applied else "up to date: nothing to apply")
        return EXIT_OK


def _migrate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["show", "apply"], help="show the schema version, or apply what is pending")


# --- outbox ----------------------------------------------------------------------


async def _stream_depth(bot: Any, settings: MemorySettings) -> int | None:
    """Writes waiting in the shared Redis stream; ``None`` when Redis does
    not answer (unknown is not empty)."""
    url = settings.redis_url.get_secret_value() if settings.redis_url else DEFAULT_REDIS_URL
    try:
        client = make_client(url, settings.redis_timeout)
    except RedisURLError as exc:
        raise AdminError(f"REDIS_URL is malformed: {exc}", EXIT_USAGE) from None
    cache = Cache(client, prefix=settings.key_prefix, window_size=settings.window_size, ttl=settings.cache_ttl, timeout=settings.redis_timeout)
    try:
        return await Outbox(cache, Spool(Path("."), "admin")).stream_depth()
    except BackendDown:
        return None
    finally:
        with contextlib.suppress(Exception):
            await client.aclose()


def _spool(bot: Any, settings: MemorySettings) -> Spool:
    return Spool(Path(settings.spool_dir or Path(bot.settings.data_dir) / "spool"), "admin")


async def outbox_status(bot: Any, out: Output) -> int:
    settings = _settings(bot)
    spool = _spool(bot, settings)
    spooled = await asyncio.get_running_loop().run_in_executor(None, spool.depth)
    stream = await _stream_depth(bot, settings)
    out.data(spool=spooled, spool_dir=str(spool.folder), stream=stream)
    out.line(f"spool ({spool.folder}): {spooled} write{'s' if spooled != 1 else ''}")
    out.line(f"redis stream: {'unknown (Redis does not answer)' if stream is None else stream}")
    if stream is None:
        return EXIT_UNREACHABLE
    if spooled or stream:
        out.line("writes wait for the database: they drain by themselves once it answers; `outbox replay` drains them now")
        return EXIT_ATTENTION
    out.line("empty")
    return EXIT_OK


async def outbox_replay(bot: Any, out: Output) -> int:
    # Starting a store replays what it can already (both backends up); what
    # is left (the spool, with Redis down) is replayed here.
    async with _store(bot) as store:
        if not store.db_ok:
            left = len(await store.pending_entries())
            out.data(replayed=0, left=left)
            raise AdminError(f"the database does not answer ({store.db_breaker.reason}): {left} writes still wait")
        progress = out.progress("replaying the outbox")
        replayed = await store._replay_outbox()
        progress.advance(replayed)
        progress.close()
        left = len(await store.pending_entries())
        out.data(replayed=replayed, left=left, redis_ok=store.redis_ok)
        out.line(f"replayed {replayed} write{'s' if replayed != 1 else ''} into the database; {left} left")
        if left and not store.redis_ok:
            out.line("the rest is in the Redis stream, and Redis does not answer: run this again once it does")
        return EXIT_ATTENTION if left else EXIT_OK


async def outbox(bot: Any, args: argparse.Namespace, out: Output) -> int:
    return await (outbox_status(bot, out) if args.action == "status" else outbox_replay(bot, out))


def _outbox_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["status", "replay"], help="count the waiting writes, or drain them into the database")


# --- cache -----------------------------------------------------------------------


def _recent_scopes(db: DurableStore, limit: int) -> list[str]:
    S = db.m.SessionRow
    query = S.select(S.scope_key, S.last_active_at).order_by(S.last_active_at.desc()).limit(limit * 2)
    scopes: list[str] = []
    for row in query:
        if row.scope_key not in scopes:
            scopes.append(row.scope_key)
    return scopes[:limit]


async def cache_rebuild(bot: Any, args: argparse.Namespace, out: Output) -> int:
    async with _store(bot) as store:
        if not (store.db_ok and store.redis_ok) or store.db is None or store.cache is None:
            down = [name for name, ok in (("database", store.db_ok), ("redis", store.redis_ok)) if not ok]
            raise AdminError(f"{' and '.join(down)} not answering: the cache is rebuilt from the database into Redis")
        db, cache = store.db, store.cache
        if args.new_epoch:
            # Every instance stops trusting every cached window and session.
            await cache.bump_epoch()
            out.data(epoch=cache.epoch)
        scopes = await db.run(_recent_scopes, db, args.limit, slow=True)
        progress = out.progress("rebuilding sessions", len(scopes))
        rebuilt = 0
        for scope in scopes:
            data = await db.run(db.latest_session, scope, slow=True)
            if data is not None:
                await cache.put_session(data, only_if_missing=True, epoch=cache.epoch)
                await store.refill(data["id"])
                rebuilt += 1
            progress.advance()
        progress.close()
        if not (store.db_ok and store.redis_ok):
            raise AdminError(f"a backend failed midway: {rebuilt} of {len(scopes)} sessions rebuilt")
        out.data(sessions=rebuilt)
        out.line(f"rebuilt {rebuilt} session{'s' if rebuilt != 1 else ''} and their windows in Redis")
        return EXIT_OK


def _cache_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["rebuild"], help="warm Redis from the database")
    parser.add_argument("--limit", type=int, default=1000, help="the most recently active sessions to rebuild (1000)")
    parser.add_argument(
        "--new-epoch",
        action="store_true",
        help="first invalidate every cached window and session, for every instance (after an upgrade that renamed keys)",
    )


# --- retention -------------------------------------------------------------------


async def retention_command(bot: Any, args: argparse.Namespace, out: Output) -> int:
    from plugins.memory import retention

    settings = _settings(bot)
    rules = retention.rules(settings.retention)
    out.data(rules={r.key: r.days for r in rules})
    if not rules:
        out.line("no retention is configured ([memory] retention): everything is kept")
        return EXIT_OK
    for rule in rules:
        out.line(f"{rule.key}: messages older than {rule.days:g} days are deleted")
    if args.action == "show":
        return EXIT_OK
    async with _store(bot) as store:
        if not store.db_ok:
            raise AdminError(f"the database does not answer ({store.db_breaker.reason}): nothing was deleted")
        progress = out.progress("deleting old messages")
        try:
            outcome = await retention.run(store, settings.retention, bot.clock.now(), lambda _place, batch: progress.advance(batch))
        except BackendDown as exc:
            raise AdminError(f"the database stopped answering midway ({exc.reason}): run this again; what was deleted stays deleted") from None
        finally:
            progress.close()
        out.data(**outcome.as_dict())
        out.line(
            f"deleted {outcome.messages} messages, {outcome.sessions} closed sessions, {outcome.facts} facts"
            f" ({outcome.queued} queued writes, {outcome.cache_keys} cache keys)"
        )
        return EXIT_OK


def _retention_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["show", "run"], help="show the rules, or delete what is older now")


COMMANDS = [
    AdminCommand("migrate", "show or apply the database schema migrations", migrate, _migrate_arguments, start=False),
    AdminCommand("outbox", "writes waiting for the database: status, or replay them now", outbox, _outbox_arguments, start=False),
    AdminCommand("cache", "rebuild: warm Redis from the database for the recently active sessions", cache_rebuild, _cache_arguments, start=False),
    AdminCommand("retention", "per-guild retention: show the rules, or delete older messages now", retention_command, _retention_arguments, start=False),
]
