"""Shared fixtures for the security tests."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest


def fake_secret(label: str, length: int = 24) -> str:
    """An obviously fake secret built at run time: never a literal that a
    scanner (or a reader) could mistake for a real credential."""
    filler = ("x" + label) * length
    return (label + "-" + filler)[:length]


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    """The real handler of core.logs.setup_logging, writing to a buffer;
    the root logger is put back as it was afterwards."""
    from core.logs import setup_logging

    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    stream = io.StringIO()
    setup_logging("DEBUG", stream=stream)
    try:
        yield stream
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)


@pytest.fixture(autouse=True)
def _no_developer_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # A developer's own environment must not leak into what these tests read.
    for name in ("DISCORD_TOKEN", "DATABASE_URL", "REDIS_URL", "BOT_CONFIG", "LIMITS_REDIS_URL"):
        monkeypatch.delenv(name, raising=False)
