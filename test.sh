#!/usr/bin/env bash
# Run the whole test suite: unit tests, and the Gherkin scenarios in both
# backend matrices (fast: fakeredis + SQLite; real: Redis + PostgreSQL).
# Extra arguments go to pytest, e.g. `./test.sh --backend fast -k flush`.
# Tests run on TEST_WORKERS processes (3 by default: most of them wait on
# timers and sockets, not on the CPU), a file per process; `-n 0` (or
# TEST_WORKERS=0) runs them in this process, e.g. to use a debugger.
source "$(dirname "$0")/scripts/venv.sh"
bash scripts/services.sh || echo "warning: backends missing; the real matrix will fail (see above)" >&2
exec python -m pytest -n "${TEST_WORKERS:-3}" --dist loadfile "$@"
