Feature: A rolling summary of the conversation
  With the llm setting "summaries" on, what leaves the context window is
  folded into a rolling summary that the model receives after the system
  prompt. The summary is counted in the token budget: the window gives way
  to it. It outlives a session that timed out: the next session starts with
  it, and the last messages of the old session are folded in at once, so
  nothing said is left out of both. A reset keeps it only when asked to
  ("/reset keep"). The full history stays in the database whatever the
  summary says (plugins/llm/README.md, docs/RECALL.md).

  Background:
    Given a chat-completions server answers for the bot
    And these settings:
      | section  | key             | value |
      | llm      | summaries       | true  |
      | llm      | summary_every   | 2     |
      | sessions | window_messages | 4     |
      | sessions | idle_timeout    | 600   |
      | sessions | token_budget    | 130   |
    And the bot is running
    And the model answers instead of the test reply plugin
    And alice says these messages in #general:
      """
      my name is Alice
      I like green tea
      the blue door is ours
      """

  Scenario: The summary outlives a session that timed out, its last messages included
    When the clock advances by 11 minutes
    And alice says "what do you know about me?" in #general
    Then the model's summary for "what do you know about me?" mentions "my name is Alice"
    And the model's summary for "what do you know about me?" mentions "the blue door is ours"
    And the model received for "what do you know about me?" 1 message after the system prompt

  Scenario: The summary is counted in the token budget
    When alice says "and what else?" in #general
    Then the model's summary for "and what else?" mentions "my name is Alice"
    And the model's request for "and what else?" fits a token budget of 130
    And the model received for "and what else?" fewer than 4 messages after the system prompt

  Scenario: A reset drops the summary unless asked to keep it
    When alice says "/reset keep" in #general
    And alice says "hello again" in #general
    Then the reply to "/reset keep" contains "The summary of the earlier conversation is kept"
    And the model's summary for "hello again" mentions "my name is Alice"
    When alice says "/reset" in #general
    And alice says "and again" in #general
    Then the model received no summary for "and again"
