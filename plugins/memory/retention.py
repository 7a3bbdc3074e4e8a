"""Retention: messages older than a guild's limit are deleted everywhere.

``[memory] retention`` maps ``"guild:<id>"`` (or ``"dm"``, for direct
messages) to a number of days. A run deletes, for each rule, what is older
than ``now - days``, by the message's platform time:

- the messages (the bot's replies too) in the database, in batches, with
  their search-index entries, their vectors, their hidden-from-recall
  marks and their claims; the writes still queued for the database in the outbox;
- the cached windows in Redis of every session that lost a message (they
  are rebuilt from the database at the next read, as after a flush) and
  this instance's in-process copies of them;
- the closed sessions of that place last active before the limit (their
  state, a rolling summary included, goes with them);
- the facts told there before the limit (recall), unless the user pinned
  them (``/memory pin <fact>``).

Every step is idempotent: two instances running it at once, or a run cut
short and started again, delete each row once and leave nothing behind.
The bot runs it every ``retention_interval`` seconds; the admin command
``python -m core retention run`` runs it now, with progress.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from plugins.memory.durable import DurableStore

log = logging.getLogger("plugins.memory.retention")

DAY = 86400.0
BATCH = 1000
# Positions in an outbox message entry (records.ROW_COLUMNS).
_TS, _GUILD = 7, 8


@dataclass(frozen=True, slots=True)
class Rule:
    """Keep ``place``'s messages ``days`` days: ``guild_id`` is ``None``
    for direct messages."""

    key: str
    guild_id: str | None
    days: float

    def cutoff(self, now: float) -> float:
        return now - self.days * DAY


@dataclass
class Outcome:
    messages: int = 0
    sessions: int = 0
    facts: int = 0
    queued: int = 0
    cache_keys: int = 0
    places: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"messages": self.messages, "sessions": self.sessions, "facts": self.facts, "outbox": self.queued,
                "cache_keys": self.cache_keys, "places": self.places}


def rules(retention: dict[str, float]) -> list[Rule]:
    """The rules of the ``retention`` setting (validated by the settings)."""
    out = []
    for key, days in sorted(retention.items()):
        guild = None if key == "dm" else key.split(":", 1)[1]
        out.append(Rule(key, guild, float(days)))
    return out


class RetentionSQL:
    """The deletes, run on the database's threads."""

    def __init__(self, durable: DurableStore) -> None:
        self.db = durable.db
        self.dialect = durable.dialect
        self.p = self.db.param

    def _place(self, rule: Rule, column: str = "guild_id") -> tuple[str, list[Any]]:
        if rule.guild_id is None:
            return f"{column} IS NULL", []
        return f"{column} = {self.p}", [rule.guild_id]

    def delete_batch(self, rule: Rule, cutoff: float, limit: int) -> tuple[list[str], list[str]]:
        """Delete up to ``limit`` of the oldest messages; return their ids and
        the sessions they belonged to."""
        p = self.p
        place, params = self._place(rule)
        # SQLite: the write lock from the start (a read turned write fails at
        # once, without waiting, when another connection wrote meanwhile).
        with self.db.atomic("IMMEDIATE") if self.dialect == "sqlite" else self.db.atomic():
            rows = self.db.execute_sql(
                f"SELECT id, message_id, session_id FROM messages WHERE {place} AND ts < {p} ORDER BY ts LIMIT {p}",
                (*params, cutoff, limit),
            ).fetchall()
            if not rows:
                return [], []
            ids = [r[0] for r in rows]
            message_ids = [r[1] for r in rows]
            marks = ", ".join([p] * len(rows))
            self.db.execute_sql(f"DELETE FROM messages WHERE id IN ({marks})", ids)
            self.db.execute_sql(f"DELETE FROM claims WHERE message_id IN ({marks})", message_ids)
            for table in ("recall_hidden", "message_vectors"):
                if self.db.table_exists(table):
                    self.db.execute_sql(f"DELETE FROM {table} WHERE message_id IN ({marks})", message_ids)
        return message_ids, sorted({r[2] for r in rows})

    def delete_sessions(self, rule: Rule, cutoff: float) -> int:
        place, params = self._place(rule)
        sql = f"DELETE FROM sessions WHERE {place} AND closed_at IS NOT NULL AND last_active_at < {self.p}"
        return int(self.db.execute_sql(sql, (*params, cutoff)).rowcount)

    def delete_facts(self, rule: Rule, cutoff: float) -> int:
        if not self.db.table_exists("facts"):
            return 0
        place = "dm" if rule.guild_id is None else f"g:{rule.guild_id}"
        sql = f"DELETE FROM facts WHERE place = {self.p} AND ts < {self.p} AND pinned = 0"
        return int(self.db.execute_sql(sql, (place, cutoff)).rowcount)

    def compact(self) -> None:
        """SQLite: merge the search index and empty the write-ahead log, so
        deleted text does not linger in pages (as after a forget)."""
        if self.dialect != "sqlite":
            return
        if self.db.table_exists("messages_search"):
            self.db.execute_sql("INSERT INTO messages_search(messages_search) VALUES ('optimize')")
        self.db.execute_sql("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()


Progress = Callable[[str, int], None]


async def run(store: Any, retention: dict[str, float], now: float, progress: Progress | None = None) -> Outcome:
    """Apply every rule once on ``store`` (a started
    :class:`~plugins.memory.store.MemoryStore`). ``progress(place, batch)``
    is called after each batch with how many messages it deleted. Raises
    :class:`~plugins.memory.breaker.BackendDown` when the database does not
    answer (what was deleted stays deleted; the next run goes on)."""
    outcome = Outcome()
    if store.db is None:
        return outcome
    sql = RetentionSQL(store.db)
    for rule in rules(retention):
        cutoff = rule.cutoff(now)
        outcome.places.append(rule.key)
        outcome.queued += await store.outbox.forget(_queued_before(rule, cutoff), store.redis_ok)
        deleted = 0
        while True:
            message_ids, sessions = await store.db.run(sql.delete_batch, rule, cutoff, BATCH, slow=True)
            if not message_ids:
                break
            deleted += len(message_ids)
            outcome.cache_keys += await _drop_cached(store, sessions)
            store.arbiter.forget(message_ids)
            if progress is not None:
                progress(rule.key, len(message_ids))
        outcome.messages += deleted
        outcome.sessions += await store.db.run(sql.delete_sessions, rule, cutoff, slow=True)
        outcome.facts += await store.db.run(sql.delete_facts, rule, cutoff, slow=True)
    if outcome.messages:
        await store.db.run(sql.compact, slow=True)
    return outcome


def _queued_before(rule: Rule, cutoff: float) -> Callable[[dict[str, Any]], bool]:
    def doomed(entry: dict[str, Any]) -> bool:
        if entry.get("k") != "msg":
            return False
        row = entry.get("d") or []
        return len(row) > _GUILD and row[_GUILD] == rule.guild_id and float(row[_TS]) < cutoff

    return doomed


async def _drop_cached(store: Any, sessions: list[str]) -> int:
    """Forget the windows of ``sessions`` in Redis and in this instance:
    the next read rebuilds them from the database, without the deleted
    messages. Sessions, leases and fences stay: the conversation goes on."""
    from plugins.memory.breaker import BackendDown

    store.recent.forget(sessions, "\x00")
    if store.cache is None or not store.redis_ok:
        if store.cache is not None:
            await store._mark_dirty()
        return 0
    try:
        return await store.cache.drop_windows(sessions)
    except BackendDown as exc:
        store.redis_failed(exc)
        await store._mark_dirty()
        return 0
