Feature: The context window keeps the last N messages
  The reply is generated from the most recent messages of the session, at
  most window_messages of them, oldest first, ending with the message being
  answered. Everything stays in the database.

  Scenario: The context window keeps the last N messages
    Given the sessions setting "window_messages" is 5
    And the bot is running
    When alice says 6 numbered messages in #general
    Then the reply to "message 6" was generated from these messages in this order:
      | author | content      |
      | alice  | message 4    |
      | bot    | ok message 4 |
      | alice  | message 5    |
      | bot    | ok message 5 |
      | alice  | message 6    |
    And the database holds exactly 12 messages for alice in #general

  @fault
  Scenario: The window is the same after a Redis flush
    Given the sessions setting "window_messages" is 5
    And the bot is running
    And alice says 6 numbered messages in #general
    When Redis is flushed
    And alice says 1 numbered messages in #general
    Then the reply to "message 7" was generated from these messages in this order:
      | author | content      |
      | alice  | message 5    |
      | bot    | ok message 5 |
      | alice  | message 6    |
      | bot    | ok message 6 |
      | alice  | message 7    |
