Feature: The bot refuses to start on invalid configuration
  A mistake in the configuration must never switch a control off quietly:
  the bot refuses to start, with one clear line per problem naming the
  file, the section and the key (or the environment variable), and what
  was expected. A misspelt name is answered with the closest known one.

  Scenario: A wrong type in a plugin's section refuses to start
    Given the config file sets "user_messages" to "abc" in section "limits"
    When the operator starts the terminal chat
    Then the bot does not start
    And the error says "bot.toml [limits]: user_messages: rate 'abc' is not COUNT/PERIOD"

  Scenario: A wrong environment variable refuses to start and is named
    Given the environment sets "LIMITS_USER_MESSAGES" to "abc"
    When the operator starts the terminal chat
    Then the bot does not start
    And the error says "set by LIMITS_USER_MESSAGES in the environment"

  Scenario: A misspelt section is not ignored
    Given the config file sets "user_messages" to "5/1m" in section "limit"
    When the operator starts the terminal chat
    Then the bot does not start
    And the error says "unknown section [limit]; did you mean 'limits'?"

  Scenario: A misspelt key names the closest one
    Given the config file sets "idle_timout" to "60" in section "sessions"
    When the operator starts the terminal chat
    Then the bot does not start
    And the error says "unknown key 'idle_timout'; did you mean 'idle_timeout'?"

  Scenario: The check never says the configuration is fine above a refused plugin
    Given the config file sets "user_messages" to "abc" in section "limits"
    When the operator runs the check
    Then the check fails
    And the check does not say "config: OK"
    And the check says "config: FAIL plugin limits"

  Scenario: A valid configuration starts
    Given the config file sets "user_messages" to "5/1m" in section "limits"
    When the operator starts the terminal chat
    Then the bot answers in the terminal
