"""Scenarios of features/recall.feature."""

from pytest_bdd import scenarios

from tests.features.recall_steps import *  # noqa: F403 - the recall steps

scenarios("recall.feature")
