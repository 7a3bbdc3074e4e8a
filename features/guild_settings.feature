Feature: Per-server settings at run time
  A server's administrators change its settings with /settings (the bot's
  owners too, and only they change the bot-wide ones). The values are
  stored durably, so every instance follows them, whichever instance took
  the command, and they win over the config file for that server
  (core/guild_settings.py).

  Background:
    Given the bot setting "plugin_state_refresh" is 0.2
    And alice is a server administrator
    And two bot instances "A" and "B" are running on the same backends

  Scenario: A setting changed on one instance is obeyed by another
    When alice says "/settings set window_messages 3" in #general to instance "A" only
    Then the reply to "/settings set window_messages 3" contains "window_messages set in this server"
    And eventually every instance follows the settings of the server of #general
    When bob says these messages in #general:
      """
      one
      two
      three
      """
    And bob says "four" in #general to instance "B" only
    And alice says "/settings" in #general
    Then the reply to "four" was generated from 3 messages
    And the reply to "/settings" contains "window_messages: 3"

  Scenario: A blocked member is ignored by every instance, until unblocked
    When alice blocks bob in the server of #general
    And eventually every instance follows the settings of the server of #general
    And bob says "hello?" in #general
    Then nobody replied to "hello?" and it is not stored
    When alice says "/settings reset blocked_users" in #general
    And eventually every instance follows the settings of the server of #general
    And bob says "hello again" in #general
    Then the bot replied "ok hello again" to "hello again"

  Scenario: Only the channels set are answered; administrators always are
    When alice limits the bot to #general of other in the server of #general
    And eventually every instance follows the settings of the server of #general
    And bob says "anyone here?" in #general
    And alice says "me?" in #general
    Then nobody replied to "anyone here?" and it is not stored
    And the bot replied "ok me?" to "me?"

  Scenario: Who may change what
    When bob says "/settings set window_messages 3" in #general
    And alice says "/settings set dms off" in #general
    And alice says "/settings set window_messages lots" in #general
    And alice says "/settings set colour blue" in #general
    Then the reply to "/settings set window_messages 3" contains "You do not have permission"
    And the reply to "/settings set dms off" contains "Only the bot's owners can change dms"
    And the reply to "/settings set window_messages lots" contains "window_messages: a whole number of messages"
    And the reply to "/settings set colour blue" contains "unknown setting 'colour'"
