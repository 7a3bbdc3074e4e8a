"""Shared pytest setup: the specification harness (``--backend`` option,
backend matrix, ``harness`` fixture) and the shared Gherkin steps.

Step definitions live in ``tests/harness/steps.py`` (Given / When / Then);
the fixtures in ``tests/harness/fixtures.py``. See docs/TESTING_GUIDE.md.
"""

pytest_plugins = ["tests.harness.fixtures", "tests.harness.steps"]
