"""Scenarios of features/summaries.feature, and the steps only they use:
the summary part of what the model received, and its size."""

from __future__ import annotations

from pytest_bdd import scenarios, then

from plugins.llm.summary import HEADER
from plugins.sessions.tokens import MESSAGE_OVERHEAD, estimate_tokens
from tests.harness.steps import p
from tests.llm.bdd_steps import *  # noqa: F403 - the llm steps and the chat_server fixture
from tests.llm.bdd_steps import _request_for
from tests.llm.provider import FakeProvider

scenarios("summaries.feature")


def _summary(server: FakeProvider, text: str) -> str | None:
    system = _request_for(server, text).body["messages"][0]["content"]
    return system.split(HEADER, 1)[1] if HEADER in system else None


@then(p('the model\'s summary for "{text}" mentions "{fragment}"'))
def then_summary_mentions(chat_server: FakeProvider, text: str, fragment: str) -> None:
    summary = _summary(chat_server, text)
    assert summary is not None and fragment in summary, summary


@then(p('the model received no summary for "{text}"'))
def then_no_summary(chat_server: FakeProvider, text: str) -> None:
    assert _summary(chat_server, text) is None


@then(p('the model received for "{text}" {count:d} message after the system prompt'))
def then_messages_after_system(chat_server: FakeProvider, text: str, count: int) -> None:
    messages = _request_for(chat_server, text).body["messages"][1:]
    assert len(messages) == count, messages


@then(p('the model received for "{text}" fewer than {count:d} messages after the system prompt'))
def then_fewer_messages(chat_server: FakeProvider, text: str, count: int) -> None:
    messages = _request_for(chat_server, text).body["messages"][1:]
    assert len(messages) < count, messages


@then(p('the model\'s request for "{text}" fits a token budget of {budget:d}'))
def then_fits_budget(chat_server: FakeProvider, text: str, budget: int) -> None:
    """The system prompt (summary included) and the messages, counted the
    way the sessions plugin counts (its estimate, a few tokens a message)."""
    messages = _request_for(chat_server, text).body["messages"]
    used = estimate_tokens(messages[0]["content"]) + sum(estimate_tokens(m["content"]) + MESSAGE_OVERHEAD for m in messages[1:])
    assert used <= budget, f"{used} tokens: {messages}"
