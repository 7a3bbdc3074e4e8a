"""The ``[memory]`` section, overridable by environment variables."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import SettingsConfigDict

from core.settings import PluginSettings

DEFAULT_REDIS_URL = "fakeredis://default"


class MemorySettings(PluginSettings):
    """Memory plugin settings.

    ``database_url`` and ``redis_url`` are secrets (they may hold passwords):
    they come from ``DATABASE_URL`` / ``REDIS_URL`` (or ``MEMORY_*``) and are
    never printed whole.
    """

    model_config = SettingsConfigDict(env_prefix="MEMORY_", env_file=".env", extra="ignore", populate_by_name=True)

    database_url: SecretStr | None = Field(
        None, validation_alias=AliasChoices("database_url", "MEMORY_DATABASE_URL", "DATABASE_URL")
    )
    redis_url: SecretStr | None = Field(None, validation_alias=AliasChoices("redis_url", "MEMORY_REDIS_URL", "REDIS_URL"))
    # Braces are Redis Cluster hash tags: the memory puts each session's id
    # (each scope's key) between them, so the prefix may not hold any.
    key_prefix: str = Field("bot:", pattern=r"^[^{}]*$")
    # Hot window kept per session in Redis.
    window_size: int = Field(200, gt=0, le=100_000)
    # Idle sessions' cache keys expire after this many seconds.
    cache_ttl: int = Field(7 * 24 * 3600, gt=0)
    redis_timeout: float = Field(0.25, gt=0)
    # Per database call on the message path; bulk work gets db_slow_timeout.
    db_timeout: float = Field(0.5, gt=0)
    db_slow_timeout: float = Field(60.0, gt=0)
    probe_interval: float = Field(0.5, gt=0)
    spool_dir: Path | None = None
    max_content_bytes: int = Field(64 * 1024, gt=0)
    # A claim on a message (database clock) and a lease on a session (Redis's
    # clock) expire this long after their holder last renewed them; holders
    # renew every claim_ttl / 3 while they work, so a slow model call is
    # never taken over, and a standby takes over from a dead or frozen holder
    # about this long after it stopped (docs/MEMORY.md, A2-A3, L1).
    claim_ttl: float = Field(6.0, gt=0)
    # A message that nothing can arbitrate (both backends down) is answered
    # at once only while it is at most this old (bot-clock seconds since its
    # timestamp): an older one is a backlog another instance may have
    # answered, so it waits until a backend can say (A7).
    unarbitrated_max_age: float = Field(10.0, gt=0)
    db_threads: int = Field(4, gt=0, le=64)
    # A save that only moves a session's last_active_at (every message
    # touches its session) reaches the database at most this often per
    # session and instance (bot-clock seconds); Redis gets every touch. A
    # session read back from the database takes its activity from its newest
    # stored message too, so no idle timeout is computed from a lagging row.
    # 0 writes every touch.
    session_touch_interval: float = Field(30.0, ge=0)
    # Retention (plugins/memory/retention.py): "guild:<id>" (or "dm") -> days
    # to keep messages; older ones are deleted everywhere, facts too unless
    # pinned. Empty: everything is kept. Run every retention_interval seconds.
    retention: dict[str, float] = Field(default_factory=dict)
    retention_interval: float = Field(3600.0, gt=0)

    @field_validator("retention")
    @classmethod
    def _retention_keys(cls, value: dict[str, float]) -> dict[str, float]:
        for key, days in value.items():
            if key != "dm" and not re.fullmatch(r"guild:[^:\s]+", key):
                raise ValueError(f"key {key!r} must look like 'guild:<id>' or be 'dm'")
            if not days > 0:
                raise ValueError(f"{key}: days must be more than 0, not {days}")
        return value
