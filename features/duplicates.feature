Feature: A message delivered twice is stored and answered once
  Discord may deliver the same message again (gateway resume, retries). The
  platform message id is the idempotency key (G3).

  Scenario: A message delivered twice is stored once
    Given the bot is running
    And alice says "hello" in #general
    When Discord delivers "hello" again
    Then every message got exactly one reply
    And the database holds exactly 2 messages for alice in #general
    And no message is stored twice
    And the bot's context for alice in #general holds these messages in this order:
      | author | content  |
      | alice  | hello    |
      | bot    | ok hello |

  Scenario: A late redelivery does not reorder the conversation
    Given the bot is running
    And alice says "first" in #general
    And alice says "second" in #general
    When Discord delivers "first" again
    And alice says "third" in #general
    Then every message got exactly one reply
    And the reply to "third" was generated from these messages in this order:
      | author | content   |
      | alice  | first     |
      | bot    | ok first  |
      | alice  | second    |
      | bot    | ok second |
      | alice  | third     |
    And no message is stored twice

  @fault
  Scenario: A message redelivered after a Redis flush is still stored once
    Given the bot is running
    And alice says "hello" in #general
    When Redis is flushed
    And Discord delivers "hello" again
    Then every message got exactly one reply
    And the database holds exactly 2 messages for alice in #general
    And no message is stored twice
