"""Memory judged per conversation (one user in one scope), never per session
id (DESIGN.md, G9): whatever session ids the bot used, a conversation's
messages must come back as one conversation.

A conversation may rightly continue in a new session only across an idle
timeout (the soak sends no resets). The bot decides that at the message's
own time (rule 12 of docs/MEMORY_SESSIONS.md), but against the session as
stored when it *handles* the message, which can be later than the
message's timestamp (a paused process, a standby keeping watch): the
message before it may not be handled yet. So the checker
brackets it with what the ledger knows: between two consecutive stored user
messages of a conversation, with ``gap`` their timestamps' distance and
``delay`` how long (bot clock) either of them may have waited before an
instance handled it (its deliveries' end, plus a second),

- a new session is **allowed** when ``gap + delay >= idle_timeout``;
- a new session is **required** when ``gap - delay >= idle_timeout``, and
  every message of the conversation sent before the later one that an
  instance received, stored or not, was at least ``idle_timeout`` before
  it, counting that message's own delay. A message whose every receiver
  died before storing it may still have moved the session's activity (its
  session is resolved, and touched, before the message is stored: rule 12):
  the user did talk then (seen on seed 7, 8 Dec: four such messages in a
  45-minute stored gap, and the bot rightly went on in the same session).

A **split** is a new session where none is allowed. A **context** the bot
serves for a conversation (its last ``window`` messages, user and bot) must
equal the conversation's last ``window`` stored messages since the start of
its current session, for some start the rules above allow (the last allowed
boundary, or an earlier one when every allowed boundary after it was not
required).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bench.chaos.ledger import Entry, Row, View

NOT_DELIVERED = "not delivered"  # a delivery's outcome: its process was already down, it never received the message

# Added to each message's measured wait (real seconds): the driver's and the
# bot's view of "delivered" differ by a scheduling step or two.
HANDLING_SLACK = 1.0


@dataclass
class Rules:
    """What the checker must know of the bot's settings and the soak's clock."""

    window: int = 50  # sessions' window_messages
    idle_timeout: float = 1800.0  # sessions' idle_timeout (bot-clock seconds)
    speed: float = 10.0  # bot-clock seconds per real second


def order_key(message_id: str, ts: float) -> tuple[float, int, str]:
    """The database's order: (ts, length(message_id), message_id)."""
    return (ts, len(message_id), message_id)


def by_conversation(entries: dict[str, Entry], rows: list[Row]) -> dict[int, list[Row]]:
    """Each conversation's stored rows (its user messages and the replies to
    them), in the database's order. Rows the driver never sent are left out."""
    out: dict[int, list[Row]] = defaultdict(list)
    for row in rows:
        entry = entries.get(row.message_id if row.role == "user" else row.reply_to_id or "")
        if entry is not None:
            out[entry.conversation].append(row)
    for conv_rows in out.values():
        conv_rows.sort(key=lambda r: order_key(r.message_id, r.ts))
    return out


def handling_delay(entry: Entry | None, rules: Rules) -> float:
    """The longest (bot-clock seconds) ``entry`` may have waited before an
    instance handled it."""
    if entry is None or any(d.outcome == "pending" for d in entry.deliveries):
        return rules.idle_timeout  # unknown (still being handled when the run ended): any boundary is allowed
    ends = [d.end for d in entry.deliveries if d.end]
    waited = max(ends, default=entry.sent) - entry.sent
    return (max(0.0, waited) + HANDLING_SLACK) * rules.speed


@dataclass
class Boundary:
    """Between a conversation's user message ``index - 1`` and ``index``."""

    index: int
    allowed: bool
    required: bool
    new_session: bool


def received(entries: dict[str, Entry]) -> dict[int, list[Entry]]:
    """Each conversation's messages that some instance received (stored or
    not), for :func:`boundaries`."""
    out: dict[int, list[Entry]] = defaultdict(list)
    for entry in entries.values():
        if any(d.outcome != NOT_DELIVERED for d in entry.deliveries):
            out[entry.conversation].append(entry)
    return out


def boundaries(user_rows: list[Row], entries: dict[str, Entry], rules: Rules,
               heard: list[Entry] | None = None) -> list[Boundary]:
    """``heard``: the conversation's received messages (default: read from
    ``entries``, slow for a whole soak's ledger)."""
    if heard is None:
        first = entries.get(user_rows[0].message_id) if user_rows else None
        heard = received(entries).get(first.conversation, []) if first else []
    # (order, the latest moment it may have made the session active)
    marks = sorted((order_key(e.id, e.ts), e.ts + handling_delay(e, rules)) for e in heard)
    latest, j, out = float("-inf"), 0, []
    for i in range(1, len(user_rows)):
        a, b = user_rows[i - 1], user_rows[i]
        while j < len(marks) and marks[j][0] < order_key(b.message_id, b.ts):
            latest = max(latest, marks[j][1])
            j += 1
        gap = b.ts - a.ts
        delay = max(handling_delay(entries.get(a.message_id), rules), handling_delay(entries.get(b.message_id), rules))
        required = gap - delay >= rules.idle_timeout and b.ts - latest >= rules.idle_timeout
        out.append(Boundary(i, gap + delay >= rules.idle_timeout, required, a.session_id != b.session_id))
    return out


def splits(conv_rows: list[Row], entries: dict[str, Entry], rules: Rules,
           heard: list[Entry] | None = None) -> list[dict[str, Any]]:
    """The places where the conversation went on in another session though
    no idle timeout allowed it (empty: not split)."""
    users = [r for r in conv_rows if r.role == "user"]
    return [
        {"after": users[b.index - 1].message_id, "before": users[b.index].message_id,
         "gap_s": round(users[b.index].ts - users[b.index - 1].ts, 1),
         "sessions": [users[b.index - 1].session_id, users[b.index].session_id]}
        for b in boundaries(users, entries, rules, heard)
        if b.new_session and not b.allowed
    ]


def acceptable_windows(conv_rows: list[Row], entries: dict[str, Entry], rules: Rules,
                       heard: list[Entry] | None = None) -> list[list[str]]:
    """Every context the bot may rightly serve for the conversation now (ids,
    in order): the last ``window`` stored messages since each session start
    the rules allow."""
    users = [r for r in conv_rows if r.role == "user"]
    if not users:
        return [[r.message_id for r in conv_rows[-rules.window:]]] if conv_rows else [[]]
    starts: list[int] = []  # indexes into users, newest first
    for b in reversed(boundaries(users, entries, rules, heard)):
        if b.allowed:
            starts.append(b.index)
            if b.required:
                break
    else:
        starts.append(0)
    out = []
    for index in starts:
        first = order_key(users[index].message_id, users[index].ts)
        since = [r for r in conv_rows if order_key(r.message_id, r.ts) >= first]
        out.append([r.message_id for r in since[-rules.window:]])
    return out


def judge_view(view: View, conv_rows: list[Row], entries: dict[str, Entry], rules: Rules,
               heard: list[Entry] | None = None) -> dict[str, Any] | None:
    """``None`` when ``view`` is a context the bot may serve, else what is wrong."""
    if view.ids is None:
        return {"error": view.error}
    options = acceptable_windows(conv_rows, entries, rules, heard)
    if view.ids in options:
        return None
    return {"session_id": view.session_id, **difference(view.ids, options[0], {r.message_id for r in conv_rows})}


def difference(served: list[str], expected: list[str], own: set[str]) -> dict[str, Any]:
    """How a served context differs from the expected one (up to 5 ids each)."""
    wanted, got = set(expected), set(served)
    return {"served": len(served), "expected": len(expected),
            "missing": [i for i in expected if i not in got][:5],
            "foreign": [i for i in served if i not in own][:5],
            "extra": [i for i in served if i in own and i not in wanted][:5],
            "in_order": [i for i in served if i in wanted] == [i for i in expected if i in got]}
