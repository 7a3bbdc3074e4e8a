"""Scenarios of features/instances.feature: Several bot instances on the same backends."""

from pytest_bdd import scenarios

scenarios("instances.feature")
