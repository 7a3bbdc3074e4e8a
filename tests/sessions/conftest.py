"""Fixtures of the sessions plugin's unit tests."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from core.clock import ManualClock

from tests.sessions.standin import T0, Harness, Store


@pytest.fixture(autouse=True)
def _no_sessions_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # A developer's SESSIONS_* variables or .env must not leak into tests.
    for name in list(os.environ):
        if name.startswith("SESSIONS_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def store() -> Store:
    return Store()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


@pytest.fixture
def make_harness(store: Store, clock: ManualClock, tmp_path: Path) -> Iterator[Callable[..., Harness]]:
    made: list[Harness] = []

    def make(sessions: dict[str, Any] | None = None, **kwargs: Any) -> Harness:
        kwargs.setdefault("data_dir", tmp_path)
        harness = Harness(store, clock, sessions or {}, **kwargs)
        made.append(harness)
        return harness

    yield make
    for harness in made:
        if not harness.loop.is_closed():
            harness.close()
