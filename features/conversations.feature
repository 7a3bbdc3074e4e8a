@fault
Feature: A conversation never splits
  Faults that come one after another (a Redis flush or an empty restart,
  then a database cut, a restarted bot in between) never make the bot start
  the conversation again behind the user's back (G9). The reply to the next
  message is generated from every earlier message, or, when no copy of them
  is reachable anywhere, it says memory is degraded. Once the backends
  return, the conversation comes back whole, in order, in one session.
  Judged per conversation (user x place), never per session id. The rules
  are in docs/MEMORY_SESSIONS.md, "Sessions under faults".

  Background:
    Given the bot is running
    And alice says "my name is Alice" in a DM
    And alice says "I like green tea" in a DM

  Scenario: A conversation survives a Redis flush followed by a database cut
    When Redis is flushed
    And the database becomes unreachable
    And alice says "what do I like?" in a DM
    Then the reply to "what do I like?" was generated from these messages in this order:
      | author | content             |
      | alice  | my name is Alice    |
      | bot    | ok my name is Alice |
      | alice  | I like green tea    |
      | bot    | ok I like green tea |
      | alice  | what do I like?     |
    And the reply to "what do I like?" does not say memory is degraded
    When the database is reachable again
    And alice says "and my name?" in a DM
    Then the reply to "and my name?" was generated from 7 messages
    And the bot's context for alice in a DM holds these messages in this order:
      | author | content             |
      | alice  | my name is Alice    |
      | bot    | ok my name is Alice |
      | alice  | I like green tea    |
      | bot    | ok I like green tea |
      | alice  | what do I like?     |
      | bot    | ok what do I like?  |
      | alice  | and my name?        |
      | bot    | ok and my name?     |
    And the conversation of alice in a DM is stored in one session
    And every message is stored exactly once

  Scenario: A conversation survives Redis restarted empty followed by a database cut
    When Redis is killed and started again empty
    And the database becomes unreachable
    And alice says "what do I like?" in a DM
    Then the reply to "what do I like?" was generated from 5 messages
    And the reply to "what do I like?" does not say memory is degraded
    When the database is reachable again
    And alice says "and my name?" in a DM
    Then the reply to "and my name?" was generated from 7 messages
    And the bot's context for alice in a DM holds 8 messages
    And the conversation of alice in a DM is stored in one session

  Scenario: After a flush the windows of recent conversations are rebuilt before anyone reads them
    When Redis is flushed
    Then eventually Redis holds the 4 latest messages of alice in a DM again
    When the bot restarts
    And the database becomes unreachable
    And alice says "what do I like?" in a DM
    Then the reply to "what do I like?" was generated from 5 messages
    And the reply to "what do I like?" does not say memory is degraded

  Scenario: With no copy anywhere the reply says memory is degraded, and the conversation is joined when the database returns
    When the bot restarts
    And Redis is flushed
    And the database becomes unreachable
    And alice says "what do I like?" in a DM
    Then the reply to "what do I like?" says memory is degraded
    When alice says "still there?" in a DM
    Then the reply to "still there?" says memory is degraded
    When the database is reachable again
    And alice says "and my name?" in a DM
    Then the reply to "and my name?" does not say memory is degraded
    And the reply to "and my name?" was generated from these messages in this order:
      | author | content             |
      | alice  | my name is Alice    |
      | bot    | ok my name is Alice |
      | alice  | I like green tea    |
      | bot    | ok I like green tea |
      | alice  | what do I like?     |
      | bot    | ok what do I like?  |
      | alice  | still there?        |
      | bot    | ok still there?     |
      | alice  | and my name?        |
    And the conversation of alice in a DM is stored in one session
    And every message is stored exactly once

  Scenario: Redis restarted empty, the bot restarted and the database cut: joined when the database returns
    When the bot restarts
    And Redis is killed and started again empty
    And the database becomes unreachable
    And alice says "what do I like?" in a DM
    Then the reply to "what do I like?" says memory is degraded
    When the database is reachable again
    Then the bot's context for alice in a DM holds these messages in this order:
      | author | content             |
      | alice  | my name is Alice    |
      | bot    | ok my name is Alice |
      | alice  | I like green tea    |
      | bot    | ok I like green tea |
      | alice  | what do I like?     |
      | bot    | ok what do I like?  |
    And the conversation of alice in a DM is stored in one session

  Scenario: A session opened blind is not joined to a conversation that had already timed out
    When the clock advances by 31 minutes
    And the bot restarts
    And Redis is flushed
    And the database becomes unreachable
    And alice says "hello again" in a DM
    And the database is reachable again
    And alice says "and now?" in a DM
    Then the reply to "and now?" was generated from these messages in this order:
      | author | content        |
      | alice  | hello again    |
      | bot    | ok hello again |
      | alice  | and now?       |
    And the reply to "and now?" does not say memory is degraded
    And the database holds 2 sessions for alice in a DM

  # Rule 11 of docs/MEMORY_SESSIONS.md: bob's conversation begins on
  # instance "B" while the database answers reads but takes no writes of
  # messages and sessions (B finds no session, opens one, and its writes go
  # to the outbox); a flush takes the stream's copy, so B's spool alone
  # holds the conversation, and B dies. Instance "A", finding nothing
  # anywhere, opens bob's first session. B's next life replays its spool:
  # the two are one conversation. PostgreSQL only: SQLite cannot block the
  # writes of some tables and not the reads of the others.
  @real @multiprocess
  Scenario: A conversation the database learns of late is joined to the session opened meanwhile
    When a second instance "B" starts on the same backends in a separate process
    And the database takes no writes of messages and sessions
    And bob says "I am Bob" in a DM to instance "B" only
    And Redis is flushed
    And instance "B" is killed
    And the database takes writes again
    And bob says "who am I?" in a DM to instance "A" only
    And instance "B" starts again in a separate process
    Then eventually the conversation of bob in a DM is stored in one session
    And the bot's context for bob in a DM holds these messages in this order:
      | author | content      |
      | bob    | I am Bob     |
      | bot    | ok I am Bob  |
      | bob    | who am I?    |
      | bot    | ok who am I? |
    And every message is stored exactly once
