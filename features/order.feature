Feature: Context comes back in message order
  Messages are ordered by platform time (snowflake), whatever order they
  were handled and written in (G4).

  Scenario: Messages handled out of order come back in platform order
    Given the bot is running
    And alice says "one" in #general
    When alice says "two" and "three" in #general, delivered in reverse order
    And alice says "four" in #general
    Then every message got exactly one reply
    And the bot's context for alice in #general holds alice's messages in this order:
      | content |
      | one     |
      | two     |
      | three   |
      | four    |
    And every message is stored exactly once

  @fault
  Scenario: Out-of-order messages keep their order through a Redis flush
    Given the bot is running
    And alice says "one" in #general
    When alice says "two" and "three" in #general, delivered in reverse order
    And Redis is flushed
    And alice says "four" in #general
    Then the bot's context for alice in #general holds alice's messages in this order:
      | content |
      | one     |
      | two     |
      | three   |
      | four    |
