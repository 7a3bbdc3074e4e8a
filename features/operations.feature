@fault
Feature: Operators see the bot's health and metrics over HTTP
  The ops plugin serves /healthz, /readyz and /metrics (Prometheus) on the
  address in its config; nothing listens unless one is set. An outage shows
  there while it lasts, and so does the recovery: an operator sees the
  breaker open, memory degraded and writes queued in the outbox, then all of
  it back to normal, without reading logs. /readyz stays 200 while memory is
  degraded, because the bot still answers (G6).

  Background:
    Given the plugins "memory, sessions, ops" are enabled
    And the ops setting "listen" is "127.0.0.1:0"
    And the bot is running

  Scenario: The process is alive and ready
    When alice says "one" in #general
    Then /healthz answers 200
    And /readyz answers 200 with status "ok"
    And the metric bot_messages_received_total for transport "test" is 1
    And the metric bot_replies_sent_total for transport "test" is 1
    And the metric bot_reply_latency_seconds_count for transport "test" is 1
    # The test reply plugin is tryfirst: its time counts in "context" (docs/OPERATIONS.md).
    And the metric bot_stage_latency_seconds_count for stage "context" is 1
    And the metric bot_sessions_active is 1

  Scenario: An outage of both backends and its recovery show in /readyz and /metrics
    Given alice says "one" in #general
    Then the metric bot_breaker_open for backend "redis" is 0
    And the metric bot_outbox_depth is 0
    When Redis is killed
    And the database becomes unreachable
    And alice says "two" in #general
    Then /readyz answers 200 with status "degraded"
    And /readyz reports "redis" degraded
    And the metric bot_breaker_open for backend "redis" is 1
    And the metric bot_component_up for component "redis" is 0
    And the metric bot_outbox_depth is more than 0
    And the metric bot_outbox_oldest_seconds is more than 0
    And the metric bot_replies_degraded_total for transport "test" is 1
    When Redis is started again
    And the database is reachable again
    Then /readyz answers 200 with status "ok"
    And the metric bot_breaker_open for backend "redis" is 0
    And the metric bot_breaker_open for backend "database" is 0
    And the metric bot_outbox_depth is 0
    And the metric bot_outbox_oldest_seconds is 0
    And the metric bot_breaker_recoveries_total for backend "redis" is more than 0
    And every message got exactly one reply
