@fault @failover
Feature: The memory follows a failover of its backends
  Operators scale out on replicated engines: a Redis Cluster, Redis with
  Sentinels, a PostgreSQL primary with a streaming standby. When a master
  or the primary dies mid-conversation and a replica is promoted, the bot
  follows it without a restart, keeps answering meanwhile (G6) and loses
  nothing it accepted (G1, G2). A promoted Redis replica may lack the last
  writes: the memory handles that like a flush (docs/MEMORY.md, R2).
  These scenarios start their own servers; they run on those only.

  @cluster
  Scenario: A Redis Cluster master dies mid-conversation and its replica takes over
    Given the bot is running
    And alice says "one" in #general
    And alice says "two" in #general
    When the Redis master holding alice's conversation in #general is killed
    And alice keeps talking in #general until the replica is promoted
    And alice says "after" in #general
    Then every message got exactly one reply
    And every message is stored exactly once
    And eventually the bot reports "redis" healthy
    And the bot's context for alice in #general holds every message said and its reply
    And the failover figures are written down

  @sentinel
  Scenario: The Redis master dies mid-conversation and the Sentinels promote the replica
    Given the bot is running
    And alice says "one" in #general
    And alice says "two" in #general
    When the Redis master is killed
    And alice keeps talking in #general until the replica is promoted
    And alice says "after" in #general
    Then every message got exactly one reply
    And every message is stored exactly once
    And eventually the bot reports "redis" healthy
    And the bot's context for alice in #general holds every message said and its reply
    And the failover figures are written down

  @pg_standby
  Scenario: The PostgreSQL primary dies mid-conversation and the standby is promoted
    Given the bot is running
    And alice says "one" in #general
    And alice says "two" in #general
    And the standby has replayed everything
    When the PostgreSQL primary is stopped
    And alice keeps talking in #general until the standby is promoted 2 seconds later
    And alice says "after" in #general
    Then every message got exactly one reply
    And eventually the bot reports "database" healthy
    And eventually every message is stored exactly once
    And the bot's context for alice in #general holds every message said and its reply
    And the failover figures are written down

  @pg_standby
  Scenario: A standby promoted without the last commits: the memory writes them back
    Given the bot is running
    And alice says "one" in #general
    And the standby has replayed everything
    And the standby stops receiving the primary's writes
    And alice says "two" in #general
    When the PostgreSQL primary is stopped
    And the standby is promoted
    And alice says "three" in #general
    Then every message got exactly one reply
    And eventually every message is stored exactly once
    And the bot's context for alice in #general holds 6 messages

  @sentinel
  Scenario: A replica promoted without the last writes is handled like a flush
    Given the bot is running
    And alice says "one" in #general
    And alice says "two" in #general
    And the replica stops receiving the master's writes
    And alice says "three" in #general
    When the Redis master is killed and the lagging replica promoted
    Then eventually the bot reports "redis" healthy
    When alice says "four" in #general
    Then the reply to "four" was generated from these messages in this order:
      | author | content  |
      | alice  | one      |
      | bot    | ok one   |
      | alice  | two      |
      | bot    | ok two   |
      | alice  | three    |
      | bot    | ok three |
      | alice  | four     |
    And every message got exactly one reply
    And every message is stored exactly once

  @cluster
  Scenario: A Cluster replica promoted without the last writes is handled like a flush
    Given the bot is running
    And alice says "one" in #general
    And alice says "two" in #general
    And the replica of alice's conversation in #general stops receiving its master's writes
    And alice says "three" in #general
    When the Redis master is killed and the lagging replica promoted
    Then eventually the bot reports "redis" healthy
    When alice says "four" in #general
    Then the reply to "four" was generated from these messages in this order:
      | author | content  |
      | alice  | one      |
      | bot    | ok one   |
      | alice  | two      |
      | bot    | ok two   |
      | alice  | three    |
      | bot    | ok three |
      | alice  | four     |
    And every message got exactly one reply
    And every message is stored exactly once
