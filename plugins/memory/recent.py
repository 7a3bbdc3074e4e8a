"""What this instance served lately: a bounded in-process copy of each
recent conversation's session and window.

It is the last resort of a read: used only when both Redis and the database
fail it (a flush followed by a database cut, say), so that a conversation
goes on as it was instead of starting again (G9). It never goes back into
Redis (a copy may lack what other instances wrote: G5 stays the cache's
rule). The rules: docs/MEMORY_SESSIONS.md, "Sessions under faults".

Coherent with this instance's own work: every session it reads or writes
replaces the scope's copy, every window it reads is merged in, and every
message it writes is appended. A window copy starts only from a read (an
append alone would make a one-message "history").
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from core.models import MessageRecord

# The key in Session.state of a session opened while its scope's stored
# state was unreachable (written by the sessions plugin).
PROVISIONAL = "provisional"
FRESH = "fresh"  # opened because nothing known continued (MEMORY_SESSIONS.md, rule 11)

MAX_SCOPES = 2048
MAX_MESSAGES = 100_000


def is_provisional(data: dict[str, Any] | None) -> bool:
    return bool(data and (data.get("state") or {}).get(PROVISIONAL))


def is_fresh(data: dict[str, Any] | None) -> bool:
    return bool(data and (data.get("state") or {}).get(FRESH))


def newest(*candidates: dict[str, Any] | None) -> dict[str, Any] | None:
    """The session opened last (then active last) among ``candidates``."""
    found = [c for c in candidates if c is not None]
    return max(found, key=lambda d: (d["opened_at"], d["last_active_at"])) if found else None


def _sort_key(r: MessageRecord) -> tuple[float, int, str]:
    return (r.timestamp, len(r.id), r.id)


@dataclass(slots=True)
class Conversation:
    """One scope's copy: its latest session and, once read, its last messages."""

    session: dict[str, Any]
    window: list[MessageRecord] | None = None


class RecentConversations:
    """Bounded (scopes and messages), least recently used dropped first."""

    def __init__(self, window_size: int, max_scopes: int = MAX_SCOPES, max_messages: int = MAX_MESSAGES) -> None:
        self.window_size = window_size
        self.max_scopes = max_scopes
        self.max_messages = max_messages
        self._by_scope: OrderedDict[str, Conversation] = OrderedDict()
        self._scope_of: dict[str, str] = {}
        self._held = 0

    def __len__(self) -> int:
        return len(self._by_scope)

    # --- reading the copy ------------------------------------------------------------

    def session(self, scope_key: str) -> dict[str, Any] | None:
        found = self._by_scope.get(scope_key)
        return dict(found.session) if found is not None else None

    def knows(self, session_id: str) -> bool:
        return self._conversation(session_id) is not None

    def window(self, session_id: str) -> list[MessageRecord] | None:
        found = self._conversation(session_id)
        return list(found.window) if found is not None and found.window is not None else None

    def is_provisional(self, session_id: str) -> bool:
        found = self._conversation(session_id)
        return found is not None and is_provisional(found.session)

    def provisional_sessions(self) -> list[dict[str, Any]]:
        return [dict(c.session) for c in self._by_scope.values() if is_provisional(c.session)]

    def scopes(self, limit: int) -> list[str]:
        """The ``limit`` scopes used last, most recent first."""
        return list(reversed(self._by_scope))[:limit]

    def _conversation(self, session_id: str) -> Conversation | None:
        scope = self._scope_of.get(session_id)
        return self._by_scope.get(scope) if scope is not None else None

    # --- keeping it in step ------------------------------------------------------------

    def note_session(self, data: dict[str, Any], written: bool = False) -> None:
        """``data`` was read or ``written``: it is now the scope's session.
        A session first seen as written here, never active since it was
        opened, was just opened here: its window is known to be empty."""
        scope = data["scope_key"]
        found = self._by_scope.get(scope)
        if found is not None and found.session["id"] == data["id"]:
            found.session = dict(data)
        else:
            self._drop(scope)
            fresh = written and data.get("closed_at") is None and data["opened_at"] == data["last_active_at"]
            self._by_scope[scope] = Conversation(dict(data), [] if fresh else None)
            self._scope_of[data["id"]] = scope
        self._by_scope.move_to_end(scope)
        self._bound()

    def note_window(self, session_id: str, records: list[MessageRecord]) -> None:
        """``records`` were read from Redis or the database: merged in (a
        read of fewer messages does not shorten what is known)."""
        found = self._conversation(session_id)
        if found is None:
            return
        mine = [r for r in records if r.session_id == session_id]
        self._set_window(found, _merge(found.window or [], mine, self.window_size))

    def add(self, record: MessageRecord) -> None:
        """This instance wrote ``record``."""
        found = self._conversation(record.session_id)
        if found is not None and found.window is not None:
            self._set_window(found, _merge(found.window, [record], self.window_size))

    def forget(self, session_ids: list[str], user_id: str) -> None:
        """Drop every copy of those sessions, and of ``user_id``'s."""
        doomed = {self._scope_of[s] for s in session_ids if s in self._scope_of}
        doomed |= {k for k, c in self._by_scope.items() if c.session.get("user_id") == user_id}
        for scope in doomed:
            self._drop(scope)

    def _set_window(self, found: Conversation, window: list[MessageRecord]) -> None:
        self._held += len(window) - len(found.window or [])
        found.window = window
        self._bound()

    def _drop(self, scope: str) -> None:
        found = self._by_scope.pop(scope, None)
        if found is not None:
            self._held -= len(found.window or [])
            if self._scope_of.get(found.session["id"]) == scope:
                del self._scope_of[found.session["id"]]

    def _bound(self) -> None:
        while self._by_scope and (len(self._by_scope) > self.max_scopes or self._held > self.max_messages):
            self._drop(next(iter(self._by_scope)))


def _merge(old: list[MessageRecord], new: list[MessageRecord], size: int) -> list[MessageRecord]:
    """One entry per message id (a read's copy wins), in message order, the
    last ``size``."""
    if len(new) == 1 and old and _sort_key(new[0]) > _sort_key(old[-1]) and all(r.id != new[0].id for r in old):
        # A message written after the last one known: the common case of
        # every turn, kept off the sort.
        return (old + new)[-size:]
    by_id = {r.id: r for r in old}
    by_id.update((r.id, r) for r in new)
    return sorted(by_id.values(), key=_sort_key)[-size:]
