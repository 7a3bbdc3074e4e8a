@fault
Feature: The model receives the context that survived
  The reply plugin sends each message's context window to an
  OpenAI-compatible chat-completions server: the system prompt first, then
  the conversation in order, the bot's replies as the assistant's. What the
  memory kept through a fault (G2, G5) is what the model sees, whole; a
  provider outage costs the user a reply, never a message.

  Background:
    Given a chat-completions server answers for the bot
    And the llm setting "system_prompt" is "You are the bot of the test server."
    And the bot is running
    And the model answers instead of the test reply plugin
    And alice says these messages in #general:
      """
      my name is Alice
      I like green tea
      """

  Scenario: The model receives the context that survived a Redis flush
    When Redis is flushed
    And alice says "what do I like?" in #general
    Then the model received for "what do I like?" these messages in this order:
      | author | content                             |
      | system | You are the bot of the test server. |
      | alice  | my name is Alice                    |
      | bot    | echo: my name is Alice              |
      | alice  | I like green tea                    |
      | bot    | echo: I like green tea              |
      | alice  | what do I like?                     |
    And the bot replied "echo: what do I like?" to "what do I like?"

  Scenario: A message the provider could not answer reaches the model later
    When the chat-completions server fails the next 3 requests with HTTP 500
    And alice says "remember the blue door" in #general
    And Redis is flushed
    And alice says "which door?" in #general
    Then the reply to "remember the blue door" contains "The model provider is unavailable right now"
    And the reply to "remember the blue door" contains "Your message is saved"
    And the model received for "which door?" these messages in this order:
      | author | content                             |
      | system | You are the bot of the test server. |
      | alice  | my name is Alice                    |
      | bot    | echo: my name is Alice              |
      | alice  | I like green tea                    |
      | bot    | echo: I like green tea              |
      | alice  | remember the blue door              |
      | alice  | which door?                         |
    And the chat-completions server was asked 6 times
    And every message is stored exactly once
