"""Splitting a long reply into Discord-sized messages (2,000 characters)."""

from __future__ import annotations

import re

DISCORD_LIMIT = 2000
FENCE = "```"
_SENTENCE_END = re.compile(r"[.!?…]['\")\]]*\s")


def _cut(window: str) -> int:
    """Where to cut ``window`` (which is too long to send whole): after the
    last paragraph break, else line break, else sentence end, else space, in
    its second half when possible; else at the limit."""
    floor = len(window) // 2
    for marker in ("\n\n", "\n"):
        at = window.rfind(marker, floor)
        if at > 0:
            return at + len(marker)
    ends = [m.end() for m in _SENTENCE_END.finditer(window, floor)]
    if ends:
        return ends[-1]
    at = window.rfind(" ", floor)
    if at > 0:
        return at + 1
    for marker in ("\n", " "):
        at = window.rfind(marker)
        if at > 0:
            return at + 1
    return len(window)


def split_message(text: str, limit: int = DISCORD_LIMIT) -> list[str]:
    """Split ``text`` into parts of at most ``limit`` characters, on
    paragraph, line, sentence or word boundaries; a code block cut in two is
    closed and reopened so both parts render. Whitespace-only parts are
    dropped; joining the parts gives back the text, give or take the
    whitespace at the cuts and the added fences."""
    if limit < 20:
        raise ValueError("limit must be at least 20 characters")
    parts: list[str] = []
    rest = text.strip("\n")
    reopen = ""
    while rest:
        rest = reopen + rest
        if len(rest) <= limit:
            parts.append(rest)
            break
        # Room for a closing fence in case the cut lands inside a code block.
        room = limit - len(FENCE) - 1
        cut = _cut(rest[:room])
        if cut <= len(reopen) + len(FENCE):
            cut = room  # no boundary past the reopened fence: a hard cut still makes progress
        part, rest = rest[:cut].rstrip(), rest[cut:].lstrip("\n")
        open_fence = part.count(FENCE) % 2 == 1
        if open_fence:
            # Keep the language tag (```py) when reopening; a cut on the
            # fence's own line has not seen the whole tag: none is guessed.
            last = part.rfind(FENCE)
            line, newline, _ = part[last + len(FENCE):].partition("\n")
            tag = line.strip() if newline else ""
            part += "\n" + FENCE
            reopen = FENCE + (tag if re.fullmatch(r"[\w+-]*", tag) else "") + "\n"
        else:
            reopen = ""
        if part.strip() and part.strip() != FENCE:
            parts.append(part)
    return parts
