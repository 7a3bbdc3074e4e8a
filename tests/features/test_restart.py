"""Scenarios of features/restart.feature: Context survives a bot restart."""

from pytest_bdd import scenarios

scenarios("restart.feature")
