"""Settings of the recall plugin: the ``[recall]`` table, environment
variables ``RECALL_*`` overriding it (see README.md in this folder)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from core.errors import ConfigError
from core.settings import PluginSettings

Share = Literal["place", "everywhere"]
Extract = Literal["auto", "rules", "model"]


class RecallSettings(PluginSettings):
    """The ``[recall]`` table; ``RECALL_<KEY>`` environment variables win."""

    model_config = SettingsConfigDict(env_prefix="RECALL_", env_file=".env", extra="ignore")

    # "place": a guild's channels recall what the user said in that guild, a
    # DM what they said in DMs; "everywhere": both ways (a DM's content may
    # then show in a guild channel's reply).
    share: Share = "place"
    max_messages: int = Field(3, ge=0, le=20)
    max_facts: int = Field(10, ge=0, le=50)
    max_tokens: int = Field(300, ge=0)
    time_budget: float = Field(0.2, gt=0, le=5)
    facts: bool = True
    # "auto": the model finds facts when the llm plugin has one configured,
    # the offline rules otherwise (and whenever the model's answer is
    # unusable); "rules": never ask the model.
    extract: Extract = "auto"
    extract_timeout: float = Field(20.0, gt=0)
    # Semantic recall through the provider's /embeddings endpoint (llm
    # plugin's base URL and key): every user message gets a vector, and a
    # new message's nearest ones are recalled first. Off by default.
    semantic: bool = False
    embeddings_model: str = "text-embedding-3-small"
    min_similarity: float = Field(0.3, ge=-1, le=1)


def load(settings: Any) -> RecallSettings:
    try:
        return settings.for_plugin("recall", RecallSettings)
    except ConfigError:
        raise
    except ValueError as exc:
        raise ConfigError(f"[recall]: {exc}") from None
