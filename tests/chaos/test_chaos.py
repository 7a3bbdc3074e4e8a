"""The chaos soak in the test suite.

The checker is proven to count each kind of violation on synthetic ledgers
with one planted fault each (so the soak cannot pass by accident), the
gateway delivery model is proven on stand-in processes, and the ``--quick``
soak (about a minute: two bot processes, one private redis-server, one
fresh PostgreSQL database, every fault kind several times, Discord's
delivery model) must count no lost, stored-twice or reordered message, no
unanswered message, no doubled reply outside overlapping faults, no split
conversation and no context that differs from its conversation. Each
concern is its own test on the one soak, so a failure names it.

Run the full soak with ``python -m bench.chaos`` (docs/CHAOS.md).
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
from pathlib import Path
from typing import Any

import pytest

from bench.chaos import overlaps
from bench.chaos.cli import QUICK, table
from bench.chaos.faults import KINDS
from bench.chaos.ledger import (
    COUNTED,
    DIED,
    NOT_DELIVERED,
    VIOLATIONS,
    Delivery,
    Entry,
    Ledger,
    Reply,
    Row,
    Rules,
    View,
    check,
    passed,
)
from harness.instances import LEAKY_ENV, LEAKY_PREFIXES

RULES = Rules(window=50, idle_timeout=1800.0, speed=10.0)


def answered(ledger: Ledger, rows: list[Row], mid: str, conv: int, ts: float, session: str, sent: float) -> Entry:
    """One message sent at ``sent`` (soak seconds), received by A and B, answered by A."""
    entry = ledger.add(Entry(mid, conv, "chan", f"m{mid}", ts, sent=sent))
    entry.deliveries.append(Delivery("A", "gateway", "replied", start=sent, end=sent + 0.2))
    entry.deliveries.append(Delivery("B", "gateway", "no-reply", start=sent, end=sent + 0.3))
    entry.replies.append(Reply("A", f"ok m{mid}", False, at=sent + 0.1))
    rows.append(Row(mid, session, "user", f"m{mid}", ts, None))
    rows.append(Row(f"reply:{mid}", session, "bot", f"ok m{mid}", ts + 0.5, mid))
    return entry


def clean_world() -> tuple[Ledger, list[Row], list[View]]:
    """Three messages of conversation 0 in one session, each answered once,
    all stored; both instances serve the right context, before and after
    the flush."""
    ledger = Ledger()
    rows: list[Row] = []
    for n in range(3):
        answered(ledger, rows, str(1000 + n), 0, 100.0 + n, "s1", sent=float(n))
        window = {"session_id": "s1", "ids": [r.message_id for r in rows[:-1]], "ts": [r.ts for r in rows[:-1]]}
        ledger.note_windows(str(1000 + n), "A", [window])
    ids = [r.message_id for r in rows]
    views = [View(0, name, "s1", list(ids), phase=phase) for phase in ("cached", "rebuilt") for name in "AB"]
    return ledger, rows, views


def counts(
    ledger: Ledger, rows: list[Row], views: list[View], events: list[dict[str, Any]] | None = None
) -> dict[str, int]:
    return check(ledger, rows, views, RULES, events)["counts"]


def test_checker_passes_a_clean_ledger() -> None:
    ledger, rows, views = clean_world()
    result = check(ledger, rows, views, RULES)
    assert result["counts"] == {k: 0 for k in VIOLATIONS + COUNTED}
    assert passed(result)
    assert result["stats"]["accepted"] == 3
    assert result["stats"]["views_checked_rebuilt"] == 2


# --- storage ------------------------------------------------------------------------


def test_checker_counts_a_deleted_message_row() -> None:
    ledger, rows, views = clean_world()
    rows = [r for r in rows if r.message_id != "1001"]
    found = counts(ledger, rows, views)
    assert found["lost_messages"] == 1
    # The views still show the message the database lost: one conversation wrong.
    assert found["context_mismatch"] == 1


def test_checker_counts_a_deleted_reply_row() -> None:
    ledger, rows, views = clean_world()
    rows = [r for r in rows if r.message_id != "reply:1002"]
    assert counts(ledger, rows, [])["lost_replies"] == 1


def test_checker_counts_a_message_stored_twice() -> None:
    ledger, rows, views = clean_world()
    rows.append(Row("9999", "s1", "user", "m1001", 101.0, None))  # the same sent message under another id
    rows.append(Row("reply:9999", "s1", "bot", "ok m1001", 101.5, "1001"))  # a second reply to 1001
    assert counts(ledger, rows, [])["stored_twice"] == 2


def test_checker_counts_disorder() -> None:
    ledger, rows, views = clean_world()
    bad = copy.deepcopy(rows)
    bad[2] = Row("1001", "s1", "user", "m1001", 250.0, None)  # stored with another timestamp
    assert counts(ledger, bad, [])["out_of_order"] >= 1
    ledger2, rows2, _ = clean_world()
    unsorted = {"session_id": "s1", "ids": ["1001", "1000", "1002"], "ts": [101.0, 100.0, 102.0]}
    ledger2.note_windows("1002", "B", [unsorted])
    assert counts(ledger2, rows2, [])["out_of_order"] == 1


# --- unanswered -----------------------------------------------------------------------


def test_a_message_a_live_instance_received_and_nobody_answered_is_unanswered() -> None:
    # A (which received it) was killed with it in hand; B received it, lived
    # on and stayed silent (say, it left it to A's claim): G10 wants B to answer.
    ledger, rows, views = clean_world()
    entry = ledger.add(Entry("2000", 0, "chan", "m9", 200.0, sent=5.0))
    entry.deliveries += [Delivery("A", "gateway", DIED), Delivery("B", "gateway", "no-reply")]
    rows.append(Row("2000", "s1", "user", "m9", 200.0, None))
    result = check(ledger, rows, [], RULES)
    assert result["counts"]["unanswered"] == 1
    assert result["counts"]["unanswerable"] == 0
    assert result["counts"]["lost_messages"] == 0  # never accepted: not a loss
    assert result["stats"]["stored_without_reply"] == 1
    assert not passed(result)


def test_a_message_no_live_instance_received_is_unanswerable_not_unanswered() -> None:
    # Its only receiver was killed with it; the other was down when it was sent.
    ledger, rows, views = clean_world()
    entry = ledger.add(Entry("2000", 0, "chan", "m9", 200.0, sent=5.0))
    entry.deliveries += [Delivery("A", "gateway", DIED), Delivery("B", "gateway", NOT_DELIVERED)]
    result = check(ledger, rows, [], RULES)
    assert result["counts"]["unanswered"] == 0
    assert result["counts"]["unanswerable"] == 1
    assert passed(result)


def test_a_reply_stored_by_a_process_killed_before_reporting_it_is_answered() -> None:
    # The pipeline stores a reply only after sending it: the stored row is
    # proof it was sent, though the driver never heard of it.
    ledger, rows, views = clean_world()
    ledger.entries["1001"].replies.clear()
    result = check(ledger, rows, views, RULES)
    assert result["counts"]["unanswered"] == 0
    assert result["stats"]["replies_sent_unreported"] == 1


# --- doubled replies and the faults behind them -------------------------------------


def doubled_at(ledger: Ledger, mid: str, sent: float) -> None:
    """Message ``mid`` sent at ``sent``, answered by A and, 0.4 s later, by B."""
    entry = ledger.entries[mid]
    entry.sent = sent
    entry.deliveries = [Delivery("A", "gateway", "replied", sent, sent + 0.3),
                        Delivery("B", "gateway", "replied", sent, sent + 0.5)]
    entry.replies = [Reply("A", "ok", False, at=sent + 0.2), Reply("B", "ok", True, at=sent + 0.4)]


def test_a_doubled_reply_without_any_fault_is_a_violation() -> None:
    ledger, rows, views = clean_world()
    doubled_at(ledger, "1000", 50.0)
    result = check(ledger, rows, views, RULES, [{"kind": "db_cut", "at": 10.0, "end": 12.0}])
    assert result["counts"]["replies_doubled"] == 1
    assert result["counts"]["replies_doubled_nonoverlapping"] == 1
    assert result["stats"]["doubled_by_faults"] == {"nonoverlapping: no fault": 1}
    assert not passed(result)


def test_a_doubled_reply_under_one_fault_at_a_time_is_a_violation_listing_them() -> None:
    # A flush, then (after the flush's aftermath) a database cut: two faults
    # in a row, never at once.
    ledger, rows, views = clean_world()
    doubled_at(ledger, "1000", 50.0)
    events = [{"kind": "redis_flushall", "at": 49.8, "end": 49.8}, {"kind": "db_cut", "at": 52.0, "end": 55.0},
              {"kind": "bot_pause", "at": 20.0, "end": 30.0, "instance": "B"}]
    ledger.entries["1000"].replies[1].at = 53.0
    result = check(ledger, rows, views, RULES, events)
    assert result["counts"]["replies_doubled_nonoverlapping"] == 1
    assert result["counts"]["replies_doubled_overlapping"] == 0
    example = result["examples"]["replies_doubled_nonoverlapping"][0]
    assert example["faults"] == "db_cut + redis_flushall"


def test_a_doubled_reply_under_overlapping_faults_is_counted_apart_with_the_overlap() -> None:
    ledger, rows, views = clean_world()
    doubled_at(ledger, "1000", 40.0)
    events = [{"kind": "redis_restart", "at": 39.0, "end": 41.0}, {"kind": "db_cut", "at": 39.5, "end": 43.0}]
    result = check(ledger, rows, views, RULES, events)
    assert result["counts"]["replies_doubled_overlapping"] == 1
    assert result["counts"]["replies_doubled_nonoverlapping"] == 0
    assert result["stats"]["doubled_by_faults"] == {"overlapping: db_cut + redis_restart": 1}
    assert passed(result)  # counted and listed, not a violation


def test_a_reply_sent_again_after_its_sender_was_killed_is_counted_apart() -> None:
    # A sent, then died before storing: B took the claim over and sent again.
    # On Discord the shared nonce keeps one message (rule A5).
    ledger, rows, views = clean_world()
    doubled_at(ledger, "1000", 50.0)
    ledger.entries["1000"].deliveries[0].outcome = "died"
    result = check(ledger, rows, views, RULES, [{"kind": "bot_kill", "at": 50.1, "end": 52.0, "instance": "A"}])
    assert result["counts"]["replies_doubled_resent_after_kill"] == 1
    assert result["counts"]["replies_doubled_nonoverlapping"] == 0
    assert passed(result)


def test_faults_that_overlapped_only_outside_the_messages_life_do_not_excuse_it() -> None:
    events = [{"kind": "redis_blackhole", "at": 39.0, "end": 41.0}, {"kind": "db_cut", "at": 39.5, "end": 43.0},
              {"kind": "redis_blackhole", "at": 79.0, "end": 81.0}]  # Redis alone is down at 80
    ledger, rows, views = clean_world()
    doubled_at(ledger, "1000", 80.0)
    found = counts(ledger, rows, views, events)
    assert (found["replies_doubled_nonoverlapping"], found["replies_doubled_overlapping"]) == (1, 0)


def test_overlaps_helpers() -> None:
    faults = overlaps.faults_from([
        {"kind": "bot_pause", "at": 0.0, "end": 10.0, "instance": "A"},
        {"kind": "bot_pause", "at": 5.0, "end": 15.0, "instance": "B"},
        {"kind": "redis_flushall", "at": 30.0, "end": 30.0},
    ])
    assert [f.kind for f in overlaps.during(faults, 31.0, 40.0)] == ["redis_flushall"]  # its aftermath
    assert overlaps.during(faults, 33.0, 40.0) == []
    assert overlaps.label(overlaps.overlapping(faults, 0.0, 40.0)) == "bot_pause x2"
    assert overlaps.overlapping(faults, 16.0, 40.0) == []  # they overlapped before the window
    assert overlaps.coverage(faults, 0.0, 40.0) == (19.0, 7.0)


# --- conversations ------------------------------------------------------------------


def split_world() -> tuple[Ledger, list[Row], list[View]]:
    """Conversation 0 goes on in session s2 a few seconds after s1, no idle
    timeout between: the bot restarted it. Every instance serves s2, which
    agrees with the database *for s2*."""
    ledger, rows, _ = clean_world()
    for n in range(3, 5):
        answered(ledger, rows, str(1000 + n), 0, 100.0 + n, "s2", sent=float(n))
    s2 = [r.message_id for r in rows if r.session_id == "s2"]
    views = [View(0, name, "s2", list(s2), phase=phase) for phase in ("cached", "rebuilt") for name in "AB"]
    return ledger, rows, views


def test_a_conversation_restarted_in_a_new_session_is_a_split_and_a_context_mismatch() -> None:
    ledger, rows, views = split_world()
    result = check(ledger, rows, views, RULES)
    assert result["counts"]["conversation_splits"] == 1
    # One conversation wrong, however many views showed it.
    assert result["counts"]["context_mismatch"] == 1
    example = result["examples"]["context_mismatch"][0]["views"][0]
    assert example["missing"][:2] == ["1000", "reply:1000"]


def test_a_new_session_after_an_idle_timeout_is_no_split() -> None:
    ledger, rows, _ = clean_world()
    later = 102.0 + RULES.idle_timeout + 100.0  # far past the idle timeout and any handling delay
    answered(ledger, rows, "1003", 0, later, "s2", sent=300.0)
    s2 = ["1003", "reply:1003"]
    good = [View(0, "A", "s2", s2, phase="rebuilt")]
    assert counts(ledger, rows, good)["conversation_splits"] == 0
    assert counts(ledger, rows, good)["context_mismatch"] == 0
    # The timeout closed s1: serving s1's messages with s2's is wrong.
    stale = [View(0, "A", "s2", [r.message_id for r in rows], phase="rebuilt")]
    assert counts(ledger, rows, stale)["context_mismatch"] == 1


def test_near_the_idle_timeout_either_session_is_right() -> None:
    # 1795 s after the last message, but handled up to 11 bot-s later: the
    # bot may have continued the session or opened a new one.
    for same_session in (True, False):
        ledger, rows, _ = clean_world()
        answered(ledger, rows, "1003", 0, 102.0 + 1795.0, "s1" if same_session else "s2", sent=200.0)
        ids = [r.message_id for r in rows] if same_session else ["1003", "reply:1003"]
        view = [View(0, "A", "s1" if same_session else "s2", ids, phase="rebuilt")]
        found = counts(ledger, rows, view)
        assert (found["conversation_splits"], found["context_mismatch"]) == (0, 0), same_session


def test_a_message_received_but_never_stored_may_keep_its_session_open() -> None:
    """Seed 7, 8 Dec: every receiver of a message died before storing it,
    but its session had been resolved and touched (rule 12): the user did
    talk then, and the bot rightly went on in the same session across a
    stored gap longer than the idle timeout. Either session is right."""
    for same_session in (True, False):
        ledger, rows, _ = clean_world()
        lost = ledger.add(Entry("1003", 0, "chan", "m1003", 102.0 + 1000.0, sent=100.0))
        lost.deliveries += [Delivery("A", "gateway", DIED, start=100.0, end=101.0), Delivery("B", "gateway", NOT_DELIVERED)]
        answered(ledger, rows, "1004", 0, 102.0 + 2000.0, "s1" if same_session else "s2", sent=200.0)
        ids = [r.message_id for r in rows] if same_session else ["1004", "reply:1004"]
        view = [View(0, "A", "s1" if same_session else "s2", ids, phase="rebuilt")]
        found = counts(ledger, rows, view)
        assert (found["conversation_splits"], found["context_mismatch"]) == (0, 0), same_session
    # Never received (its process was down): it moved nothing, the timeout holds.
    ledger, rows, _ = clean_world()
    unheard = ledger.add(Entry("1003", 0, "chan", "m1003", 102.0 + 1000.0, sent=100.0))
    unheard.deliveries += [Delivery("A", "gateway", NOT_DELIVERED), Delivery("B", "gateway", NOT_DELIVERED)]
    answered(ledger, rows, "1004", 0, 102.0 + 2000.0, "s1", sent=200.0)
    assert counts(ledger, rows, [View(0, "A", "s1", [r.message_id for r in rows], phase="rebuilt")])["context_mismatch"] == 1


def test_a_context_wrong_only_after_the_flush_is_a_mismatch() -> None:
    ledger, rows, views = clean_world()
    for v in views:
        if v.phase == "rebuilt" and v.instance == "B":
            v.ids = v.ids[2:]  # rebuilt without the first exchange
    result = check(ledger, rows, views, RULES)
    assert result["counts"]["context_mismatch"] == 1
    assert result["examples"]["context_mismatch"][0]["views"][0]["phase"] == "rebuilt"


def test_a_context_holding_another_conversations_message_is_a_mismatch() -> None:
    ledger, rows, views = clean_world()
    answered(ledger, rows, "3000", 1, 100.5, "s9", sent=0.5)  # conversation 1, another scope
    views[0].ids = sorted(views[0].ids + ["3000"], key=lambda i: dict((r.message_id, r.ts) for r in rows)[i])
    result = check(ledger, rows, views, RULES)
    assert result["counts"]["context_mismatch"] == 1
    assert result["examples"]["context_mismatch"][0]["views"][0]["foreign"] == ["3000"]


def test_a_context_out_of_order_or_unanswered_instance_is_a_mismatch() -> None:
    ledger, rows, views = clean_world()
    views[0].ids = list(reversed(views[0].ids))
    views.append(View(0, "C", None, None, error="TimeoutError", phase="rebuilt"))
    ledger2, rows2, views2 = clean_world()
    views2.append(View(0, "C", None, None, error="TimeoutError", phase="rebuilt"))
    assert counts(ledger, rows, views)["context_mismatch"] == 1
    assert counts(ledger2, rows2, views2)["context_mismatch"] == 1


def test_first_reply_latency_percentiles() -> None:
    ledger, rows, views = clean_world()
    late = ledger.entries["1002"]  # the third one waited 30 s
    late.replies[0].at = 2.0 + 30.0
    late.deliveries[0].end = 2.0 + 30.1
    stats = check(ledger, rows, views, RULES)["stats"]
    assert stats["first_reply_s"]["p50"] == 0.1
    assert stats["first_reply_s"]["max"] == 30.0


def test_first_reply_latency_from_the_answerers_last_resume() -> None:
    """The second figure counts the wait from the end of the answerer's
    last pause within it; another instance's pause, or one of the answerer
    before the message was sent, changes nothing."""
    ledger, rows, views = clean_world()
    late = ledger.entries["1002"]  # sent at 2 s, answered by A 30 s later
    late.replies[0].at = 2.0 + 30.0
    late.deliveries[0].end = 2.0 + 30.1
    events = [{"kind": "bot_pause", "at": 1.0, "end": 12.0, "instance": "A"},
              {"kind": "bot_pause", "at": 12.5, "end": 27.0, "instance": "A"},
              {"kind": "bot_pause", "at": 3.0, "end": 31.0, "instance": "B"},
              {"kind": "bot_pause", "at": 0.0, "end": 1.5, "instance": "A"}]
    stats = check(ledger, rows, views, RULES, events)["stats"]
    assert stats["first_reply_s"]["max"] == 30.0
    assert stats["first_reply_after_resume_s"]["max"] == 5.0
    assert stats["first_reply_after_resume_s"]["p50"] == 0.1


# --- the gateway delivery model -----------------------------------------------------------


class StandIn:
    """A bot process as the driver sees it: running or not, paused or not.
    A paused one keeps what it receives and answers it when it resumes."""

    def __init__(self, name: str, alive: bool = True, paused: bool = False) -> None:
        self.name, self.alive, self.paused = name, alive, paused
        self.received: list[str] = []
        self.running = asyncio.Event()
        if not paused:
            self.running.set()

    async def request(self, cmd: str, message: dict[str, Any], now: float) -> dict[str, Any]:
        self.received.append(message["id"])
        await self.running.wait()
        return {"sent": [], "contexts": []}


def test_the_gateway_model_delivers_each_message_once_to_each_connected_instance(tmp_path: Path) -> None:
    from bench.chaos.soak import Soak, SoakConfig

    async def scenario() -> tuple[Soak, dict[str, StandIn], Entry]:
        soak = Soak(SoakConfig(delivery="gateway"), tmp_path)
        stand_ins = {"A": StandIn("A"), "B": StandIn("B", alive=False), "C": StandIn("C", paused=True)}
        soak.instances = stand_ins  # type: ignore[assignment]
        entry = soak.ledger.add(Entry("1", 0, "chan", "m", 1.0))
        job = asyncio.get_running_loop().create_task(soak.broadcast(entry, {"id": "1"}))
        await asyncio.wait_for(_until(lambda: stand_ins["C"].received), 5)
        assert not job.done()  # C holds it, unanswered, while paused
        stand_ins["C"].running.set()  # resumed: C handles it now
        await asyncio.wait_for(job, 5)
        return soak, stand_ins, entry

    soak, stand_ins, entry = asyncio.run(scenario())
    assert [(d.instance, d.kind, d.outcome) for d in entry.deliveries] == [("A", "gateway", "no-reply"),
                                                                         ("C", "gateway", "no-reply")]
    assert (stand_ins["A"].received, stand_ins["B"].received, stand_ins["C"].received) == (["1"], [], ["1"])
    # Unanswered by two live receivers: nothing is sent again anywhere.
    assert check(soak.ledger, [], [], RULES)["counts"]["unanswered"] == 1


async def _until(condition: Any) -> None:
    while not condition():
        await asyncio.sleep(0.01)


# --- the quick soak ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def quick_soak(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, str]:
    """One quick soak for the tests below (about a minute), Discord's delivery model."""
    from bench.chaos.soak import SoakConfig, run_soak

    cfg = SoakConfig(seed=7, instances=2, label="quick")
    for key, value in QUICK.items():
        setattr(cfg, key, value)
    assert cfg.delivery == "gateway"
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


def _examples(result: Any, *kinds: str) -> str:
    return json.dumps({k: result.examples.get(k, []) for k in kinds}, default=str)[:4000]


@_soak_marks
def test_quick_soak_delivers_as_discord_does(backend: str, clean_env: None, quick_soak: tuple[Any, str]) -> None:
    """Every fault kind happened; each message went to each running
    instance at most once, and to at least one."""
    result, report = quick_soak
    for kind in KINDS:
        assert result.faults.get(kind, 0) >= 2, f"fault {kind} happened {result.faults.get(kind, 0)} times:\n{report}"
    stats = result.stats
    assert stats["sent"] >= 1000, report
    assert stats["deliveries"] == stats["deliveries_gateway"], report
    assert stats["delivered_twice_to_one_instance"] == 0, report
    assert stats["sent"] <= stats["deliveries"] <= 2 * stats["sent"], report
    assert stats["views_checked_rebuilt"] == stats["views_checked_cached"] > 0, report


@_soak_marks
def test_quick_soak_loses_nothing(backend: str, clean_env: None, quick_soak: tuple[Any, str]) -> None:
    """Nothing accepted lost, stored twice or reordered."""
    result, report = quick_soak
    kinds = ("lost_messages", "lost_replies", "stored_twice", "out_of_order")
    bad = {k: result.counts[k] for k in kinds if result.counts[k]}
    assert not bad, f"violations {bad}\n{report}\nexamples: {_examples(result, *kinds)}"


@_soak_marks
def test_quick_soak_answers_every_message(backend: str, clean_env: None, quick_soak: tuple[Any, str]) -> None:
    """No message left without a reply while an instance that received it lived on."""
    result, report = quick_soak
    assert result.counts["unanswered"] == 0, f"{report}\nexamples: {_examples(result, 'unanswered')}"


@_soak_marks
def test_quick_soak_answers_each_message_once(backend: str, clean_env: None, quick_soak: tuple[Any, str]) -> None:
    """No doubled reply unless faults overlapped while its message waited."""
    result, report = quick_soak
    assert result.counts["replies_doubled_nonoverlapping"] == 0, (
        f"{report}\nexamples: {_examples(result, 'replies_doubled_nonoverlapping')}")


@_soak_marks
def test_quick_soak_keeps_each_conversation_whole(backend: str, clean_env: None, quick_soak: tuple[Any, str]) -> None:
    """No conversation split over sessions; every context, as left and
    rebuilt after a flush, is its conversation's."""
    result, report = quick_soak
    kinds = ("conversation_splits", "context_mismatch")
    bad = {k: result.counts[k] for k in kinds if result.counts[k]}
    assert not bad, f"violations {bad}\n{report}\nexamples: {_examples(result, *kinds)}"
