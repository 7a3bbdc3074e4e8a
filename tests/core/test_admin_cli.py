"""core.admin: the registry of admin commands, their output and progress."""

from __future__ import annotations

import io
import json
from typing import Any

from core.admin import AdminCommand, AdminRegistry, Output


async def _noop(bot: Any, args: Any, out: Output) -> int:
    return 0


def test_a_taken_name_is_refused_and_reported() -> None:
    registry = AdminRegistry()
    registry.register_for("a")(AdminCommand("doctor", "first", _noop))
    registry.register_for("b")(AdminCommand("doctor", "second", _noop))
    registry.register_for("b")(AdminCommand("run", "shadows the core", _noop))
    registry.register_for("c")("not a command")
    assert registry.commands["doctor"].plugin == "a"
    assert len(registry.problems) == 3
    assert "'doctor' is taken" in registry.problems[0] and "'run' is taken" in registry.problems[1]


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_is_redrawn_on_a_terminal_and_plain_lines_otherwise() -> None:
    tty, plain = Terminal(), io.StringIO()
    for stream in (tty, plain):
        progress = Output(False, stdout=io.StringIO(), stderr=stream).progress("rebuilding", 40)
        for _ in range(40):
            progress.advance()
        progress.close()
    assert "\r" in tty.getvalue() and tty.getvalue().rstrip().endswith("rebuilding: 40/40 (100%)")
    lines = plain.getvalue().splitlines()
    assert "\r" not in plain.getvalue()
    assert lines[-1] == "rebuilding: 40/40 (100%)"
    assert 2 <= len(lines) <= 12  # a tenth of the way at a time, not 40 lines


def test_json_output_is_one_document_with_the_exit_code_and_no_prose() -> None:
    stdout, stderr = io.StringIO(), io.StringIO()
    out = Output(True, stdout=stdout, stderr=stderr)
    out.line("for people only")
    out.data(depth=3)
    out.finish("outbox", 1, error=None)
    assert json.loads(stdout.getvalue()) == {"command": "outbox", "exit_code": 1, "depth": 3}
