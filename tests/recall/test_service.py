"""The recall step against a bot: what fits the budget, and that a slow or
unreachable database never holds a reply up."""

from __future__ import annotations

import asyncio
import logging
import time
from types import SimpleNamespace
from typing import Any

import pytest

from core.models import Context, IncomingMessage, MessageRecord, Role, Session
from plugins.recall import service
from plugins.recall.queries import FactRow, Found, Hit
from plugins.recall.settings import RecallSettings
from plugins.sessions.tokens import estimate_tokens

SESSION = Session(id="s1", scope_key="g:1:c:2:u:alice", opened_at=0.0, last_active_at=0.0)


def record(mid: str, text: str) -> MessageRecord:
    return MessageRecord(id=mid, session_id="s1", scope_key=SESSION.scope_key, role=Role.USER, author_id="alice", content=text, timestamp=1.0)


def found(n_messages: int = 3) -> Found:
    return Found(
        facts=[FactRow("name", "Ada", "g:1", "m-name", 5.0), FactRow("favourite colour", "teal", "g:1", "m-colour", 4.0)],
        messages=[Hit("m-colour", "my favourite colour is teal", 4.0), Hit("m-in-window", "in the window", 3.0)]
        + [Hit(f"m{n}", f"an earlier message number {n} about painting rooms", 2.0) for n in range(n_messages)],
    )


def test_facts_come_first_then_messages_not_in_the_window_nor_shown_as_facts() -> None:
    context = Context(SESSION, "", [record("m-in-window", "in the window")])
    chosen = service.choose(found(), context, 1000, estimate_tokens, 3)
    assert [(r.kind, r.source_id) for r in chosen] == [
        ("fact", "m-name"), ("fact", "m-colour"), ("message", "m0"), ("message", "m1"), ("message", "m2"),
    ]
    assert all(r.tokens > 0 and r.timestamp > 0 for r in chosen)


@pytest.mark.parametrize("budget", [40, 60, 90, 150])
def test_what_is_chosen_fits_the_budget(budget: int) -> None:
    chosen = service.choose(found(10), Context(SESSION, "", []), budget, estimate_tokens, 10)
    assert service.HEADER_TOKENS + sum(r.tokens for r in chosen) <= budget


class FakeDurable:
    def __init__(self, delay: float = 0.0, result: Found | None = None) -> None:
        self.delay = delay
        self.result = result or found()
        self.calls = 0

    async def run(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        await asyncio.sleep(self.delay)
        return self.result


class FakeMemory:
    def __init__(self, db: FakeDurable, ok: bool = True) -> None:
        self.db = db
        self.db_ok = ok
        self.failed: list[Any] = []

    def db_failed(self, exc: Any) -> None:
        self.failed.append(exc)


def bot_with(memory: FakeMemory, monkeypatch: pytest.MonkeyPatch, **settings: Any) -> Any:
    bot = SimpleNamespace(plugin_state={"recall": service.RecallState(RecallSettings(**settings))}, settings=None)
    monkeypatch.setattr(service, "memory_of", lambda _bot: memory)
    monkeypatch.setattr(service, "queries_of", lambda _state, _memory: SimpleNamespace(search=None))
    return bot


def incoming(text: str = "which colour for my room?") -> IncomingMessage:
    return IncomingMessage(id="m-new", author_id="alice", channel_id="2", guild_id="1", content=text, timestamp=10.0)


def test_recalled_items_are_added_and_counted_in_the_tokens_used(monkeypatch: pytest.MonkeyPatch) -> None:
    bot = bot_with(FakeMemory(FakeDurable()), monkeypatch)
    context = Context(SESSION, "", [record("m-new", "which colour for my room?")], token_budget=3000, tokens_used=100)
    asyncio.run(service.extend(bot, context, incoming()))
    assert [r.source_id for r in context.recalled][:2] == ["m-name", "m-colour"]
    assert context.tokens_used == 100 + service.HEADER_TOKENS + sum(r.tokens for r in context.recalled)


def test_nothing_is_added_past_the_sessions_token_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    durable = FakeDurable()
    bot = bot_with(FakeMemory(durable), monkeypatch)
    context = Context(SESSION, "", [], token_budget=3000, tokens_used=2990)
    asyncio.run(service.extend(bot, context, incoming()))
    assert context.recalled == [] and context.tokens_used == 2990 and durable.calls == 0


def test_a_search_slower_than_the_time_budget_is_given_up(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    bot = bot_with(FakeMemory(FakeDurable(delay=5.0)), monkeypatch, time_budget=0.05)
    context = Context(SESSION, "", [], token_budget=3000, tokens_used=0)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, "plugins.recall"):
        asyncio.run(service.extend(bot, context, incoming()))
    assert time.monotonic() - started < 1.0
    assert context.recalled == []
    assert "recall: skipped (no answer within the time budget of 0.05s)" in caplog.text


def test_with_the_database_down_recall_is_skipped_at_once_with_one_log_line(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    durable = FakeDurable()
    bot = bot_with(FakeMemory(durable, ok=False), monkeypatch)
    with caplog.at_level(logging.WARNING, "plugins.recall"):
        for _ in range(3):
            context = Context(SESSION, "", [], token_budget=3000, tokens_used=0)
            asyncio.run(service.extend(bot, context, incoming()))
            assert context.recalled == []
    assert durable.calls == 0
    assert caplog.text.count("recall: skipped (the database is unreachable)") == 1
    assert bot.plugin_state["recall"].skipped == 3
