"""The repository secret scanner (scripts/scan_secrets.py).

Every token-shaped fixture is generated at run time from a seeded random
generator, so no token-looking literal is ever committed, and this file
itself scans clean.
"""

from __future__ import annotations

import importlib.util
import json
import random
import string
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.fake_urls import password_url

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "scan_secrets.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("scan_secrets", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["scan_secrets"] = module
    spec.loader.exec_module(module)
    return module


scanner = _load()
_rng = random.Random(20261125)
B64URL = string.ascii_letters + string.digits + "-_"


def rand(n: int, alphabet: str = string.ascii_letters + string.digits) -> str:
    return "".join(_rng.choice(alphabet) for _ in range(n))


def discord_token() -> str:
    return "M" + rand(25, B64URL) + "." + rand(6, B64URL) + "." + rand(38, B64URL)


def samples() -> dict[str, str]:
    """One line per detector, holding a freshly generated fake secret."""
    key_header = "-----BEGIN " + "OPENSSH " + "PRIVATE KEY-----"
    return {
        "discord-token": f"TOKEN_FOR_TESTS = get({discord_token()!r})",
        "openai-key": "client = OpenAI(key='" + "sk-" + "proj-" + rand(48) + "')",
        "aws-access-key": "aws_id = '" + "AK" + "IA" + rand(16, string.ascii_uppercase + string.digits) + "'",
        "github-token": "gh = '" + "gh" + "p_" + rand(36) + "'",
        "discord-webhook": "ALERTS = 'https://discord.com/api/" + "webhooks/" + rand(18, string.digits) + "/" + rand(68, B64URL) + "'",
        "private-key": key_header,
        "url-password": "DATABASE = 'postgresql://app:" + rand(14) + "@db.internal:5432/bot'",
        "assigned-secret": 'client_secret = "' + rand(32) + '"',
    }


@pytest.mark.parametrize("detector", list(samples()))
def test_each_kind_of_secret_is_found_and_never_printed(detector: str) -> None:
    line = samples()[detector]
    findings = list(scanner.scan_text("app.py", f"x = 1\n{line}\n"))
    assert [(f.detector, f.line) for f in findings] == [(detector, 2)]
    secret = line.split("'")[1] if "'" in line else line
    assert secret[6:] not in findings[0].describe()


def test_env_style_assignments_are_found_outside_code() -> None:
    text = "export API_KEY=" + rand(40) + "\nDISCORD_TOKEN=\n"
    assert [f.detector for f in scanner.scan_text("deploy/.env.production", text)] == ["assigned-secret"]
    # In Python an unquoted right-hand side is an expression, not a value.
    assert list(scanner.scan_text("app.py", "token = secrets.token_hex(16)\nsecret = settings.env.discord_token\n")) == []


@pytest.mark.parametrize(
    "line",
    [
        "url = f'" + password_url("redis", "", "{password}", "{host}:6379") + "'",
        "DATABASE_URL=" + password_url("postgresql", "bot", "${DB_PASSWORD}", "db/bot"),
        "dsn = '" + password_url("postgresql", "user", "<password>", "localhost/db") + "'",  # placeholder
        "url = '" + password_url("redis", "user", "***", "host") + "'",  # placeholder
        'api_key = "' + "x" * 32 + '"',
        'token = "your-token-goes-here-please"',
        "key = '" + "AK" + "IA" + "IOSFODNN7" + "EXAMPLE" + "'",
        "fake = '" + "sk-" + "x" * 40 + "'",
        "token_budget = 3000000000000000",
        "digest = 'sha256:" + "ab12" * 16 + "'",
        'password = "' + rand(32) + '"  # scan-secrets: allow',
    ],
)
def test_placeholders_and_ordinary_code_are_not_findings(line: str) -> None:
    assert list(scanner.scan_text("example.py", line + "\n")) == []


# --- the command line in a real git repository --------------------------------------


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)


def run_cli(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--root", str(repo), *args], capture_output=True, text=True, timeout=60, check=False
    )


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    git(tmp_path, "init", "-q")
    (tmp_path / ".gitignore").write_text(".env\n")
    (tmp_path / "app.py").write_text("print('hello')\n")
    git(tmp_path, "add", ".")
    return tmp_path


def test_a_clean_repository_passes(repo: Path) -> None:
    result = run_cli(repo)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK" in result.stdout


def test_a_new_secret_fails_until_reviewed_into_the_baseline(repo: Path) -> None:
    secret = rand(20)
    (repo / "config.py").write_text(f"x = 1\nDB = '{password_url('postgresql', 'bot', secret, 'db/bot')}'\n")
    git(repo, "add", "config.py")

    failed = run_cli(repo)
    assert failed.returncode == 1
    assert "config.py:2: url-password" in failed.stdout
    assert secret not in failed.stdout + failed.stderr
    assert "--update-baseline" in failed.stderr

    added = run_cli(repo, "--update-baseline", "--note", "fixture for the scanner test")
    assert added.returncode == 0
    baseline = json.loads((repo / ".secrets-baseline.json").read_text())
    [entry] = baseline["findings"]
    assert entry["path"] == "config.py" and entry["note"] == "fixture for the scanner test"
    assert secret not in (repo / ".secrets-baseline.json").read_text()
    assert run_cli(repo).returncode == 0

    # Moving the line keeps it allowed; changing it makes it new again.
    (repo / "config.py").write_text(f"import os\n\nx = 1\nDB = '{password_url('postgresql', 'bot', secret, 'db/bot')}'\n")
    assert run_cli(repo).returncode == 0
    (repo / "config.py").write_text(f"DB = '{password_url('postgresql', 'root', rand(20), 'db/bot')}'\n")
    assert run_cli(repo).returncode == 1

    # The old entry is stale now; --prune drops it.
    assert "no longer match" in run_cli(repo).stdout
    run_cli(repo, "--prune")
    assert json.loads((repo / ".secrets-baseline.json").read_text())["findings"] == []


def test_untracked_files_are_scanned_but_ignored_ones_are_not(repo: Path) -> None:
    (repo / ".env").write_text("DISCORD_TOKEN=" + discord_token() + "\n")
    assert run_cli(repo).returncode == 0  # .env is in .gitignore: never committed
    (repo / "notes.txt").write_text("my token: " + discord_token() + "\n")  # not added yet
    result = run_cli(repo)
    assert result.returncode == 1 and "notes.txt:1: discord-token" in result.stdout


def test_binary_files_are_skipped(repo: Path) -> None:
    (repo / "image.png").write_bytes(b"\x89PNG\0\0" + ("password = '" + rand(30) + "'").encode())
    git(repo, "add", "image.png")
    assert run_cli(repo).returncode == 0


def test_a_broken_baseline_is_a_clear_error(repo: Path) -> None:
    (repo / ".secrets-baseline.json").write_text("{not json")
    result = run_cli(repo)
    assert result.returncode != 0 and "not a valid secrets baseline" in result.stderr


def test_this_repository_has_no_unreviewed_secret() -> None:
    """The CI gate: a new secret anywhere in the working tree fails the suite."""
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    result = run_cli(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
