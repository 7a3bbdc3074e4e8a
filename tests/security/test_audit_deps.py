"""The dependency audit: scripts/audit_deps.sh and its verdict.

pip-audit's vulnerability services are not reachable from the test machine,
so the shell script is exercised with a stand-in ``pip-audit`` that prints
what the real one prints (its JSON format); the verdict logic is tested on
the shapes the real tool produces, including the "everything skipped" result
it gives behind a registry mirror.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("audit_verdict", ROOT / "scripts" / "audit_verdict.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


verdict = _load()

VULN = {
    "name": "aiohttp",
    "version": "3.0.0",
    "vulns": [{"id": "GHSA-test-0000-0001", "fix_versions": ["3.9.4"], "aliases": ["CVE-2099-0001"], "description": "x"}],
}
CLEAN = {"name": "pluggy", "version": "1.7.0", "vulns": []}
SKIPPED = {"name": "redis", "skip_reason": "Dependency not found on PyPI and could not be audited: redis (8.1.0)"}


def result(*deps: dict) -> str:
    return json.dumps({"dependencies": list(deps), "fixes": []})


def test_a_vulnerability_fails(capsys: pytest.CaptureFixture[str]) -> None:
    assert verdict.judge(result(CLEAN, VULN), 1, "", set()) == verdict.FOUND
    out = capsys.readouterr().out
    assert "aiohttp 3.0.0: GHSA-test-0000-0001 (fixed in: 3.9.4)" in out and "audit_ignore.txt" in out


@pytest.mark.parametrize("ignored", [{"GHSA-test-0000-0001"}, {"CVE-2099-0001"}])
def test_an_ignored_advisory_passes_by_id_or_alias(ignored: set[str]) -> None:
    assert verdict.judge(result(CLEAN, VULN), 1, "", ignored) == verdict.OK


def test_everything_skipped_is_a_warning_not_a_pass(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AUDIT_STRICT", raising=False)
    assert verdict.judge(result(SKIPPED, SKIPPED), 0, "", set()) == verdict.OK
    assert "audit NOT done" in capsys.readouterr().err
    monkeypatch.setenv("AUDIT_STRICT", "1")
    assert verdict.judge(result(SKIPPED), 0, "", set()) == verdict.UNREACHABLE_STRICT


def test_a_partly_skipped_audit_still_judges_what_it_audited(capsys: pytest.CaptureFixture[str]) -> None:
    assert verdict.judge(result(CLEAN, SKIPPED), 0, "", set()) == verdict.OK
    captured = capsys.readouterr()
    assert "OK: 1 locked package(s) audited" in captured.out and "not audited" in captured.err
    assert verdict.judge(result(VULN, SKIPPED), 1, "", set()) == verdict.FOUND


def test_network_errors_warn_and_other_failures_fail(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AUDIT_STRICT", raising=False)
    dns = "requests.exceptions.ConnectionError: Max retries exceeded (NameResolutionError)"
    assert verdict.judge("", 1, dns, set()) == verdict.OK
    assert verdict.judge("", 1, "error: invalid requirement: 'foo==='", set()) == verdict.TOOL_FAILED


def test_the_ignore_file_format(tmp_path: Path) -> None:
    path = tmp_path / "ignore.txt"
    path.write_text("# comment\nGHSA-aaaa-bbbb-cccc  not reachable (me, 2026-11-25)\n\n  PYSEC-2099-1 # why\n")
    assert verdict.read_ignore_file(path) == {"GHSA-aaaa-bbbb-cccc", "PYSEC-2099-1"}
    assert verdict.read_ignore_file(ROOT / "scripts" / "audit_ignore.txt") == set()  # the committed file: examples only


@pytest.fixture
def fake_pip_audit(tmp_path: Path) -> Path:
    """A venv-shaped folder whose pip-audit records its arguments and prints
    one vulnerability, so the shell wiring is tested without the network."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    tool = venv / "bin" / "pip-audit"
    tool.write_text(
        "#!/bin/sh\n"
        f'printf "%s\\n" "$@" > "{tmp_path}/args.txt"\n'
        f"cat <<'JSON'\n{result(CLEAN, VULN)}\nJSON\n"
        "exit 1\n"
    )
    tool.chmod(0o755)
    return venv


def run_script(venv: Path, ignore_file: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "AUDIT_VENV": str(venv), "AUDIT_IGNORE_FILE": str(ignore_file), "PYTHON": sys.executable}
    return subprocess.run(
        ["bash", str(ROOT / "scripts" / "audit_deps.sh")], capture_output=True, text=True, env=env, timeout=60, check=False
    )


def test_the_script_fails_on_a_finding_and_passes_the_ignore_list(fake_pip_audit: Path, tmp_path: Path) -> None:
    ignore = tmp_path / "ignore.txt"
    ignore.write_text("# nothing yet\n")
    failed = run_script(fake_pip_audit, ignore)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "GHSA-test-0000-0001" in failed.stdout
    args = (tmp_path / "args.txt").read_text().split("\n")
    assert "-r" in args and str(ROOT / "discord_bot.lock") in args and "--disable-pip" in args
    assert "--ignore-vuln" not in args

    ignore.write_text("GHSA-test-0000-0001  fixture (tests, 2026-11-25)\n")
    passed = run_script(fake_pip_audit, ignore)
    assert passed.returncode == 0, passed.stdout + passed.stderr
    args = (tmp_path / "args.txt").read_text().split("\n")
    assert args[args.index("--ignore-vuln") + 1] == "GHSA-test-0000-0001"
