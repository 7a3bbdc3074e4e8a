@fault
Feature: The bot survives database outages
  With the database unreachable the bot answers from Redis and buffers its
  writes in a durable outbox (G1, G6); when the database returns the outbox
  drains into it, in order, each message once (G2, G3, G4).

  Background:
    Given the bot is running
    And alice says "one" in #general
    And alice says "two" in #general

  Scenario: The bot keeps answering with the database unreachable, and nothing is lost when it returns
    When the database becomes unreachable
    And alice says "three" in #general
    And alice says "four" in #general
    Then every message got exactly one reply
    And the reply to "four" was generated from these messages in this order:
      | author | content  |
      | alice  | one      |
      | bot    | ok one   |
      | alice  | two      |
      | bot    | ok two   |
      | alice  | three    |
      | bot    | ok three |
      | alice  | four     |
    And the bot reports "database" down
    And writes are waiting in the outbox
    When the database is reachable again
    Then eventually the bot reports "database" healthy
    And eventually every message is stored exactly once
    And eventually the database holds exactly 8 messages for alice in #general
    And no message is stored twice

  Scenario: Nothing is lost when the bot restarts during a database outage
    When the database becomes unreachable
    And alice says "three" in #general
    And the bot restarts
    And alice says "four" in #general
    And the database is reachable again
    Then every message got exactly one reply
    And eventually every message is stored exactly once
    And the bot's context for alice in #general holds 8 messages

  Scenario: Redis and the database both down: the bot still answers and says memory is degraded
    When the database becomes unreachable
    And Redis becomes unreachable
    And alice says "three" in #general
    Then every message got exactly one reply
    And the reply to "three" says memory is degraded
    When Redis is reachable again
    And the database is reachable again
    Then eventually every message is stored exactly once

  @real
  Scenario: The bot keeps answering when the database stops answering
    When the database stops answering
    And alice says "three" in #general
    And the database is reachable again
    And alice says "four" in #general
    Then every message got exactly one reply
    And eventually every message is stored exactly once
    And the bot's context for alice in #general holds 8 messages

  @real
  Scenario: Dropped database connections cost nothing
    When the database drops every connection
    And alice says "three" in #general
    Then every message got exactly one reply
    And every message is stored exactly once
