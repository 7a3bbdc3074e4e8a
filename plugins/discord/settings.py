"""The ``[discord]`` settings (environment variables ``DISCORD_*`` win).

The token is not here: it is ``DISCORD_TOKEN``, read by the core from the
environment only (``bot.settings.env.discord_token``).

``message_content_intent`` asks Discord for the privileged *Message Content*
intent, without which Discord blanks the text of guild messages that do not
mention the bot (DMs and mentions still work). It must also be switched on
for the application in the Discord developer portal (Bot → Privileged
Gateway Intents → Message Content Intent); if it is not, Discord closes the
connection with code 4014 and the bot stops with an error saying so. Turn
the setting off to run with mentions and DMs only.

``members_intent`` asks for the privileged *Server Members* intent, the
only way to hear a member leave a server (``forget_on_leave``). It too must
be enabled in the portal (Server Members Intent), or Discord closes with
4014.
"""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from core.settings import PluginSettings


class DiscordSettings(PluginSettings):
    """Settings of the Discord transport."""

    model_config = SettingsConfigDict(env_prefix="DISCORD_", env_file=".env", extra="ignore")

    # Channels where the bot answers every message, not only mentions/replies
    # (threads under them too). Needs message_content_intent.
    channels: list[int] = Field(default_factory=list)
    # Busy channels where each new conversation opens a thread: a message
    # that addresses the bot there starts a thread (from that message), the
    # reply goes in it, and every message in threads under these channels is
    # answered. Pair with [sessions] scope = "thread" to share a thread's
    # context among its members.
    thread_channels: list[int] = Field(default_factory=list)
    # Sync slash commands to these guilds (instant) instead of globally.
    guild_ids: list[int] = Field(default_factory=list)
    # Sharding: shard_count alone runs every shard in this process;
    # shard_ids picks the shards this process runs (several processes split
    # the guilds between them).
    shard_count: int | None = Field(None, ge=1)
    shard_ids: list[int] | None = None
    message_content_intent: bool = True
    # Ask for the privileged Server Members intent, so the bot hears members
    # leave (GUILD_MEMBER_REMOVE): needed only by servers that set
    # forget_on_leave. Off by default: it must be enabled in the developer
    # portal too, and a bot in 100+ servers needs Discord's approval for it.
    members_intent: bool = False
    # Attachments larger than this are not downloaded (only their URL is kept).
    max_attachment_bytes: int = Field(10 * 1024 * 1024, ge=0)
    sync_commands: bool = True
    # Show a reply while it is written (when the reply plugin streams it,
    # e.g. [llm] stream = true): post the first words, then edit the message
    # at most once per stream_edit_interval seconds (Discord rate-limits edits).
    stream_replies: bool = True
    stream_edit_interval: float = Field(1.0, ge=0.2)
    # Extra attempts, after discord.py's own retries, for a reply that failed
    # with a 429 / 5xx / network error.
    send_retries: int = Field(3, ge=0)
    send_retry_delay: float = Field(1.0, ge=0)
    # Seconds discord.py waits after the last GUILD_CREATE before on_ready.
    guild_ready_timeout: float = Field(2.0, ge=0)
    # Only for tests against a fake Discord (DISCORD_API_BASE, e.g.
    # http://127.0.0.1:8080/api/v10; DISCORD_GATEWAY_URL, e.g.
    # ws://127.0.0.1:8080/; DISCORD_CDN_BASE). Unset in production.
    api_base: str | None = None
    gateway_url: str | None = None
    cdn_base: str | None = None

    @field_validator("api_base", "gateway_url", "cdn_base")
    @classmethod
    def _no_trailing_space(cls, value: str | None) -> str | None:
        return value.strip() or None if value else None

    @model_validator(mode="after")
    def _shards_consistent(self) -> DiscordSettings:
        if self.shard_ids is not None:
            if self.shard_count is None:
                raise ValueError("shard_ids needs shard_count (the total number of shards)")
            bad = [s for s in self.shard_ids if not 0 <= s < self.shard_count]
            if bad:
                raise ValueError(f"shard_ids {bad} are outside 0..{self.shard_count - 1}")
            if not self.shard_ids:
                raise ValueError("shard_ids is empty: list at least one shard")
        return self
