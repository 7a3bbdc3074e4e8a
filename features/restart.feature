Feature: Context survives a bot restart
  A new bot process on the same backends picks up every conversation where
  the old one left it (G2); nothing lived only in the old process.

  Scenario: Context survives a bot restart
    Given the bot is running
    And alice says "remember the number 42" in #general
    And bob says "hello from bob" in #general
    When the bot restarts
    And alice says "what was the number?" in #general
    Then the reply to "what was the number?" was generated from these messages in this order:
      | author | content                   |
      | alice  | remember the number 42    |
      | bot    | ok remember the number 42 |
      | alice  | what was the number?      |
    And the bot's context for bob in #general holds these messages in this order:
      | author | content           |
      | bob    | hello from bob    |
      | bot    | ok hello from bob |
    And every message is stored exactly once

  @fault
  Scenario: Context survives a restart together with a Redis flush
    Given the bot is running
    And alice says "a secret: pineapple" in a DM
    When the bot restarts
    And Redis is flushed
    And alice says "what was the secret?" in a DM
    Then the reply to "what was the secret?" was generated from 3 messages
    And the bot's context for alice in a DM holds 4 messages

  @multiprocess
  Scenario: Context survives the bot being killed
    Given the bot is running in a separate process
    And alice says "remember the number 42" in #general
    When instance "A" is killed
    And instance "A" starts again in a separate process
    And alice says "what was the number?" in #general
    Then the reply to "what was the number?" was generated from 3 messages
    And every message is stored exactly once

  @fault @multiprocess
  Scenario: Nothing accepted is lost when the bot is killed during a database outage
    Given the bot is running in a separate process
    And alice says "one" in #general
    When the database becomes unreachable
    And alice says "two" in #general
    And instance "A" is killed
    And instance "A" starts again in a separate process
    And the database is reachable again
    Then every message got exactly one reply
    And the reply to "two" came from the same session as the reply to "one"
    And eventually every message is stored exactly once
    And the bot's context for alice in #general holds 4 messages

  # Rule D5 (docs/MEMORY.md). The database holds the reply's row locked (an
  # uncommitted insert of the same id, as a slow or contended database
  # would) so the instance dies between sending the reply and storing it;
  # only PostgreSQL can hold one row while others are written. The dying
  # process's insert is either rolled back with its connection (the journal
  # hands the reply to the outbox) or commits after the death (nobody put it
  # in the window: the window is rebuilt).
  @real @multiprocess
  Scenario Outline: A reply sent by an instance killed before it stored the reply is not lost
    Given the memory setting "db_timeout" is 30
    And the bot is running in a separate process
    And alice says "one" in #general
    When alice says "two" in #general, and instance "A" is killed after sending the reply, its insert <fate>
    And instance "A" starts again in a separate process
    Then eventually every message is stored exactly once
    And the bot's context for alice in #general holds these messages in this order:
      | author | content |
      | alice  | one     |
      | bot    | ok one  |
      | alice  | two     |
      | bot    | ok two  |

    Examples:
      | fate                   |
      | rolled back            |
      | committed after it died |
