"""Scenarios of features/redis_flush.feature: Context survives a Redis flush."""

from pytest_bdd import scenarios

scenarios("redis_flush.feature")
