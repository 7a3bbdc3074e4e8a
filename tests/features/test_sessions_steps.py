"""Steps and helpers shared by the sessions scenarios
(``test_sessions.py`` and ``test_sessions_commands.py`` import them with
``from tests.features.test_sessions_steps import *``: pytest-bdd steps are
fixtures, found among a test module's names). No scenarios here.
"""

from __future__ import annotations

import json
from typing import Any

from pytest_bdd import then

from tests.harness.harness import Harness, HarnessError
from tests.harness.steps import p

REASONS = {
    "it was idle": "idle",
    "it reached its maximum age": "max_age",
    "it was reset": "reset",
}


def redis_client(harness: Harness) -> Any:
    """A plain client on the scenario's own Redis (never the shared one),
    reading past any fault proxy."""
    backends: Any = harness.backends
    if hasattr(backends, "redis") and hasattr(backends.redis, "client"):
        return backends.redis.client()
    return backends._client()


def redis_dump(harness: Harness) -> dict[str, str]:
    """Every key of the scenario's Redis with its whole value, as text."""
    client = redis_client(harness)
    out: dict[str, str] = {}
    try:
        for raw_key in client.scan_iter(count=500):
            key = raw_key.decode() if isinstance(raw_key, bytes) else raw_key
            kind = client.type(raw_key)
            kind = kind.decode() if isinstance(kind, bytes) else kind
            if kind == "string":
                value: Any = client.get(raw_key)
            elif kind == "list":
                value = client.lrange(raw_key, 0, -1)
            elif kind == "hash":
                value = client.hgetall(raw_key)
            elif kind == "set":
                value = client.smembers(raw_key)
            elif kind == "zset":
                value = client.zrange(raw_key, 0, -1, withscores=True)
            elif kind == "stream":
                value = client.xrange(raw_key)
            else:
                value = f"<{kind}>"
            out[key] = repr(value)
    finally:
        client.close()
    return out


def sessions_rows(harness: Harness, user: str, place: str) -> list[tuple[Any, ...]]:
    scope = harness.scope(user, place)
    return harness.db(
        "SELECT session_id, opened_at, closed_at, state FROM sessions WHERE scope_key = ? ORDER BY opened_at",
        (scope,),
    )


# --- Then -----------------------------------------------------------------------------


@then(p("the earlier session of {user:Name} in {place:Place} is closed because {why}"))
def then_closed_because(harness: Harness, user: str, place: str, why: str) -> None:
    """Plain SQL: the first session of the scope has ``closed_at`` and the
    reason in its state; the latest one is open."""
    if why not in REASONS:
        raise HarnessError(f"unknown reason {why!r}; use one of {', '.join(REASONS)}")
    rows = sessions_rows(harness, user, place)
    assert len(rows) >= 2, f"only {len(rows)} session(s) for {user} in {place}"
    _sid, opened, closed, state = rows[-2]
    assert closed is not None, f"session {_sid} is still open"
    assert float(closed) >= float(opened)
    reason = json.loads(state or "{}").get("closed_reason")
    assert reason == REASONS[why], f"session {_sid} closed for {reason!r}, not {REASONS[why]!r}"
    assert rows[-1][2] is None, f"the latest session {rows[-1][0]} is closed too"
