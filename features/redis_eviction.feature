@fault
Feature: Context survives Redis losing part of its data
  Redis may lose some keys and keep others (maxmemory eviction), or come
  back from an older snapshot after a crash. The cache must never serve a
  context that lacks what the database holds (G2, G5).

  Background:
    Given the bot is running
    And alice says "one" in #general
    And alice says "two" in #general
    And bob says "hi" in #general

  Scenario: Context survives Redis evicting some keys
    When Redis evicts some of its keys
    And alice says "three" in #general
    Then the reply to "three" was generated from these messages in this order:
      | author | content |
      | alice  | one     |
      | bot    | ok one  |
      | alice  | two     |
      | bot    | ok two  |
      | alice  | three   |
    And the bot's context for bob in #general holds these messages in this order:
      | author | content |
      | bob    | hi      |
      | bot    | ok hi   |

  # Only a real redis-server can come back from an old snapshot: an
  # in-process fakeredis lives and dies with the bot's own process.
  @real
  Scenario: A Redis restarted from an older snapshot does not hide newer messages
    Given Redis saves a snapshot
    When alice says "three" in #general
    And alice says "four" in #general
    And Redis is killed and started again from its last snapshot
    And alice says "five" in #general
    Then the reply to "five" was generated from these messages in this order:
      | author | content  |
      | alice  | one      |
      | bot    | ok one   |
      | alice  | two      |
      | bot    | ok two   |
      | alice  | three    |
      | bot    | ok three |
      | alice  | four     |
      | bot    | ok four  |
      | alice  | five     |
    And every message is stored exactly once
