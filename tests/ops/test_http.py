"""The ops plugin's readiness rules and settings, without a listener."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from core.errors import ConfigError
from core.models import HealthReport
from core.settings import load_plugin_settings
from plugins.ops.http import readiness, transport_state
from plugins.ops.settings import OpsSettings


class FakeClient:
    def __init__(self, ready: bool, closed: bool = False) -> None:
        self.ready, self.closed = ready, closed

    def is_ready(self) -> bool:
        return self.ready

    def is_closed(self) -> bool:
        return self.closed


def _bot(started: bool = True, transport: str | None = "console", reports: list[HealthReport] | None = None, **extra: Any) -> Any:
    async def health() -> list[HealthReport]:
        return list(reports or [])

    return SimpleNamespace(started=started, running_transport=transport, health=health, instance_id="i1", **extra)


def test_degraded_memory_is_still_ready() -> None:
    bot = _bot(reports=[HealthReport("redis", False, "down: connection refused"), HealthReport("database", True, "ok")])
    state = asyncio.run(readiness(bot, 1.0))
    assert state.ready
    assert state.as_json()["status"] == "degraded"
    assert state.as_json()["components"]["redis"] == {"status": "degraded", "detail": "down: connection refused"}


def test_a_bot_not_started_is_not_ready() -> None:
    state = asyncio.run(readiness(_bot(started=False), 1.0))
    assert not state.ready
    assert state.status == "unavailable"


def test_discord_is_ready_only_once_the_gateway_is() -> None:
    assert transport_state(_bot(transport="discord"))[1:] == (False, "not started")
    assert transport_state(_bot(transport="discord", discord_client=FakeClient(False)))[1:] == (False, "connecting to the gateway")
    assert transport_state(_bot(transport="discord", discord_client=FakeClient(True)))[1:] == (True, "connected")
    assert transport_state(_bot(transport="discord", discord_client=FakeClient(True, closed=True)))[1] is False


def test_slow_health_reports_answer_degraded_not_hang() -> None:
    async def slow() -> list[HealthReport]:
        await asyncio.sleep(3600)
        return []

    bot = _bot()
    bot.health = slow
    state = asyncio.run(readiness(bot, 0.01))
    assert state.ready and state.status == "degraded"
    assert "took longer" in state.reports[0].detail


def test_the_listener_is_off_by_default() -> None:
    assert OpsSettings().listen is None


@pytest.mark.parametrize("bad", ["9108", "localhost", ":9108", "host:port", "127.0.0.1:70000"])
def test_a_malformed_address_is_refused_with_the_key(bad: str) -> None:
    with pytest.raises(ConfigError, match="listen"):
        load_plugin_settings(OpsSettings, {"listen": bad}, where="bot.toml [ops]")


def test_an_address_in_use_is_a_clear_config_error() -> None:
    from prometheus_client import CollectorRegistry

    from plugins.ops.http import OpsServer
    from plugins.ops.metrics import StateCollector

    async def go() -> str:
        first = OpsServer(_bot(), CollectorRegistry(), StateCollector(_bot()), 1.0)
        await first.start("127.0.0.1", 0)
        second = OpsServer(_bot(), CollectorRegistry(), StateCollector(_bot()), 1.0)
        try:
            await second.start("127.0.0.1", first.port or 0)
        except RuntimeError as exc:
            return str(exc)
        finally:
            await first.stop()
        return "no error"

    assert "cannot listen on 127.0.0.1:" in asyncio.run(go())
