"""What ``/metrics`` says: the pipeline seen through its hooks, and the
state of the backends read when Prometheus scrapes.

Two sources, because the core exposes two kinds of facts:

- **events** (a message received, a stage reached, a reply sent) arrive
  through the pipeline hooks the plugin implements ``tryfirst`` with no
  answer of its own; :class:`PipelineMetrics` turns them into counters and
  latency histograms;
- **state** (breakers, outbox depth, takeovers, plugin errors) is read at
  scrape time from the health reports and the public attributes of the
  memory store and the hook dispatcher, by :class:`StateCollector`. Nothing
  is kept twice, so nothing drifts.

Every metric is prefixed ``bot_``; docs/OPERATIONS.md lists them.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from core.models import HealthReport

# The pipeline's stages, named by what runs in them. Each starts at a hook
# the plugin sees and ends where the next one starts:
#   claim     claim_message .. resolve_session  (claim and session lease)
#   store     resolve_session .. build_context   (session, prepare, store the message)
#   context   build_context .. generate_reply
#   generate  generate_reply .. confirm_reply    (the model call)
#   send      confirm_reply .. reply_sent        (send, store the reply)
# The last stage, generate, runs until the reply is sent and stored: the
# core confirms the claim through the storage service (no hook marks it).
STAGES = ("claim", "store", "context", "generate")

# Messages whose pipeline has not finished here: a standby's message never
# does (another instance answers it), so the oldest are dropped past this.
MAX_IN_FLIGHT = 4096
# Sessions remembered for bot_sessions_active, at most.
MAX_SESSIONS = 100_000

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


@dataclass(slots=True)
class InFlight:
    """One message on its way through this instance's pipeline."""

    transport: str
    started: float
    stage: str
    stage_started: float


class PipelineMetrics:
    """Counters and histograms fed by the pipeline hooks."""

    def __init__(
        self, registry: CollectorRegistry, active_window: float = 1800.0, now: Callable[[], float] = time.monotonic
    ) -> None:
        self.received = Counter(
            "bot_messages_received", "Messages received by this instance, before the claim", ["transport"], registry=registry
        )
        self.handled = Counter(
            "bot_messages_handled",
            "Messages this instance handled after winning their claim (kind: conversation or answer, "
            "an answer being a command or refused input)",
            ["transport", "kind"],
            registry=registry,
        )
        self.replies = Counter("bot_replies_sent", "Replies sent", ["transport"], registry=registry)
        self.degraded = Counter(
            "bot_replies_degraded", "Replies that said memory is degraded", ["transport"], registry=registry
        )
        self.latency = Histogram(
            "bot_reply_latency_seconds",
            "From receiving a message to its reply being sent and stored",
            ["transport"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.stage_latency = Histogram(
            "bot_stage_latency_seconds",
            "Time spent in each pipeline stage (generate is the model call)",
            ["stage"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.in_flight: OrderedDict[str, InFlight] = OrderedDict()
        # Session id -> when this instance last replied in it, oldest first.
        self.sessions: OrderedDict[str, float] = OrderedDict()
        self.active_window = active_window
        self.now = now
        Gauge(
            "bot_sessions_active",
            "Sessions this instance replied in within the last active_window seconds",
            registry=registry,
        ).set_function(self.active_sessions)

    def received_message(self, message_id: str, transport: str) -> None:
        self.received.labels(transport).inc()
        now = time.perf_counter()
        self.in_flight[message_id] = InFlight(transport, now, STAGES[0], now)
        while len(self.in_flight) > MAX_IN_FLIGHT:
            self.in_flight.popitem(last=False)

    def reached(self, message_id: str, stage: str) -> None:
        """Close the stage running for ``message_id`` and open ``stage``."""
        flight = self.in_flight.get(message_id)
        if flight is None or flight.stage == stage:
            return
        now = time.perf_counter()
        self.stage_latency.labels(flight.stage).observe(now - flight.stage_started)
        flight.stage, flight.stage_started = stage, now
        if stage == "store":
            self.handled.labels(flight.transport, "conversation").inc()

    def session_active(self, session_id: str) -> None:
        self.sessions[session_id] = self.now()
        self.sessions.move_to_end(session_id)
        while len(self.sessions) > MAX_SESSIONS:
            self.sessions.popitem(last=False)

    def active_sessions(self) -> float:
        horizon = self.now() - self.active_window
        while self.sessions and next(iter(self.sessions.values())) < horizon:
            self.sessions.popitem(last=False)
        return float(len(self.sessions))

    def replied(self, message_id: str, transport: str, degraded: bool, answer: bool) -> None:
        """The reply to ``message_id`` was sent (and, for a conversation, stored)."""
        flight = self.in_flight.pop(message_id, None)
        now = time.perf_counter()
        if answer:
            # A refusal after the session was resolved (prepare_message) was
            # counted as a conversation already.
            if flight is None or flight.stage == STAGES[0]:
                self.handled.labels(transport, "answer").inc()
        elif flight is not None:
            self.stage_latency.labels(flight.stage).observe(now - flight.stage_started)
        self.replies.labels(transport).inc()
        if degraded:
            self.degraded.labels(transport).inc()
        if flight is not None:
            self.latency.labels(transport).observe(now - flight.started)


class StateCollector:
    """Reads the backends' state at scrape time.

    :meth:`refresh` (async) gathers the health reports first; :meth:`collect`
    (called by prometheus-client, synchronously) turns them and the public
    counters of the memory store and the hook dispatcher into metrics.
    """

    def __init__(self, bot: Any) -> None:
        self.bot = bot
        self.reports: list[HealthReport] = []
        self.outbox_oldest: float | None = None
        self.ready = False

    def update(self, reports: list[HealthReport], ready: bool, outbox_oldest: float | None) -> None:
        self.reports, self.ready, self.outbox_oldest = reports, ready, outbox_oldest

    def collect(self) -> Iterator[Metric]:
        yield from self._health()
        yield from self._memory()
        yield from self._limits()
        yield from self._plugins()

    def _health(self) -> Iterator[Metric]:
        ready = GaugeMetricFamily("bot_ready", "1 while the bot can answer (what /readyz says)")
        ready.add_metric([], 1.0 if self.ready else 0.0)
        yield ready
        up = GaugeMetricFamily("bot_component_up", "1 when a component reports healthy, 0 when degraded", labels=["component"])
        values = GaugeMetricFamily(
            "bot_component_value", "Numeric details of each component's health report", labels=["component", "name"]
        )
        depth = GaugeMetricFamily("bot_outbox_depth", "Writes waiting in the outbox for the database")
        for report in self.reports:
            up.add_metric([report.component], 1.0 if report.ok else 0.0)
            for name, value in report.metrics.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    values.add_metric([report.component, name], float(value))
            if report.component == "outbox" and isinstance(report.metrics.get("depth"), int):
                depth.add_metric([], float(report.metrics["depth"]))
        yield from (up, values, depth)
        oldest = GaugeMetricFamily("bot_outbox_oldest_seconds", "Age of the oldest write waiting in the outbox (replay lag)")
        oldest.add_metric([], self.outbox_oldest or 0.0)
        yield oldest

    def _memory(self) -> Iterator[Metric]:
        memory = getattr(self.bot, "plugin_state", {}).get("memory")
        if memory is None:
            return
        is_open = GaugeMetricFamily("bot_breaker_open", "1 while a backend's circuit breaker is open", labels=["backend"])
        failures = CounterMetricFamily("bot_backend_errors", "Calls that failed on a backend (each trips its breaker)", labels=["backend"])
        recoveries = CounterMetricFamily("bot_breaker_recoveries", "Times a backend came back and its breaker closed", labels=["backend"])
        since = GaugeMetricFamily("bot_breaker_state_seconds", "Seconds since a breaker last opened or closed", labels=["backend"])
        now = time.monotonic()
        for breaker in (getattr(memory, "redis_breaker", None), getattr(memory, "db_breaker", None)):
            if breaker is None:
                continue
            is_open.add_metric([breaker.name], 0.0 if breaker.ok else 1.0)
            failures.add_metric([breaker.name], float(breaker.failures))
            recoveries.add_metric([breaker.name], float(breaker.recoveries))
            since.add_metric([breaker.name], max(0.0, now - breaker.since))
        yield from (is_open, failures, recoveries, since)
        arbiter = getattr(memory, "arbiter", None)
        if arbiter is not None:
            takeovers = CounterMetricFamily("bot_claims_taken_over", "Claims this instance took over from a dead or frozen holder")
            takeovers.add_metric([], float(arbiter.takeovers))
            claims = CounterMetricFamily(
                "bot_claims", "Claims on messages by outcome: won at once, or conceded (another instance answered)", labels=["outcome"]
            )
            claims.add_metric(["won"], float(getattr(arbiter, "won", 0)))
            claims.add_metric(["conceded"], float(getattr(arbiter, "conceded", 0)))
            yield from (takeovers, claims)
        reads = CounterMetricFamily("bot_window_reads", "Context window reads by where they came from", labels=["source"])
        reads.add_metric(["redis"], float(getattr(memory, "window_hits", 0)))
        reads.add_metric(["rebuilt"], float(getattr(memory, "window_misses", 0)))
        yield reads
        cache = getattr(memory, "cache", None)
        if cache is not None:
            epochs = CounterMetricFamily(
                "bot_cache_epoch_changes", "Times the cache was found flushed or restarted (windows are rebuilt after each)"
            )
            epochs.add_metric([], float(cache.epoch_changes))
            yield epochs

    def _limits(self) -> Iterator[Metric]:
        limiter = getattr(self.bot, "plugin_state", {}).get("limits")
        refused = CounterMetricFamily("bot_rate_limit_refusals", "Messages and commands the limits refused, by kind", labels=["kind"])
        for kind, count in sorted(getattr(limiter, "refusals", {}).items()):
            refused.add_metric([kind], float(count))
        yield refused

    def _plugins(self) -> Iterator[Metric]:
        errors = CounterMetricFamily(
            "bot_plugin_errors", "Hook implementations that raised, by plugin and hook", labels=["plugin", "hook"]
        )
        for (plugin, hook), count in sorted(self.bot.hooks.failure_counts.items()):
            errors.add_metric([plugin, hook], float(count))
        timeouts = CounterMetricFamily(
            "bot_plugin_timeouts", "Hook implementations that did not answer within their timeout", labels=["plugin", "hook"]
        )
        for (plugin, hook), count in sorted(getattr(self.bot.hooks, "timeout_counts", {}).items()):
            timeouts.add_metric([plugin, hook], float(count))
        yield from (errors, timeouts)
        states = GaugeMetricFamily("bot_plugin_enabled", "1 for each enabled plugin, 0 for disabled or failed", labels=["plugin", "state"])
        for info in self.bot.plugins.listing():
            states.add_metric([info.name, info.state], 1.0 if info.state == "enabled" else 0.0)
        yield states
