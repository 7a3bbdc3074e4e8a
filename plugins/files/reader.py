"""Reading text-like attachments safely into the conversation record.

A file a user sends is read when it looks like text (its name ends with one
of ``extensions``, or its content type is ``text/*``, JSON or XML), it is at
most ``max_bytes``, and its bytes decode as UTF-8 (a UTF-8 or UTF-16 byte
order mark is honoured). A file with NUL bytes is binary and is not read.
Control characters other than tab and newline are dropped (they mean
nothing to a model and could drive a terminal that prints the record).
What is read is cut at ``max_chars`` per file and ``max_message_chars`` per
message, and the cut is written at the end of the text, so the model knows
it saw part of the file. A file that is not read keeps a one-line
``description`` saying why; the message is never refused for it.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass, replace

from core.models import Attachment

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
TEXT_TYPES = ("application/json", "application/xml", "application/x-yaml", "application/yaml", "application/toml",
              "application/javascript", "application/x-sh", "application/sql")


@dataclass(frozen=True, slots=True)
class Limits:
    max_bytes: int
    max_chars: int
    max_message_chars: int
    extensions: frozenset[str]


class NotText(Exception):
    """The file is not read; the text says why (shown as its description)."""


def is_text_like(attachment: Attachment, extensions: frozenset[str]) -> bool:
    if attachment.is_image:
        return False
    name = attachment.filename.lower()
    ending = name.rsplit(".", 1)[-1] if "." in name else name
    content_type = attachment.content_type.lower()
    return ending in extensions or content_type.startswith("text/") or content_type in TEXT_TYPES


def decode(data: bytes) -> str:
    """The text of ``data``; raises :class:`NotText` when it is not text."""
    if data.startswith(codecs.BOM_UTF8):
        encoding, data = "utf-8", data[len(codecs.BOM_UTF8):]
    elif data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        encoding = "utf-16"
    else:
        encoding = "utf-8"
        if b"\x00" in data:
            raise NotText("binary content")
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError:
        raise NotText(f"not {encoding.upper()} text") from None
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return _CONTROL.sub("", text)


def cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit]}\n[… cut: the first {limit:,} of {len(text):,} characters]"


def read_one(attachment: Attachment, limits: Limits, room: int) -> Attachment:
    """``attachment`` with its ``text`` (or a ``description`` saying why it
    was not read), as a new object."""
    data = attachment.data
    try:
        if data is None:
            raise NotText("not downloaded")
        if len(data) > limits.max_bytes:
            raise NotText(f"{len(data):,} bytes, more than the {limits.max_bytes:,} read")
        if room <= 0:
            raise NotText("the message's other files filled the room for text")
        text = cut(decode(data), min(limits.max_chars, room))
    except NotText as why:
        return replace(attachment, description=f"not read: {why}")
    return replace(attachment, text=text, size=attachment.size or len(data))


def read_texts(attachments: list[Attachment], limits: Limits) -> list[Attachment] | None:
    """The attachments with the text-like ones read, or ``None`` when none
    is text-like (nothing to change)."""
    if not any(is_text_like(a, limits.extensions) and a.text is None for a in attachments):
        return None
    room = limits.max_message_chars
    result = []
    for attachment in attachments:
        if is_text_like(attachment, limits.extensions) and attachment.text is None:
            attachment = read_one(attachment, limits, room)
            room -= len(attachment.text or "")
        result.append(attachment)
    return result
