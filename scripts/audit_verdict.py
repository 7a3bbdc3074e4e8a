#!/usr/bin/env python3
"""Judge a ``pip-audit --format json`` result (used by scripts/audit_deps.sh).

Exit 0: audited, nothing found (or only advisories in the ignore file).
Exit 1: a known vulnerability in a locked dependency.
Exit 0 with a WARNING: the vulnerability service could not be reached, so
nothing was audited (exit 3 instead when ``AUDIT_STRICT=1``, for CI runners
that do have the network). Exit 2: pip-audit itself failed for another reason.

pip-audit exits 0 and says "No known vulnerabilities found" even when it
could audit nothing at all (every package "not found on PyPI", as behind a
registry mirror without the JSON API): that case is a warning here, never a
pass that looks like a real one.

Usage: audit_verdict.py RESULT_JSON PIP_AUDIT_EXIT_CODE STDERR_FILE [IGNORE_FILE]
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import Any

NETWORK_SIGNS = re.compile(
    r"ConnectionError|NameResolutionError|Name or service not known|Temporary failure in name resolution|"
    r"Max retries exceeded|timed out|Network is unreachable|Connection refused|SSLError|ProxyError",
    re.IGNORECASE,
)
OK, FOUND, TOOL_FAILED, UNREACHABLE_STRICT = 0, 1, 2, 3


def read_ignore_file(path: Path | None) -> set[str]:
    """Advisory ids, one per line (first word); ``#`` starts a comment."""
    if path is None or not path.exists():
        return set()
    ids = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            ids.add(line.split()[0])
    return ids


def unreachable(reason: str) -> int:
    strict = os.environ.get("AUDIT_STRICT") == "1"
    print(f"WARNING: dependency audit NOT done: {reason}.", file=sys.stderr)
    print(
        "WARNING: the vulnerability database is unreachable from here; run scripts/audit_deps.sh where "
        "pypi.org's JSON API (or api.osv.dev with AUDIT_SERVICE=osv) is reachable.",
        file=sys.stderr,
    )
    return UNREACHABLE_STRICT if strict else OK


def judge(raw: str, exit_code: int, stderr: str, ignored: set[str]) -> int:
    try:
        data: dict[str, Any] = json.loads(raw) if raw.strip() else {}
    except ValueError:
        data = {}
    deps = data.get("dependencies")
    if not isinstance(deps, list):
        if NETWORK_SIGNS.search(stderr):
            last = [line for line in stderr.strip().splitlines() if line.strip()][-1:] or ["no output"]
            return unreachable(f"network error ({last[0][:200]})")
        print(f"ERROR: pip-audit failed (exit {exit_code}) without a result:\n{stderr[-2000:]}", file=sys.stderr)
        return TOOL_FAILED

    findings = []
    for dep in deps:
        for vuln in dep.get("vulns") or []:
            ids = {vuln.get("id", "?"), *(vuln.get("aliases") or [])}
            if ids & ignored:
                continue
            fixes = ", ".join(vuln.get("fix_versions") or []) or "no fixed version yet"
            findings.append(f"{dep['name']} {dep.get('version', '?')}: {vuln.get('id')} (fixed in: {fixes})")
    skipped = [d for d in deps if d.get("skip_reason")]
    audited = len(deps) - len(skipped)

    if findings:
        print(f"FAIL: {len(findings)} known vulnerabilit{'y' if len(findings) == 1 else 'ies'} in the lock:")
        for line in findings:
            print(f"  {line}")
        print("Upgrade the package (scripts/lock.sh), or if it does not affect us, add the id with a reason "
              "to scripts/audit_ignore.txt.")
        return FOUND
    if deps and audited == 0:
        return unreachable(f"all {len(deps)} locked packages were skipped ({skipped[0]['skip_reason']})")
    for dep in skipped:
        print(f"WARNING: not audited: {dep['skip_reason']}", file=sys.stderr)
    print(f"OK: {audited} locked package(s) audited, no known vulnerability"
          + (f" ({len(ignored)} advisory id(s) ignored by scripts/audit_ignore.txt)" if ignored else ""))
    return OK


def main(argv: list[str]) -> int:
    if len(argv) not in (3, 4):
        print(__doc__, file=sys.stderr)
        return TOOL_FAILED
    result = Path(argv[0])
    raw = result.read_text(encoding="utf-8") if result.exists() else ""
    stderr_path = Path(argv[2])
    stderr = stderr_path.read_text(encoding="utf-8", errors="replace") if stderr_path.exists() else ""
    ignored = read_ignore_file(Path(argv[3]) if len(argv) == 4 else None)
    return judge(raw, int(argv[1]), stderr, ignored)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
