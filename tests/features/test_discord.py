"""Scenarios of features/discord.feature: Conversation memory through
Discord (the bot in its own process, against the fake Discord).

The steps are in tests/features/discord_steps.py.
"""

from pytest_bdd import scenarios

from tests.features.discord_steps import *  # noqa: F403 - the Discord steps and the discord_world fixture

scenarios("discord.feature")
