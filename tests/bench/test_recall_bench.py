"""``python -m bench.recall`` at a tiny size, so it does not rot: it loads,
migrates, searches and reports (the figures themselves are in
docs/PERFORMANCE.md)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.recall import main


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.real)])
def test_a_tiny_run_reports_latency_and_tokens(tmp_path: Path, backend: str, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "recall.json"
    assert main(["--sizes", "2000", "--backends", backend, "--per-user", "100", "--queries", "30", "--warmup", "5", "--json", str(out)]) == 0
    (result,) = json.loads(out.read_text())
    assert result["backend"] == backend and result["messages"] == 2000 and result["users"] == 20
    assert 0 < result["p50_ms"] <= result["p99_ms"] <= result["max_ms"]
    assert result["lines_mean"] > 0 and 0 < result["tokens_mean"] <= 300
    assert "recall p50" in capsys.readouterr().out
