"""The ledger of a soak (what the driver sent, what each instance answered)
and the checker that compares it with the database and the bot's views.

The checker is plain functions over plain data, so a test can hand it a
ledger with a deliberate fault in it and see the fault counted.

Definitions (docs/CHAOS.md explains them):

- a message is **accepted** when some instance answered its delivery with a
  reply: the pipeline sends a reply only after ``store_message`` returned
  (degraded or not). A delivery whose instance died before answering
  accepts nothing; the driver redelivers it elsewhere.
- **lost**: accepted, but its row (or its reply's row ``reply:<id>``) is not
  in ``messages`` after the outboxes drained.
- **stored twice**: two rows for one sent message (same content under two
  ids) or two reply rows answering one message.
- **out of order**: a stored row whose timestamp/content differs from what
  was sent, a reply row that sorts before its message, or a context window
  an instance generated a reply from that is not in the database's order.
- **replies missing / doubled**: per incoming message id, across instances
  and redeliveries, exactly one reply must have been sent. The one excuse
  for a doubled reply is a real double outage: one of its replies said
  memory is degraded *and* was sent while Redis and the database were both
  really down (a Redis restart or blackhole overlapping a database cut, see
  :func:`both_down`). Anything else, e.g. an instance whose own view of the
  backends was stale, is a violation.
- **context mismatch**: for a sampled conversation, what an instance serves
  as its last N messages differs from the database's last N for that session.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

VIOLATIONS = (
    "lost_messages",
    "lost_replies",
    "stored_twice",
    "out_of_order",
    "replies_missing",
    "replies_doubled",
    "context_mismatch",
)


def order_key(message_id: str, ts: float) -> tuple[float, int, str]:
    """The database's order: (ts, length(message_id), message_id)."""
    return (ts, len(message_id), message_id)


@dataclass
class Delivery:
    instance: str
    kind: str  # first | redelivery | rolling | retry
    outcome: str = "pending"  # pending | replied | no-reply | error: ...
    start: float = 0.0  # seconds since the soak started (for tracing a violation with --keep)
    end: float = 0.0


@dataclass
class Reply:
    instance: str
    content: str
    degraded: bool
    # When its context was built (seconds since the soak started): the user
    # message was stored just before, so this is when "degraded" was decided.
    at: float | None = None


@dataclass
class Entry:
    """One message the driver made, and everything that happened to it."""

    id: str
    conversation: int
    session_hint: str
    content: str
    ts: float
    deliveries: list[Delivery] = field(default_factory=list)
    replies: list[Reply] = field(default_factory=list)
    # The reply is stored though no reply was reported (found at the end):
    # the driver stops redelivering it.
    reply_stored: bool = False

    @property
    def accepted(self) -> bool:
        return bool(self.replies)


@dataclass
class View:
    """What one instance served as a conversation's last N messages."""

    conversation: int
    instance: str
    session_id: str | None
    ids: list[str] | None  # None: the instance could not answer (``error``)
    error: str | None = None


@dataclass
class Row:
    """One row of ``messages`` (the columns the checker needs)."""

    message_id: str
    session_id: str
    role: str
    content: str
    ts: float
    reply_to_id: str | None


class Ledger:
    def __init__(self) -> None:
        self.entries: dict[str, Entry] = {}
        self.order: list[str] = []
        # Context windows replies were generated from that were not in order.
        self.unsorted_windows: list[dict[str, Any]] = []
        self.windows_seen = 0
        self.windows_without_self = 0
        # Windows where something newer than the message answered was already
        # stored (a redelivered or overtaken message): allowed, counted.
        self.current_not_newest = 0

    def add(self, entry: Entry) -> Entry:
        self.entries[entry.id] = entry
        self.order.append(entry.id)
        return entry

    def note_windows(self, message_id: str, instance: str, contexts: list[dict[str, Any]]) -> None:
        """Check the windows a reply to ``message_id`` was generated from.

        The sessions plugin puts the message being answered last, by design
        (the prompt ends with the question); the history before it must be
        in the database's order, without duplicates.
        """
        for ctx in contexts:
            self.windows_seen += 1
            pairs = [(i, t) for i, t in zip(ctx["ids"], ctx["ts"], strict=True)]
            history = [order_key(i, t) for i, t in pairs if i != message_id]
            ids = [i for i, _t in pairs]
            if history != sorted(history) or len(set(ids)) != len(ids):
                bad = next((n for n in range(1, len(history)) if history[n] <= history[n - 1]), None)
                dups = sorted(i for i, n in Counter(ids).items() if n > 1)
                self.unsorted_windows.append({"message_id": message_id, "instance": instance, "size": len(ids),
                                              "first_bad": history[bad - 1: bad + 1] if bad else None,
                                              "duplicated": dups[:5], "notes": ctx.get("notes", [])})
            if message_id not in ids:
                self.windows_without_self += 1
            elif any(order_key(i, t) > order_key(message_id, dict(pairs)[message_id]) for i, t in pairs):
                self.current_not_newest += 1


# A degraded reply is decided a little before its delivery ends (the user
# message is stored, then the reply generated and sent), and an instance sees
# a backend back only at its next probe (every 0.5 s) plus the recovery work
# (outbox replay): the margins by which a reply still counts as sent during
# a double outage.
DECIDED_BEFORE_END = 2.0
RECOVERY_GRACE = 2.0


def both_down(events: list[dict[str, Any]]) -> list[tuple[float, float]]:
    """The times (seconds since the soak started) when Redis and the
    database were both really unreachable: a Redis restart or blackhole
    overlapping a database cut."""
    redis = [(e["at"], e["end"]) for e in events if e["kind"] in ("redis_restart", "redis_blackhole") and "end" in e]
    db = [(e["at"], e["end"]) for e in events if e["kind"] == "db_cut" and "end" in e]
    out = []
    for r0, r1 in redis:
        for d0, d1 in db:
            start, end = max(r0, d0), min(r1, d1)
            if start < end:
                out.append((start, end))
    return sorted(out)


def _during(t0: float, t1: float, outages: list[tuple[float, float]]) -> bool:
    return any(t0 <= end + RECOVERY_GRACE and start <= t1 for start, end in outages)


def check(
    ledger: Ledger, rows: list[Row], views: list[View], window: int, outages: list[tuple[float, float]] | None = None
) -> dict[str, Any]:
    """Compare the ledger with the database rows and the instances' views.

    ``outages`` are the real double outages (:func:`both_down`); a doubled
    reply is excused only when a degraded reply of it was sent during one.

    Returns ``{"counts": {...}, "examples": {...}}``; every name in
    :data:`VIOLATIONS` must count 0 for the soak to pass.
    """
    by_id: dict[str, Row] = {}
    id_count: Counter[str] = Counter()
    for row in rows:
        id_count[row.message_id] += 1
        by_id[row.message_id] = row
    examples: dict[str, list[Any]] = defaultdict(list)

    def note(kind: str, what: Any) -> None:
        if len(examples[kind]) < 10:
            examples[kind].append(what)

    counts: Counter[str] = Counter({k: 0 for k in VIOLATIONS})
    content_to_id = {e.content: e.id for e in ledger.entries.values()}

    # Duplicated rows: one id twice (the UNIQUE index forbids it, but a
    # schema change must not make it pass silently), one sent content under
    # several ids, several replies answering one message.
    for mid, n in id_count.items():
        if n > 1:
            counts["stored_twice"] += n - 1
            note("stored_twice", {"message_id": mid, "rows": n})
    user_by_content: Counter[str] = Counter(r.content for r in rows if r.role == "user" and r.content in content_to_id)
    for content, n in user_by_content.items():
        if n > 1:
            counts["stored_twice"] += n - 1
            note("stored_twice", {"content": content, "rows": n})
    replies_to: Counter[str] = Counter(r.reply_to_id for r in rows if r.role == "bot" and r.reply_to_id)
    for mid, n in replies_to.items():
        if n > 1:
            counts["stored_twice"] += n - 1
            note("stored_twice", {"reply_to": mid, "rows": n})

    stats: Counter[str] = Counter({"replies_doubled_memory_down": 0})
    doubled_by: Counter[str] = Counter()
    for entry in ledger.entries.values():
        n_replies = len(entry.replies)
        stats["deliveries"] += len(entry.deliveries)
        for d in entry.deliveries:
            stats[f"deliveries_{d.kind}"] += 1
        if n_replies == 0 and f"reply:{entry.id}" in by_id:
            # The reply is stored, so it was sent (the pipeline stores a reply
            # only after sending it), by a process killed before it could
            # report the send to the driver: answered, as Discord would show.
            stats["replies_sent_unreported"] += 1
        elif n_replies == 0:
            counts["replies_missing"] += 1
            note("replies_missing", {"id": entry.id, "deliveries": [(d.instance, d.kind, d.outcome) for d in entry.deliveries]})
        elif n_replies > 1:
            # Which deliveries answered, on how many instances, with memory healthy or degraded.
            kinds = "+".join(sorted(d.kind for d in entry.deliveries if d.outcome == "replied"))
            where = "same-instance" if len({r.instance for r in entry.replies}) == 1 else "cross-instance"
            flags = [r.degraded for r in entry.replies]
            memory = "all-degraded" if all(flags) else "some-degraded" if any(flags) else "healthy"
            during_outage = any(
                r.degraded and _during(r.at, r.at, outages or []) for r in entry.replies if r.at is not None
            ) or any(
                # Without the time a reply was generated: the delivery's end, less a margin.
                d.outcome == "replied" and _during(d.end - DECIDED_BEFORE_END, d.end, outages or [])
                for d in entry.deliveries
                if d.instance in {r.instance for r in entry.replies if r.degraded and r.at is None}
            )
            if during_outage:
                # A degraded reply sent while both backends were really down:
                # G6 has the instance answer anyway, and with no backend
                # nothing can arbitrate between instances. Counted and shown,
                # but the availability guarantee's price, not a violation of
                # "one reply per message".
                stats["replies_doubled_memory_down"] += n_replies - 1
                memory = "both-down"
            else:
                counts["replies_doubled"] += n_replies - 1
            doubled_by[f"{kinds} {where} {memory}"] += n_replies - 1
            note("replies_doubled", {"id": entry.id, "replies": [r.instance for r in entry.replies],
                                     "deliveries": [(d.instance, d.kind, d.outcome) for d in entry.deliveries]})
        if any(r.degraded for r in entry.replies):
            stats["degraded_replies"] += 1
        row = by_id.get(entry.id)
        if row is not None:
            stats["stored"] += 1
            if row.ts != entry.ts or row.content != entry.content or row.role != "user":
                counts["out_of_order"] += 1
                note("out_of_order", {"id": entry.id, "sent_ts": entry.ts, "stored_ts": row.ts, "role": row.role})
        if not entry.accepted:
            if row is not None:
                stats["stored_without_reply"] += 1
            continue
        stats["accepted"] += 1
        if row is None:
            counts["lost_messages"] += 1
            note("lost_messages", {"id": entry.id, "replies": [r.instance for r in entry.replies]})
        reply_row = by_id.get(f"reply:{entry.id}")
        if reply_row is None:
            counts["lost_replies"] += 1
            note("lost_replies", {"id": entry.id})
        elif row is not None and order_key(reply_row.message_id, reply_row.ts) <= order_key(row.message_id, row.ts):
            counts["out_of_order"] += 1
            note("out_of_order", {"id": entry.id, "reply_ts": reply_row.ts, "message_ts": row.ts})

    counts["out_of_order"] += len(ledger.unsorted_windows)
    for w in ledger.unsorted_windows[:3]:
        note("out_of_order", {"unsorted_window": w})

    known = set(ledger.entries) | {f"reply:{i}" for i in ledger.entries}
    stats["unknown_rows"] = sum(1 for r in rows if r.message_id not in known)

    by_session: dict[str, list[Row]] = defaultdict(list)
    for row in rows:
        by_session[row.session_id].append(row)
    for view in views:
        stats["views_checked"] += 1
        if view.ids is None:
            counts["context_mismatch"] += 1
            note("context_mismatch", {"conversation": view.conversation, "instance": view.instance, "error": view.error})
            continue
        if view.session_id is None:
            expected: list[str] = []
        else:
            session_rows = sorted(by_session.get(view.session_id, []), key=lambda r: order_key(r.message_id, r.ts))
            expected = [r.message_id for r in session_rows[-window:]]
        if view.ids != expected:
            counts["context_mismatch"] += 1
            missing = [i for i in expected if i not in view.ids]
            extra = [i for i in view.ids if i not in expected]
            note("context_mismatch", {"conversation": view.conversation, "instance": view.instance,
                                      "session_id": view.session_id, "served": len(view.ids), "db": len(expected),
                                      "missing": missing[:5], "extra": extra[:5]})
    stats["windows_seen"] = ledger.windows_seen
    stats["windows_without_own_message"] = ledger.windows_without_self
    stats["windows_answering_older_message"] = ledger.current_not_newest
    stats["messages"] = len(ledger.entries)
    result_stats: dict[str, Any] = dict(stats)
    result_stats["doubled_by_pattern"] = dict(doubled_by.most_common())
    result_stats["rows"] = len(rows)
    return {"counts": dict(counts), "stats": result_stats, "examples": dict(examples)}


def passed(result: dict[str, Any]) -> bool:
    return all(result["counts"].get(k, 0) == 0 for k in VIOLATIONS)
