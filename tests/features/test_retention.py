"""Scenarios of features/retention.feature (the recall steps: facts, what a
reply recalled, the retention setting)."""

from pytest_bdd import scenarios

from tests.features.recall_steps import *  # noqa: F403 - the recall steps

scenarios("retention.feature")
