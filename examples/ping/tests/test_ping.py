"""Tests of the ping plugin, on the real core (the chat_bot fixture
comes with the bot: plugin_testing.pytest_plugin)."""

from __future__ import annotations


def test_ping_is_answered_with_pong(chat_bot) -> None:  # noqa: ANN001
    bot = chat_bot("ping")
    assert bot.say("ping").content == "pong"


def test_other_messages_are_left_to_other_reply_plugins(chat_bot) -> None:  # noqa: ANN001
    bot = chat_bot("ping")
    assert bot.say("hello").content.startswith("No reply plugin is enabled")


def test_the_command_answers(chat_bot) -> None:  # noqa: ANN001
    bot = chat_bot("ping")
    assert bot.say("/ping").content == "hello alice, from the ping plugin"
