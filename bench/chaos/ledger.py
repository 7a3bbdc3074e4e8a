"""The ledger of a soak (what the driver sent, what each instance received
and answered) and the checker that compares it with the database, the
fault events and the bot's views.

The checker is plain functions over plain data, so a test can hand it a
ledger with a deliberate fault in it and see the fault counted.

Definitions (docs/CHAOS.md explains them):

- a message is **accepted** when some instance sent a reply to it: the
  pipeline sends a reply only after ``store_message`` returned (degraded or
  not). A delivery whose instance died before answering accepts nothing.
- **lost**: accepted, but its row (or its reply's row ``reply:<id>``) is not
  in ``messages`` after the outboxes drained.
- **stored twice**: two rows for one sent message (same content under two
  ids) or two reply rows answering one message.
- **out of order**: a stored row whose timestamp/content differs from what
  was sent, a reply row that sorts before its message, or a context window
  an instance generated a reply from that is not in the database's order.
- **unanswered**: no reply, though an instance received the message and
  lived on (it was not killed with the message in hand). A message whose
  every receiver was killed before answering is **unanswerable**: counted,
  not a violation (nobody could answer it).
- **doubled replies**: more than one reply to one message, each extra reply
  counting one, across instances and deliveries. Each is placed by the
  faults its message lived through (from its sending to its last reply, see
  :mod:`bench.chaos.overlaps`): **overlapping** when two of those faults
  were under way at the same moment, else **non-overlapping** (one fault at
  a time, or none): a violation. Except **resent after a kill**: the first
  reply came from an instance killed with the message in hand (after
  sending, before storing): a standby takes the claim over and sends again
  with the same Discord nonce, and Discord (``enforce_nonce``) keeps one
  message (rule A5 of docs/MEMORY.md). The soak's transport has no nonce, so
  these are counted apart, not as violations.
- **conversation splits** and **context mismatches**: per conversation, see
  :mod:`bench.chaos.conversations`.
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from bench.chaos import conversations as conv_mod
from bench.chaos.conversations import NOT_DELIVERED, Rules, order_key
from bench.chaos.overlaps import Fault, during, faults_from, label, overlapping
from bench.stats import percentile
from core.models import ReplyId

__all__ = ["NOT_DELIVERED", "Rules", "order_key"]  # re-exported: the tests and the soak build them from here

VIOLATIONS = (
    "lost_messages",
    "lost_replies",
    "stored_twice",
    "out_of_order",
    "unanswered",
    "replies_doubled_nonoverlapping",
    "conversation_splits",
    "context_mismatch",
)
# Counted and shown, not violations.
COUNTED = ("unanswerable", "replies_doubled", "replies_doubled_overlapping", "replies_doubled_resent_after_kill")

DIED = "died"  # a delivery's outcome when its process was killed with the message in hand


@dataclass
class Delivery:
    instance: str
    kind: str  # gateway | first | redelivery | rolling | retry
    outcome: str = "pending"  # pending | replied | no-reply | died | not delivered | error: ...
    start: float = 0.0  # seconds since the soak started
    end: float = 0.0


@dataclass
class Reply:
    instance: str
    content: str
    degraded: bool
    # When it was sent (seconds since the soak started), if known.
    at: float | None = None


@dataclass
class Entry:
    """One message the driver made, and everything that happened to it."""

    id: str
    conversation: int
    session_hint: str
    content: str
    ts: float  # its timestamp (bot clock)
    sent: float = 0.0  # when the driver sent it (seconds since the soak started)
    deliveries: list[Delivery] = field(default_factory=list)
    replies: list[Reply] = field(default_factory=list)
    # The reply is stored though no reply was reported (found at the end).
    reply_stored: bool = False

    @property
    def accepted(self) -> bool:
        return bool(self.replies)

    def first_reply_at(self) -> float | None:
        """When its first reply was sent (or, without that, reported)."""
        times = [r.at for r in self.replies if r.at is not None]
        times += [d.end for d in self.deliveries if d.outcome == "replied"]
        return min(times, default=None)

    def last_reply_at(self) -> float:
        times = [r.at for r in self.replies if r.at is not None]
        times += [d.end for d in self.deliveries if d.outcome == "replied"]
        return max(times, default=self.sent)


@dataclass
class View:
    """What one instance served as a conversation's last N messages."""

    conversation: int
    instance: str
    session_id: str | None
    ids: list[str] | None  # None: the instance could not answer (``error``)
    error: str | None = None
    phase: str = "cached"  # cached: as the run left it | rebuilt: after a Redis flush


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
        # stored (an overtaken message): allowed, counted.
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


class Findings:
    """Counts, statistics and up to 10 examples of each."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter({k: 0 for k in VIOLATIONS + COUNTED})
        self.stats: dict[str, Any] = defaultdict(int)
        self.examples: dict[str, list[Any]] = defaultdict(list)

    def note(self, kind: str, what: Any) -> None:
        if len(self.examples[kind]) < int(os.environ.get("CHAOS_EXAMPLES", "10")):
            self.examples[kind].append(what)


def _duplicates(found: Findings, ledger: Ledger, rows: list[Row]) -> None:
    """One id twice (the UNIQUE index forbids it, but a schema change must
    not make it pass silently), one sent content under several ids, several
    replies answering one message."""
    sent_contents = {e.content for e in ledger.entries.values()}
    for what, keys in (
        ("message_id", [r.message_id for r in rows]),
        ("content", [r.content for r in rows if r.role == "user" and r.content in sent_contents]),
        ("reply_to", [r.reply_to_id for r in rows if r.role == "bot" and r.reply_to_id]),
    ):
        for key, n in Counter(keys).items():
            if n > 1:
                found.counts["stored_twice"] += n - 1
                found.note("stored_twice", {what: key, "rows": n})


def _stored(found: Findings, entry: Entry, by_id: dict[str, Row]) -> None:
    """Its rows: stored as sent, and stored at all when accepted."""
    row = by_id.get(entry.id)
    if row is not None:
        found.stats["stored"] += 1
        if row.ts != entry.ts or row.content != entry.content or row.role != "user":
            found.counts["out_of_order"] += 1
            found.note("out_of_order", {"id": entry.id, "sent_ts": entry.ts, "stored_ts": row.ts, "role": row.role})
    if not entry.accepted:
        if row is not None:
            found.stats["stored_without_reply"] += 1
        return
    found.stats["accepted"] += 1
    if row is None:
        found.counts["lost_messages"] += 1
        found.note("lost_messages", {"id": entry.id, "conversation": entry.conversation,
                                     "replies": [r.instance for r in entry.replies]})
    reply_row = by_id.get(ReplyId(entry.id))
    if reply_row is None:
        found.counts["lost_replies"] += 1
        # Who sent it and what became of each delivery: a reply whose
        # sender "died" was lost between the send and the store.
        found.note("lost_replies", {"id": entry.id, "conversation": entry.conversation,
                                    "replies": [(r.instance, r.at, r.degraded) for r in entry.replies],
                                    "deliveries": _deliveries(entry)})
    elif row is not None and order_key(reply_row.message_id, reply_row.ts) <= order_key(row.message_id, row.ts):
        found.counts["out_of_order"] += 1
        found.note("out_of_order", {"id": entry.id, "reply_ts": reply_row.ts, "message_ts": row.ts})


def _deliveries(entry: Entry) -> list[tuple[str, str, str]]:
    return [(d.instance, d.kind, d.outcome) for d in entry.deliveries]


def _unreplied(found: Findings, entry: Entry, by_id: dict[str, Row]) -> None:
    if ReplyId(entry.id) in by_id:
        # The reply is stored, so it was sent (the pipeline stores a reply
        # only after sending it), by a process killed before it could
        # report the send: answered, as Discord would show.
        found.stats["replies_sent_unreported"] += 1
    elif any(d.outcome not in (DIED, NOT_DELIVERED) for d in entry.deliveries):
        found.counts["unanswered"] += 1
        found.note("unanswered", {"id": entry.id, "conversation": entry.conversation, "sent": entry.sent,
                                  "deliveries": _deliveries(entry)})
    else:
        found.counts["unanswerable"] += 1


def _doubled(found: Findings, entry: Entry, faults: list[Fault], by_overlap: Counter[str]) -> None:
    extra = len(entry.replies) - 1
    t0, t1 = entry.sent, entry.last_reply_at()
    lived = during(faults, t0, t1)
    both = overlapping(lived, t0, t1)
    first = min(entry.replies, key=lambda r: r.at)
    killed = any(d.instance == first.instance and d.outcome == DIED for d in entry.deliveries)
    kind = "resent_after_kill" if killed else "overlapping" if both else "nonoverlapping"
    found.counts["replies_doubled"] += extra
    found.counts[f"replies_doubled_{kind}"] += extra
    what = label(both or lived)
    by_overlap[f"{kind}: {what}"] += extra
    found.note(f"replies_doubled_{kind}", {
        "id": entry.id, "conversation": entry.conversation, "faults": what,
        "during": [f.describe() for f in lived], "sent": t0, "last_reply": t1,
        "replies": [(r.instance, r.at, r.degraded) for r in entry.replies], "deliveries": _deliveries(entry)})


def _latency(entries: list[Entry], faults: list[Fault] | None = None) -> dict[str, float]:
    """First-reply percentiles, measured from sending; with ``faults``, from
    the later of sending and the last time the instance that answered first
    resumed from a pause before answering: the part of the wait the bot is
    answerable for when that paused instance was the only one left holding
    the message (the others killed with it in hand)."""
    waits = sorted(at - _since(e, at, faults) for e in entries if (at := e.first_reply_at()) is not None)
    if not waits:
        return {}
    return {f"p{q}": round(percentile(waits, q), 2) for q in (50, 90, 99)} | {"max": round(waits[-1], 2)}


def _since(entry: Entry, answered: float, faults: list[Fault] | None) -> float:
    if not faults or not entry.replies:
        return entry.sent
    first = min(entry.replies, key=lambda r: r.at if r.at is not None else float("inf"))
    resumed = [f.end for f in faults if f.kind == "bot_pause" and f.instance == first.instance
               and entry.sent <= f.end <= answered]
    return max([entry.sent, *resumed])


def _replies(found: Findings, ledger: Ledger, by_id: dict[str, Row], faults: list[Fault]) -> None:
    by_overlap: Counter[str] = Counter()
    for entry in ledger.entries.values():
        found.stats["deliveries"] += len(entry.deliveries)
        for d in entry.deliveries:
            found.stats[f"deliveries_{d.kind}"] += 1
        seen = Counter(d.instance for d in entry.deliveries if d.outcome != NOT_DELIVERED)
        found.stats["delivered_twice_to_one_instance"] += sum(n - 1 for n in seen.values())
        if not entry.replies:
            _unreplied(found, entry, by_id)
        elif len(entry.replies) > 1:
            _doubled(found, entry, faults, by_overlap)
        if any(r.degraded for r in entry.replies):
            found.stats["degraded_replies"] += 1
        _stored(found, entry, by_id)
    found.stats["doubled_by_faults"] = dict(by_overlap.most_common())
    found.stats["first_reply_s"] = _latency(list(ledger.entries.values()))
    found.stats["first_reply_after_resume_s"] = _latency(list(ledger.entries.values()), faults)


def _conversations(found: Findings, ledger: Ledger, rows: list[Row], views: list[View], rules: Rules) -> None:
    per_conv = conv_mod.by_conversation(ledger.entries, rows)
    heard = conv_mod.received(ledger.entries)
    for conv, conv_rows in sorted(per_conv.items()):
        where = conv_mod.splits(conv_rows, ledger.entries, rules, heard.get(conv, []))
        if where:
            found.counts["conversation_splits"] += 1
            found.note("conversation_splits", {"conversation": conv, "sessions": len({r.session_id for r in conv_rows}),
                                               "splits": where[:3]})
        found.stats["sessions_used"] += len({r.session_id for r in conv_rows})
    found.stats["conversations"] = len(per_conv)
    wrong: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for view in views:
        found.stats[f"views_checked_{view.phase}"] += 1
        problem = conv_mod.judge_view(view, per_conv.get(view.conversation, []), ledger.entries, rules, heard.get(view.conversation, []))
        if problem is not None:
            wrong[view.conversation].append({"instance": view.instance, "phase": view.phase, **problem})
    found.counts["context_mismatch"] = len(wrong)
    for conv, problems in sorted(wrong.items()):
        found.note("context_mismatch", {"conversation": conv, "views": problems[:3]})


def check(
    ledger: Ledger,
    rows: list[Row],
    views: list[View],
    rules: Rules | None = None,
    events: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Compare the ledger with the database rows, the fault events (the
    lanes' ``events``) and the instances' views.

    Returns ``{"counts", "stats", "examples"}``; every name in
    :data:`VIOLATIONS` must count 0 for the soak to pass.
    """
    rules = rules or Rules()
    by_id = {row.message_id: row for row in rows}
    found = Findings()
    _duplicates(found, ledger, rows)
    _replies(found, ledger, by_id, faults_from(events or []))
    found.counts["out_of_order"] += len(ledger.unsorted_windows)
    for w in ledger.unsorted_windows[:3]:
        found.note("out_of_order", {"unsorted_window": w})
    known = set(ledger.entries) | {ReplyId(i) for i in ledger.entries}
    found.stats["unknown_rows"] = sum(1 for r in rows if r.message_id not in known)
    _conversations(found, ledger, rows, views, rules)
    found.stats["windows_seen"] = ledger.windows_seen
    found.stats["windows_without_own_message"] = ledger.windows_without_self
    found.stats["windows_answering_older_message"] = ledger.current_not_newest
    found.stats["messages"] = len(ledger.entries)
    found.stats["rows"] = len(rows)
    return {"counts": dict(found.counts), "stats": dict(found.stats), "examples": dict(found.examples)}


def passed(result: dict[str, Any]) -> bool:
    return all(result["counts"].get(k, 0) == 0 for k in VIOLATIONS)
