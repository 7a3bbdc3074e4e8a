Feature: A session times out after its idle limit
  A conversation idle longer than the idle timeout is closed; the next
  message opens a new session with a fresh context. The old one stays in the
  database. Time is the bot's clock, advanced without sleeping.

  Background:
    Given the sessions setting "idle_timeout" is 600
    And the bot is running
    And alice says "one" in #general
    And alice says "two" in #general

  Scenario: A session times out after its idle limit
    When the clock advances by 11 minutes
    And alice says "three" in #general
    Then the reply to "three" came from a new session
    And the reply to "three" was generated from these messages in this order:
      | author | content |
      | alice  | three   |
    And the database holds 2 sessions for alice in #general
    And the database holds exactly 6 messages for alice in #general

  Scenario: A session within its idle limit goes on
    When the clock advances by 9 minutes
    And alice says "three" in #general
    Then the reply to "three" came from the same session as the reply to "one"
    And the reply to "three" was generated from 5 messages

  Scenario: A timeout holds across a restart
    When the bot restarts
    And the clock advances by 11 minutes
    And alice says "three" in #general
    Then the reply to "three" came from a new session
    And the reply to "three" was generated from 1 message
