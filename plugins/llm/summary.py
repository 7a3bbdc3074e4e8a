"""Rolling summaries of what fell out of the context window (optional).

When ``[llm] summaries = true``, messages that the sessions plugin no longer
puts in the window are folded, in batches, into a short summary kept in the
session's state (``state["carry"]["llm_summary"]``, persisted with the
session like the rest of it) and shown to the model after the system prompt,
counted in the token budget. Under ``carry`` it outlives the session: the
next session of the scope starts with it after a timeout or a ``reset
keep`` (sessions plugin), and its first update folds in the last messages
of the session it came from, so nothing said is left out of both. Nothing
is deleted: the full history stays in the database whatever the summary says.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from core.models import MessageRecord, Role
from plugins.llm.prompt import describe_attachment, is_failure_reply

STATE_KEY = "llm_summary"
CARRY = "carry"  # plugins.sessions.lifecycle.CARRY
CARRY_FROM = "carry_from"
INSTRUCTION = (
    "You keep a running summary of a chat conversation for an assistant that can no longer see its older "
    "messages. Update the summary with the new messages. Keep who said what, names, facts, preferences, "
    "decisions and open questions; drop small talk. Write plain sentences, at most {words} words. "
    "Reply with the updated summary only."
)
HEADER = "Summary of the earlier conversation (older messages are no longer shown):"


@dataclass(slots=True)
class RollingSummary:
    """The summary and how far it reaches (the sort key of the last message
    it covers)."""

    text: str = ""
    upto: tuple[float, int, str] | None = None
    count: int = 0

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> RollingSummary:
        carry = state.get(CARRY)
        # Sessions stored before summaries moved under "carry" hold it at the top.
        raw = carry.get(STATE_KEY) if isinstance(carry, dict) and STATE_KEY in carry else state.get(STATE_KEY)
        if not isinstance(raw, dict):
            return cls()
        upto = raw.get("upto")
        try:
            key = (float(upto[0]), int(upto[1]), str(upto[2])) if upto else None
        except (TypeError, ValueError, IndexError):
            key = None
        return cls(text=str(raw.get("text") or ""), upto=key, count=int(raw.get("count") or 0))

    def to_state(self) -> dict[str, Any]:
        return {"text": self.text, "upto": list(self.upto) if self.upto else None, "count": self.count}

    def into(self, state: dict[str, Any], folded_previous: bool = False) -> dict[str, Any]:
        """``state`` with this summary in it (under ``carry``); with
        ``folded_previous`` the previous session's tail is marked as folded in."""
        found = state.get(CARRY)
        carry: dict[str, Any] = found if isinstance(found, dict) else {}
        out = {k: v for k, v in state.items() if k != STATE_KEY}
        out[CARRY] = {**carry, STATE_KEY: self.to_state()}
        if folded_previous:
            out.pop(CARRY_FROM, None)
        return out


def fallen_out(history: list[MessageRecord], window: list[MessageRecord], upto: tuple[float, int, str] | None) -> list[MessageRecord]:
    """Messages of ``history`` older than the window and newer than what the
    summary covers, in order (the plugin's failure notices left out)."""
    if not window:
        return []
    first = min(m.sort_key for m in window)
    chosen = [
        m for m in history
        if m.sort_key < first and (upto is None or m.sort_key > upto) and not is_failure_reply(m)
    ]
    return sorted(chosen, key=lambda m: m.sort_key)


def transcript(records: list[MessageRecord]) -> str:
    lines = []
    for record in records:
        who = "Assistant" if record.role is Role.BOT else (record.author_name or record.author_id)
        text = record.content
        extras = [describe_attachment(a) for a in record.attachments]
        lines.append(f"{who}: {' '.join([text, *extras]).strip()}")
    return "\n".join(lines)


def summary_request(previous: str, new: list[MessageRecord], words: int) -> list[dict[str, str]]:
    """The chat-completions messages that ask the model to fold ``new`` into
    ``previous``."""
    body = f"Summary so far:\n{previous or '(none yet)'}\n\nNew messages:\n{transcript(new)}"
    return [
        {"role": "system", "content": INSTRUCTION.format(words=words)},
        {"role": "user", "content": body},
    ]


def with_summary(system_prompt: str, summary: RollingSummary) -> str:
    if not summary.text.strip():
        return system_prompt
    return f"{system_prompt}\n\n{HEADER}\n{summary.text.strip()}"


def summary_tokens(summary: RollingSummary, count: Any) -> int:
    """What the summary adds to the system prompt, in tokens."""
    if not summary.text.strip():
        return 0
    return count(HEADER) + count(summary.text.strip()) + 2


def fit_budget(messages: list[MessageRecord], used: int, budget: int | None, cost: Any) -> tuple[list[MessageRecord], int]:
    """Drop the oldest messages (a question with the replies to it) until
    ``used`` fits ``budget``; the current (last) message always stays."""
    kept = list(messages)
    if budget is None:
        return kept, used
    while used > budget and len(kept) > 1:
        first = kept.pop(0)
        used -= cost(first)
        while len(kept) > 1 and kept[0].role is Role.BOT and kept[0].reply_to_id == first.id:
            used -= cost(kept.pop(0))
    return kept, used
