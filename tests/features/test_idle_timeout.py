"""Scenarios of features/idle_timeout.feature: A session times out after its idle limit."""

from pytest_bdd import scenarios

scenarios("idle_timeout.feature")
