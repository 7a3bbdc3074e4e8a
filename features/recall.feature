Feature: Recall across conversations
  A user's earlier conversations are not lost to the context window: when
  a new message is about something they said before, in a session long
  closed, the bot recalls it, marked with its date, and the facts they told
  it ("my name is …", "my favourite colour is …") come with every reply.
  Recall searches only the user's own messages and facts, in the same
  guild (or DMs) unless the recall setting "share" is "everywhere"; it
  reads the database only, so Redis does not matter to it, and it is
  skipped when the database is down. A fact the user deleted is never
  recalled again (docs/RECALL.md).

  Background:
    Given the plugins "memory, sessions, recall" are enabled
    And the sessions setting "idle_timeout" is 600

  Scenario: A fact told in one session is recalled in a new session after the old one timed out
    Given the bot is running
    And alice says "my favourite colour is teal" in #general
    And alice says "the weather is fine today" in #general
    When the clock advances by 11 minutes
    And alice says "which colour should I paint my room?" in #general
    Then the reply to "which colour should I paint my room?" came from a new session
    And the reply to "which colour should I paint my room?" was generated from 1 message
    And the reply to "which colour should I paint my room?" recalled the fact "favourite colour: teal"
    And the reply to "which colour should I paint my room?" did not recall "weather"
    And alice has exactly these facts:
      | fact                   |
      | favourite colour: teal |

  Scenario: Recall brings back an earlier message about the same subject
    Given the bot is running
    And alice says "we adopted a kitten called Miso" in #general
    When the clock advances by 11 minutes
    And alice says "any tips for a kitten that bites?" in #general
    Then the reply to "any tips for a kitten that bites?" recalled the message "we adopted a kitten called Miso"

  Scenario: Nobody recalls another user's messages or facts
    Given the bot is running
    And alice says "my favourite colour is teal" in #general
    When bob says "which colour do you like, teal?" in #general
    Then the reply to "which colour do you like, teal?" recalled nothing

  Scenario: A fact told in a DM is not recalled in a guild channel by default
    Given the bot is running
    And alice says "my favourite colour is teal" in a DM
    When alice says "which colour should I paint my room?" in #general
    Then the reply to "which colour should I paint my room?" recalled nothing
    When alice says "which colour would suit the teal sofa?" in a DM
    Then the reply to "which colour would suit the teal sofa?" recalled the fact "favourite colour: teal"

  Scenario: A fact told in a DM is recalled in a guild channel when the scope settings allow it
    Given the recall setting "share" is "everywhere"
    And the bot is running
    And alice says "my favourite colour is teal" in a DM
    When alice says "which colour should I paint my room?" in #general
    Then the reply to "which colour should I paint my room?" recalled the fact "favourite colour: teal"

  Scenario: A fact told in one guild is not recalled in another guild
    Given the bot is running
    And alice says "my favourite colour is teal" in #general
    When alice says "which colour should I paint my room?" in #general of other
    Then the reply to "which colour should I paint my room?" recalled nothing

  Scenario: A deleted fact is never recalled again, also after a Redis flush and a restart
    Given the bot is running
    And alice says "my favourite colour is teal" in #general
    When alice says "/memory forget favourite colour" in #general
    Then the reply to "/memory forget favourite colour" contains "Deleted the fact “favourite colour”"
    When Redis is flushed
    And the bot restarts
    And the clock advances by 11 minutes
    And alice says "which colour is my favourite colour?" in #general
    Then the reply to "which colour is my favourite colour?" recalled nothing
    And alice has no facts
    When alice says "/memory" in #general
    Then the reply to "/memory" contains "I keep no facts about you"

  Scenario: /memory in a guild channel lists only that guild's facts, in a DM all of them
    Given the bot is running
    And alice says "my favourite colour is teal" in a DM
    And alice says "I live in Lisbon" in #general
    When alice says "/memory" in #general
    Then the reply to "/memory" contains "lives in: Lisbon (told "
    And the reply to "/memory" does not mention "teal"
    When alice says "/memory" in a DM
    Then the reply to "/memory" contains "favourite colour: teal (told "
    And the reply to "/memory" contains "lives in: Lisbon (told "

  Scenario: Two instances extracting the same fact store it once
    Given two bot instances "A" and "B" are running on the same backends
    When alice says "my name is Ada" in #general to instance "A" only
    And alice says "my name is Ada" in #random to instance "B" only
    And alice says "My name is Ada." in #general
    Then alice has exactly these facts:
      | fact      |
      | name: Ada |

  Scenario: A newer fact supersedes an older one
    Given the bot is running
    And alice says "I live in Lisbon" in #general
    When the clock advances by 11 minutes
    And alice says "I live in Porto now" in #general
    Then alice has exactly these facts:
      | fact           |
      | lives in: Porto now |

  @fault
  Scenario: Recall keeps working with Redis down
    Given the bot is running
    And alice says "my favourite colour is teal" in #general
    When the clock advances by 11 minutes
    And Redis becomes unreachable
    And alice says "which colour should I paint my room?" in #general
    Then the reply to "which colour should I paint my room?" recalled the fact "favourite colour: teal"

  @fault
  Scenario: Recall is skipped cleanly with the database down
    Given the bot is running
    And alice says "my favourite colour is teal" in #general
    When the clock advances by 11 minutes
    And the database becomes unreachable
    And alice says "which colour should I paint my room?" in #general
    Then the reply to "which colour should I paint my room?" recalled nothing
    And every message got exactly one reply
    When the database is reachable again
    And alice says "which colour was that again?" in #general
    Then the reply to "which colour was that again?" recalled the fact "favourite colour: teal"

  Scenario: /export and /forget cover facts
    Given the bot is running
    And alice says "my favourite colour is teal" in #general
    When alice exports their data in #general
    Then the export holds the fact "favourite colour: teal"
    When alice says "/forget confirm" in #general
    Then alice has no facts
    And the database holds nothing of alice in the search index
