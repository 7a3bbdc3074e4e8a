"""Running an admin command as an operator would: ``core.cli.main`` with
the harness's backends in the environment, on its own event loop in this
thread (the bot instances run on the harness's loop)."""

from __future__ import annotations

import io
import json
from contextlib import redirect_stderr, redirect_stdout
from typing import Any

import pytest

from core.cli import main
from tests.harness.harness import Harness


def run_admin(harness: Harness, monkeypatch: pytest.MonkeyPatch, *argv: str) -> tuple[int, Any, str]:
    """Run ``python -m core ARGV --json``; return the exit code, the JSON
    document and stderr."""
    section = harness.backends.memory_section()
    monkeypatch.setenv("DATABASE_URL", section["database_url"])
    monkeypatch.setenv("REDIS_URL", section["redis_url"])
    # The spool of instance A lives in its data dir.
    monkeypatch.setenv("BOT_DATA_DIR", str(harness.tmp_path / "instances" / "A"))
    monkeypatch.setenv("BOT_INSTANCE_ID", "admin")
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            code = main([*argv, "--json"])
        except SystemExit as exc:
            # argparse refuses bad usage before the command runs: exit 2,
            # the reason on stderr, no report.
            code = int(exc.code or 0)
    return code, json.loads(out.getvalue() or "{}"), err.getvalue()
