"""Steps of features/llm.feature: a chat-completions server on 127.0.0.1
answers for the bot, and scenarios check what the model received.

Imported by ``tests/features/test_llm.py``; every other step is the shared
harness's (``tests/harness/steps.py``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from pytest_bdd import given, parsers, then, when

from tests.harness.harness import Harness, HarnessError
from tests.llm.provider import FakeProvider, Seen, fail_with, last_user_text

ROLE_OF_AUTHOR = {"system": "system", "bot": "assistant", "model": "assistant"}


@pytest.fixture
def chat_server(harness: Harness) -> Iterator[FakeProvider]:
    """A chat-completions server on the harness's event loop, stopped
    before the harness closes."""
    provider = FakeProvider()
    harness.run(provider.start(), what="starting the chat-completions server")
    yield provider
    harness.run(provider.stop(), what="stopping the chat-completions server")


@given("a chat-completions server answers for the bot")
def given_chat_server(harness: Harness, chat_server: FakeProvider) -> None:
    """Enable the llm plugin (with memory and sessions) and point its
    ``base_url`` at a chat-completions server on 127.0.0.1 that answers
    ``echo: <the last user message>``."""
    if harness.instances:
        raise HarnessError("the chat-completions server must be set up before the bot starts")
    for name in ("memory", "sessions", "llm"):
        if name not in harness.plugins:
            harness.plugins.append(name)
    harness.configure("llm", "base_url", chat_server.base_url)
    harness.configure("llm", "backoff", 0.01)


@given("the model answers instead of the test reply plugin")
def given_model_answers(harness: Harness) -> None:
    """Take the harness's test reply plugin out of every running instance,
    so the llm plugin generates the replies."""
    if not harness.instances:
        raise HarnessError("start the bot first")
    for instance in harness.instances.values():
        bot = getattr(instance, "bot", None)
        if bot is None:
            raise HarnessError(f"instance {instance.name} runs in another process; the model cannot be swapped in")
        if bot.plugins.pm.has_plugin("harness_replier"):
            bot.plugins.pm.unregister(name="harness_replier")
        if bot.plugins.info.get("llm") is None or bot.plugins.info["llm"].state != "enabled":
            raise HarnessError(f"instance {instance.name}: the llm plugin is not enabled")


@when(parsers.parse("the chat-completions server fails the next {count:d} requests with HTTP {status:d}"))
def when_server_fails(chat_server: FakeProvider, count: int, status: int) -> None:
    """The next ``count`` requests get ``status`` (the plugin retries, then
    tells the user)."""
    chat_server.script.extend([fail_with(status)] * count)


def _request_for(server: FakeProvider, text: str) -> Seen:
    found = [s for s in server.seen if last_user_text(s.body) == text]
    if not found:
        asked = [last_user_text(s.body) for s in server.seen]
        raise AssertionError(f"the model was never asked about {text!r}; it was asked about {asked}")
    return found[-1]


@then(parsers.parse('the model received for "{text}" these messages in this order:'))
def then_model_received(chat_server: FakeProvider, text: str, datatable: list[list[str]]) -> None:
    """The (last) chat-completions request whose last user message is
    ``text`` holds exactly the table: columns | author | content |, where
    author ``system`` is the system prompt, ``bot`` the bot's replies and any
    other name a user's message."""
    header = [h.strip().lower() for h in datatable[0]]
    rows = [dict(zip(header, (c.strip() for c in row), strict=True)) for row in datatable[1:]]
    want = [(ROLE_OF_AUTHOR.get(r["author"], "user"), r["content"]) for r in rows]
    got: list[Any] = [(m["role"], m["content"]) for m in _request_for(chat_server, text).body["messages"]]
    if got != want:
        show = lambda pairs: "\n".join(f"  | {a:<9} | {c} |" for a, c in pairs)  # noqa: E731
        raise AssertionError(f"the model received:\n{show(got)}\nexpected:\n{show(want)}")


@then(parsers.parse("the chat-completions server was asked {count:d} times"))
def then_server_asked(chat_server: FakeProvider, count: int) -> None:
    """Requests counted across retries."""
    assert len(chat_server.seen) == count, f"{len(chat_server.seen)} requests"
