Feature: Session commands and people's data
  Users manage their own conversation with commands: reset starts a new
  session now, session shows where it stands and which backends are
  healthy, history lists past sessions, export hands over everything stored
  about the caller and forget deletes it everywhere. Nobody acts on someone
  else's data except the bot's owners, and a shared channel conversation is
  reset only by moderators. Bad input gets a clear reply and loses nothing.

  Scenario: Reset starts a new session and keeps the old messages stored
    Given the bot is running
    And alice says "remember apples" in #general
    When alice says "/reset" in #general
    And alice says "what do you remember?" in #general
    Then the reply to "/reset" contains "Started a new session"
    And the reply to "what do you remember?" came from a new session
    And the reply to "what do you remember?" was generated from 1 messages
    And the earlier session of alice in #general is closed because it was reset
    And the database holds exactly 4 messages for alice in #general

  Scenario: Resetting a shared channel conversation needs Manage Messages
    Given the sessions setting "scope" is "channel"
    And carol can manage messages
    And the bot is running
    And alice says "the code word is mango" in #general
    When bob says "/reset" in #general
    Then the reply to "/reset" contains "needs the Manage Messages permission"
    When bob says "what is the code word?" in #general
    Then the reply to "what is the code word?" was generated from 3 messages
    When carol says "/reset" in #general
    And bob says "anything new?" in #general
    Then the reply to "/reset" contains "Started a new session"
    And the reply to "anything new?" was generated from 1 messages

  Scenario: The session command shows the session, its limits and the backends
    Given these settings:
      | section  | key             | value |
      | sessions | idle_timeout    | 600   |
      | sessions | window_messages | 10    |
    And the bot is running
    And alice says 3 numbered messages in #general
    When the clock advances by 2 minutes
    And alice says "/session" in #general
    Then the reply to "/session" contains "Session s-"
    And the reply to "/session" contains "Idle: 2m 1s; closes after 7m 59s more without a message"
    And the reply to "/session" contains "Context window: 6 of 6 messages (limit 10)"
    And the reply to "/session" contains "/ 3000 (system prompt included)"
    And the reply to "/session" contains "- redis: OK"
    And the reply to "/session" contains "- database: OK"
    And the reply to "/session" contains "- outbox: OK"
    When Redis becomes unreachable
    And alice says "/session" in #general
    Then the reply to "/session" contains "- redis: DOWN"

  Scenario: History lists the caller's past sessions
    Given the sessions setting "idle_timeout" is 600
    And the bot is running
    And alice says "first conversation" in #general
    When the clock advances by 11 minutes
    And alice says "second conversation" in #general
    And alice says "/history" in #general
    Then the reply to "/history" lists 2 sessions
    And the reply to "/history" contains "(idle)"
    And the reply to "/history" contains "open: the current session here"

  Scenario: Export returns everything of that user and nothing of anyone else
    Given the sessions setting "scope" is "channel"
    And the bot is running
    And alice says "alice's secret plan" in #general
    And bob says "bob's private note" in #general
    And alice says "tea or coffee?" in a DM
    When alice exports her data in #general
    Then the export is a JSON file of alice's data
    And the export holds exactly alice's messages and the bot's replies to them
    And the export holds nothing of bob

  Scenario: Forget asks first, then removes everything of that user from Redis and the database
    Given the bot is running
    And alice says "my secret is swordfish" in #general
    And alice says "I like green tea" in a DM
    And bob says "bob was here" in #general
    When alice says "/forget" in #general
    Then the reply to "/forget" contains "/forget confirm"
    And the database still holds alice's messages
    When alice says "/forget confirm" in #general
    Then the reply to "/forget confirm" contains "Done"
    And the database holds nothing of alice, "swordfish" or "green tea"
    And Redis holds nothing of alice, "swordfish" or "green tea"
    And no file the bot wrote holds "swordfish" or "green tea"
    And the bot's context for bob in #general holds 2 messages
    When alice says "hello?" in #general
    Then the reply to "hello?" was generated from 1 messages

  Scenario: Only owners export or forget someone else's data
    Given dave is a bot owner
    And the bot is running
    And bob says "bob was here" in #general
    When alice asks to forget bob in #general
    Then the reply to alice's request contains "only the bot's owners"
    And the database holds exactly 2 messages for bob in #general
    When alice asks to export the data of bob in #general
    Then the reply to alice's request contains "only the bot's owners"
    When dave asks to forget bob in #general
    Then the reply to dave's request contains "Done"
    And the database holds exactly 0 messages for bob in #general

  Scenario: An unknown command gets a clear reply and nothing is stored
    Given the bot is running
    When alice says "/frobnicate now" in #general
    Then the reply to "/frobnicate now" contains "Unknown command /frobnicate"
    And the database holds exactly 0 messages for alice in #general

  Scenario Outline: A malformed sessions setting is reported by the config check, naming the key
    Given the sessions setting "<key>" is <value>
    When the operator runs the config check
    Then the config check fails naming "<named>"

    Examples:
      | key          | value                            | named                   |
      | scope        | "per_room"                       | scope                   |
      | overrides    | {"guild:1": {"scope": "room"}}   | overrides.guild:1.scope |
      | overrides    | {"room:1": {"scope": "channel"}} | 'room:1'                |
      | idle_timeout | -5                               | idle_timeout            |

  Scenario: With two instances a command is answered once
    Given two bot instances "A" and "B" are running on the same backends
    And alice says "hello" in #general
    When alice says "/session" in #general
    Then every message got exactly one reply
