"""A database per test: SQLite for ``fast``, a fresh PostgreSQL database for
``real`` (the memory tests' fixtures; recall needs no Redis)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.memory.conftest import Backend, _no_env_urls, pg_url, sqlite_backend  # noqa: F401


@pytest.fixture
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if getattr(request, "param", "fast") == "fast":
        return request.getfixturevalue("sqlite_backend")
    return Backend("postgres", request.getfixturevalue("pg_url"), "redis://127.0.0.1:1/0", tmp_path)
