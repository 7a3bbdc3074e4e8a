"""Scenarios of features/discord_native.feature: text files, streamed
replies and reply chains through Discord (the bot in its own process,
against the fake Discord and a chat-completions server on 127.0.0.1).

The steps are in tests/features/discord_native_steps.py and
tests/features/discord_steps.py.
"""

from pytest_bdd import scenarios

from tests.features.discord_steps import *  # noqa: F403 - the Discord steps and the discord_world fixture
from tests.features.discord_native_steps import *  # noqa: F403 - this feature's steps and the model fixture

scenarios("discord_native.feature")
