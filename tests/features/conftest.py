"""Every test here is a Gherkin scenario run once per selected backend."""

import pytest


@pytest.fixture(autouse=True)
def _each_backend(backend: str) -> str:
    """Pulls the parametrized ``backend`` fixture into every scenario, so each
    runs as ``[fast]`` and ``[real]`` (see ``--backend``)."""
    return backend
