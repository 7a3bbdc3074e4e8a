"""The recall plugin's database work: full-text search of a user's own
messages, and their facts. Plain functions of :class:`RecallQueries`, run
on the memory plugin's database threads (``DurableStore.run``), never on the
event loop.

Isolation is in every statement (docs/RECALL.md, R1): ``author_id`` is the
asking user and ``role`` is ``user`` (never a reply, never someone else's
message), and the place filter is the ``share`` setting's.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field
from typing import Any

from plugins.recall.facts import Fact, extract

# Words that say nothing about what a message is about.
STOPWORDS = frozenset(
    """a about above after again all also am an and any are as at be because been before being below between both
    but by can could did do does doing don down during each few for from further had has have having he her here
    hers herself him himself his how i if in into is it its itself just me more most my myself no nor not now of
    off on once only or other our ours out over own same she should so some such than that the their theirs them
    then there these they this those through to too under until up very was we were what when where which while
    who whom why will with would you your yours yourself tell told remember know think said say again please
    thanks thank hi hello hey yes okay ok like really""".split()
)
_WORD = re.compile(r"[^\W_]+", re.UNICODE)
MAX_TERMS = 8
# SQLite: newest matches read per message recalled, then ranked by rank().
CANDIDATES = 4
# PostgreSQL: how many of a user's newest messages in a place a search reads.
REACH = 5000


def terms(text: str) -> list[str]:
    """The words of ``text`` worth searching for, in order, at most
    :data:`MAX_TERMS`."""
    out: list[str] = []
    for word in _WORD.findall(text.lower()):
        if len(word) >= 3 and word not in STOPWORDS and word not in out:
            out.append(word)
    return out[:MAX_TERMS]


@dataclass(slots=True, frozen=True)
class Where:
    """Whose and which messages and facts a search may see."""

    user_id: str
    guild_id: str | None  # None: the message is in a DM
    everywhere: bool = False

    @property
    def place(self) -> str:
        return "dm" if self.guild_id is None else f"g:{self.guild_id}"


@dataclass(slots=True)
class FactRow:
    key: str
    value: str
    place: str
    source_id: str | None
    timestamp: float
    pinned: bool = False

    def text(self) -> str:
        return Fact(self.key, self.value).text()


@dataclass(slots=True)
class Hit:
    message_id: str
    content: str
    timestamp: float


def rank(hits: list[Hit], words: list[str]) -> list[Hit]:
    """Order ``hits`` by how many of ``words`` each holds, a word found in
    fewer of the hits counting more; the newest first among equals."""
    found = [set(_WORD.findall(h.content.lower())) & set(words) for h in hits]
    weight = {w: 1.0 / sum(1 for f in found if w in f) for w in words if any(w in f for f in found)}
    scored = sorted(zip(hits, found, strict=True), key=lambda pair: (-sum(weight[w] for w in pair[1]), -pair[0].timestamp))
    return [h for h, _f in scored]


@dataclass(slots=True, frozen=True)
class Semantic:
    """A semantic search: the query's packed vector, by ``model``."""

    model: str
    vector: bytes
    minimum: float = 0.3


@dataclass(slots=True)
class Found:
    facts: list[FactRow] = field(default_factory=list)
    messages: list[Hit] = field(default_factory=list)


class RecallQueries:
    """SQL for one database (``durable``: the memory plugin's
    :class:`~plugins.memory.durable.DurableStore`)."""

    def __init__(self, durable: Any) -> None:
        self.db = durable.db
        self.dialect: str = durable.dialect
        self.p: str = self.db.param

    # --- search --------------------------------------------------------------------

    def search(
        self, where: Where, words: list[str], limit: int, max_facts: int, time_limit: float, semantic: Semantic | None = None
    ) -> Found:
        """The user's facts and the messages best matching ``words`` (and,
        with ``semantic``, the most similar ones first)."""
        with self.db.atomic():
            if self.dialect == "postgres":
                # The reply does not wait for a search the time budget gave up on.
                self.db.execute_sql(f"SET LOCAL statement_timeout = {max(1, int(time_limit * 1000))}")
            facts = self._facts(where, max_facts) if max_facts else []
            hits = self._similar(where, semantic, limit) if semantic is not None and limit else []
            if words and limit:
                seen = {h.message_id for h in hits}
                hits += [h for h in self._messages(where, words, limit) if h.message_id not in seen]
        return Found(facts, hits)

    def _similar(self, where: Where, semantic: Semantic, limit: int) -> list[Hit]:
        """The user's messages whose stored vectors are nearest the query's
        (cosine at least ``semantic.minimum``), among their newest
        :data:`~.embeddings.REACH` in the place."""
        from plugins.recall.embeddings import REACH, similarity, unpack

        p = self.p
        place, place_params = self._place_sql(where, "v.guild_id")
        sql = (
            f"SELECT v.message_id, m.content, m.ts, v.vector FROM message_vectors v JOIN messages m ON m.message_id = v.message_id"
            f" WHERE v.user_id = {p} AND v.model = {p} AND m.author_id = {p}{place}"
            f" AND NOT EXISTS (SELECT 1 FROM recall_hidden h WHERE h.message_id = v.message_id)"
            f" ORDER BY v.ts DESC LIMIT {REACH}"
        )
        rows = self.db.execute_sql(sql, [where.user_id, semantic.model, where.user_id, *place_params]).fetchall()
        query = unpack(semantic.vector)
        scored = [(similarity(query, unpack(r[3])), Hit(r[0], r[1], float(r[2]))) for r in rows]
        near = sorted((pair for pair in scored if pair[0] >= semantic.minimum), key=lambda pair: -pair[0])
        return [hit for _score, hit in near[:limit]]

    def save_vector(self, message_id: str, user_id: str, guild_id: str | None, ts: float, model: str, vector: bytes) -> None:
        p = self.p
        cols = "message_id, user_id, guild_id, ts, model, vector"
        if self.dialect == "mysql":
            sql = f"INSERT IGNORE INTO message_vectors ({cols}) VALUES ({', '.join([p] * 6)})"
        else:
            sql = f"INSERT INTO message_vectors ({cols}) VALUES ({', '.join([p] * 6)}) ON CONFLICT (message_id) DO NOTHING"
        self.db.execute_sql(sql, (message_id, user_id, guild_id, ts, model, vector))

    def _place_sql(self, where: Where, column: str = "m.guild_id") -> tuple[str, list[Any]]:
        if where.everywhere:
            return "", []
        if where.guild_id is None:
            return f" AND {column} IS NULL", []
        return f" AND {column} = {self.p}", [where.guild_id]

    def _facts(self, where: Where, limit: int) -> list[FactRow]:
        p = self.p
        sql = f"SELECT fact_key, value, place, source_id, ts FROM facts WHERE user_id = {p} AND deleted = 0"
        params: list[Any] = [where.user_id]
        if not where.everywhere:
            sql += f" AND place = {p}"
            params.append(where.place)
        sql += f" ORDER BY ts DESC LIMIT {p}"
        params.append(limit)
        return [FactRow(r[0], r[1], r[2], r[3], float(r[4])) for r in self.db.execute_sql(sql, params).fetchall()]

    def _messages(self, where: Where, words: list[str], limit: int) -> list[Hit]:
        p = self.p
        place, place_params = self._place_sql(where)
        hidden = " AND NOT EXISTS (SELECT 1 FROM recall_hidden h WHERE h.message_id = m.message_id)"
        own = f"m.author_id = {p} AND m.role = 'user'"
        if self.dialect == "postgres":
            # The user's own newest rows first (index author_id, ts), then
            # their stored vectors: the cost follows one user's history.
            query = " | ".join(f"'{w}'" for w in words)
            sql = (
                f"WITH mine AS MATERIALIZED (SELECT m.message_id, m.content, m.ts, m.search FROM messages m"
                f" WHERE {own}{place} ORDER BY m.ts DESC LIMIT {REACH})"
                f" SELECT m.message_id, m.content, m.ts FROM mine m WHERE m.search @@ to_tsquery('simple', {p}){hidden}"
                f" ORDER BY ts_rank(m.search, to_tsquery('simple', {p})) DESC, m.ts DESC LIMIT {p}"
            )
            params = [where.user_id, *place_params, query, query, limit]
        elif self.dialect == "mysql":
            # The user's own newest rows (index author_id, ts), matched and
            # ranked here: MATCH ... AGAINST reads the FULLTEXT index for
            # every row holding a common word before the author filter.
            # FORCE INDEX: for ORDER BY ts ... LIMIT the optimizer would
            # rather walk retention's (ts, guild_id) index through every row.
            sql = (
                f"SELECT m.message_id, m.content, m.ts FROM messages m FORCE INDEX (messages_author_id_ts)"
                f" WHERE {own}{place}{hidden} ORDER BY m.ts DESC LIMIT {REACH}"
            )
            rows = self.db.execute_sql(sql, [where.user_id, *place_params]).fetchall()
            wanted = set(words)
            hits = [Hit(r[0], r[1], float(r[2])) for r in rows if wanted & set(_WORD.findall(r[1].lower()))]
            return rank(hits, words)[:limit]
        else:
            # Newest matches first, ranked here: FTS5's bm25 counts every
            # row holding each word (its IDF), which reads the whole index
            # entry of a common word and grows with the table.
            author = where.user_id.replace('"', '""')
            query = f'author_id : "{author}" AND content : (' + " OR ".join(f'"{w}"' for w in words) + ")"
            sql = (
                f"SELECT m.message_id, m.content, m.ts FROM messages_search s JOIN messages m ON m.id = s.rowid"
                f" WHERE messages_search MATCH {p} AND {own}{place}{hidden} ORDER BY s.rowid DESC LIMIT {p}"
            )
            params = [query, where.user_id, *place_params, limit * CANDIDATES]
            rows = self.db.execute_sql(sql, params).fetchall()
            return rank([Hit(r[0], r[1], float(r[2])) for r in rows], words)[:limit]
        return [Hit(r[0], r[1], float(r[2])) for r in self.db.execute_sql(sql, params).fetchall()]

    # --- facts ---------------------------------------------------------------------

    def _upsert_sql(self) -> str:
        p = self.p
        cols = "user_id, place, fact_key, value, source_id, ts, deleted"
        values = f"VALUES ({', '.join([p] * 6)}, 0)"
        if self.dialect == "mysql":
            newer = "VALUES(ts) > ts"
            return (
                f"INSERT INTO facts ({cols}) {values} ON DUPLICATE KEY UPDATE"
                f" value = IF({newer}, VALUES(value), value), source_id = IF({newer}, VALUES(source_id), source_id),"
                f" deleted = IF({newer}, 0, deleted), ts = GREATEST(ts, VALUES(ts))"
            )
        # The newer statement wins; the same one twice changes nothing (R5).
        return (
            f"INSERT INTO facts ({cols}) {values} ON CONFLICT (user_id, place, fact_key) DO UPDATE"
            " SET value = excluded.value, source_id = excluded.source_id, ts = excluded.ts, deleted = 0"
            " WHERE facts.ts < excluded.ts"
        )

    def save_facts(self, user_id: str, place: str, facts: list[Fact], source_id: str, timestamp: float) -> int:
        """Store ``facts`` told in ``source_id``; how many rows changed."""
        sql = self._upsert_sql()
        changed = 0
        with self.db.atomic():
            for fact in facts:
                cursor = self.db.execute_sql(sql, (user_id, place, fact.key, fact.value, source_id, timestamp))
                # MySQL counts an updated row twice: a row changed or not.
                changed += 1 if cursor.rowcount > 0 else 0
        return changed

    def list_facts(self, user_id: str) -> list[FactRow]:
        sql = f"SELECT fact_key, value, place, source_id, ts, pinned FROM facts WHERE user_id = {self.p} AND deleted = 0 ORDER BY fact_key, place"
        return [FactRow(r[0], r[1], r[2], r[3], float(r[4]), bool(r[5])) for r in self.db.execute_sql(sql, (user_id,)).fetchall()]

    def pin_fact(self, user_id: str, key: str, pinned: bool) -> int:
        """Pin (or unpin) ``user_id``'s fact ``key``: a pinned fact outlives
        the guild's retention (plugins/memory/retention.py)."""
        sql = f"UPDATE facts SET pinned = {self.p} WHERE user_id = {self.p} AND fact_key = {self.p} AND deleted = 0"
        return int(self.db.execute_sql(sql, (1 if pinned else 0, user_id, key)).rowcount)

    def delete_fact(self, user_id: str, key: str, now: float) -> tuple[int, int]:
        """Delete ``user_id``'s fact ``key`` in every place, and keep the
        messages that told it out of recall (R6). Returns ``(facts,
        messages hidden)``. The row stays as a tombstone dated ``now`` with
        its value erased, so an older statement replayed later cannot bring
        it back; a newer one can (the user told it again)."""
        p = self.p
        greatest = "MAX" if self.dialect == "sqlite" else "GREATEST"
        with self.db.atomic():
            deleted = self.db.execute_sql(
                f"UPDATE facts SET deleted = 1, value = '', source_id = NULL, ts = {greatest}(ts, {p})"
                f" WHERE user_id = {p} AND fact_key = {p} AND deleted = 0",
                (now, user_id, key),
            ).rowcount
            hidden = self._hide_sources(user_id, key) if deleted else 0
        return deleted, hidden

    def _hide_sources(self, user_id: str, key: str) -> int:
        p = self.p
        rows = self.db.execute_sql(
            f"SELECT message_id, content FROM messages WHERE author_id = {p} AND role = 'user'", (user_id,)
        ).fetchall()
        ids = [r[0] for r in rows if any(f.key == key for f in extract(r[1]))]
        if self.dialect == "mysql":
            sql = f"INSERT IGNORE INTO recall_hidden (message_id, user_id) VALUES ({p}, {p})"
        else:
            sql = f"INSERT INTO recall_hidden (message_id, user_id) VALUES ({p}, {p}) ON CONFLICT (message_id) DO NOTHING"
        for message_id in ids:
            self.db.execute_sql(sql, (message_id, user_id))
        return len(ids)

    # --- people's data ---------------------------------------------------------------

    def export_user(self, user_id: str) -> dict[str, Any]:
        facts = [
            {"key": f.key, "value": f.value, "place": f.place, "source_id": f.source_id, "timestamp": f.timestamp, "pinned": f.pinned}
            for f in self.list_facts(user_id)
        ]
        hidden = [r[0] for r in self.db.execute_sql(f"SELECT message_id FROM recall_hidden WHERE user_id = {self.p}", (user_id,)).fetchall()]
        rows = self.db.execute_sql(f"SELECT message_id, model, vector FROM message_vectors WHERE user_id = {self.p} ORDER BY ts", (user_id,))
        vectors = [{"message_id": r[0], "model": r[1], "float32_le": base64.b64encode(bytes(r[2])).decode("ascii")} for r in rows.fetchall()]
        return {"facts": facts, "recall_hidden": hidden, "message_vectors": vectors}

    def export_guild(self, guild_id: str) -> dict[str, Any]:
        """The facts members told in ``guild_id`` (place ``g:<id>``), each
        with whose it is; never another guild's or a DM's."""
        sql = (f"SELECT user_id, fact_key, value, source_id, ts, pinned FROM facts WHERE place = {self.p} AND deleted = 0"
               " ORDER BY user_id, fact_key")
        rows = self.db.execute_sql(sql, (f"g:{guild_id}",)).fetchall()
        facts = [{"user_id": r[0], "key": r[1], "value": r[2], "place": f"g:{guild_id}", "source_id": r[3], "timestamp": r[4],
                  "pinned": bool(r[5])} for r in rows]
        return {"facts": facts}

    def forget_user(self, user_id: str) -> dict[str, int]:
        with self.db.atomic():
            facts = self.db.execute_sql(f"DELETE FROM facts WHERE user_id = {self.p}", (user_id,)).rowcount
            hidden = self.db.execute_sql(f"DELETE FROM recall_hidden WHERE user_id = {self.p}", (user_id,)).rowcount
            vectors = self.db.execute_sql(f"DELETE FROM message_vectors WHERE user_id = {self.p}", (user_id,)).rowcount
        if self.dialect == "sqlite":
            # The messages' index entries went with the messages (triggers);
            # merging the index drops them from its pages too, and the log.
            self.db.execute_sql("INSERT INTO messages_search(messages_search) VALUES ('optimize')")
            self.db.execute_sql("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        return {"facts": facts, "recall_hidden": hidden, "message_vectors": vectors}
