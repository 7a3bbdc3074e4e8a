Feature: Per-guild retention
  A guild may keep messages for a limited time: with the memory setting
  "retention" naming it, the bot deletes, every "retention_interval"
  seconds, what was said there before the limit, everywhere: the database,
  the search index, the cached windows in Redis, closed sessions, and the
  facts told there unless their user pinned them. Other guilds and DMs keep
  theirs. The admin command "python -m core retention run" does the same at
  once, with progress (plugins/memory/retention.py).

  Background:
    Given the plugins "memory, sessions, recall" are enabled

  Scenario: The bot deletes what is older than its guild's retention, everywhere, pinned facts excepted
    Given the guild of #general keeps messages for 30 days
    And the memory setting "retention_interval" is 0.05
    And the bot is running
    And alice says "my favourite colour is teal" in #general
    And alice says "I live in Lisbon" in #general
    And alice says "/memory pin lives in" in #general
    And alice says "my favourite colour is teal" in #general of other
    And alice says "my name is Ada" in a DM
    When the clock advances by 31 days
    And bob says "hello there" in #general
    Then eventually the database holds exactly 0 messages for alice in #general
    And the database holds exactly 2 messages for bob in #general
    And the database holds exactly 2 messages for alice in #general of other
    And the bot's context for alice in #general is empty
    And eventually alice has exactly these facts:
      | fact                   |
      | favourite colour: teal |
      | lives in: Lisbon       |
      | name: Ada              |
    When alice says "which colour is my favourite colour?" in #general
    Then the reply to "which colour is my favourite colour?" did not recall "teal"
    And the reply to "which colour is my favourite colour?" recalled the fact "lives in: Lisbon"

  Scenario: Nothing younger than the limit is deleted
    Given the guild of #general keeps messages for 30 days
    And the memory setting "retention_interval" is 0.05
    And the bot is running
    And alice says "my favourite colour is teal" in #general
    When the clock advances by 29 days
    And bob says "hello there" in #general
    And the clock advances by 1 second
    Then the database holds exactly 2 messages for alice in #general
    And alice has exactly these facts:
      | fact                   |
      | favourite colour: teal |
