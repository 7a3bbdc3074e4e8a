"""Scenarios of features/conversations.feature: a conversation never splits (G9).

Its own steps look at what Redis holds of a conversation; the step that
reads the session ids of its stored messages is shared (tests/harness/steps.py).
"""

from typing import Any

from pytest_bdd import scenarios, then

from plugins.memory.keys import KeyNames
from tests.harness.harness import Harness
from tests.harness.steps import p

scenarios("conversations.feature")


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
