"""discord.py objects → the core's transport-neutral models.

Hooks never see discord.py objects: the transport turns a ``discord.Message``
or ``discord.Interaction`` into a :class:`core.models.IncomingMessage` here.
"""

from __future__ import annotations

import logging
import mimetypes
import re
from collections.abc import Iterable

import discord

from core.models import Attachment, IncomingMessage, MessageDeletion, MessageEdit, Quote

log = logging.getLogger("plugins.discord")

TRANSPORT = "discord"
# The permissions the core's command checks look at (core.commands.is_allowed).
CHECKED_PERMISSIONS = ("manage_messages", "administrator")


def trigger(
    message: discord.Message, bot_user_id: int, channels: Iterable[int], thread_parents: Iterable[int] = ()
) -> str | None:
    """Why the bot should answer ``message`` (``"dm"``, ``"mention"``,
    ``"reply"``, ``"channel"``), or ``None`` to stay silent. Messages from
    bots (itself included) and webhooks never trigger. ``thread_parents``:
    channels whose threads are answered whole (the bot opens one per
    conversation there)."""
    if message.author.bot or message.author.id == bot_user_id or message.webhook_id is not None:
        return None
    if message.guild is None:
        return "dm"
    if any(user.id == bot_user_id for user in message.mentions):
        return "mention"
    ref = message.reference
    if ref is not None:
        resolved = ref.resolved if isinstance(ref.resolved, discord.Message) else ref.cached_message
        if resolved is not None and resolved.author.id == bot_user_id:
            return "reply"
    wanted = set(channels)
    if wanted and (message.channel.id in wanted or parent_id(message.channel) in wanted):
        return "channel"
    if parent_id(message.channel) in set(thread_parents):
        return "channel"
    return None


def parent_id(channel: object) -> int | None:
    if isinstance(channel, discord.Thread):
        return channel.parent_id
    return None


def clean_content(content: str, bot_user_id: int, bot_name: str) -> str:
    """Drop the leading ``@bot`` that addressed the bot; a mention of it
    elsewhere reads as ``@name``."""
    mention = re.compile(rf"<@!?{bot_user_id}>")
    content = re.sub(rf"^\s*{mention.pattern}[\s,:]*", "", content)
    return mention.sub(f"@{bot_name}", content).strip()


def permissions_of(channel: object, author: object) -> frozenset[str]:
    """The author's checked permissions in ``channel`` (empty in DMs)."""
    if not isinstance(author, discord.Member) or not hasattr(channel, "permissions_for"):
        return frozenset()
    try:
        perms = channel.permissions_for(author)  # type: ignore[attr-defined]
    except Exception as exc:  # noqa: BLE001 - a partial channel cannot say; the user just gets fewer rights
        log.debug("cannot compute permissions in %s: %s", channel, exc)
        return frozenset()
    return _names(perms)


def roles_of(author: object) -> frozenset[str]:
    """The author's role ids in the guild (empty in DMs)."""
    if not isinstance(author, discord.Member):
        return frozenset()
    return frozenset(str(r.id) for r in author.roles if not r.is_default())


def _names(perms: discord.Permissions) -> frozenset[str]:
    return frozenset(name for name in CHECKED_PERMISSIONS if getattr(perms, name, False))


async def read_attachments(message: discord.Message, max_bytes: int) -> list[Attachment]:
    """The message's files as core attachments: bytes read when at most
    ``max_bytes``, else (or when the download fails) only the URL."""
    result = []
    for item in message.attachments:
        content_type = item.content_type or mimetypes.guess_type(item.filename)[0] or "application/octet-stream"
        data = None
        if item.size <= max_bytes:
            try:
                data = await item.read()
            except (discord.HTTPException, discord.NotFound, OSError) as exc:
                log.warning("could not download attachment %s (%s bytes): %s", item.filename, item.size, exc)
        else:
            log.info("attachment %s is %s bytes (limit %s): keeping its URL only", item.filename, item.size, max_bytes)
        result.append(
            Attachment(
                filename=item.filename,
                content_type=content_type.split(";")[0].strip(),
                size=item.size,
                url=item.url,
                data=data,
                width=item.width,
                height=item.height,
                description=item.description,
            )
        )
    return result


def quote_of(message: discord.Message, bot_user_id: int, bot_name: str) -> Quote | None:
    """The message ``message`` replies to, when Discord sent it along and it
    is in the same channel (a context never reaches into another channel)."""
    ref = message.reference
    if ref is None or ref.message_id is None or ref.channel_id != message.channel.id:
        return None
    resolved = ref.resolved if isinstance(ref.resolved, discord.Message) else ref.cached_message
    if resolved is None:
        return None
    from_bot = resolved.author.id == bot_user_id
    inner = resolved.reference
    return Quote(
        id=str(resolved.id),
        author_id="bot" if from_bot else str(resolved.author.id),
        author_name=resolved.author.display_name,
        content=clean_content(resolved.content, bot_user_id, bot_name),
        timestamp=resolved.created_at.timestamp(),
        from_bot=from_bot,
        answers_id=str(inner.message_id) if from_bot and inner is not None and inner.message_id else None,
    )


def describe_embed(embed: discord.Embed) -> str:
    """An embed as text, for a message that has nothing else."""
    parts = [p for p in (embed.title, embed.description, embed.url) if p]
    return f"[embed: {' - '.join(parts) if parts else 'no text'}]"


def _where(channel: object) -> tuple[str, str | None]:
    """(channel id, thread id): a thread's messages carry the parent channel
    and the thread separately, so session scopes can choose."""
    thread_parent = parent_id(channel)
    channel_id = str(getattr(channel, "id", ""))
    if thread_parent is not None:
        return str(thread_parent), channel_id
    return channel_id, None


def to_incoming(
    message: discord.Message,
    *,
    bot_user_id: int,
    bot_name: str,
    owner_ids: Iterable[str],
    attachments: list[Attachment],
) -> IncomingMessage:
    """Convert a Discord message the bot will answer."""
    content = clean_content(message.content, bot_user_id, bot_name)
    if not content and message.stickers:
        content = " ".join(f"[sticker: {s.name}]" for s in message.stickers)
    if not content and message.embeds:
        content = "\n".join(describe_embed(e) for e in message.embeds)
    channel_id, thread_id = _where(message.channel)
    ref = message.reference
    return IncomingMessage(
        id=str(message.id),
        author_id=str(message.author.id),
        author_name=message.author.display_name,
        channel_id=channel_id,
        thread_id=thread_id,
        guild_id=str(message.guild.id) if message.guild else None,
        content=content,
        timestamp=message.created_at.timestamp(),
        transport=TRANSPORT,
        is_dm=message.guild is None,
        author_is_bot=message.author.bot,
        mentions_bot=any(u.id == bot_user_id for u in message.mentions),
        reply_to_id=str(ref.message_id) if ref is not None and ref.message_id else None,
        attachments=attachments,
        permissions=permissions_of(message.channel, message.author),
        is_owner=str(message.author.id) in set(owner_ids),
        quoted=quote_of(message, bot_user_id, bot_name),
        author_roles=roles_of(message.author),
    )


def interaction_to_incoming(
    interaction: discord.Interaction, *, content: str, owner_ids: Iterable[str]
) -> IncomingMessage:
    """Convert a slash command invocation (its id is the interaction id)."""
    channel_id, thread_id = _where(interaction.channel) if interaction.channel else (str(interaction.channel_id), None)
    in_guild = interaction.guild_id is not None
    return IncomingMessage(
        id=str(interaction.id),
        author_id=str(interaction.user.id),
        author_name=interaction.user.display_name,
        channel_id=channel_id,
        thread_id=thread_id,
        guild_id=str(interaction.guild_id) if in_guild else None,
        content=content,
        timestamp=interaction.created_at.timestamp(),
        transport=TRANSPORT,
        is_dm=not in_guild,
        author_is_bot=interaction.user.bot,
        # Discord computes the member's permissions in the channel for us.
        permissions=_names(interaction.permissions) if in_guild else frozenset(),
        is_owner=str(interaction.user.id) in set(owner_ids),
        author_roles=roles_of(interaction.user),
    )


def to_edit(message: discord.Message, *, bot_user_id: int, bot_name: str) -> MessageEdit:
    """A user's edit of ``message`` (its new state)."""
    edited = message.edited_at or message.created_at
    channel_id, _thread = _where(message.channel)
    return MessageEdit(
        id=str(message.id),
        author_id=str(message.author.id),
        channel_id=channel_id,
        guild_id=str(message.guild.id) if message.guild else None,
        content=clean_content(message.content, bot_user_id, bot_name),
        edited_at=edited.timestamp(),
        transport=TRANSPORT,
        author_is_bot=message.author.bot or message.author.id == bot_user_id,
    )


def to_deletion(ids: Iterable[int], channel_id: int, guild_id: int | None, now: float) -> MessageDeletion:
    return MessageDeletion(
        ids=[str(i) for i in ids],
        channel_id=str(channel_id),
        guild_id=str(guild_id) if guild_id is not None else None,
        deleted_at=now,
        transport=TRANSPORT,
    )
