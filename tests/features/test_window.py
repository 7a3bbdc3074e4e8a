"""Scenarios of features/window.feature: The context window keeps the last N messages."""

from pytest_bdd import scenarios

scenarios("window.feature")
