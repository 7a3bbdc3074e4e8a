@fault
Feature: The bot survives Redis outages
  With Redis gone the bot answers from the database (G6), notices fast
  (G7), and when Redis comes back the cache is rebuilt or invalidated, never
  trusted with a gap (G5).

  Background:
    Given the bot is running
    And alice says "one" in #general
    And alice says "two" in #general

  Scenario: Context survives Redis being killed and restarted empty
    When Redis is killed and started again empty
    And alice says "three" in #general
    Then the reply to "three" was generated from these messages in this order:
      | author | content  |
      | alice  | one      |
      | bot    | ok one   |
      | alice  | two      |
      | bot    | ok two   |
      | alice  | three    |
    And every message got exactly one reply
    And every message is stored exactly once

  Scenario: The bot keeps answering while Redis is down, and the context is whole when it returns
    When Redis is killed
    And alice says "three" in #general
    And alice says "four" in #general
    Then the bot reports "redis" down
    When Redis is started again
    And alice says "five" in #general
    Then every message got exactly one reply
    And the reply to "five" was generated from 9 messages
    And the bot's context for alice in #general holds these messages in this order:
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
      | bot    | ok five  |
    And every message is stored exactly once

  Scenario: The bot keeps answering with Redis unreachable, and the context is whole when Redis returns
    When Redis becomes unreachable
    And alice says "three" in #general
    And alice says "four" in #general
    Then the reply to "four" was generated from 7 messages
    And the bot reports "redis" down
    When Redis is reachable again
    Then eventually the bot reports "redis" healthy
    When alice says "five" in #general
    Then every message got exactly one reply
    And the reply to "five" was generated from 9 messages
    And the bot's context for alice in #general holds 10 messages
    And every message is stored exactly once

  Scenario: A stale cache is not trusted after an outage
    # Redis keeps its old copy while unreachable; the messages said meanwhile
    # went to the database only, so that copy lacks them (G5).
    When Redis becomes unreachable
    And alice says "three" in #general
    And Redis is reachable again
    And alice says "four" in #general
    Then the reply to "four" was generated from these messages in this order:
      | author | content  |
      | alice  | one      |
      | bot    | ok one   |
      | alice  | two      |
      | bot    | ok two   |
      | alice  | three    |
      | bot    | ok three |
      | alice  | four     |

  @real
  Scenario: The bot keeps answering when Redis stops answering
    When Redis stops answering
    And alice says "three" in #general
    And alice says "four" in #general
    And Redis is reachable again
    And alice says "five" in #general
    Then every message got exactly one reply
    And the bot's context for alice in #general holds 10 messages
    And every message is stored exactly once

  @real
  Scenario: Dropped Redis connections cost nothing
    When Redis drops every connection
    And alice says "three" in #general
    Then every message got exactly one reply
    And the bot's context for alice in #general holds 6 messages
