@fault
Feature: Operators recover the memory by hand with the admin commands
  The bot recovers by itself, but an operator can see and do the same work
  from the command line, beside the serving instances: count the writes
  waiting for the database and drain them, warm Redis after it lost its
  data, and delete a person's data on request. Each command says what it
  did in JSON and exits with a code a script can act on.

  Background:
    Given the bot is running
    And alice says "one" in #general

  Scenario: Writes queued during a database outage are drained by hand
    When the database becomes unreachable
    And alice says "two" in #general
    And instance "A" stops
    And the operator runs "outbox status"
    Then the command exits 1
    And its report says "spool" plus "stream" is more than 0
    When the operator runs "outbox replay"
    Then the command exits 3
    When the database is reachable again
    And the operator runs "outbox replay"
    Then the command exits 0
    And its report says "left" is 0
    And every message is stored exactly once

  Scenario: Redis is warmed from the database after it lost its data
    Given bob says "two" in #general
    When instance "A" stops
    And Redis is flushed
    And the operator runs "cache rebuild"
    Then the command exits 0
    And its report says "sessions" is 2
    And Redis holds 2 conversation windows

  Scenario: A person's data is deleted on request, and only theirs
    Given bob says "two" in #general
    When the operator runs "forget --user alice"
    Then the command exits 2
    When the operator runs "forget --user alice --yes"
    Then the command exits 0
    And the database holds exactly 0 messages for alice in #general
    And the database holds exactly 2 messages for bob in #general

  Scenario: A server's data is exported on request, and only that server's
    Given alice is a server administrator
    And alice says "/settings set window_messages 7" in #general
    And bob says "two" in #general of other
    And carol says "three" in a DM
    When the operator runs "export --guild main"
    Then the command exits 0
    And its export holds the message "one" and the bot's reply to it
    And its export holds the server setting "window_messages" as 7
    And its export does not hold the message "two"
    And its export does not hold the message "three"
    When the operator runs "export --guild other"
    Then the command exits 0
    And its export holds the message "two" and the bot's reply to it
    And its export does not hold the message "one"
    When the operator runs "export --guild main --user alice"
    Then the command exits 2
