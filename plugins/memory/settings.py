"""The ``[memory]`` section, overridable by environment variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr
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
    key_prefix: str = "bot:"
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
    # Claims on incoming messages and leases on sessions expire (bot clock).
    claim_ttl: float = Field(60.0, gt=0)
    lease_ttl: float = Field(60.0, gt=0)
    # A message that nothing can arbitrate between instances (both backends
    # down, or a Redis claim the database cannot check after Redis may have
    # lost it) is answered only while it is at most this old (bot-clock
    # seconds since its timestamp). Older, it is a backlog (this process was
    # paused, or the message waited elsewhere) that another instance has most
    # likely answered already: staying silent beats answering twice.
    unarbitrated_max_age: float = Field(10.0, gt=0)
    # A message handled this long (bot-clock seconds) after its timestamp is
    # late (a redelivery, a backlog): before answering it an instance waits
    # (up to 2 s) for every other live instance to report that it holds no
    # reply to it, and stays silent if one does or does not report (see
    # plugins/memory/reports.py).
    late_message_age: float = Field(2.0, ge=0)
    # An instance that has not reported for this long (bot-clock seconds) is
    # gone and not waited for. It bounds the stalls (a paused process, a
    # frozen VM that still holds a reply) that cannot cause a second answer;
    # the price: after an instance dies without a clean stop, late messages
    # stay unanswered for this long, unless it comes back under the same
    # instance id (BOT_INSTANCE_ID), which replaces its report at once.
    # Five minutes: the chaos soak pauses a process twice back to back now
    # and then (about 200 bot-seconds) between sending a reply and storing
    # it; at 120 s the others counted it gone and answered again.
    instance_timeout: float = Field(300.0, gt=0)
    # How often (real seconds) an instance writes its report.
    report_interval: float = Field(0.5, gt=0)
    # How long (real seconds) an instance waits for another's claim or lease.
    claim_wait: float = Field(10.0, ge=0)
    lease_wait: float = Field(10.0, ge=0)
    db_threads: int = Field(4, gt=0, le=64)
    # A save that only moves a session's last_active_at (every message
    # touches its session) reaches the database at most this often per
    # session and instance (bot-clock seconds); Redis gets every touch. A
    # session read back from the database takes its activity from its newest
    # stored message too, so no idle timeout is computed from a lagging row.
    # 0 writes every touch.
    session_touch_interval: float = Field(30.0, ge=0)
