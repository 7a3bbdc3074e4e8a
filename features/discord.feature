@discord @multiprocess
Feature: Conversation memory through Discord
  The same guarantees, with nothing of the test transport in the way: the bot
  is started through its real entry point (`python -m core run`, with a fake
  DISCORD_TOKEN built at run time) in its own OS process, and the unmodified
  discord.py client talks over HTTP and websockets to the fake Discord on
  127.0.0.1. Memory runs on the scenario's backends: a shared SQLite file and
  fakeredis over TCP (fast), or a private redis-server and a fresh PostgreSQL
  database (real). What is checked is what Discord received from the bot, and
  the `messages` table read with plain SQL.

  Scenario: Context survives a bot restart
    Given the bot is running in its own process, connected to Discord
    And alice writes "Hello! My name is Zed." to the bot in #general on Discord
    When the bot's process is stopped and a new one is started
    And alice writes "what is my name?" to the bot in #general on Discord
    Then the bot's reply on Discord to "what is my name?" contains "Zed"
    And the reply came from a new process that connected to Discord afresh
    And eventually the database holds every message written on Discord and its reply, each once

  @fault
  Scenario: Context survives a Redis flush
    Given the bot is running in its own process, connected to Discord
    And alice writes "Hi, my name is Flo." to the bot in #general on Discord
    And alice writes "my favourite colour is teal" to the bot in a DM on Discord
    When the bot's Redis is flushed
    And alice writes "what is my name?" to the bot in #general on Discord
    And alice writes "what is my favourite colour?" to the bot in a DM on Discord
    Then the bot's reply on Discord to "what is my name?" contains "Flo"
    And the bot's reply on Discord to "what is my favourite colour?" contains "teal"
    And eventually the database holds every message written on Discord and its reply, each once

  Scenario: Two instances on the same backends answer each message once
    Given two bot processes "A" and "B" are connected to Discord on the same backends
    When alice writes "my name is Both" to the bot in #general on Discord
    And bob writes "hello from bob" to the bot in #general on Discord
    And alice writes "what is my name?" to the bot in #general on Discord
    And alice writes "a third message" to the bot in #general on Discord
    And every bot process stops
    Then both bot processes received every message written on Discord
    And every message written on Discord got exactly one reply
    And the bot's reply on Discord to "what is my name?" contains "Both"
    And the database holds every message written on Discord and its reply, each once

  @real @fault
  Scenario: Context survives Redis being killed and started again empty
    Given the bot is running in its own process, connected to Discord
    And alice writes "My name is Kay." to the bot in #general on Discord
    When the bot's Redis is killed and started again empty
    And alice writes "what is my name?" to the bot in #general on Discord
    Then the bot's reply on Discord to "what is my name?" contains "Kay"
    And eventually the database holds every message written on Discord and its reply, each once
