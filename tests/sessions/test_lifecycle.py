"""Opening, expiring, touching and closing sessions, without pluggy."""

from __future__ import annotations

import asyncio
from typing import Any

from core.models import IncomingMessage, Session

from plugins.sessions import lifecycle

T0 = 1_700_000_000.0
KEY = "g:g1:c:c1:u:u1"


class Sessions:
    def __init__(self) -> None:
        self.by_id: dict[str, Session] = {}

    async def load(self, key: str) -> Session | None:
        found = [s for s in self.by_id.values() if s.scope_key == key]
        return max(found, key=lambda s: s.opened_at) if found else None

    async def save(self, session: Session) -> None:
        self.by_id[session.id] = Session(**{f: getattr(session, f) for f in Session.__dataclass_fields__})


def msg(user: str = "u1") -> IncomingMessage:
    return IncomingMessage(id="1", author_id=user, channel_id="c1", guild_id="g1", content="hi", timestamp=T0)


def resolve(store: Sessions, now: float, idle: float = 1800, max_age: float | None = None, key: str = KEY) -> Session:
    return asyncio.run(lifecycle.resolve(msg(), key, now, idle, max_age, store.load, store.save))


def test_opens_then_continues_and_touches() -> None:
    store = Sessions()
    first = resolve(store, T0)
    assert (first.opened_at, first.last_active_at, first.closed_at, first.user_id) == (T0, T0, None, "u1")
    again = resolve(store, T0 + 1799)
    assert again.id == first.id
    assert store.by_id[first.id].last_active_at == T0 + 1799
    # Idle time counts from the last message, not from the opening.
    assert resolve(store, T0 + 1799 + 1799).id == first.id


def test_idle_timeout_closes_and_opens_a_new_session() -> None:
    store = Sessions()
    first = resolve(store, T0)
    second = resolve(store, T0 + 5000)
    assert second.id != first.id
    old = store.by_id[first.id]
    assert old.closed_at == T0 + 1800  # when it really timed out, not when noticed
    assert old.state["closed_reason"] == "idle"
    assert second.closed_at is None and second.opened_at == T0 + 5000
    assert len(store.by_id) == 2


def test_the_boundary_is_the_limit() -> None:
    store = Sessions()
    first = resolve(store, T0)
    assert resolve(store, T0 + 1800).id != first.id


def test_max_age_ends_even_a_busy_session() -> None:
    store = Sessions()
    first = resolve(store, T0, max_age=3600)
    for minute in range(1, 60):
        assert resolve(store, T0 + 60 * minute, max_age=3600).id == first.id
    later = resolve(store, T0 + 3600, max_age=3600)
    assert later.id != first.id
    assert store.by_id[first.id].state["closed_reason"] == "max_age"
    assert store.by_id[first.id].closed_at == T0 + 3600


def test_zero_idle_timeout_never_expires() -> None:
    store = Sessions()
    first = resolve(store, T0, idle=0)
    assert resolve(store, T0 + 10 * 365 * 86400, idle=0).id == first.id


def test_a_closed_session_is_not_reopened() -> None:
    store = Sessions()
    first = resolve(store, T0)
    store.by_id[first.id].closed_at = T0 + 5
    second = resolve(store, T0 + 10)
    assert second.id != first.id
    assert store.by_id[first.id].closed_at == T0 + 5  # not rewritten


def test_reset_closes_now_and_opens() -> None:
    store = Sessions()
    first = resolve(store, T0)
    closed, opened = asyncio.run(lifecycle.reset(msg(), KEY, T0 + 10, store.load, store.save))
    assert closed is not None and closed.id == first.id
    assert store.by_id[first.id].closed_at == T0 + 10
    assert store.by_id[first.id].state["closed_reason"] == "reset"
    assert asyncio.run(store.load(KEY)).id == opened.id
    assert resolve(store, T0 + 11).id == opened.id


def test_a_clock_behind_still_opens_a_later_session() -> None:
    """Another instance with a slower clock must not open a session that
    sorts before the one it replaces."""
    store = Sessions()
    first = resolve(store, T0 + 100)
    asyncio.run(lifecycle.reset(msg(), KEY, T0, store.load, store.save))
    latest = asyncio.run(store.load(KEY))
    assert latest.id != first.id and latest.opened_at > first.opened_at


def test_ids_are_unique_and_opaque() -> None:
    ids = {lifecycle.new_session_id(T0) for _ in range(5000)}
    assert len(ids) == 5000
    assert all(i.startswith("s-") and len(i) < 40 for i in ids)
    assert lifecycle.new_session_id(T0) < lifecycle.new_session_id(T0 + 1)
    session = resolve(Sessions(), T0)
    assert "u1" not in session.id and "g1" not in session.id


def test_shared_sessions_belong_to_no_single_user() -> None:
    store = Sessions()
    shared = resolve(store, T0, key="g:g1:c:c1")
    assert shared.user_id is None


def test_expiry() -> None:
    s: Any = Session("x", KEY, opened_at=T0, last_active_at=T0 + 100)
    assert lifecycle.expiry(s, 1800, None) == (T0 + 1900, "idle")
    assert lifecycle.expiry(s, 1800, 1000) == (T0 + 1000, "max_age")
    assert lifecycle.expiry(s, 0, None) is None


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=150, deadline=None)
@given(
    steps=st.lists(st.tuples(st.sampled_from(["message", "reset"]), st.floats(0, 4000)), min_size=1, max_size=30),
    idle=st.sampled_from([0.0, 600.0, 1800.0]),
    max_age=st.sampled_from([None, 3000.0]),
)
def test_any_sequence_keeps_one_open_session(
    steps: list[tuple[str, float]], idle: float, max_age: float | None
) -> None:
    """Whatever the messages, gaps and resets: at most one open session per
    scope, the latest one is where messages go, every other one is closed
    no later than its successor opened, and a message continues a session
    exactly when it came within the limits."""
    store = Sessions()
    now = T0
    previous: Session | None = None
    for action, gap in steps:
        now += gap
        if action == "reset":
            _closed, previous = asyncio.run(lifecycle.reset(msg(), KEY, now, store.load, store.save))
            continue
        current = resolve(store, now, idle, max_age)
        if previous is not None:
            continued = current.id == previous.id
            within = (idle == 0 or now - previous.last_active_at < idle) and (
                max_age is None or now - previous.opened_at < max_age
            )
            assert continued == within
        previous = current
    sessions = sorted(store.by_id.values(), key=lambda s: s.opened_at)
    assert [s for s in sessions if s.closed_at is None] == sessions[-1:]
    for older, newer in zip(sessions, sessions[1:]):
        assert older.closed_at is not None and older.closed_at <= newer.opened_at
        assert older.state["closed_reason"] in ("idle", "max_age", "reset")


class Unreachable(Sessions):
    async def load(self, key: str) -> Session | None:
        raise lifecycle.StateUnreachable(key)


def test_a_session_opened_while_the_state_is_unreachable_is_provisional() -> None:
    store = Unreachable()
    blind = resolve(store, T0, idle=600, max_age=3600)
    assert blind.state == {"provisional": {"idle_timeout": 600, "max_age": 3600}}
    assert store.by_id[blind.id].state == blind.state  # saved with its mark
    # A reset means to start anew: not provisional.
    _closed, opened = asyncio.run(lifecycle.reset(msg(), KEY, T0 + 5, store.load, store.save))
    assert _closed is None and opened.state == {}


def test_a_session_opened_because_nothing_known_continued_is_marked_fresh() -> None:
    """Rule 11 of docs/MEMORY_SESSIONS.md: storage may learn of the
    conversation's past late and join the fresh session to it, judged under
    these timeouts. Continuing a session adds nothing; a reset is a decision."""
    store = Sessions()
    first = resolve(store, T0, idle=600, max_age=3600)
    assert first.state == {"fresh": {"idle_timeout": 600, "max_age": 3600}}
    assert store.by_id[first.id].state == first.state  # saved with its mark
    continued = resolve(store, T0 + 60, idle=600, max_age=3600)
    assert continued.id == first.id and continued.state == first.state
    after_timeout = resolve(store, T0 + 60 + 601, idle=600, max_age=3600)
    assert after_timeout.id != first.id and after_timeout.state["fresh"] == {"idle_timeout": 600, "max_age": 3600}
    _closed, opened = asyncio.run(lifecycle.reset(msg(), KEY, T0 + 2000, store.load, store.save))
    assert "fresh" not in opened.state
