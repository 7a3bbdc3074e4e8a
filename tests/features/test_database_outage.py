"""Scenarios of features/database_outage.feature: The bot survives database outages."""

from pytest_bdd import scenarios

scenarios("database_outage.feature")
