"""Scope keys: who shares a conversation's context (G8 isolation).

==================  =======================================  =============================
scope               key                                      shares context
==================  =======================================  =============================
``user_channel``    ``g:<guild>:c:<channel>:u:<user>``       one user in one channel
``channel``         ``g:<guild>:c:<channel>``                everyone in one channel
``thread``          ``g:<guild>:t:<thread>``                 everyone in one thread
(any, in a DM)      ``dm:<user>``                            one user with the bot
==================  =======================================  =============================

A thread is a channel of its own: with ``user_channel`` or ``channel`` a
message in a thread uses the thread's id as ``<channel>``, so a thread never
shares context with its parent channel. With ``thread`` a message outside
any thread falls back to ``user_channel`` (one user in one channel): the
thread scope is for servers that open a thread per conversation, and
nothing is shared more widely than configured.

Ids are escaped (``%`` → ``%25``, ``:`` → ``%3A``) so that no id can forge
another scope's key (a user id ``"1:c:2"`` stays one field).
"""

from __future__ import annotations

from core.models import IncomingMessage

SHARED_SCOPES = frozenset({"channel", "thread"})


def _part(value: str | None) -> str:
    return (value or "").replace("%", "%25").replace(":", "%3A")


def scope_key(message: IncomingMessage, scope: str) -> str:
    """The scope key of ``message`` under ``scope``."""
    if message.is_dm or message.guild_id is None:
        return f"dm:{_part(message.author_id)}"
    guild = _part(message.guild_id)
    if scope == "thread" and message.thread_id:
        return f"g:{guild}:t:{_part(message.thread_id)}"
    channel = _part(message.thread_id or message.channel_id)
    if scope == "channel":
        return f"g:{guild}:c:{channel}"
    return f"g:{guild}:c:{channel}:u:{_part(message.author_id)}"


def is_shared(key: str) -> bool:
    """Whether a scope key is shared by several users (not per user)."""
    return not key.startswith("dm:") and ":u:" not in key
