"""The chaos soak in the test suite: the checker is proven to count each
kind of violation (so the soak cannot pass by accident), and the ``--quick``
soak (about a minute: two bot processes, one private redis-server, one fresh
PostgreSQL database, every fault kind several times) must count no lost,
stored-twice, reordered, unanswered or out-of-step message, and no doubled
reply (asserted by its own test: docs/CHAOS.md says which rare compound
faults still produced one in earlier full soaks).

Run the full soak with ``python -m bench.chaos`` (docs/CHAOS.md).
"""

from __future__ import annotations

import copy
import json
import os

import pytest

from bench.chaos.cli import QUICK, table
from bench.chaos.faults import KINDS
from bench.chaos.ledger import VIOLATIONS, Delivery, Entry, Ledger, Reply, Row, View, both_down, check, passed
from tests.harness.instances import LEAKY_ENV, LEAKY_PREFIXES

WINDOW = 50


def clean_world() -> tuple[Ledger, list[Row], list[View]]:
    """Three messages in one session, each answered once, all stored."""
    ledger = Ledger()
    rows: list[Row] = []
    for n in range(3):
        mid = str(1000 + n)
        ts = 100.0 + n
        entry = ledger.add(Entry(mid, 0, "chan", f"m{n}", ts))
        entry.deliveries.append(Delivery("A", "first", "replied"))
        entry.replies.append(Reply("A", f"ok m{n}", False))
        rows.append(Row(mid, "s1", "user", f"m{n}", ts, None))
        rows.append(Row(f"reply:{mid}", "s1", "bot", f"ok m{n}", ts + 0.5, mid))
        ids = [r.message_id for r in rows]
        ledger.note_windows(mid, "A", [{"session_id": "s1", "ids": ids[:-1], "ts": [r.ts for r in rows[:-1]], "notes": []}])
    views = [View(0, "A", "s1", [r.message_id for r in rows])]
    return ledger, rows, views


def counts(ledger: Ledger, rows: list[Row], views: list[View]) -> dict[str, int]:
    return check(ledger, rows, views, WINDOW)["counts"]


def test_checker_passes_a_clean_ledger() -> None:
    ledger, rows, views = clean_world()
    result = check(ledger, rows, views, WINDOW)
    assert result["counts"] == {k: 0 for k in VIOLATIONS}
    assert passed(result)
    assert result["stats"]["accepted"] == 3


def test_checker_counts_a_deleted_message_row() -> None:
    ledger, rows, views = clean_world()
    rows = [r for r in rows if r.message_id != "1001"]
    found = counts(ledger, rows, views)
    assert found["lost_messages"] == 1
    # The view still shows the message the database lost.
    assert found["context_mismatch"] == 1


def test_checker_counts_a_deleted_reply_row() -> None:
    ledger, rows, views = clean_world()
    rows = [r for r in rows if r.message_id != "reply:1002"]
    assert counts(ledger, rows, [])["lost_replies"] == 1


def test_checker_counts_a_doubled_reply_and_a_missing_one() -> None:
    ledger, rows, views = clean_world()
    ledger.entries["1000"].replies.append(Reply("B", "ok m0", False))
    ledger.entries["1001"].replies.clear()
    rows = [r for r in rows if r.message_id != "reply:1001"]  # and no instance ever sent one
    found = counts(ledger, rows, [])
    assert found["replies_doubled"] == 1
    assert found["replies_missing"] == 1
    assert not passed(check(ledger, rows, [], WINDOW))


def test_a_reply_stored_by_a_process_killed_before_reporting_it_is_not_missing() -> None:
    # The pipeline stores a reply only after sending it: the stored row is
    # proof it was sent, though the driver never heard of it.
    ledger, rows, views = clean_world()
    ledger.entries["1001"].replies.clear()
    result = check(ledger, rows, views, WINDOW)
    assert result["counts"]["replies_missing"] == 0
    assert result["stats"]["replies_sent_unreported"] == 1


def test_a_double_answered_during_a_real_double_outage_is_shown_apart() -> None:
    # Neither backend reachable: G6 has the instance answer, and nothing can
    # arbitrate. Reported, not counted as a violation.
    ledger, rows, views = clean_world()
    entry = ledger.entries["1000"]
    entry.deliveries.append(Delivery("B", "rolling", "replied", start=40.0, end=40.3))
    entry.replies.append(Reply("B", "ok m0 (memory is degraded)", True))
    events = [{"kind": "redis_blackhole", "at": 39.0, "end": 41.0}, {"kind": "db_cut", "at": 39.5, "end": 43.0}]
    assert both_down(events) == [(39.5, 41.0)]
    result = check(ledger, rows, views, WINDOW, both_down(events))
    assert result["counts"]["replies_doubled"] == 0
    assert result["stats"]["replies_doubled_memory_down"] == 1


def test_a_degraded_double_outside_any_double_outage_is_a_violation() -> None:
    # The instance only believed both backends down (a stale view after a
    # pause, a breaker slow to close): nothing excuses its second reply.
    ledger, rows, views = clean_world()
    entry = ledger.entries["1000"]
    entry.deliveries.append(Delivery("B", "retry", "replied", start=80.0, end=80.2))
    entry.replies.append(Reply("B", "ok m0 (memory is degraded)", True))
    events = [{"kind": "redis_restart", "at": 39.0, "end": 41.0}, {"kind": "db_cut", "at": 39.5, "end": 43.0},
              {"kind": "redis_blackhole", "at": 79.0, "end": 81.0}]  # Redis alone is down at 80
    result = check(ledger, rows, views, WINDOW, both_down(events))
    assert result["counts"]["replies_doubled"] == 1
    assert result["stats"]["replies_doubled_memory_down"] == 0


def test_checker_counts_a_message_stored_twice() -> None:
    ledger, rows, views = clean_world()
    rows.append(Row("9999", "s1", "user", "m1", 101.0, None))  # the same sent message under another id
    rows.append(Row("reply:9999", "s1", "bot", "ok m1", 101.5, "1001"))  # a second reply to 1001
    assert counts(ledger, rows, [])["stored_twice"] == 2


def test_checker_counts_disorder() -> None:
    ledger, rows, views = clean_world()
    bad = copy.deepcopy(rows)
    bad[2] = Row("1001", "s1", "user", "m1", 250.0, None)  # stored with another timestamp
    assert counts(ledger, bad, [])["out_of_order"] >= 1
    ledger2, rows2, _ = clean_world()
    ledger2.note_windows("1002", "B", [{"session_id": "s1", "ids": ["1001", "1000", "1002"], "ts": [101.0, 100.0, 102.0]}])
    assert counts(ledger2, rows2, [])["out_of_order"] == 1


def test_checker_counts_a_window_that_differs_from_the_database() -> None:
    ledger, rows, views = clean_world()
    views[0].ids = views[0].ids[:-2]  # served without the last exchange
    views.append(View(0, "B", "s1", None, error="TimeoutError"))  # an instance that cannot answer
    assert counts(ledger, rows, views)["context_mismatch"] == 2


def test_a_message_stored_but_never_answered_is_not_counted_lost() -> None:
    # Delivered only to an instance killed before it answered: not accepted.
    ledger, rows, views = clean_world()
    entry = ledger.add(Entry("2000", 0, "chan", "m9", 200.0))
    entry.deliveries.append(Delivery("A", "first", "error: worker A exited"))
    result = check(ledger, rows, views, WINDOW)
    assert result["counts"]["lost_messages"] == 0
    assert result["counts"]["replies_missing"] == 1  # but it must still get its reply


@pytest.fixture(scope="module")
def quick_soak(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, str]:
    """One quick soak for the tests below (about a minute)."""
    from bench.chaos.soak import SoakConfig, run_soak

    cfg = SoakConfig(seed=7, instances=2, label="quick")
    for key, value in QUICK.items():
        setattr(cfg, key, value)
    with pytest.MonkeyPatch.context() as mp:  # what clean_env does, for the module
        for key in list(os.environ):
            if key in LEAKY_ENV or key.startswith(LEAKY_PREFIXES):
                mp.delenv(key, raising=False)
        mp.chdir(tmp_path_factory.mktemp("cwd"))
        result = run_soak(cfg)
    (tmp_path_factory.mktemp("chaos") / "chaos.json").write_text(json.dumps(result.__dict__, default=str, indent=1))
    return result, table(result)


SOAK_MARKS = (pytest.mark.real, pytest.mark.fault, pytest.mark.slow, pytest.mark.multiprocess, pytest.mark.timeout(600))


def _soak_marks(fn):  # noqa: ANN001, ANN202
    for mark in SOAK_MARKS:
        fn = mark(fn)
    return pytest.mark.parametrize("backend", ["real"], indirect=True)(fn)


@_soak_marks
def test_quick_soak_loses_nothing(backend: str, clean_env: None, quick_soak: tuple[object, str]) -> None:
    """Every fault kind happened; nothing lost, stored twice, reordered,
    left unanswered or served out of step with the database."""
    result, report = quick_soak
    for kind in KINDS:
        assert result.faults.get(kind, 0) >= 2, f"fault {kind} happened {result.faults.get(kind, 0)} times:\n{report}"
    assert result.stats["sent"] >= 1000, report
    bad = {k: v for k, v in result.counts.items() if v and k != "replies_doubled"}
    assert not bad, f"violations {bad}\n{report}\nexamples: {json.dumps(result.examples, default=str)[:4000]}"


@_soak_marks
def test_quick_soak_answers_each_message_once(backend: str, clean_env: None, quick_soak: tuple[object, str]) -> None:
    result, report = quick_soak
    doubled = result.counts.get("replies_doubled", 0)
    assert doubled == 0, f"{doubled} doubled replies\n{report}\nexamples: {json.dumps(result.examples.get('replies_doubled', []), default=str)[:3000]}"


def test_a_degraded_reply_is_placed_by_when_it_was_generated() -> None:
    # A process with a backlog may generate a reply during a double outage
    # and finish its delivery long after; and the other way round.
    events = [{"kind": "redis_restart", "at": 39.0, "end": 41.0}, {"kind": "db_cut", "at": 39.5, "end": 43.0}]
    for at, excused in ((40.5, True), (70.0, False)):
        ledger, rows, views = clean_world()
        entry = ledger.entries["1000"]
        entry.deliveries.append(Delivery("B", "retry", "replied", start=38.0, end=71.0))
        entry.replies.append(Reply("B", "ok m0 (memory is degraded)", True, at=at))
        result = check(ledger, rows, views, WINDOW, both_down(events))
        assert result["counts"]["replies_doubled"] == (0 if excused else 1)
        assert result["stats"]["replies_doubled_memory_down"] == (1 if excused else 0)
