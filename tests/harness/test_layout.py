"""The specification stays runnable and readable: every feature file is
run by a test module, every shared step says what it does."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

from tests.harness import steps

ROOT = Path(__file__).resolve().parents[2]


def test_every_feature_file_is_run_by_a_test_module() -> None:
    sources = "\n".join(p.read_text(encoding="utf-8") for p in (ROOT / "tests").rglob("*.py"))
    run = set(re.findall(r"""scenarios?\(\s*["']([\w./-]+\.feature)["']""", sources))
    features = {p.name for p in (ROOT / "features").glob("*.feature")}
    assert features, "no feature files found"
    assert not features - run, f"feature files no test module runs: {sorted(features - run)}"


def test_one_feature_per_file() -> None:
    for path in (ROOT / "features").glob("*.feature"):
        count = len(re.findall(r"^\s*Feature:", path.read_text(encoding="utf-8"), re.MULTILINE))
        assert count == 1, f"{path.name} has {count} Feature blocks"


def test_every_shared_step_has_a_docstring() -> None:
    step_functions = [
        (name, fn) for name, fn in inspect.getmembers(steps, inspect.isfunction)
        if name.startswith(("given_", "when_", "then_")) and fn.__module__ == steps.__name__
    ]
    assert len(step_functions) > 30
    missing = [name for name, fn in step_functions if not (fn.__doc__ or "").strip()]
    assert not missing, f"steps without a docstring: {missing}"


def test_no_step_is_async() -> None:
    # pytest-bdd would never await it: the step would silently do nothing.
    for name, fn in inspect.getmembers(steps, inspect.isfunction):
        if name.startswith(("given_", "when_", "then_")):
            assert not inspect.iscoroutinefunction(fn), name
