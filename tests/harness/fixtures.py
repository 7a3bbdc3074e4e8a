"""pytest plugin of the harness: the ``--backend`` option, the backend
matrix, and the fixtures scenarios use.

Loaded from ``tests/conftest.py`` (``pytest_plugins``).

- ``--backend fast|real|all`` (default ``all``) picks the matrix.
- Any test that uses the ``backend`` fixture runs once per selected backend,
  with ids ``[fast]`` / ``[real]``; every test under ``tests/features/`` uses
  it. Runs on ``real`` get the ``real`` marker, so ``-m "not real"`` works too.
- A scenario tagged ``@real`` runs on the real backend only.
- The real matrix fails (never skips) when PostgreSQL or redis-server is
  missing, with a message saying how to start them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.backends import BackendUnavailable, check_real_services, make_backends
from tests.harness.harness import Harness
from harness.instances import LEAKY_ENV, LEAKY_PREFIXES

BACKENDS = ("fast", "real")
# The features the Cluster matrix runs (``--backend cluster``, not part of
# ``all``): the retention scenarios (restart, flush, outage, two instances).
CLUSTER_FEATURES = ("test_restart", "test_redis_flush", "test_redis_outage", "test_instances")
# The replicated topologies of features/failover.feature (its scenarios' tags).
FAILOVER_TOPOLOGIES = ("cluster", "sentinel", "pg_standby")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--backend",
        action="store",
        default="all",
        choices=("fast", "real", "all", "cluster"),
        help="backend matrix for the Gherkin scenarios: fast (fakeredis + SQLite), "
        "real (redis-server + PostgreSQL), all (default: fast and real) or cluster "
        "(a private Redis Cluster + PostgreSQL; the retention features only)",
    )


def selected_backends(config: pytest.Config) -> list[str]:
    choice = config.getoption("--backend")
    return list(BACKENDS) if choice == "all" else [choice]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" in metafunc.fixturenames:
        for mark in metafunc.definition.iter_markers("parametrize"):
            if "backend" in (mark.args[0] if isinstance(mark.args[0], (list, tuple)) else mark.args[0].split(",")):
                return  # the test chose its backend itself
        names = selected_backends(metafunc.config)
        metafunc.parametrize("backend", names, ids=names, indirect=True)


# Fixtures that reach a PostgreSQL server or start a redis-server: a test
# using one needs the real services, whatever its parametrization.
SERVICE_FIXTURES = frozenset({"pg_url", "postgres_backend", "private_redis", "redis_server", "mysql_backend"})


def needs_services(item: pytest.Item) -> bool:
    """Whether ``item`` needs PostgreSQL or Redis: a ``[real]`` run, a test
    marked ``real``, or one that uses a service fixture."""
    callspec = getattr(item, "callspec", None)
    backend = callspec.params.get("backend") if callspec else None
    if backend in ("real", "cluster", "failover") or item.get_closest_marker("real") is not None:
        return True
    return bool(SERVICE_FIXTURES & set(getattr(item, "fixturenames", ())))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # --backend fast runs on a machine with no database or Redis server at
    # all: everything that needs one is left out (and counted as deselected).
    fast_only = selected_backends(config) == ["fast"]
    kept, dropped = [], []
    for item in items:
        callspec = getattr(item, "callspec", None)
        backend = callspec.params.get("backend") if callspec else None
        if backend == "fast" and item.get_closest_marker("real") is not None:
            dropped.append(item)  # a @real scenario has no fast form
            continue
        if backend == "cluster" and item.module.__name__.rpartition(".")[2] not in CLUSTER_FEATURES:
            dropped.append(item)
            continue
        if needs_services(item):
            if fast_only:
                dropped.append(item)
                continue
            item.add_marker(pytest.mark.real)
        if backend == "cluster":
            item.add_marker(pytest.mark.cluster)
        kept.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


_service_problem: dict[str, str | None] = {}


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> str:
    """The backend this run of the test uses: ``"fast"``, ``"real"`` or ``"cluster"``."""
    name = getattr(request, "param", None)
    if name is None:
        raise pytest.UsageError("the backend fixture is parametrized by the harness plugin")
    if name in ("real", "cluster", "failover"):
        if "real" not in _service_problem:
            try:
                check_real_services()
                _service_problem["real"] = None
            except BackendUnavailable as exc:
                _service_problem["real"] = str(exc)
        if _service_problem["real"]:
            pytest.fail(_service_problem["real"], pytrace=False)
    return str(name)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No developer environment leaks into a bot the harness builds: the
    backend URLs, plugin settings and ``.env``/``bot.toml`` of the cwd."""
    import os

    for key in list(os.environ):
        if key in LEAKY_ENV or key.startswith(LEAKY_PREFIXES):
            monkeypatch.delenv(key, raising=False)
    workdir = tmp_path / "cwd"
    workdir.mkdir(exist_ok=True)
    monkeypatch.chdir(workdir)


@pytest.fixture
def harness(request: pytest.FixtureRequest, backend: str, tmp_path: Path, clean_env: None) -> Iterator[Harness]:
    """The assembled world of one scenario: backends of the selected matrix,
    a Discord-like transport, bot instances (none started yet), the replies
    and contexts recorded. Torn down after the test: instances stopped,
    faults undone, Redis server killed, PostgreSQL database dropped."""
    processes = request.node.get_closest_marker("multiprocess") is not None
    if backend == "failover":
        # features/failover.feature: each scenario's tag names its topology.
        backend = next(t for t in FAILOVER_TOPOLOGIES if request.node.get_closest_marker(t) is not None)
    backends = make_backends(backend, tmp_path, processes=processes)
    h = Harness(backends, tmp_path)
    try:
        yield h
    finally:
        h.close()
