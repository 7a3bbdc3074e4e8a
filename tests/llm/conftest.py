"""Fixtures for the reply plugin's tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def clean_llm_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A developer's LLM_* variables or .env must not leak into the tests."""
    for name in list(os.environ):
        if name.startswith("LLM_") or name in ("BOT_CONFIG", "DISCORD_TOKEN"):
            monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def fake_key() -> str:
    """An obviously fake API key, built at run time."""
    return "fake" + "k" * 12 + "-not-real"
