"""The context window: the last messages of a session that fit both the
message-count limit and the token budget, whichever is tighter.

Rules, in order of precedence:

1. The system prompt and the current message are always in (even if they
   alone exceed the budget: then ``tokens_used`` says so honestly).
2. A bot reply and the message it answers (``reply_to_id``) are kept or
   dropped together, as one *exchange*; a reply whose question is no longer
   available is dropped rather than shown without it.
3. Earlier exchanges are added newest first while both limits hold; the
   first one that does not fit ends the window, so the window is always a
   contiguous stretch of the conversation, never one with holes.

``window_messages`` counts every message in the window, the current one
included; ``token_budget`` counts the system prompt too.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.models import MessageRecord, Role

from plugins.sessions.tokens import TokenCounter, record_tokens


@dataclass(slots=True)
class Window:
    messages: list[MessageRecord]
    tokens_used: int
    # Earlier messages that were available but left out.
    dropped: int


def exchanges(records: list[MessageRecord]) -> list[list[MessageRecord]]:
    """Group ``records`` (conversation order) into exchanges: a message with
    the bot replies that answer it. Orphan replies are left out."""
    groups: list[list[MessageRecord]] = []
    by_id: dict[str, list[MessageRecord]] = {}
    for record in records:
        if record.role == Role.BOT and record.reply_to_id:
            group = by_id.get(record.reply_to_id)
            if group is not None:
                group.append(record)
            continue
        group = [record]
        groups.append(group)
        by_id[record.id] = group
    return groups


def fit(
    earlier: list[MessageRecord],
    current: MessageRecord | None,
    system_prompt: str,
    window_messages: int,
    token_budget: int,
    count: TokenCounter,
) -> Window:
    """Choose the window: ``earlier`` (conversation order, without the
    current message) trimmed so that the whole fits the limits.

    With ``current=None`` it is the window as it stands between messages
    (what the ``session`` command reports).
    """
    used = count(system_prompt)
    taken = 0
    if current is not None:
        earlier = [r for r in earlier if r.id != current.id and r.reply_to_id != current.id]
        used += record_tokens(current, count)
        taken = 1
    chosen: set[int] = set()
    for group in reversed(exchanges(earlier)):
        cost = sum(record_tokens(r, count) for r in group)
        if taken + len(group) > window_messages or used + cost > token_budget:
            break
        taken += len(group)
        used += cost
        chosen.update(id(r) for r in group)
    kept = [r for r in earlier if id(r) in chosen]
    return Window(kept + ([current] if current is not None else []), used, len(earlier) - len(kept))
