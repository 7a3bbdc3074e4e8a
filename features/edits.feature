Feature: Edits and deletions reach memory
  A user who edits a message changes what memory holds for it and what the
  next reply sees; a deleted message (one, or a moderator's bulk delete)
  is removed with the bot's reply to it, from the cache, the database and
  the outbox. These are writes like messages (docs/MEMORY.md, E1-E6):
  idempotent, ordered by the platform's time, and they survive a Redis
  flush and a database outage. A member leaving a server that set
  forget_on_leave follows the same path for what they said there.

  Background:
    Given the bot is running
    And alice says these messages in #general:
      """
      my name is Ann
      my secret is 42
      I like tea
      """

  @fault
  Scenario: An edit changes the next context, also after a Redis flush
    When alice edits "my name is Ann" to "my name is Bea"
    Then the bot's context for alice in #general holds alice's messages in this order:
      | content         |
      | my name is Bea  |
      | my secret is 42 |
      | I like tea      |
    When Redis is flushed
    And alice says "who am I?" in #general
    Then the reply to "who am I?" was generated from these messages in this order:
      | author | content             |
      | alice  | my name is Bea      |
      | bot    | ok my name is Ann   |
      | alice  | my secret is 42     |
      | bot    | ok my secret is 42  |
      | alice  | I like tea          |
      | bot    | ok I like tea       |
      | alice  | who am I?           |
    And the database holds "my name is Ann" as "my name is Bea"

  Scenario: An edit reaches an instance started after it
    When alice edits "my name is Ann" to "my name is Bea"
    And the bot restarts
    Then the bot's context for alice in #general holds alice's messages in this order:
      | content         |
      | my name is Bea  |
      | my secret is 42 |
      | I like tea      |

  Scenario: A deletion reaches an instance started after it
    When alice deletes "my secret is 42"
    And the bot restarts
    Then the bot's context for alice in #general holds alice's messages in this order:
      | content        |
      | my name is Ann |
      | I like tea     |

  Scenario: An older edit arriving late does not undo a newer one
    When alice edits "I like tea" to "I like green tea" and then to "I like coffee", delivered in reverse order
    Then the database holds "I like tea" as "I like coffee"
    And the bot's context for alice in #general holds alice's messages in this order:
      | content         |
      | my name is Ann  |
      | my secret is 42 |
      | I like coffee   |

  @fault
  Scenario: A deletion removes the message and its reply everywhere, once and for all
    When alice deletes "my secret is 42"
    And alice deletes "my secret is 42" again
    And Redis is flushed
    Then the database holds no trace of "my secret is 42"
    And the database holds exactly 4 messages for alice in #general
    And the bot's context for alice in #general holds these messages in this order:
      | author | content           |
      | alice  | my name is Ann    |
      | bot    | ok my name is Ann |
      | alice  | I like tea        |
      | bot    | ok I like tea     |

  Scenario: A bulk delete follows the same path
    When a moderator deletes "my name is Ann" and "I like tea" at once
    Then the database holds no trace of "my name is Ann"
    And the database holds no trace of "I like tea"
    And the database holds exactly 2 messages for alice in #general

  Scenario: A message deleted before memory stored it is never stored
    When alice's message "oops, my password" in #general is deleted before the bot receives it
    Then the database holds no trace of "oops, my password"
    And the database holds exactly 6 messages for alice in #general

  @fault
  Scenario: An edit and a deletion while the database is unreachable are applied when it returns
    When the database becomes unreachable
    And alice edits "my name is Ann" to "my name is Bea"
    And alice deletes "my secret is 42"
    Then the bot's context for alice in #general holds alice's messages in this order:
      | content        |
      | my name is Bea |
      | I like tea     |
    When the database is reachable again
    Then eventually the database holds "my name is Ann" as "my name is Bea"
    And eventually the database holds no trace of "my secret is 42"
    When Redis is flushed
    Then the bot's context for alice in #general holds alice's messages in this order:
      | content        |
      | my name is Bea |
      | I like tea     |

  Scenario: A member leaving a server that forgets its leavers takes what they said there, and only that
    Given carol is a server administrator
    And carol says "/settings set forget_on_leave on" in #general
    And alice says "hello from the other server" in #general of other
    And alice says "a private word" in a DM
    And bob says "bob was here" in #general
    When alice leaves the server of #general
    And Redis is flushed
    Then the reply to "/settings set forget_on_leave on" contains "forget_on_leave set in this server"
    And the database holds no trace of "my name is Ann"
    And the database holds no trace of "I like tea"
    And the database holds exactly 0 messages for alice in #general
    And the bot's context for alice in #general is empty
    And the database holds exactly 2 messages for alice in #general of other
    And the database holds exactly 2 messages for alice in a DM
    And the database holds exactly 2 messages for bob in #general
    When alice leaves the server of #general again
    And alice says "I am back" in #general
    Then the bot's context for alice in #general holds these messages in this order:
      | author | content       |
      | alice  | I am back     |
      | bot    | ok I am back  |

  Scenario: A member leaving a server that keeps what leavers said (the default) changes nothing
    When alice leaves the server of #general
    Then the database holds exactly 6 messages for alice in #general
    And the bot's context for alice in #general holds alice's messages in this order:
      | content         |
      | my name is Ann  |
      | my secret is 42 |
      | I like tea      |

  @fault
  Scenario: A member leaving while the database is unreachable is applied when it returns
    Given carol is a server administrator
    And carol says "/settings set forget_on_leave on" in #general
    When the database becomes unreachable
    And alice says "said while the database is away" in #general
    And alice leaves the server of #general
    Then the bot's context for alice in #general is empty
    When the database is reachable again
    Then eventually the database holds exactly 0 messages for alice in #general
    And eventually the database holds no trace of "said while the database is away"
    When Redis is flushed
    Then the bot's context for alice in #general is empty
