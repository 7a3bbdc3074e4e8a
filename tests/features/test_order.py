"""Scenarios of features/order.feature: Context comes back in message order."""

from pytest_bdd import scenarios

scenarios("order.feature")
