#!/usr/bin/env python3
"""Fail when a secret is about to enter git.

Scans every file git knows of (tracked, plus untracked files that are not
ignored, so a file is caught before ``git add``) for:

- Discord bot tokens, OpenAI-style ``sk-...`` keys, AWS access key ids,
  GitHub and Slack tokens, private key headers;
- URLs that carry a password in their user info;
- high-entropy strings assigned to names like ``token``, ``secret``,
  ``password``, ``api_key`` (``api_key = "..."``, ``TOKEN=...`` in env files).

A finding that is reviewed and harmless (a test fixture, an example) is
recorded in the baseline file ``.secrets-baseline.json`` by path, detector
and a hash of the line, so it keeps passing when lines move but fails again
when the line changes. Standard library only: CI runs it before any install.

Usage::

    python scripts/scan_secrets.py                 # exit 1 on a finding not in the baseline
    python scripts/scan_secrets.py --update-baseline --note "why these are fine"
    python scripts/scan_secrets.py --prune         # drop baseline entries that no longer match
    python scripts/scan_secrets.py --files a.py b.py

A single line can also be allowed in place with a ``scan-secrets: allow``
comment on it. Output never shows a secret: only its first characters.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

BASELINE_NAME = ".secrets-baseline.json"
ALLOW_MARK = "scan-secrets: allow"
MAX_FILE_BYTES = 2 * 1024 * 1024

_SECRET_NAME = (
    r"[A-Za-z0-9_.-]*(?:token|secret|password|passwd|pwd|api[_-]?key|apikey|access[_-]?key"
    r"|private[_-]?key|client[_-]?secret|auth[_-]?key|credentials?)"
)

# (detector, pattern, group holding the secret)
PATTERNS: list[tuple[str, re.Pattern[str], int]] = [
    ("discord-token", re.compile(r"(?<![A-Za-z0-9_-])([MNO][A-Za-z0-9_-]{23,27}\.[A-Za-z0-9_-]{6}\.[A-Za-z0-9_-]{27,38})(?![A-Za-z0-9_-])"), 1),
    ("openai-key", re.compile(r"(?<![A-Za-z0-9_-])(sk-(?:proj-|svcacct-|admin-|ant-)?[A-Za-z0-9_-]{20,})"), 1),
    ("aws-access-key", re.compile(r"(?<![A-Z0-9])((?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|AIPA)[0-9A-Z]{16})(?![A-Z0-9])"), 1),
    ("discord-webhook", re.compile(r"discord(?:app)?\.com/api/webhooks/\d+/([A-Za-z0-9_-]{30,})"), 1),
    ("github-token", re.compile(r"(?<![A-Za-z0-9_])(gh[pousr]_[A-Za-z0-9]{36,})"), 1),
    ("slack-token", re.compile(r"(?<![A-Za-z0-9_-])(xox[abprs]-[A-Za-z0-9-]{10,})"), 1),
    ("private-key", re.compile(r"(-----BEGIN (?:[A-Z]+ )*PRIVATE KEY(?: BLOCK)?-----)"), 1),
    ("url-password", re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^/\s:@'\"]*:([^/\s@'\"]+)@[^\s'\"]"), 1),
    (
        "assigned-secret",
        re.compile(rf"(?i)(?<![A-Za-z0-9_]){_SECRET_NAME}[\"']?\s*(?::=|=>|=|:)\s*[rbuf]?[\"']([^\"'\s]{{12,}})[\"']"),
        1,
    ),
]

# ``TOKEN=value`` / ``password: value`` without quotes: only in files where
# that is how a value is written (env files, shell, YAML, INI), not in code,
# where an unquoted right-hand side is an expression.
ENV_STYLE = re.compile(rf"(?i)^\s*(?:export\s+)?{_SECRET_NAME}\s*[=:]\s*([^\s\"'#()\[\]{{}}]{{12,}})\s*(?:#.*)?$")
_CODE_SUFFIXES = {".py", ".pyi", ".js", ".ts", ".go", ".rs", ".java", ".c", ".h", ".cpp", ".rb", ".toml", ".json"}

# Values that are clearly not secrets: placeholders, templates, masks.
_PLACEHOLDER = re.compile(
    r"""(?ix)^(
        [\$%<{(\[].*            # $VAR, ${VAR}, %s, <password>, {s}, (...)
        | .*[{}].*              # f-string / format templates
        | \*+ | x+ | \.+ | -+   # masks
        | (change|replace|your|my|example|dummy|fake|test|sample|placeholder|redacted|secret|password|passw0rd|pass|pw|pwd|token)[-_a-z0-9]*
    )$"""
)
_ENV_REFERENCE = re.compile(r"^(?:os\.environ|environ|getenv|settings\.|self\.|env\.)", re.IGNORECASE)


@dataclass(frozen=True)
class Finding:
    path: str
    line: int
    detector: str
    line_hash: str
    preview: str

    def key(self) -> tuple[str, str, str]:
        return (self.path, self.detector, self.line_hash)

    def describe(self) -> str:
        return f"{self.path}:{self.line}: {self.detector}: {self.preview}"


def shannon_entropy(text: str) -> float:
    """Bits per character."""
    if not text:
        return 0.0
    counts = Counter(text)
    return -sum(n / len(text) * math.log2(n / len(text)) for n in counts.values())


def looks_random(value: str, min_entropy: float = 3.0) -> bool:
    """High entropy and at least two kinds of character: rules out words,
    ``xxxxxxxx`` fillers and most identifiers."""
    kinds = sum(bool(re.search(p, value)) for p in (r"[a-z]", r"[A-Z]", r"[0-9]", r"[^A-Za-z0-9]"))
    return kinds >= 2 and shannon_entropy(value) >= min_entropy


def is_placeholder(value: str) -> bool:
    return bool(_PLACEHOLDER.match(value)) or bool(_ENV_REFERENCE.match(value))


def _mask(secret: str) -> str:
    return secret[:4] + "…" + f"({len(secret)} chars)"


def line_hash(line: str) -> str:
    return hashlib.sha256(line.strip().encode("utf-8", "surrogateescape")).hexdigest()[:32]


def scan_text(path: str, text: str) -> Iterator[Finding]:
    """Every finding in ``text`` (the content of ``path``)."""
    patterns = PATTERNS
    if Path(path).suffix.lower() not in _CODE_SUFFIXES:
        patterns = [*PATTERNS, ("assigned-secret", ENV_STYLE, 1)]
    for number, line in enumerate(text.splitlines(), start=1):
        if ALLOW_MARK in line or len(line) > 10_000:
            continue
        seen: set[tuple[str, str]] = set()
        for detector, pattern, group in patterns:
            for match in pattern.finditer(line):
                secret = match.group(group)
                if not _is_secret(detector, secret) or (detector, secret) in seen:
                    continue
                seen.add((detector, secret))
                yield Finding(path, number, detector, line_hash(line), _mask(secret))


def _is_secret(detector: str, secret: str) -> bool:
    if detector == "private-key":
        return True
    if detector == "aws-access-key":
        return "EXAMPLE" not in secret
    if detector == "url-password":
        return not is_placeholder(secret)
    if detector == "assigned-secret":
        return not is_placeholder(secret) and looks_random(secret, 3.5) and len(secret) >= 16
    # Token shapes: a run of one letter is a filler, not a token.
    body = re.sub(r"^sk-(?:proj-|svcacct-|admin-|ant-)?", "", secret) if detector == "openai-key" else secret
    return looks_random(body, 2.5)


def scan_file(root: Path, relative: str) -> list[Finding]:
    path = root / relative
    try:
        if not path.is_file() or path.is_symlink() or path.stat().st_size > MAX_FILE_BYTES:
            return []
        data = path.read_bytes()
    except OSError:
        return []
    if b"\0" in data[:8192]:
        return []  # binary
    return list(scan_text(relative, data.decode("utf-8", "surrogateescape")))


def git_files(root: Path) -> list[str]:
    """Tracked files plus untracked ones that are not ignored."""
    out = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=root,
        check=True,
        capture_output=True,
    ).stdout
    return sorted({p for p in out.decode("utf-8", "surrogateescape").split("\0") if p})


def scan(root: Path, files: Iterable[str] | None = None, baseline_name: str = BASELINE_NAME) -> list[Finding]:
    names = list(files) if files is not None else git_files(root)
    findings: list[Finding] = []
    for name in names:
        if name == baseline_name:
            continue
        findings.extend(scan_file(root, name))
    return findings


def load_baseline(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        entries = data["findings"]
        for entry in entries:
            entry["path"], entry["detector"], entry["line_hash"]
    except (ValueError, KeyError, TypeError) as exc:
        raise SystemExit(f"{path}: not a valid secrets baseline ({exc}); fix or delete it") from None
    return list(entries)


def save_baseline(path: Path, entries: list[dict[str, str]]) -> None:
    entries = sorted(entries, key=lambda e: (e["path"], e["detector"], e["line_hash"]))
    body = {
        "about": "Reviewed findings of scripts/scan_secrets.py that are not secrets. "
        "Add with: python scripts/scan_secrets.py --update-baseline --note 'why'",
        "version": 1,
        "findings": entries,
    }
    path.write_text(json.dumps(body, indent=2) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=None, help="repository root (default: git top level of cwd)")
    parser.add_argument("--baseline", type=Path, default=None, help=f"baseline file (default: ROOT/{BASELINE_NAME})")
    parser.add_argument("--files", nargs="+", help="scan only these files (paths relative to the root)")
    parser.add_argument("--update-baseline", action="store_true", help="add every new finding to the baseline")
    parser.add_argument("--note", default="", help="why the added findings are not secrets (kept in the baseline)")
    parser.add_argument("--prune", action="store_true", help="drop baseline entries that no longer match anything")
    args = parser.parse_args(argv)

    root = args.root
    if root is None:
        top = subprocess.run(["git", "rev-parse", "--show-toplevel"], capture_output=True, text=True, check=False)
        if top.returncode != 0:
            print("scan_secrets: not inside a git repository (use --root)", file=sys.stderr)
            return 2
        root = Path(top.stdout.strip())
    root = root.resolve()
    baseline_path = args.baseline or root / BASELINE_NAME

    findings = scan(root, args.files, baseline_path.name)
    entries = load_baseline(baseline_path)
    allowed = {(e["path"], e["detector"], e["line_hash"]) for e in entries}
    new = [f for f in findings if f.key() not in allowed]
    current = {f.key() for f in findings}
    stale = [e for e in entries if (e["path"], e["detector"], e["line_hash"]) not in current]

    if args.update_baseline or args.prune:
        if args.prune and args.files is None:
            entries = [e for e in entries if e not in stale]
        if args.update_baseline:
            known = {(e["path"], e["detector"], e["line_hash"]) for e in entries}
            for finding in new:
                if finding.key() not in known:
                    known.add(finding.key())
                    entries.append(
                        {"path": finding.path, "detector": finding.detector, "line_hash": finding.line_hash,
                         "note": args.note or "reviewed: not a secret"}
                    )
        save_baseline(baseline_path, entries)
        print(f"scan_secrets: baseline {baseline_path.name} now holds {len(entries)} reviewed finding(s)")
        return 0

    for finding in new:
        print(f"NEW SECRET? {finding.describe()}")
    if stale and args.files is None:
        print(f"scan_secrets: {len(stale)} baseline entr{'y' if len(stale) == 1 else 'ies'} no longer match "
              "(run with --prune to drop them)")
    if new:
        print(
            f"scan_secrets: {len(new)} new finding(s). If one is a real secret: remove it, rotate it "
            "(docs/SECURITY.md) and keep it in the environment. If it is not a secret: mark the line with "
            f"'{ALLOW_MARK}' or run: python scripts/scan_secrets.py --update-baseline --note 'why'",
            file=sys.stderr,
        )
        return 1
    print(f"scan_secrets: OK ({len(findings)} finding(s), all in the baseline)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
