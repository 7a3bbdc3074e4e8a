Feature: Plugins are switched on and off through config
  Operators choose which plugins run in the config file; a plugin that is
  disabled is never loaded, a broken one is reported and left out, and a
  name the bot does not know is reported rather than ignored.

  Scenario: A plugin disabled in config does not answer
    Given a reply plugin "parrot" that answers "squawk"
    And the config file disables "parrot"
    When the bot starts
    And alice says "hello"
    Then the bot does not answer "squawk"
    And the plugin list shows "parrot" as disabled

  Scenario: A plugin enabled in config answers
    Given a reply plugin "parrot" that answers "squawk"
    When the bot starts
    And alice says "hello"
    Then the bot answers "squawk"

  Scenario: A broken plugin does not stop the bot
    Given a reply plugin "parrot" that answers "squawk"
    And a plugin "gremlin" that raises in every hook
    When the bot starts
    And alice says "hello"
    Then the bot answers "squawk"
    And the log names the plugin "gremlin"

  Scenario: A plugin that cannot be imported is reported and the bot starts
    Given a plugin "ghost" that fails to import
    When the bot starts
    And alice says "hello"
    Then the bot answers
    And the plugin list shows "ghost" as failed

  Scenario: A misspelt hook name fails the plugin, naming the hook it meant
    Given a reply plugin "parrot" whose hook is spelt "generate_replies"
    When the bot starts
    Then the plugin list shows "parrot" as failed
    And the plugin list gives "parrot" the reason "generate_replies is not a hook (did you mean generate_reply?)"

  Scenario: A reply plugin that asks for an argument its hook does not pass is reported in one line
    Given a reply plugin "parrot" whose generate_reply asks for "ctx"
    When the bot starts
    Then the plugin list shows "parrot" as failed
    And the plugin list gives "parrot" a one-line reason naming "ctx"

  Scenario: A reply plugin that never answers is given up on and the user is told
    Given a reply plugin "sloth" that never answers
    And the config file gives every hook 0.05 seconds
    When the bot starts
    And alice says "hello"
    Then the bot answers "Sorry, I could not generate a reply (plugin sloth did not answer in time)."
    And the log names the plugin "sloth"

  Scenario: An unknown plugin name in config is reported
    Given the config file disables "imagess"
    When the bot starts
    Then the bot reports the unknown plugin "imagess"
    And alice says "hello"
    And the bot answers

  Scenario: A server administrator switches a plugin off in their server only
    Given a reply plugin "parrot" that answers "squawk"
    When the bot starts
    And in server "one" an administrator says "/plugins disable parrot"
    Then the bot answers "plugin 'parrot' switched off in this server"
    When in server "one" alice says "hello"
    Then the bot does not answer "squawk"
    When in server "two" alice says "hello"
    Then the bot answers "squawk"

  Scenario: Only the bot's owners switch a plugin off for the whole bot
    Given a reply plugin "parrot" that answers "squawk"
    When the bot starts
    And in server "one" an administrator says "/plugins disable parrot everywhere"
    Then the bot's answer starts with "Only the bot's owners can switch a plugin for the whole bot"
    When in server "one" the owner says "/plugins disable parrot everywhere"
    And in server "two" alice says "hello"
    Then the bot does not answer "squawk"
    And the plugin list shows "parrot" as disabled

  Scenario: A plugin that guards the bot cannot be switched off by a server administrator
    Given a plugin "guard" that only the bot's owners may switch
    When the bot starts
    And in server "one" an administrator says "/plugins disable guard"
    Then the bot answers "plugin 'guard' can only be switched for the whole bot, by the bot's owners"

  Scenario: Nobody switches off an essential plugin at run time
    When the bot starts
    And in server "one" the owner says "/plugins disable core everywhere"
    Then the bot answers "plugin 'core' is essential here (the core) and cannot be switched off"
