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
import threading
import time
from collections.abc import Callable
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


@given("the replica stops receiving the master's writes")
def given_sentinel_replica_lags(harness: Harness, failover: dict[str, Any]) -> None:
    """What the master writes from now on is what a lagging replica lacks
    when it is promoted."""
    b: Any = harness.backends
    failover["old"] = b.sentinels.current_master()
    failover["lagging"] = b.sentinels.replica if failover["old"] is b.sentinels.master else b.sentinels.master
    _cut_off(failover)


@given(parsers.parse("the replica of {user}'s conversation in {place} stops receiving its master's writes"))
def given_cluster_replica_lags(harness: Harness, failover: dict[str, Any], user: str, place: str) -> None:
    _scope, session_id, _lines = harness.view(user, place)
    key = "{" + session_id + "}"
    cluster: Any = harness.backends.cluster  # type: ignore[attr-defined]
    failover["key"] = key
    failover["old"] = cluster.master_of(key)
    failover["lagging"] = cluster.replica_of(key)
    _cut_off(failover)


def _cut_off(failover: dict[str, Any]) -> None:
    """Pause the replica and close its link on the master: what the master
    writes from now on never reaches it (a paused process's socket would
    still take it in)."""
    failover["lagging"].pause()
    failover["old"].client().client_kill_filter(_type="replica")


@when("the Redis master is killed and the lagging replica promoted")
def when_master_killed_lagging_promoted(harness: Harness, failover: dict[str, Any]) -> None:
    b: Any = harness.backends
    failover["old"].kill()
    _killed(harness, failover, "Redis master, lagging replica")
    failover["lagging"].resume()
    if hasattr(b, "cluster"):
        b.cluster.wait_promoted(failover["key"], failover["old"])
    else:
        b.sentinels.wait_promoted(failover["old"])
    failover["promoted_at"] = time.monotonic()


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


@when("the standby is promoted")
def when_standby_promoted(harness: Harness, failover: dict[str, Any]) -> None:
    b: Any = harness.backends
    b.pair.promote_standby()
    b.primary_port = b.pair.standby_port
    failover["promoted_at"] = time.monotonic()


# The most messages said while a failover is under way (the context read
# afterwards must hold them all: the sessions plugin's window is 50).
MAX_DURING = 20


def _talk_until(harness: Harness, failover: dict[str, Any], user: str, place: str, promote: Callable[[], None]) -> None:
    """``user`` says "during 1", "during 2", … every 0.1 s (each answered
    before the next) while ``promote`` waits for, or makes, the promotion."""
    done = threading.Event()
    problems: list[BaseException] = []

    def promoting() -> None:
        try:
            promote()
            failover["promoted_at"] = time.monotonic()
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            problems.append(exc)
        finally:
            done.set()

    thread = threading.Thread(target=promoting, name="failover-promotion")
    thread.start()
    said = 0
    while not done.is_set() and said < MAX_DURING:
        said += 1
        harness.say(user, place, f"during {said}")
        time.sleep(0.1)
    thread.join()
    if problems:
        raise problems[0]
    failover["said_during"] = said


@when(parsers.parse("{user} keeps talking in {place} until the replica is promoted"))
def when_talking_until_promoted(harness: Harness, failover: dict[str, Any], user: str, place: str) -> None:
    b: Any = harness.backends
    if hasattr(b, "cluster"):
        _talk_until(harness, failover, user, place, lambda: b.cluster.wait_promoted(failover["key"], failover["old"]))
    else:
        _talk_until(harness, failover, user, place, lambda: b.sentinels.wait_promoted(failover["old"]))


@when(parsers.parse("{user} keeps talking in {place} until the standby is promoted {seconds:g} seconds later"))
def when_talking_until_standby(harness: Harness, failover: dict[str, Any], user: str, place: str, seconds: float) -> None:
    """As a failover manager would: promote the standby ``seconds`` after
    the primary stopped."""
    b: Any = harness.backends

    def promote() -> None:
        time.sleep(max(0.0, failover["killed_at"] + seconds - time.monotonic()))
        b.pair.promote_standby()
        b.primary_port = b.pair.standby_port

    _talk_until(harness, failover, user, place, promote)


@then(parsers.parse("the bot's context for {user} in {place} holds every message said and its reply"))
def then_context_whole(harness: Harness, user: str, place: str) -> None:
    _scope, _session, lines = harness.view(user, place)
    said = [d.message.content for d in harness.deliveries.values()]
    got = [line.content for line in lines if line.role != "bot"]
    assert got == said, f"the context lacks or reorders messages: {got} != {said}"
    assert len(lines) == 2 * len(said), f"{len(lines)} lines for {len(said)} messages and their replies"


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
        "said_during": failover.get("said_during"),
        "slowest_answer_s": max(failover["answers"].values()),
        "answers_over_1s": sorted(k for k, v in failover["answers"].items() if v > 1.0),
        "messages": len(harness.deliveries),
        "replies": len(harness.sent),
        "stored": len(harness.stored_ids()),
    }
    print("failover figures:", json.dumps(figures))
    out = os.environ.get("FAILOVER_FIGURES")
    if out:
        with open(out, "a") as f:
            f.write(json.dumps(figures) + "\n")
