"""Each admin command of the command line, in both backend matrices.

The bot instance runs on the harness's loop; the command runs as an
operator would run it: ``core.cli.main`` with the backends in the
environment, on its own event loop in this thread.
"""

from __future__ import annotations

import json

import pytest

from tests.harness.harness import Harness
from plugins.memory.schema import MIGRATIONS
from tests.ops.admin_cli import run_admin as _cli


def test_migrate_shows_then_applies_the_pending_versions(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    code, doc, _ = _cli(harness, monkeypatch, "migrate", "show")
    assert code == 1, doc
    steps = [number for number, _step in MIGRATIONS]
    assert doc["schema_version"] == 0 and doc["pending"] == steps and steps[-1] == doc["code_version"]
    code, doc, _ = _cli(harness, monkeypatch, "migrate", "apply")
    assert (code, doc["applied"]) == (0, steps)
    code, doc, _ = _cli(harness, monkeypatch, "migrate", "show")
    assert (code, doc["pending"], doc["schema_version"]) == (0, [], doc["code_version"])


def test_outbox_status_counts_what_waits_and_replay_drains_it(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    harness.start_instance("A")
    harness.say("alice", "#general", "one")
    harness.backends.cut_database("drop")
    harness.say("alice", "#general", "two")
    harness.stop_instance("A")
    code, doc, _ = _cli(harness, monkeypatch, "outbox", "status")
    assert code == 1, doc
    assert doc["spool"] + doc["stream"] > 0
    code, doc, err = _cli(harness, monkeypatch, "outbox", "replay")
    assert code == 3, (doc, err)
    assert "database does not answer" in doc["error"]
    harness.backends.restore_database()
    code, doc, err = _cli(harness, monkeypatch, "outbox", "replay")
    assert (code, doc["left"]) == (0, 0), (doc, err)
    two = harness.message_said("two")
    assert two.id in harness.stored_ids()
    code, doc, _ = _cli(harness, monkeypatch, "outbox", "status")
    assert (code, doc["spool"], doc["stream"]) == (0, 0, 0)


def test_cache_rebuild_puts_recent_windows_back_after_a_flush(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    harness.start_instance("A")
    harness.say("alice", "#general", "one")
    harness.say("bob", "#general", "two")
    harness.stop_instance("A")
    harness.backends.flush_redis()
    assert not _windows(harness)
    code, doc, err = _cli(harness, monkeypatch, "cache", "rebuild")
    assert (code, doc["sessions"]) == (0, 2), (doc, err)
    assert len(_windows(harness)) == 2, harness.backends.redis_keys()


def test_cache_rebuild_with_a_new_epoch_replaces_windows_that_miss_messages(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    """After an upgrade that renamed keys, a window may lack what an
    instance of the old release appended elsewhere: ``--new-epoch`` makes
    every window be rebuilt from the database (docs/OPERATIONS.md, Upgrade)."""
    harness.start_instance("A")
    harness.say("alice", "#general", "one")
    harness.say("alice", "#general", "two")
    harness.stop_instance("A")
    # The window loses its last entries, as if written under another key name.
    client = harness.backends.redis_client()
    try:
        (window,) = [k for k in client.keys("bot:w:*")]
        client.ltrim(window, 0, 0)
    finally:
        client.close()
    code, doc, err = _cli(harness, monkeypatch, "cache", "rebuild", "--new-epoch")
    assert (code, doc["sessions"]) == (0, 1), (doc, err)
    harness.start_instance("A")
    _scope, _session, lines = harness.view("alice", "#general")
    assert [line.content for line in lines] == ["one", "ok one", "two", "ok two"]


def _windows(harness: Harness) -> list[str]:
    # bot:w:<epoch>:{<session id>}: a session's hot window (plugins/memory/keys.py).
    return [k for k in harness.backends.redis_keys() if k.startswith("bot:w:")]


def test_sessions_export_and_forget_a_user(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    harness.start_instance("A")
    harness.say("alice", "#general", "remember me")
    harness.say("bob", "#general", "not me")
    harness.stop_instance("A")
    alice = harness.world.user("alice").id

    code, doc, _ = _cli(harness, monkeypatch, "sessions", "list", "--user", alice)
    assert code == 0 and len(doc["sessions"]) == 1
    scope = doc["sessions"][0]["scope_key"]
    code, doc, _ = _cli(harness, monkeypatch, "sessions", "show", scope)
    assert code == 0
    assert [m["content"] for m in doc["messages"]][:1] == ["remember me"]

    code, doc, _ = _cli(harness, monkeypatch, "export", "--user", alice)
    assert code == 0
    assert "remember me" in json.dumps(doc["export"]) and "not me" not in json.dumps(doc["export"])

    code, doc, _ = _cli(harness, monkeypatch, "forget", "--user", alice)
    assert code == 2 and "--yes" in doc["error"]
    code, doc, _ = _cli(harness, monkeypatch, "forget", "--user", alice, "--yes")
    assert code == 0 and doc["deleted"]["messages"] >= 1, doc
    code, doc, _ = _cli(harness, monkeypatch, "export", "--user", alice)
    assert "remember me" not in json.dumps(doc["export"])
    assert "not me" in json.dumps(harness.db("SELECT content FROM messages"))


def test_doctor_names_what_is_degraded_and_the_fix(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    code, doc, _ = _cli(harness, monkeypatch, "doctor")
    assert code == 0 and doc["healthy"], doc
    harness.backends.cut_database("drop")
    code, doc, _ = _cli(harness, monkeypatch, "doctor")
    assert code == 1
    database = next(f for f in doc["findings"] if f["component"] == "database")
    assert not database["ok"] and "DATABASE_URL" in database["fix"]
