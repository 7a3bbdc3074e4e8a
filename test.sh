#!/usr/bin/env bash
# Run the whole test suite: unit tests, and the Gherkin scenarios in both
# backend matrices (fast: fakeredis + SQLite; real: Redis + PostgreSQL).
# Extra arguments go to pytest, e.g. `./test.sh --backend fast -k flush`.
source "$(dirname "$0")/scripts/venv.sh"
exec python -m pytest "$@"
