Feature: Sessions: who shares context, when a conversation ends, what a reply sees
  The sessions plugin decides which conversation a message belongs to (its
  scope), closes a conversation after an idle limit so the next message
  starts fresh, and trims the context a reply is generated from to the last
  N messages and to a token budget. Times are stored with the session, so a
  timeout holds across restarts and instances.

  The test reply plugin answers every message with "ok <its text>".

  Scenario: A session times out after its idle limit and the next message starts fresh
    Given the sessions setting "idle_timeout" is 600
    And the bot is running
    And alice says "my name is Alice" in #general
    When the clock advances by 9 minutes
    And alice says "what is my name?" in #general
    Then the reply to "what is my name?" came from the same session as the reply to "my name is Alice"
    And the reply to "what is my name?" was generated from these messages in this order:
      | author | content             |
      | alice  | my name is Alice    |
      | bot    | ok my name is Alice |
      | alice  | what is my name?    |
    When the clock advances by 11 minutes
    And alice says "hello again" in #general
    Then the reply to "hello again" came from a new session
    And the reply to "hello again" was generated from these messages in this order:
      | author | content     |
      | alice  | hello again |
    And the database holds 2 sessions for alice in #general
    And the earlier session of alice in #general is closed because it was idle

  Scenario: A timeout survives a restart and a Redis flush
    Given the sessions setting "idle_timeout" is 600
    And the bot is running
    And alice says "remember the number 42" in #general
    When the bot restarts
    And the clock advances by 5 minutes
    And alice says "which number?" in #general
    Then the reply to "which number?" came from the same session as the reply to "remember the number 42"
    And the reply to "which number?" was generated from 3 messages
    When the bot restarts
    And Redis is flushed
    And the clock advances by 11 minutes
    And alice says "still there?" in #general
    Then the reply to "still there?" came from a new session
    And the reply to "still there?" was generated from 1 messages

  Scenario: A busy session's last activity survives a Redis flush to the second
    # Touches of a busy session reach the database only now and then; the
    # newest stored message says when the session was last active.
    Given the sessions setting "idle_timeout" is 600
    And the bot is running
    And alice says "first" in #general
    When the clock advances by 20 seconds
    And alice says "second" in #general
    And Redis is flushed
    And the clock advances by 590 seconds
    And alice says "just in time" in #general
    Then the reply to "just in time" came from the same session as the reply to "first"
    And the reply to "just in time" was generated from 5 messages

  Scenario: Timeouts hold while Redis is unreachable, from the times in the database
    Given the sessions setting "idle_timeout" is 600
    And the bot is running
    And alice says "before the outage" in #general
    When Redis becomes unreachable
    And the clock advances by 5 minutes
    And alice says "during the outage" in #general
    Then the reply to "during the outage" came from the same session as the reply to "before the outage"
    When the clock advances by 11 minutes
    And alice says "after a long pause" in #general
    Then the reply to "after a long pause" came from a new session
    And the reply to "after a long pause" was generated from 1 messages
    When Redis is reachable again
    And alice says "Redis is back" in #general
    Then the reply to "Redis is back" came from the same session as the reply to "after a long pause"
    And the reply to "Redis is back" was generated from 3 messages

  Scenario: A session ends at its maximum age even while busy
    Given these settings:
      | section  | key          | value |
      | sessions | idle_timeout | 600   |
      | sessions | max_age      | 1800  |
    And the bot is running
    And alice says "first" in #general
    When the clock advances by 8 minutes
    And alice says "second" in #general
    And the clock advances by 8 minutes
    And alice says "third" in #general
    And the clock advances by 8 minutes
    And alice says "fourth" in #general
    Then the reply to "fourth" came from the same session as the reply to "first"
    When the clock advances by 8 minutes
    And alice says "fifth" in #general
    Then the reply to "fifth" came from a new session
    And the earlier session of alice in #general is closed because it reached its maximum age

  Scenario: The context window keeps the last N messages
    Given the sessions setting "window_messages" is 5
    And the bot is running
    When alice says 5 numbered messages in #general
    Then the reply to "message 5" was generated from these messages in this order:
      | author | content      |
      | alice  | message 3    |
      | bot    | ok message 3 |
      | alice  | message 4    |
      | bot    | ok message 4 |
      | alice  | message 5    |
    And the database holds exactly 10 messages for alice in #general

  Scenario: A reply is never separated from the message it answers
    Given the sessions setting "window_messages" is 4
    And the bot is running
    When alice says 5 numbered messages in #general
    Then the reply to "message 5" was generated from these messages in this order:
      | author | content      |
      | alice  | message 4    |
      | bot    | ok message 4 |
      | alice  | message 5    |

  Scenario: The context window fits the token budget, the system prompt and the current message always in
    Given these settings:
      | section  | key             | value |
      | sessions | window_messages | 50    |
      | sessions | token_budget    | 100   |
    And the bot is running
    When alice says these messages in #general:
      """
      the first thing I want to tell you is rather long and takes many tokens
      second
      third
      fourth
      """
    Then the reply to "fourth" was generated from these messages in this order:
      | author | content   |
      | alice  | second    |
      | bot    | ok second |
      | alice  | third     |
      | bot    | ok third  |
      | alice  | fourth    |
    And the context of the reply to "fourth" used at most 100 tokens of a budget of 100

  Scenario: With scope per channel two users share the conversation
    Given the sessions setting "scope" is "channel"
    And the bot is running
    And alice says "the meeting is on Tuesday" in #general
    When bob says "when is the meeting?" in #general
    Then the reply to "when is the meeting?" was generated from these messages in this order:
      | author | content                      |
      | alice  | the meeting is on Tuesday    |
      | bot    | ok the meeting is on Tuesday |
      | bob    | when is the meeting?         |
    When bob says "anything new?" in #random
    And bob says "just us?" in a DM
    Then the reply to "anything new?" was generated from 1 messages
    And the reply to "just us?" was generated from 1 messages

  Scenario: With scope per user two users in one channel are kept apart
    Given the bot is running
    And alice says "my password hint is blue" in #general
    When bob says "what did alice say?" in #general
    Then the reply to "what did alice say?" was generated from these messages in this order:
      | author | content             |
      | bob    | what did alice say? |
    And the bot's context for bob in #general holds 2 messages
    And the bot's context for alice in #general of other is empty
    And the bot's context for alice in a DM is empty

  Scenario: A server overrides the scope for one guild and one channel
    Given the sessions override for guild "main" sets "scope" to "thread"
    And the sessions override for #random sets "scope" to "channel"
    And the bot is running
    And alice says "plan the party" in thread party in #general
    When bob says "I bring cake" in thread party in #general
    And bob says "unrelated" in #general
    And alice says "hi all" in #random
    And bob says "hi alice" in #random
    Then the reply to "I bring cake" was generated from these messages in this order:
      | author | content           |
      | alice  | plan the party    |
      | bot    | ok plan the party |
      | bob    | I bring cake      |
    And the reply to "unrelated" was generated from 1 messages
    And the reply to "hi alice" was generated from 3 messages

  Scenario: Two instances answer each message once and keep one conversation
    Given the sessions setting "scope" is "channel"
    And two bot instances "A" and "B" are running on the same backends
    When alice says "one" in #general
    And bob says "two" in #general
    And alice says "three" in #general
    Then every message got exactly one reply
    And every message is stored exactly once
    And the bot's context for bob in #general holds these messages in this order:
      | author | content  |
      | alice  | one      |
      | bot    | ok one   |
      | bob    | two      |
      | bot    | ok two   |
      | alice  | three    |
      | bot    | ok three |

  @multiprocess
  Scenario: Two instances in separate processes answer each message once, and share timeouts
    Given the sessions setting "idle_timeout" is 600
    And two bot instances "A" and "B" are running on the same backends, "B" in a separate process
    When alice says "one" in #general
    And alice says "two" in #general
    And alice says "three" in #general
    Then every message got exactly one reply
    And every message is stored exactly once
    And the reply to "three" was generated from 5 messages
    When the clock advances by 11 minutes
    And alice says "four" in #general
    Then every message got exactly one reply
    And the reply to "four" came from a new session
    And the database holds 2 sessions for alice in #general
