Feature: Several bot instances on the same backends
  During a rolling deploy, or active-active, every instance receives every
  message. Each message still gets exactly one reply, and a conversation has
  one history (G3, G4).

  Scenario: Two instances on the same backends: one reply per message, one history
    Given two bot instances "A" and "B" are running on the same backends
    When alice says "one" in #general
    And alice says "two" in #general
    And bob says "hi" in #general
    And alice says "three" in #general
    Then every message got exactly one reply
    And the bot's context for alice in #general holds these messages in this order:
      | author | content  |
      | alice  | one      |
      | bot    | ok one   |
      | alice  | two      |
      | bot    | ok two   |
      | alice  | three    |
      | bot    | ok three |
    And every message is stored exactly once
    And no message is stored twice

  Scenario: A second instance joining mid-conversation continues it
    Given the bot is running
    And alice says "one" in #general
    When a second instance "B" starts on the same backends
    And instance "A" stops
    And alice says "two" in #general
    Then the reply to "two" was generated from 3 messages
    And every message got exactly one reply

  @multiprocess
  Scenario: Two instances in separate processes: one reply per message, one history
    Given two bot instances "A" and "B" are running on the same backends, "B" in a separate process
    When alice says "one" in #general
    And alice says "two" in #general
    And alice says "three" in #general
    And bob says "hi" in #general
    Then every message got exactly one reply
    And the bot's context for alice in #general holds 6 messages
    And every message is stored exactly once
    And no message is stored twice

  @fault
  Scenario: Two instances answer each message once while Redis is unreachable
    Given two bot instances "A" and "B" are running on the same backends
    And alice says "one" in #general
    When Redis becomes unreachable
    And alice says "two" in #general
    And alice says "three" in #general
    And Redis is reachable again
    And alice says "four" in #general
    Then every message got exactly one reply
    And the reply to "four" was generated from 7 messages
    And every message is stored exactly once

  @fault
  Scenario: Two instances answer each message once while the database is unreachable
    Given two bot instances "A" and "B" are running on the same backends
    And alice says "one" in #general
    When the database becomes unreachable
    And alice says "two" in #general
    And alice says "three" in #general
    And the database is reachable again
    Then every message got exactly one reply
    And eventually every message is stored exactly once
    And the bot's context for alice in #general holds 6 messages

  @fault
  Scenario: Two instances keep one history through a Redis flush
    Given two bot instances "A" and "B" are running on the same backends
    And alice says "one" in #general
    And alice says "two" in #general
    When Redis is flushed
    And alice says "three" in #general
    Then every message got exactly one reply
    And the reply to "three" was generated from 5 messages
    And no message is stored twice

  @fault
  Scenario: A write by an instance that has not seen the new cache epoch reaches the window rebuilt under it
    # Rule D7: while A generates a reply, B starts a new cache generation
    # (as after an outage it recovered from) and rebuilds the window from
    # the database at once. A, whose probe has not run since, stores its
    # reply: its append lands on the old generation's window, which nobody
    # reads any more. The new one, rebuilt before the reply was stored, must
    # not be served without it, by B or by A.
    Given the memory setting "probe_interval" is 60
    And two bot instances "A" and "B" are running on the same backends
    And alice says "one" in #general
    And alice says "two" in #general
    When instance "A" generates its next reply while instance "B" starts a new cache epoch and rebuilds alice's window in #general
    And alice says "three" in #general to instance "A" only
    Then instance "B"'s context for alice in #general holds 6 messages
    And instance "A"'s context for alice in #general holds 6 messages
    And every message is stored exactly once

  @fault
  Scenario: An instance that lost its connections does not answer again what another instance answered
    # A paused process handles what its connection buffered when it
    # resumes: its first delivery of a message, late. Its breakers opened
    # during the pause, but the backends are up: rule A7 needs a probe made
    # after the message arrived before it answers with nothing to arbitrate.
    Given the memory setting "probe_interval" is 60
    And two bot instances "A" and "B" are running on the same backends
    And alice says "one" in #general
    When alice says "two" in #general to instance "B" only
    And instance "A" loses its connections to Redis and the database
    And instance "A" receives "two" late
    Then every message got exactly one reply
    And every message is stored exactly once

  @fault
  Scenario: With both backends down, one instance answers each message and a late one waits
    # Rule A7: nothing can arbitrate, so the first of the instances last
    # seen alive (ranked per message) answers a young message; the others
    # keep watch. A message older than unarbitrated_max_age (10 s) is not
    # answered unarbitrated: it waits until a backend answers again.
    Given two bot instances "A" and "B" are running on the same backends
    And every instance has seen the others announce themselves
    And alice says "one" in #general
    When alice says "two" in #general to instance "B" only
    And the database becomes unreachable
    And Redis becomes unreachable
    And the clock advances by 30 seconds
    And instance "A" receives "two" late and keeps watch
    Then every message got exactly one reply so far
    When alice says "three" in #general while the others keep watch
    And alice says "four" in #general while the others keep watch
    And alice says "five" in #general while the others keep watch
    Then every message got exactly one reply so far
    And the reply to "three" says memory is degraded
    When Redis is reachable again
    And the database is reachable again
    Then eventually every message is stored exactly once
    And every message got exactly one reply

  Scenario: A slow reply is not taken over
    # Rule A2: the holder renews its claim while it works, so a model call
    # longer than claim_ttl is a live holder, never a dead one.
    Given the memory setting "claim_ttl" is 0.6
    And two bot instances "A" and "B" are running on the same backends
    And every instance takes 2 seconds to generate a reply
    When alice says "take your time" in #general
    Then every message got exactly one reply
    And the reply to "take your time" was generated once

  @multiprocess
  Scenario: A holder whose claim was taken over keeps watch, and answers when the one that took it over dies
    # Rule A4: A pauses while it handles the message, B takes the claim over
    # and is killed before it answers; A resumes, finds its claim taken, asks
    # for it again (a standby now) and takes the message back once B's claim
    # has expired. Discord redelivers nothing: without it nobody answers.
    Given the memory setting "claim_ttl" is 2
    And the bot is running in a separate process
    And a second instance "B" is running on the same backends in a separate process
    And alice says "hello" in #general
    And every instance takes 1 seconds to generate a reply
    When alice says "are you there?" in #general; instance "A" pauses holding it, "B" takes it over and is killed
    Then instance "A" answers "are you there?"
    And every message got exactly one reply
    And eventually every message is stored exactly once

  @multiprocess
  Scenario: An instance killed while holding a claim: a standby that received the message answers it
    # Rules A1-A3 under Discord's delivery: both instances receive the
    # message once; the one holding its claim dies; the other keeps watch
    # and takes the claim over once it is no longer renewed.
    Given the memory setting "claim_ttl" is 2
    And two bot instances "A" and "B" are running on the same backends, "B" in a separate process
    And alice says "hello" in #general
    When instance "A" is busy with alice's conversation in #general
    And alice says "are you there?" in #general, and instance "B" is killed while it holds the claim
    And instance "A" is no longer busy
    Then instance "A" answers "are you there?"
    And every message got exactly one reply
    And the reply to "are you there?" was generated from these messages in this order:
      | author | content        |
      | alice  | hello          |
      | bot    | ok hello       |
      | alice  | are you there? |
    And every message is stored exactly once

  @multiprocess
  Scenario: A message taken over after the idle timeout passed continues the session it was sent in
    # Rule 12 of docs/MEMORY_SESSIONS.md: "are you there?" is sent 29
    # minutes after "hello", within the 30 minutes' idle timeout; its holder
    # dies and the standby gets to it 31 minutes after "hello". The session
    # is judged at the time the message was sent, as its holder judged it:
    # the conversation goes on, it does not restart for the reply. Its
    # activity is when it was answered: alice's next message, 29 minutes
    # after that answer (31 after she sent "are you there?"), goes on too.
    Given the memory setting "claim_ttl" is 2
    And two bot instances "A" and "B" are running on the same backends, "B" in a separate process
    And alice says "hello" in #general
    And the clock advances by 29 minutes
    When instance "A" is busy with alice's conversation in #general
    And alice says "are you there?" in #general, and instance "B" is killed while it holds the claim
    And the clock advances by 2 minutes
    And instance "A" is no longer busy
    Then instance "A" answers "are you there?"
    And the reply to "are you there?" was generated from these messages in this order:
      | author | content        |
      | alice  | hello          |
      | bot    | ok hello       |
      | alice  | are you there? |
    When the clock advances by 29 minutes
    And alice says "still here" in #general
    Then the reply to "still here" was generated from these messages in this order:
      | author | content           |
      | alice  | hello             |
      | bot    | ok hello          |
      | alice  | are you there?    |
      | bot    | ok are you there? |
      | alice  | still here        |
    And the conversation of alice in #general is stored in one session
    And every message is stored exactly once

  @multiprocess
  Scenario: An instance killed while holding a claim and started again: the standby does not wait out the claim
    # Rule A8: the killed instance's next life (the same instance id) ends
    # the claims and session leases its earlier life held as it starts, so
    # the standby takes the message over at its next look, not when the
    # claim (120 s here) would have expired.
    Given the memory setting "claim_ttl" is 120
    And two bot instances "A" and "B" are running on the same backends, "B" in a separate process
    And alice says "hello" in #general
    When instance "A" is busy with alice's conversation in #general
    And alice says "are you there?" in #general, and instance "B" is killed while it holds the claim
    And instance "A" is no longer busy
    And instance "B" is started again in a separate process
    Then instance "A" answers "are you there?"
    And every message got exactly one reply
    And every message is stored exactly once
