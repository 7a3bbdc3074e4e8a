"""Scenarios of features/redis_eviction.feature: Context survives Redis losing part of its data."""

from pytest_bdd import scenarios

scenarios("redis_eviction.feature")
