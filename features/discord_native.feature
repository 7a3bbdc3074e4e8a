@discord @multiprocess
Feature: Conversations that feel like Discord
  Through Discord, with the bot in its own process (`python -m core run`),
  the unmodified discord.py client against the fake Discord, memory on the
  scenario's backends, and the model a chat-completions server on
  127.0.0.1 that records every request: text files are read into the
  context, replies are shown while they are written, replying to an old
  message brings that exchange back, edits and deletions reach memory, and a
  member leaving a server that asked for it is forgotten there. What is
  checked is what Discord received from the bot, what the model was sent,
  and the `messages` table read with plain SQL.

  Background:
    Given the model behind the bot is a chat-completions server

  @fault
  Scenario: A text file's content reaches the model, also after a Redis flush
    Given the bot is running in its own process, connected to Discord
    When alice writes "please read this" to the bot in #general on Discord with the file "notes.txt" holding "the launch code is 4321"
    Then the model's request for "please read this" holds the file "notes.txt" with "the launch code is 4321"
    When the bot's Redis is flushed
    And alice writes "what is the launch code?" to the bot in #general on Discord
    Then the model's request for "what is the launch code?" holds the file "notes.txt" with "the launch code is 4321"
    And eventually the database holds every message written on Discord and its reply, each once

  Scenario: A streamed reply is shown while it is written, and stored once as it ends
    Given the model streams its replies slowly
    And the bot is running in its own process, connected to Discord
    When alice writes "tell me a story" to the bot in #general on Discord
    Then the bot's reply on Discord to "tell me a story" was posted once and edited as it was written, at most once a second
    And eventually the database holds every message written on Discord and its reply, each once
    And the database holds the bot's reply to "tell me a story" as Discord shows it

  Scenario: A stream that breaks midway ends clearly, on Discord and in memory
    Given the model streams its replies slowly
    And the model's next reply breaks off after "Once upon a time there"
    And the bot is running in its own process, connected to Discord
    When alice writes "tell me a story" to the bot in #general on Discord
    Then eventually the database holds every message written on Discord and its reply, each once
    And the database holds the bot's reply to "tell me a story" as "Once upon a time there … [reply interrupted]"
    And the bot's reply on Discord to "tell me a story" contains "Once upon a time there … [reply interrupted]"
    And the bot's reply on Discord to "tell me a story" contains "broke off"

  @fault
  Scenario: Replying to an old message brings that exchange back into the context
    Given the bot process keeps 4 messages in its context window
    And the bot is running in its own process, connected to Discord
    When alice writes "my locker number is 17" to the bot in #general on Discord
    And alice writes "one" to the bot in #general on Discord
    And alice writes "two" to the bot in #general on Discord
    And alice writes "three" to the bot in #general on Discord
    And the bot's Redis is flushed
    And alice replies "which locker was it?" on Discord to the bot's reply to "my locker number is 17"
    Then the model's request for "three" does not hold "my locker number is 17"
    And the model's request for "which locker was it?" holds these messages in this order:
      | role      | content                      |
      | user      | my locker number is 17       |
      | assistant | echo: my locker number is 17 |
      | user      | three                        |
      | assistant | echo: three                  |
      | user      | which locker was it?         |
    And eventually the database holds every message written on Discord and its reply, each once

  @fault
  Scenario: An edit and a deletion on Discord reach memory, also after a Redis flush
    Given the bot is running in its own process, connected to Discord
    When alice writes "my name is Ann" to the bot in #general on Discord
    And alice writes "my secret is 42" to the bot in #general on Discord
    And alice writes "I like tea" to the bot in #general on Discord
    And alice edits "my name is Ann" on Discord to "my name is Bea"
    And alice deletes "my secret is 42" on Discord
    And alice writes "hello again" to the bot in #general on Discord
    Then the model's request for "hello again" holds "my name is Bea"
    And the model's request for "hello again" does not hold "my secret is 42"
    When the bot's Redis is flushed
    And alice writes "who am I?" to the bot in #general on Discord
    Then the model's request for "who am I?" holds "my name is Bea"
    And the model's request for "who am I?" has no message "my name is Ann"
    And the model's request for "who am I?" does not hold "my secret is 42"
    And eventually the database holds every message written on Discord and its reply, each once

  Scenario: A bulk delete on Discord follows the same path
    Given the bot is running in its own process, connected to Discord
    When alice writes "apples" to the bot in #general on Discord
    And alice writes "bananas" to the bot in #general on Discord
    And alice writes "cherries" to the bot in #general on Discord
    And a moderator deletes "apples" and "bananas" on Discord at once
    And alice writes "what fruit?" to the bot in #general on Discord
    Then the model's request for "what fruit?" does not hold "apples"
    And the model's request for "what fruit?" does not hold "bananas"
    And the model's request for "what fruit?" holds "cherries"
    And eventually the database holds every message written on Discord and its reply, each once

  Scenario: A server setting changed through Discord on one instance is obeyed by another
    Given carol is an administrator of the server on Discord
    And the bot processes follow stored settings every 0.2 seconds
    And two bot processes "A" and "B" are connected to Discord on the same backends
    When carol runs /settings set system_prompt "You are the pirate bot." on Discord in #general
    And carol runs /settings set model "pirate-model" on Discord in #general
    And bot process "A" stops
    And alice writes "ahoy" to the bot in #general on Discord
    Then the answer on Discord to /settings set system_prompt says "system_prompt set in this server"
    And the model's request for "ahoy" was sent with the system prompt "You are the pirate bot." and the model "pirate-model"

  @fault
  Scenario: In a busy channel a conversation opens a thread, and its members share it
    Given the bot processes open a thread per conversation in #general, shared by its members
    And the bot is running in its own process, connected to Discord
    When alice starts a conversation "my colour is red" with the bot in #general on Discord
    And bob writes "and mine is blue" in that thread on Discord
    And the bot's Redis is flushed
    And carol writes "which colours were said?" in that thread on Discord
    Then the model's request for "which colours were said?" holds "alice: my colour is red"
    And the model's request for "which colours were said?" holds "bob: and mine is blue"
    And eventually the database holds every message written on Discord and its reply, each once

  @fault
  Scenario: A member leaving a server that forgets its leavers is forgotten there, and only there
    Given carol is an administrator of the server on Discord
    And the bot processes hear members leave
    And the bot is running in its own process, connected to Discord
    When carol runs /settings set forget_on_leave "on" on Discord in #general
    And alice writes "my locker number is 17" to the bot in #general on Discord
    And alice writes "my cat is called Tom" to the bot in a DM on Discord
    And bob writes "my locker number is 99" to the bot in #general on Discord
    And alice leaves the server on Discord
    And the bot's Redis is flushed
    And alice writes "which locker was mine?" to the bot in #general on Discord
    And alice writes "what is my cat called?" to the bot in a DM on Discord
    Then the answer on Discord to /settings set forget_on_leave says "forget_on_leave set in this server"
    And the model's request for "which locker was mine?" does not hold "my locker number is 17"
    And the model's request for "what is my cat called?" holds "my cat is called Tom"
    And eventually the database holds every message written on Discord and its reply, each once
