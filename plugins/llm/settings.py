"""The ``[llm]`` settings: where the model is, how to talk to it, and who it is.

Everything may come from the TOML section ``[llm]`` or from ``LLM_*``
environment variables (the environment wins). The API key is the exception:
it comes from the environment (``LLM_API_KEY``) only, never from a file.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import SettingsConfigDict
from yarl import URL

from core.errors import ConfigError
from core.settings import PluginSettings, load_plugin_settings

# Discord shows 2000 characters per message; the transport splits longer
# replies. Far beyond that a reply is a runaway model, not an answer.
DEFAULT_MAX_REPLY_CHARS = 12_000


class LlmSettings(PluginSettings):
    """Settings of the reply plugin (``[llm]``, env prefix ``LLM_``).

    With no ``base_url`` the plugin answers with its offline stand-in: no
    network, no model, but it visibly uses the conversation's context.
    """

    model_config = SettingsConfigDict(env_prefix="LLM_", env_file=".env", extra="ignore")

    base_url: str | None = Field(
        None,
        description="OpenAI-compatible API root, e.g. https://api.openai.com/v1, http://127.0.0.1:11434/v1 "
        "(Ollama), or an Azure deployment URL with ?api-version=...; unset = offline stand-in",
    )
    model: str = "gpt-4o-mini"
    api_key: SecretStr | None = Field(None, description="environment only (LLM_API_KEY)")
    auth_header: str = Field(
        "Authorization",
        description="'Authorization' sends 'Bearer <key>'; any other name (Azure: 'api-key') sends the key as is",
    )
    api_version: str | None = Field(None, description="added as ?api-version= (Azure OpenAI)")
    system_prompt: str | None = Field(None, description="this bot's persona; unset = [bot] system_prompt")
    guild_prompts: dict[str, str] = Field(default_factory=dict, description="guild id -> persona for that server")
    temperature: float | None = Field(0.7, ge=0, le=2)
    max_tokens: int | None = Field(800, gt=0)
    connect_timeout: float = Field(5.0, gt=0)
    read_timeout: float = Field(60.0, gt=0, description="longest silence while waiting for the provider")
    total_timeout: float = Field(120.0, gt=0, description="longest wait for a reply, all attempts included")
    retries: int = Field(2, ge=0, le=10, description="extra attempts after the first on 429/5xx/connection errors")
    backoff: float = Field(0.5, ge=0, description="first retry delay in seconds; doubles each attempt, with jitter")
    max_retry_wait: float = Field(30.0, ge=0, description="a Retry-After longer than this is not waited for")
    stream: bool = False
    vision: bool = Field(False, description="the model accepts image_url parts")
    max_image_bytes: int = Field(4_000_000, gt=0, description="larger images are described, not inlined")
    summaries: bool = Field(False, description="fold messages that left the window into a rolling summary")
    summary_every: int = Field(10, gt=0, description="summarise once this many messages have left the window")
    summary_words: int = Field(200, gt=0)
    summary_lookback: int = Field(200, gt=0, description="how far back past the window to look for unsummarised messages")
    max_reply_chars: int = Field(DEFAULT_MAX_REPLY_CHARS, gt=0)
    max_response_bytes: int = Field(8_000_000, gt=0, description="a provider body larger than this is refused")

    @field_validator("base_url", "api_version", "system_prompt", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("api_key", mode="before")
    @classmethod
    def _blank_key_is_unset(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @property
    def offline(self) -> bool:
        return self.base_url is None

    def persona(self, guild_id: str | None, context_prompt: str, bot_default: str | None = None) -> str:
        """The system prompt for a conversation in ``guild_id``.

        In order: this plugin's persona for the guild (``guild_prompts``);
        the context's prompt when something upstream (the sessions plugin's
        per-guild or per-channel overrides) made it differ from the bot's
        default; this plugin's bot-wide ``system_prompt``; the context's.
        """
        if guild_id is not None and guild_id in self.guild_prompts:
            return self.guild_prompts[guild_id]
        if bot_default is not None and context_prompt != bot_default:
            return context_prompt
        return self.system_prompt or context_prompt

    def api_key_value(self) -> str | None:
        return self.api_key.get_secret_value() if self.api_key is not None else None


def check_base_url(raw: str) -> URL:
    """Parse ``LLM_BASE_URL`` or raise :class:`ConfigError` saying what is
    wrong with it, without echoing it (it may hold credentials)."""
    try:
        url = URL(raw.strip())
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"LLM_BASE_URL is not a valid URL ({_safe_reason(exc, raw)})") from None
    if url.scheme not in ("http", "https"):
        shown = f"{url.scheme!r}" if url.scheme and len(url.scheme) < 12 else "none"
        raise ConfigError(
            f"LLM_BASE_URL must start with http:// or https:// (scheme found: {shown}); "
            "e.g. https://api.openai.com/v1 or http://127.0.0.1:11434/v1"
        )
    try:
        host, port = url.host, url.port
    except ValueError:
        raise ConfigError("LLM_BASE_URL has an invalid port") from None
    if not host:
        raise ConfigError("LLM_BASE_URL has no host name; e.g. http://127.0.0.1:11434/v1")
    if port is not None and not 0 < port < 65536:
        raise ConfigError("LLM_BASE_URL has an invalid port")
    if url.fragment:
        raise ConfigError("LLM_BASE_URL must not contain a #fragment")
    return url


def _safe_reason(exc: Exception, raw: str) -> str:
    """The parser's reason, unless it quotes any part of the URL."""
    reason = str(exc)
    pieces = [p for p in re.split(r"[:/@?#&=\[\]]+", raw) if len(p) >= 4]
    if not reason or len(reason) > 80 or any(p in reason for p in pieces):
        return type(exc).__name__
    return reason.lower()


def load_llm_settings(bot_settings: Any) -> LlmSettings:
    """Read ``[llm]`` plus ``LLM_*`` from a :class:`core.settings.Settings`.

    Refuses an API key in the section: secrets come from the environment.
    """
    section = bot_settings.section("llm")
    if section.get("api_key"):
        raise ConfigError("[llm] api_key: secrets come from the environment only; set LLM_API_KEY instead")
    settings = load_plugin_settings(LlmSettings, section, where=bot_settings._where("llm"))
    if settings.base_url is not None:
        check_base_url(settings.base_url)
    return settings
