"""A reply as Discord messages: text split at 2,000 characters, files
attached (at most 10 a message), mentions off unless a plugin asks, and the
nonce that makes a retried post land once."""

from __future__ import annotations

import hashlib
import io
from typing import Any, Optional

import discord

from core.models import Reply
from plugins.discord.split import split_message

FILES_PER_MESSAGE = 10


def _nonce(message_id: Any, index: int) -> int:
    """The same reply part to the same message always gets the same nonce:
    Discord (``enforce_nonce``) then returns the first message instead of
    posting a second one when a send is retried."""
    digest = hashlib.sha256(f"{message_id}:{index}".encode()).hexdigest()
    return int(digest[:15], 16)


Part = tuple[Optional[str], list[Any]]  # (text, attachments with data)


def reply_parts(reply: Reply) -> list[Part]:
    """The messages a reply becomes: text split at 2,000 characters, files
    (at most 10 a message) on the last text part and after it."""
    text = reply.text()
    links = [a.url for a in reply.attachments if a.data is None and a.url]
    if links:
        text = "\n".join([text, *links]) if text else "\n".join(links)
    chunks: list[str | None] = list(split_message(text))
    files = [a for a in reply.attachments if a.data is not None]
    groups = [files[i:i + FILES_PER_MESSAGE] for i in range(0, len(files), FILES_PER_MESSAGE)]
    if not chunks and not groups:
        chunks = ["(empty reply)"]
    if not chunks:
        chunks = [None]
    parts: list[Part] = [(chunk, []) for chunk in chunks]
    if groups:
        parts[-1] = (parts[-1][0], groups[0])
        parts.extend((None, group) for group in groups[1:])
    return parts


def allowed_mentions(reply: Reply) -> discord.AllowedMentions:
    if reply.allow_mentions:
        # Even a plugin that wants to ping people never pings @everyone or roles.
        return discord.AllowedMentions(everyone=False, roles=False, users=True, replied_user=False)
    return discord.AllowedMentions.none()


def to_files(attachments: list[Any]) -> list[discord.File]:
    return [discord.File(io.BytesIO(a.data), filename=a.filename, description=a.description) for a in attachments]
