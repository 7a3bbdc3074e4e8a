"""Scenarios of features/redis_outage.feature: The bot survives Redis outages."""

from pytest_bdd import scenarios

scenarios("redis_outage.feature")
