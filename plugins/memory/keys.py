"""The memory's Redis key names, in one place.

Every key about one session carries the session id as a Redis Cluster hash
tag, and every key about one scope carries the scope key: ``w:<epoch>:{<session>}``,
``c:{<session>}``, ``s:<epoch>:{<scope>}``, ``lease:{<scope>}``,
``fence:{<scope>}``. A Cluster hashes only the text between the braces, so
all the keys one script or one operation touches sit in one slot, and each
runs on one node (docs/MEMORY.md, R3). On one server the braces are plain
characters. The shared keys (``epoch``, ``outbox``, ``claim:<message>``) are
each touched alone, never in a script with another key.

The prefix (``key_prefix``) may not hold braces, or it would be the tag.
"""

from __future__ import annotations


def glob_escape(text: str) -> str:
    """Escape Redis glob metacharacters in a key fragment."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


class KeyNames:
    def __init__(self, prefix: str) -> None:
        if "{" in prefix or "}" in prefix:
            raise ValueError(f"key_prefix {prefix!r} may not contain braces (they are the Redis Cluster hash tag)")
        self.prefix = prefix
        self.epoch = f"{prefix}epoch"
        self.outbox = f"{prefix}outbox"
        self.outbox_lock = f"{prefix}outbox:lock"

    def window(self, session_id: str, epoch: str) -> str:
        return f"{self.prefix}w:{epoch}:{{{session_id}}}"

    def counter(self, session_id: str) -> str:
        return f"{self.prefix}c:{{{session_id}}}"

    def session(self, scope_key: str, epoch: str) -> str:
        return f"{self.prefix}s:{epoch}:{{{scope_key}}}"

    def lease(self, scope_key: str) -> str:
        return f"{self.prefix}lease:{{{scope_key}}}"

    def fence(self, scope_key: str) -> str:
        return f"{self.prefix}fence:{{{scope_key}}}"

    def claim(self, message_id: str) -> str:
        return f"{self.prefix}claim:{message_id}"

    # Patterns for every epoch of one session's window or one scope's session.
    def windows_of(self, session_id: str) -> str:
        return f"{glob_escape(self.prefix)}w:*:{glob_escape('{' + session_id + '}')}"

    def sessions_of(self, scope_key: str) -> str:
        return f"{glob_escape(self.prefix)}s:*:{glob_escape('{' + scope_key + '}')}"
