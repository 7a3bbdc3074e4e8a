#!/usr/bin/env bash
# Create .venv-bench: the project's locked dependencies, the peers the
# benchmark compares against (bench/requirements-peers.txt) and the project
# itself, editable. The peers never enter the runtime venv (.venv).
#   bash bench/setup.sh && .venv-bench/bin/python -m bench
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${BENCH_VENV:-$ROOT/.venv-bench}"
PYTHON_BIN="${PYTHON:-$(command -v python3.11 || command -v python3)}"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check --quiet)

[ -x "$VENV/bin/python" ] || "$PYTHON_BIN" -m venv "$VENV"
# Keep the venv out of git whatever the project's .gitignore says.
echo '*' > "$VENV/.gitignore"
"${PIP[@]}" install --require-hashes -r "$ROOT/discord_bot.lock" 2> >(grep -v "^WARNING: Location .file:" >&2)
# Peers may share dependencies with the lock (pydantic, packaging, ...):
# constrain them to the locked versions so the benchmark measures the same
# libraries the bot runs on.
constraints="$(mktemp)"
trap 'rm -f "$constraints"' EXIT
"$VENV/bin/python" -m pip freeze --exclude-editable > "$constraints"
"${PIP[@]}" install -c "$constraints" -r "$ROOT/bench/requirements-peers.txt" 2> >(grep -v "^WARNING: Location .file:" >&2)
"${PIP[@]}" install --no-deps --no-build-isolation -e "$ROOT"
echo "ready: $VENV/bin/python -m bench" >&2
