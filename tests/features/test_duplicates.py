"""Scenarios of features/duplicates.feature: A message delivered twice is stored and answered once."""

from pytest_bdd import scenarios

scenarios("duplicates.feature")
