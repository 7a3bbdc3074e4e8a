# Sourced by bot.sh and test.sh: make sure .venv matches discord_bot.lock.
# Installs with --require-hashes from the lock, then the project itself (no deps).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${BOT_VENV:-$ROOT/.venv}"
PYTHON_BIN="${PYTHON:-$(command -v python3.11 || command -v python3)}"
want=$(cat "$ROOT/discord_bot.lock" "$ROOT/pyproject.toml" | sha256sum | cut -d' ' -f1)
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$VENV/.installed" 2>/dev/null)" != "$want" ]; then
    echo "Setting up $VENV from discord_bot.lock ..." >&2
    [ -x "$VENV/bin/python" ] || "$PYTHON_BIN" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --require-hashes -r "$ROOT/discord_bot.lock" 2> >(grep -v "^WARNING: Location .file:" >&2)
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e "$ROOT"
    echo "$want" > "$VENV/.installed"
fi
export PATH="$VENV/bin:$PATH"
cd "$ROOT"
