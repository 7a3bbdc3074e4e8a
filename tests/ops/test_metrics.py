"""PipelineMetrics: what the pipeline hooks count."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from plugins.ops.metrics import MAX_IN_FLIGHT, PipelineMetrics


def _value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def test_a_conversation_counts_each_stage_and_the_reply_once() -> None:
    registry = CollectorRegistry()
    metrics = PipelineMetrics(registry)
    metrics.received_message("m1", "discord")
    for stage in ("store", "context", "generate"):
        metrics.reached("m1", stage)
    metrics.replied("m1", "discord", degraded=True, answer=False)
    assert _value(registry, "bot_messages_handled_total", transport="discord", kind="conversation") == 1
    assert _value(registry, "bot_replies_sent_total", transport="discord") == 1
    assert _value(registry, "bot_replies_degraded_total", transport="discord") == 1
    assert _value(registry, "bot_reply_latency_seconds_count", transport="discord") == 1
    for stage in ("claim", "store", "context", "generate"):
        assert _value(registry, "bot_stage_latency_seconds_count", stage=stage) == 1, stage


def test_a_refusal_after_the_session_is_not_counted_twice() -> None:
    registry = CollectorRegistry()
    metrics = PipelineMetrics(registry)
    metrics.received_message("m1", "console")
    metrics.reached("m1", "store")
    metrics.replied("m1", "console", degraded=False, answer=True)  # refused in prepare_message
    metrics.received_message("m2", "console")
    metrics.replied("m2", "console", degraded=False, answer=True)  # a command
    assert _value(registry, "bot_messages_handled_total", transport="console", kind="conversation") == 1
    assert _value(registry, "bot_messages_handled_total", transport="console", kind="answer") == 1
    assert _value(registry, "bot_replies_sent_total", transport="console") == 2


def test_messages_another_instance_answers_do_not_pile_up() -> None:
    metrics = PipelineMetrics(CollectorRegistry())
    for i in range(MAX_IN_FLIGHT + 10):
        metrics.received_message(f"m{i}", "discord")  # a standby: never finishes here
    assert len(metrics.in_flight) == MAX_IN_FLIGHT
    assert "m0" not in metrics.in_flight


def test_sessions_count_as_active_until_the_window_passes() -> None:
    registry = CollectorRegistry()
    clock = [0.0]
    metrics = PipelineMetrics(registry, active_window=60.0, now=lambda: clock[0])
    metrics.session_active("s1")
    clock[0] = 30.0
    metrics.session_active("s2")
    metrics.session_active("s1")  # s1 is fresh again
    clock[0] = 80.0
    assert _value(registry, "bot_sessions_active") == 2
    clock[0] = 95.0
    assert _value(registry, "bot_sessions_active") == 0


def test_claims_cache_reads_and_limit_refusals_are_exported() -> None:
    from collections import Counter
    from types import SimpleNamespace

    from plugins.memory.breaker import Breaker
    from plugins.ops.metrics import StateCollector

    memory = SimpleNamespace(
        redis_breaker=Breaker("redis"), db_breaker=Breaker("database"), cache=None, window_hits=9, window_misses=1,
        arbiter=SimpleNamespace(takeovers=1, won=5, conceded=7),
    )
    limiter = SimpleNamespace(refusals=Counter(message=2, notice=1))
    bot = SimpleNamespace(plugin_state={"memory": memory, "limits": limiter},
                          hooks=SimpleNamespace(failure_counts={}, timeout_counts={("llm", "generate_reply"): 3}), plugins=SimpleNamespace(listing=lambda: []))
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for m in StateCollector(bot).collect() for s in m.samples}
    assert samples[("bot_claims_total", (("outcome", "won"),))] == 5
    assert samples[("bot_claims_total", (("outcome", "conceded"),))] == 7
    assert samples[("bot_window_reads_total", (("source", "redis"),))] == 9
    assert samples[("bot_window_reads_total", (("source", "rebuilt"),))] == 1
    assert samples[("bot_rate_limit_refusals_total", (("kind", "message"),))] == 2
    assert samples[("bot_rate_limit_refusals_total", (("kind", "notice"),))] == 1
    assert samples[("bot_plugin_timeouts_total", (("hook", "generate_reply"), ("plugin", "llm")))] == 3
