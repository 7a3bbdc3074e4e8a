#!/usr/bin/env bash
# Audit discord_bot.lock for known vulnerabilities with pip-audit.
#
# pip-audit goes into a throwaway venv (never the runtime venv or the lock).
# Exit 1 on a known vulnerability not listed in scripts/audit_ignore.txt.
# When the vulnerability database cannot be reached (no network, or a
# registry mirror without PyPI's JSON API) it prints a WARNING and exits 0,
# or exits 3 with AUDIT_STRICT=1 (set that in CI that has the network).
#
#   scripts/audit_deps.sh [LOCKFILE]
#   AUDIT_SERVICE=osv scripts/audit_deps.sh     # ask api.osv.dev instead of pypi.org
#   AUDIT_VENV=~/.cache/bot-audit scripts/audit_deps.sh   # reuse a venv between runs
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LOCK="${1:-$ROOT/discord_bot.lock}"
IGNORE_FILE="${AUDIT_IGNORE_FILE:-$ROOT/scripts/audit_ignore.txt}"
PIP_AUDIT_VERSION="${PIP_AUDIT_VERSION:-2.10.1}"
SERVICE="${AUDIT_SERVICE:-pypi}"
PYTHON_BIN="${PYTHON:-$(command -v python3.11 || command -v python3)}"

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
VENV="${AUDIT_VENV:-$WORK/venv}"

if [ ! -x "$VENV/bin/pip-audit" ]; then
    "$PYTHON_BIN" -m venv "$VENV" || { echo "ERROR: cannot create a venv at $VENV" >&2; exit 2; }
    if ! "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "pip-audit==$PIP_AUDIT_VERSION" \
            >"$WORK/install.log" 2>&1; then
        if grep -qiE "connection|resolve|timed out|network|No matching distribution" "$WORK/install.log"; then
            echo "WARNING: dependency audit NOT done: pip-audit $PIP_AUDIT_VERSION could not be installed (no registry access)." >&2
            [ "${AUDIT_STRICT:-0}" = "1" ] && exit 3
            exit 0
        fi
        cat "$WORK/install.log" >&2
        echo "ERROR: installing pip-audit failed" >&2
        exit 2
    fi
fi

ignore_args=()
while read -r id _; do
    [ -n "$id" ] && ignore_args+=(--ignore-vuln "$id")
done < <(sed -e 's/#.*//' "$IGNORE_FILE" 2>/dev/null | awk 'NF')

# --disable-pip: the lock is fully hash-pinned, so nothing is resolved or installed.
"$VENV/bin/pip-audit" -r "$LOCK" --disable-pip --vulnerability-service "$SERVICE" \
    --format json --progress-spinner off --timeout 30 "${ignore_args[@]}" \
    >"$WORK/result.json" 2>"$WORK/stderr.log"
code=$?
"$PYTHON_BIN" "$ROOT/scripts/audit_verdict.py" "$WORK/result.json" "$code" "$WORK/stderr.log" "$IGNORE_FILE"
