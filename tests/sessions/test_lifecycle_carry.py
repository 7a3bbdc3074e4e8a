"""What plugins keep under ``state["carry"]`` outlives a session after a
timeout or ``reset keep``, never after a plain reset."""

from __future__ import annotations

import asyncio

from core.models import IncomingMessage, Session
from plugins.sessions import lifecycle

MESSAGE = IncomingMessage(id="m1", author_id="alice", channel_id="c", guild_id="g", content="hi", timestamp=5000.0)


class Store:
    def __init__(self, session: Session) -> None:
        self.latest = session

    async def load(self, _key: str) -> Session:
        return self.latest

    async def save(self, session: Session) -> None:
        self.latest = session


def old(**state: object) -> Session:
    return Session(id="s-old", scope_key="k", opened_at=0.0, last_active_at=100.0, state={"carry": {"llm_summary": {"text": "t"}}, **state})


def test_a_session_that_timed_out_hands_on_what_it_carries() -> None:
    store = Store(old())
    fresh = asyncio.run(lifecycle.resolve(MESSAGE, "k", 5000.0, 600, None, store.load, store.save))
    assert fresh.id != "s-old"
    assert fresh.state["carry"] == {"llm_summary": {"text": "t"}} and fresh.state["carry_from"] == "s-old"


def test_reset_keep_hands_it_on_and_a_plain_reset_does_not() -> None:
    store = Store(old())
    _closed, kept = asyncio.run(lifecycle.reset(MESSAGE, "k", 200.0, store.load, store.save, reason=lifecycle.RESET_KEEP))
    assert kept.state["carry_from"] == "s-old"
    store = Store(old())
    _closed, clean = asyncio.run(lifecycle.reset(MESSAGE, "k", 200.0, store.load, store.save))
    assert "carry" not in clean.state and "carry_from" not in clean.state


def test_a_plain_reset_after_a_timeout_is_a_clean_slate_too() -> None:
    store = Store(old(closed_reason="idle"))
    store.latest.closed_at = 700.0
    _closed, clean = asyncio.run(lifecycle.reset(MESSAGE, "k", 5000.0, store.load, store.save))
    assert "carry" not in clean.state
