"""The ``[ops]`` section, overridable by ``OPS_*`` environment variables."""

from __future__ import annotations

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from core.settings import PluginSettings


class OpsSettings(PluginSettings):
    """Operations plugin settings.

    ``listen`` is ``host:port`` for the HTTP listener serving ``/healthz``,
    ``/readyz`` and ``/metrics``; unset (the default), nothing listens. Port 0
    picks a free port (tests). A host other than loopback exposes the metrics
    to the network: put it behind the deployment's own network rules.
    """

    model_config = SettingsConfigDict(env_prefix="OPS_", env_file=".env", extra="ignore")

    listen: str | None = None
    # Seconds a readiness check or a scrape waits for the backends' health
    # reports before answering with what it knows.
    health_timeout: float = Field(2.0, gt=0)
    # bot_sessions_active counts the sessions replied in within this many
    # seconds: set it to the sessions plugin's idle_timeout when you change that.
    active_window: float = Field(1800.0, gt=0)

    @field_validator("listen")
    @classmethod
    def _host_and_port(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        host, sep, port = value.strip().rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError(f"expected host:port (e.g. 127.0.0.1:9108), got {value!r}")
        return value.strip()

    def address(self) -> tuple[str, int]:
        assert self.listen is not None
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]"), int(port)
