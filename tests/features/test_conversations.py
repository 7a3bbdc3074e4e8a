"""Scenarios of features/conversations.feature: a conversation never splits (G9).

Its own steps look at what the conversation is made of: the session ids of
its stored messages, and what Redis holds of it.
"""

from typing import Any

from pytest_bdd import scenarios, then

from plugins.memory.keys import KeyNames
from tests.harness.harness import Harness
from tests.harness.steps import p

scenarios("conversations.feature")


def _sessions_of(harness: Harness, user: str, place: str) -> tuple[list[str], list[str]]:
    scope = harness.scope(user, place)
    rows = harness.db("SELECT session_id FROM messages WHERE scope_key = ? ORDER BY ts", (scope,))
    used = list(dict.fromkeys(str(r[0]) for r in rows))
    stored = [str(r[0]) for r in harness.db("SELECT session_id FROM sessions WHERE scope_key = ?", (scope,))]
    return used, stored


@then(p("the conversation of {user:Name} in {place:Place} is stored in one session"))
def then_one_session(harness: Harness, user: str, place: str) -> None:
    """Plain SQL: every stored message of ``user``'s conversation in
    ``place`` (theirs and the bot's) carries the same session id, the scope
    has that one session row, and it is the session the bot reads now."""
    used, stored = _sessions_of(harness, user, place)
    assert len(used) == 1, f"the messages are spread over {len(used)} sessions: {used}"
    assert stored == used, f"session rows {stored}, messages in {used}"
    _scope, current, _lines = harness.view(user, place)
    assert current == used[0], f"the bot reads session {current}, the messages are in {used[0]}"


@then(p("eventually the conversation of {user:Name} in {place:Place} is stored in one session"))
def then_one_session_eventually(harness: Harness, user: str, place: str) -> None:
    """As above, waiting (bounded) for the instances to join what they can."""
    harness.wait_until(lambda: then_one_session(harness, user, place), f"{user}'s conversation in one session")


def _window_length(harness: Harness, user: str, place: str) -> int:
    prefix = harness.sections["memory"].get("key_prefix", "bot:")
    scope = harness.scope(user, place)
    rows = harness.db("SELECT session_id FROM sessions WHERE scope_key = ? ORDER BY opened_at DESC", (scope,))
    assert rows, f"no session stored for {user} in {place}"
    client: Any = harness.backends.redis_client()
    try:
        keys = KeyNames(prefix)
        epoch = (client.get(keys.epoch) or b"0").decode()
        assert client.exists(keys.session(scope, epoch)), f"Redis holds no session for {scope} (epoch {epoch})"
        return int(client.llen(keys.window(rows[0][0], epoch)))
    finally:
        client.close()


@then(p("eventually Redis holds the {count:d} latest messages of {user:Name} in {place:Place} again"))
def then_redis_rebuilt(harness: Harness, count: int, user: str, place: str) -> None:
    """Looking inside Redis (past the fault proxy), waiting (bounded): the
    scope's session and its hot window of ``count`` messages are there
    again, in the current cache epoch, without any message or read of that
    conversation having asked for them."""

    def check() -> None:
        length = _window_length(harness, user, place)
        assert length == count, f"Redis holds {length} messages of that conversation, not {count}"

    harness.wait_until(check, "Redis rebuilt")
