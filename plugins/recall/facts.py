"""Facts about a user, and the offline rules that find them in what they say.

A fact is ``(key, value)`` about the person speaking ("name" → "Ada",
"lives in" → "Lisbon", "favourite colour" → "teal", "about tea" → "likes
it"). One fact per key and place: a newer statement supersedes the older
one (see :mod:`.store`). The rules are deliberately narrow: a sentence the
user says about themself, never a question, never a negation of the
pattern itself ("my name is not …").
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

MAX_VALUE = 80
MAX_KEY = 40

_NAME = [
    re.compile(r"\bmy name(?:'s| is)\s+([A-Za-zÀ-ÿ][\w'À-ÿ-]*(?:\s+[A-ZÀ-Ý][\w'À-ÿ-]*)?)", re.IGNORECASE),
    re.compile(r"\bcall me\s+([A-Za-zÀ-ÿ][\w'À-ÿ-]*)", re.IGNORECASE),
]
_NOT_NAMES = {"not", "sure", "fine", "good", "ok", "okay", "here", "back", "tired", "sorry", "happy", "just", "a", "an", "the"}
_HOME = re.compile(r"\bi (?:live|am living|'m living) in\s+([^.!?\n]+)", re.IGNORECASE)
_MY = re.compile(r"\bmy\s+([a-z][a-z '-]{0,39}?)\s+(?:is|are)\s+([^.!?\n]+)", re.IGNORECASE)
_LIKE = re.compile(r"\bi (?:really |also )?(like|love|enjoy|prefer|hate|dislike|don't like|do not like)\s+([^.!?\n]+)", re.IGNORECASE)
# A value ends at the first clause break: "teal and I live in Lisbon" → "teal".
_CLAUSE_END = re.compile(r",|;|:|\s(?:and|but|because|so|though|although|which|who)\s", re.IGNORECASE)
_NEGATIVE = {"hate", "dislike", "don't like", "do not like"}


@dataclass(slots=True, frozen=True)
class Fact:
    key: str
    value: str

    def text(self) -> str:
        return f"{self.key}: {self.value}"


def _clean(value: str) -> str:
    value = _CLAUSE_END.split(value, maxsplit=1)[0]
    value = " ".join(value.split()).strip(" \"'“”")
    return value[:MAX_VALUE].rstrip()


def _name(text: str) -> str:
    """A first name, and a second word only when it is capitalised."""
    words = _clean(text).split()
    if not words or words[0].lower() in _NOT_NAMES:
        return ""
    return " ".join(words[:1] + [w for w in words[1:2] if w[:1].isupper()])


def _key(text: str) -> str:
    return " ".join(text.lower().split())[:MAX_KEY]


def extract(text: str) -> list[Fact]:
    """The facts ``text`` states about its author, by simple rules."""
    found: dict[str, Fact] = {}
    for sentence in re.split(r"(?<=[.!?\n])\s*", text):
        if not sentence.strip() or sentence.rstrip().endswith("?"):
            continue
        for fact in _sentence_facts(sentence):
            found[fact.key] = fact
    return list(found.values())


def _sentence_facts(sentence: str) -> list[Fact]:
    out: list[Fact] = []
    for pattern in _NAME:
        match = pattern.search(sentence)
        name = _name(match.group(1)) if match else ""
        if name:
            out.append(Fact("name", name))
            break
    home = _HOME.search(sentence)
    if home and _clean(home.group(1)):
        out.append(Fact("lives in", _clean(home.group(1))))
    for match in _MY.finditer(sentence):
        key, value = _key(match.group(1)), _clean(match.group(2))
        if key != "name" and value and not value.lower().startswith("not "):
            out.append(Fact(key, value))
    like = _LIKE.search(sentence)
    if like and _clean(like.group(2)):
        verb = like.group(1).lower()
        thing = _clean(like.group(2)).lower()
        out.append(Fact(_key(f"about {thing}"), "dislikes it" if verb in _NEGATIVE else f"{verb}s it"))
    return out


def place_of(guild_id: str | None, is_dm: bool) -> str:
    """Where a fact was told: ``dm`` or ``g:<guild id>``."""
    return "dm" if is_dm or not guild_id else f"g:{guild_id}"


def day(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(timestamp))
