@fault
Feature: Context survives a Redis flush
  Redis only holds the hot copy of each conversation; the database is the
  source of truth (G1, G2, G5). After FLUSHALL the context is rebuilt from
  the database, whole, and never half-recreated by the next append.

  Background:
    Given the bot is running
    And alice says these messages in #general:
      """
      my name is Alice
      I like green tea
      what do I like?
      """

  Scenario: Context survives a Redis flush
    When Redis is flushed
    Then the bot's context for alice in #general holds these messages in this order:
      | author | content             |
      | alice  | my name is Alice    |
      | bot    | ok my name is Alice |
      | alice  | I like green tea    |
      | bot    | ok I like green tea |
      | alice  | what do I like?     |
      | bot    | ok what do I like?  |
    And the database holds exactly 6 messages for alice in #general

  Scenario: A message arriving right after a flush does not truncate the context
    When Redis is flushed
    And alice says "and my name?" in #general
    Then the reply to "and my name?" was generated from these messages in this order:
      | author | content             |
      | alice  | my name is Alice    |
      | bot    | ok my name is Alice |
      | alice  | I like green tea    |
      | bot    | ok I like green tea |
      | alice  | what do I like?     |
      | bot    | ok what do I like?  |
      | alice  | and my name?        |
    And the bot's context for alice in #general holds 8 messages
    And every message is stored exactly once

  Scenario: Two flushes in a row, with a message between them
    When Redis is flushed
    And alice says "still there?" in #general
    And Redis is flushed
    And alice says "and now?" in #general
    Then the reply to "and now?" was generated from 9 messages
    And the bot's context for alice in #general holds 10 messages
    And no message is stored twice
