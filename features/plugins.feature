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

  Scenario: An unknown plugin name in config is reported
    Given the config file disables "imagess"
    When the bot starts
    Then the bot reports the unknown plugin "imagess"
    And alice says "hello"
    And the bot answers
