#!/usr/bin/env bash
# Run the whole test suite: unit tests, and the Gherkin scenarios in both
# backend matrices (fast: fakeredis + SQLite; real: Redis + PostgreSQL).
# Extra arguments go to pytest, e.g. `./test.sh --backend fast -k flush`.
source "$(dirname "$0")/scripts/venv.sh"
bash scripts/services.sh || echo "warning: backends missing; the real matrix will fail (see above)" >&2
exec python -m pytest "$@"
