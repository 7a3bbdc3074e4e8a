"""Facts found by the model, when one is configured (llm plugin).

The model is asked for the durable facts the speaker states about
themself, as a JSON array; its answer is checked like user input (shape,
sizes, at most :data:`MAX_FACTS`), and anything unusable falls back to the
offline rules (:func:`plugins.recall.facts.extract`). Only messages that
speak in the first person are sent, so small talk costs no request.
"""

from __future__ import annotations

import json
import re
from typing import Any

from plugins.recall.facts import MAX_KEY, MAX_VALUE, Fact

MAX_FACTS = 5
INSTRUCTION = (
    "You extract durable facts that a chat user states about themself: their name, where they live, their "
    "job, family, pets, preferences, plans. Reply with a JSON array only, each item "
    '{"key": "<short lowercase label, e.g. name, lives in, favourite colour, about tea>", '
    '"value": "<short value, e.g. Ada, Lisbon, teal, likes it>"}. '
    "Only what the user says is true of them now; no questions, no guesses, nothing about other people. "
    "Reply [] when there is none."
)
_FIRST_PERSON = re.compile(r"\b(i|i'm|im|i've|my|me|mine)\b", re.IGNORECASE)
_ARRAY = re.compile(r"\[.*\]", re.DOTALL)


def worth_asking(text: str) -> bool:
    """Whether ``text`` may state a fact about its author at all."""
    return bool(_FIRST_PERSON.search(text)) and not text.rstrip().endswith("?")


def request(text: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": INSTRUCTION}, {"role": "user", "content": text}]


def parse(reply: str) -> list[Fact] | None:
    """The facts of the model's ``reply``; ``None`` when it is not a JSON
    array of ``{"key", "value"}`` (the rules are used instead)."""
    found = _ARRAY.search(reply)
    if found is None:
        return None
    try:
        items: Any = json.loads(found.group(0))
    except ValueError:
        return None
    if not isinstance(items, list):
        return None
    facts: dict[str, Fact] = {}
    for item in items[:MAX_FACTS]:
        if not isinstance(item, dict):
            return None
        key, value = item.get("key"), item.get("value")
        if not isinstance(key, str) or not isinstance(value, (str, int, float)):
            return None
        key = " ".join(key.lower().split())[:MAX_KEY]
        text = " ".join(str(value).split())[:MAX_VALUE]
        if key and text:
            facts[key] = Fact(key, text)
    return list(facts.values())
