"""``python -m core retention``: the rules, and a run that deletes what is
older than them now, with progress (both backend matrices). The command's
clock is the real one: the harness's messages, stamped by its manual clock
in 2023, are years old to it."""

from __future__ import annotations

import io
import json
from contextlib import redirect_stderr, redirect_stdout

import pytest

from core.cli import main
from tests.harness.harness import Harness
from tests.ops.admin_cli import run_admin as _cli


def test_retention_run_deletes_the_guilds_old_messages_with_progress(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    harness.start_instance("A")
    harness.say("alice", "#general", "one")
    harness.say("bob", "#general of other", "two")
    harness.stop_instance("A")
    general = harness.world.guild("main")
    code, doc, _ = _cli(harness, monkeypatch, "retention", "show")
    assert (code, doc["rules"]) == (0, {})
    monkeypatch.setenv("MEMORY_RETENTION", json.dumps({f"guild:{general}": 30}))
    code, doc, _ = _cli(harness, monkeypatch, "retention", "show")
    assert (code, doc["rules"]) == (0, {f"guild:{general}": 30.0})
    code, doc, err = _cli(harness, monkeypatch, "retention", "run")
    assert (code, doc["messages"]) == (0, 2), (doc, err)
    assert "deleting old messages: 2" in err
    left = harness.db("SELECT content FROM messages ORDER BY ts")
    assert [r[0] for r in left] == ["two", "ok two"]
    code, doc, _ = _cli(harness, monkeypatch, "retention", "run")
    assert (code, doc["messages"]) == (0, 0)


def test_a_malformed_retention_rule_is_a_config_error(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEMORY_RETENTION", json.dumps({"general": 30}))
    monkeypatch.setenv("BOT_DATA_DIR", str(harness.tmp_path / "admin"))
    err = io.StringIO()
    with redirect_stdout(io.StringIO()), redirect_stderr(err):
        code = main(["retention", "show"])
    assert code == 2
    assert "key 'general' must look like 'guild:<id>' or be 'dm'" in err.getvalue()
