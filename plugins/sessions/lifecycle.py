"""Opening, expiring, touching and closing sessions.

All decisions read times stored in the session (``opened_at``,
``last_active_at``, ``closed_at``) against the time the caller passes, never
in-process timers: a timeout therefore holds across restarts and across
instances. For a message that time is when it was sent (the platform's
time, ``service.sent_at``), so every instance that handles it, at whatever
moment, makes the same choice on the same stored state
(docs/MEMORY_SESSIONS.md, rule 12); the activity it records is when it was
handled (its reply follows then).

A stored session is no longer used, and the next message opens a new one,
when it is

- closed (``closed_at`` set: a reset, or an earlier timeout),
- idle: ``now - last_active_at >= idle_timeout`` (``idle_timeout = 0``
  disables this), or
- too old: ``now - opened_at >= max_age`` (when ``max_age`` is set).

An expired session that is still open is closed first: ``closed_at`` is the
moment it actually expired (``last_active_at + idle_timeout`` or
``opened_at + max_age``, never later than now) and ``state["closed_reason"]``
says why (``idle``, ``max_age``, ``reset``). Both sessions are saved; the old
one stays in storage for ``history`` and ``export``.

Session ids are ``s-<opened ms in base 36>-<16 random hex>``: unique across
instances and restarts without coordination, sortable by opening time, and
opaque: they do not contain the scope key, so no cache key, log line or
export named after a session reveals whose conversation it is (the scope
key holds user ids).
In a shared scope (channel, thread) ``user_id`` is left empty: the session
belongs to no single user, so forgetting one user never deletes the others'
conversation record with it.

When the stored state of a scope cannot be reached at all (``load`` raises
:class:`StateUnreachable`), the session opened is *provisional*:
``state["provisional"]`` records the timeouts it was opened under, so that
storage can join it to the conversation it continues once the state is
back (docs/MEMORY_SESSIONS.md, "Sessions under faults"). A session opened
because the scope had none, or none that still continued, records them too
(``state["fresh"]``): the conversation's past may reach the database later
(from some instance's outbox), and storage judges again (rule 11).
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from core.models import IncomingMessage, Session

from plugins.sessions.scope import is_shared

LoadSession = Callable[[str], Awaitable[Session | None]]
SaveSession = Callable[[Session], Awaitable[Any]]

PROVISIONAL = "provisional"
# Marks a session opened because the scope had none, or none that still
# continued: that was judged on what storage held, and the conversation's
# past may reach it late (from a spool); storage then judges again and may
# join this session to it (docs/MEMORY_SESSIONS.md, rule 11).
FRESH = "fresh"
# ``closed_reason`` of a ``reset keep``: the conversation's rolling summary
# (llm plugin) carries over to the next session, as it does after a timeout.
RESET_KEEP = "reset-keep"
# State that outlives a session (see carry_over), and the session it came from.
CARRY = "carry"
CARRY_FROM = "carry_from"


class StateUnreachable(Exception):
    """Storage could not say whether the scope has a session (not "none")."""


def provisional(session: Session, idle_timeout: float, max_age: float | None) -> Session:
    """Mark ``session`` as opened without knowing the scope's state."""
    session.state = {**session.state, PROVISIONAL: {"idle_timeout": idle_timeout, "max_age": max_age}}
    return session


def _base36(number: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        number, rest = divmod(number, 36)
        out = digits[rest] + out
        if not number:
            return out


def new_session_id(now: float) -> str:
    return f"s-{_base36(max(0, int(now * 1000)))}-{secrets.token_hex(8)}"


def open_session(message: IncomingMessage, scope_key: str, now: float) -> Session:
    """A new, open session for ``message``'s scope, active now."""
    return Session(
        id=new_session_id(now),
        scope_key=scope_key,
        opened_at=now,
        last_active_at=now,
        guild_id=message.guild_id,
        channel_id=message.thread_id or message.channel_id,
        user_id=None if is_shared(scope_key) else message.author_id,
    )


def expiry(session: Session, idle_timeout: float, max_age: float | None) -> tuple[float, str] | None:
    """When ``session`` expires and why (``idle`` or ``max_age``), or
    ``None`` when it never does."""
    candidates: list[tuple[float, str]] = []
    if idle_timeout > 0:
        candidates.append((session.last_active_at + idle_timeout, "idle"))
    if max_age:
        candidates.append((session.opened_at + max_age, "max_age"))
    return min(candidates) if candidates else None


def usable(session: Session, now: float, idle_timeout: float, max_age: float | None) -> bool:
    """Whether a message arriving ``now`` continues ``session``."""
    if session.closed_at is not None:
        return False
    ends = expiry(session, idle_timeout, max_age)
    return ends is None or now < ends[0]


def close(session: Session, now: float, reason: str, at: float | None = None) -> Session:
    session.closed_at = min(now, at) if at is not None else now
    session.state = {**session.state, "closed_reason": reason}
    return session


def _after(fresh: Session, previous: Session | None) -> None:
    # Strictly after the previous one, so "latest session of the scope" is
    # never ambiguous even when instances' clocks disagree a little.
    if previous is not None and fresh.opened_at <= previous.opened_at:
        fresh.opened_at = fresh.last_active_at = previous.opened_at + 0.001
    if previous is not None:
        carry_over(fresh, previous)


def carry_over(fresh: Session, previous: Session) -> None:
    """What plugins keep under ``state["carry"]`` outlives the session: the
    next session of the scope starts with it, and with ``carry_from`` naming
    the session it came from, unless that one was reset without ``keep``
    (a plain reset is a clean slate)."""
    carry = previous.state.get(CARRY)
    if not isinstance(carry, dict) or not carry or previous.state.get("closed_reason") == "reset":
        return
    fresh.state = {**fresh.state, CARRY: dict(carry), CARRY_FROM: previous.id}


async def resolve(
    message: IncomingMessage,
    scope_key: str,
    now: float,
    idle_timeout: float,
    max_age: float | None,
    load: LoadSession,
    save: SaveSession,
    handled_at: float | None = None,
) -> Session:
    """The session ``message`` belongs to: the stored one if still usable
    (touched), else a new one (the stored one closed if it was open), or a
    provisional one when the stored state is unreachable.

    ``now`` is when the message was sent: what the timeouts are judged at.
    ``handled_at`` (default ``now``) is when this instance handles it: the
    session's activity, as the reply that follows makes it (a message
    answered late keeps the conversation open for a full ``idle_timeout``
    after the answer, as the database's newest write says too)."""
    active = now if handled_at is None else max(now, handled_at)
    try:
        current = await load(scope_key)
    except StateUnreachable:
        blind = provisional(_touched(open_session(message, scope_key, now), active), idle_timeout, max_age)
        await save(blind)
        return blind
    if current is not None and usable(current, now, idle_timeout, max_age):
        await save(_touched(current, active))
        return current
    if current is not None and current.closed_at is None:
        ends = expiry(current, idle_timeout, max_age)
        assert ends is not None  # an open session is unusable only once expired
        await save(close(current, now, ends[1], at=ends[0]))
    fresh = open_session(message, scope_key, now)
    _after(fresh, current)
    fresh.state = {**fresh.state, FRESH: {"idle_timeout": idle_timeout, "max_age": max_age}}
    await save(_touched(fresh, active))
    return fresh


def _touched(session: Session, at: float) -> Session:
    # Another instance's clock may run a little ahead; never move back.
    session.last_active_at = max(session.last_active_at, at)
    return session


async def reset(
    message: IncomingMessage,
    scope_key: str,
    now: float,
    load: LoadSession,
    save: SaveSession,
    reason: str = "reset",
) -> tuple[Session | None, Session]:
    """Close the scope's open session (if any, ``closed_reason`` =
    ``reason``) and open a new one now. Returns ``(closed or None, opened)``."""
    try:
        current = await load(scope_key)
    except StateUnreachable:
        current = None  # a reset starts anew whatever was there
    closed = None
    if current is not None and current.closed_at is None:
        closed = close(current, now, reason)
        await save(closed)
    fresh = open_session(message, scope_key, now)
    _after(fresh, current)
    if reason == "reset":
        # A plain reset is a clean slate, even after a session that timed out.
        fresh.state = {k: v for k, v in fresh.state.items() if k not in (CARRY, CARRY_FROM)}
    await save(fresh)
    return closed, fresh
