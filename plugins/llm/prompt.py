"""Turning a :class:`core.models.Context` into chat-completions messages.

The system prompt comes first, then the context window in conversation order:
the users' messages as ``user``, the bot's as ``assistant``. When more than
one person speaks in the window, each user message is prefixed with its
author's name so the model can tell them apart. Images become ``image_url``
parts for vision models and a short description in text for the others.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Awaitable, Callable
from typing import Any

from core.models import Attachment, Context, MessageRecord, Recalled, Role

# Replies the plugin sends when the provider fails start with this, so the
# next request does not feed the model its own error messages.
FAILURE_MARK = "⚠️"

# Returns an image's bytes from the images plugin's media store, or None.
MediaLoader = Callable[[Attachment], Awaitable[bytes | None]]


def describe_attachment(attachment: Attachment) -> str:
    """A one-line text stand-in for an attachment."""
    kind = "image" if attachment.is_image else "file"
    details = []
    if attachment.width and attachment.height:
        details.append(f"{attachment.width}x{attachment.height}")
    if attachment.description:
        details.append(attachment.description)
    extra = f" ({', '.join(details)})" if details else ""
    return f"[{kind}: {attachment.filename}{extra}]"


def file_text(attachment: Attachment) -> str:
    """A text file read into the record, with its name around it."""
    return f"--- file: {attachment.filename} ---\n{attachment.text}\n--- end of {attachment.filename} ---"


def is_failure_reply(record: MessageRecord) -> bool:
    return record.role is Role.BOT and record.content.startswith(FAILURE_MARK)


def speakers(messages: list[MessageRecord]) -> set[str]:
    return {m.author_id for m in messages if m.role is Role.USER}


def _text_of(record: MessageRecord, name_prefix: bool, describe_images: bool) -> str:
    text = record.content
    if name_prefix and record.role is Role.USER:
        text = f"{record.author_name or record.author_id}: {text}"
    notes = [
        file_text(a) if a.text is not None else describe_attachment(a)
        for a in record.attachments
        if describe_images or not a.is_image
    ]
    if notes:
        text = "\n".join([text, *notes]) if text else "\n".join(notes)
    return text


async def _image_url(attachment: Attachment, max_bytes: int, load_media: MediaLoader | None) -> str | None:
    data = attachment.data
    if data is None and attachment.sha256 and load_media is not None:
        data = await load_media(attachment)
    if data is not None:
        if len(data) > max_bytes:
            return None
        encoded = base64.b64encode(data).decode("ascii")
        return f"data:{attachment.content_type};base64,{encoded}"
    if attachment.url and attachment.url.startswith(("https://", "http://")):
        return attachment.url
    return None


RECALLED_HEADER = (
    "Recalled from earlier conversations with this user (not part of the conversation below; "
    "use only if relevant):"
)


def recalled_lines(recalled: list[Recalled]) -> str:
    """The recalled facts and messages, each marked with its date."""
    lines = [RECALLED_HEADER]
    for item in recalled:
        when = time.strftime("%Y-%m-%d", time.gmtime(item.timestamp))
        what = "fact" if item.kind == "fact" else "they said"
        lines.append(f"- [{when}] {what}: {item.content}")
    return "\n".join(lines)


async def build_messages(
    context: Context,
    system_prompt: str,
    *,
    vision: bool = False,
    max_image_bytes: int = 4_000_000,
    load_media: MediaLoader | None = None,
) -> list[dict[str, Any]]:
    """The ``messages`` array for a chat-completions request."""
    system = system_prompt
    if context.recalled:
        system += "\n\n" + recalled_lines(context.recalled)
    if context.notes:
        system += "\n\n" + "\n".join(f"Note: {note}." for note in context.notes)
    out: list[dict[str, Any]] = [{"role": "system", "content": system}]
    window = [m for m in context.messages if not is_failure_reply(m)]
    name_prefix = len(speakers(window)) > 1
    for record in window:
        role = {Role.USER: "user", Role.BOT: "assistant", Role.SYSTEM: "system"}[record.role]
        images = [a for a in record.attachments if a.is_image]
        if not (vision and images and record.role is Role.USER):
            out.append({"role": role, "content": _text_of(record, name_prefix, describe_images=True)})
            continue
        parts: list[dict[str, Any]] = []
        described: list[Attachment] = []
        image_parts: list[dict[str, Any]] = []
        for attachment in images:
            url = await _image_url(attachment, max_image_bytes, load_media)
            if url is None:
                described.append(attachment)
            else:
                image_parts.append({"type": "image_url", "image_url": {"url": url}})
        text = _text_of(record, name_prefix, describe_images=False)
        text = "\n".join([text, *(describe_attachment(a) for a in described)]).strip()
        if text:
            parts.append({"type": "text", "text": text})
        parts.extend(image_parts)
        out.append({"role": role, "content": parts})
    return out
