"""Scenarios of features/failover.feature: the memory follows a failover.

Each scenario runs on the topology its tag names (``@cluster``,
``@sentinel``, ``@pg_standby``: :mod:`harness.replicated`), never in the
fast or real matrix. The figures (how long the bot saw the backend down,
how long each message took) are printed and appended to the file named by
``FAILOVER_FIGURES`` when set (docs/SCALING.md quotes them).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import pytest
from pytest_bdd import given, parsers, scenarios, then, when

from tests.harness.harness import Harness

pytestmark = pytest.mark.parametrize("backend", ["failover"], indirect=True)

scenarios("failover.feature")


@pytest.fixture
def failover(harness: Harness) -> dict[str, Any]:
    """What the scenario measured: when the fault began, what it was, the
    seconds each message took to be answered (every delivery is timed)."""
    found: dict[str, Any] = {"answers": {}}
    deliver = harness.deliver

    def timed(message: Any, to: list[str] | None = None) -> Any:
        began = time.monotonic()
        try:
            return deliver(message, to)
        finally:
            found["answers"][message.content] = round(time.monotonic() - began, 3)

    harness.deliver = timed  # type: ignore[method-assign]
    return found


def _killed(harness: Harness, failover: dict[str, Any], what: str) -> None:
    failover["what"] = what
    failover["killed_at"] = time.monotonic()
    failover["down_seen_for"] = None


@when(parsers.parse("the Redis master holding {user}'s conversation in {place} is killed"))
def when_cluster_master_killed(harness: Harness, failover: dict[str, Any], user: str, place: str) -> None:
    """SIGKILL the Cluster master serving the conversation's session keys."""
    _scope, session_id, _lines = harness.view(user, place)
    assert session_id is not None
    key = "{" + session_id + "}"
    failover["key"] = key
    failover["old"] = harness.backends.cluster.kill_master_of(key)  # type: ignore[attr-defined]
    _killed(harness, failover, "Redis Cluster master")


@when("the Redis master is killed")
def when_sentinel_master_killed(harness: Harness, failover: dict[str, Any]) -> None:
    failover["old"] = harness.backends.sentinels.kill_master()  # type: ignore[attr-defined]
    _killed(harness, failover, "Redis master (Sentinel)")


@given("the standby has replayed everything")
def given_standby_replayed(harness: Harness) -> None:
    harness.backends.pair.wait_replayed()  # type: ignore[attr-defined]


@given("the standby stops receiving the primary's writes")
def given_standby_cut_off(harness: Harness) -> None:
    """What an asynchronous standby does when it lags: commits made on the
    primary from now on never reach it."""
    harness.backends.pair.stop_streaming()  # type: ignore[attr-defined]


@when("the PostgreSQL primary is stopped")
def when_pg_primary_stopped(harness: Harness, failover: dict[str, Any]) -> None:
    harness.backends.pair.stop_primary()  # type: ignore[attr-defined]
    _killed(harness, failover, "PostgreSQL primary")


@when("the replica is promoted")
def when_replica_promoted(harness: Harness, failover: dict[str, Any]) -> None:
    """Wait for the Cluster (or the Sentinels) to promote the replica."""
    b: Any = harness.backends
    if hasattr(b, "cluster"):
        b.cluster.wait_promoted(failover["key"], failover["old"])
    else:
        b.sentinels.wait_promoted(failover["old"])
    failover["promoted_at"] = time.monotonic()


@when("the standby is promoted")
def when_standby_promoted(harness: Harness, failover: dict[str, Any]) -> None:
    b: Any = harness.backends
    b.pair.promote_standby()
    b.primary_port = b.pair.standby_port
    failover["promoted_at"] = time.monotonic()


@then("the failover figures are written down")
def then_figures(harness: Harness, failover: dict[str, Any]) -> None:
    """Seconds from the kill to the promotion, and until the bot's health
    said the backend was healthy again (the probe closed its breaker)."""
    component = "database" if failover["what"].startswith("PostgreSQL") else "redis"
    healthy_at = harness.wait_until(
        lambda: time.monotonic() if harness.health()[component]["ok"] else None, f"{component} healthy"
    )
    figures = {
        "topology": failover["what"],
        "promotion_s": round(failover["promoted_at"] - failover["killed_at"], 2),
        "bot_healthy_after_s": round(healthy_at - failover["killed_at"], 2),
        "answer_s": failover["answers"],
        "messages": len(harness.deliveries),
        "replies": len(harness.sent),
        "stored": len(harness.stored_ids()),
    }
    print("failover figures:", json.dumps(figures))
    out = os.environ.get("FAILOVER_FIGURES")
    if out:
        with open(out, "a") as f:
            f.write(json.dumps(figures) + "\n")
