"""The offline stand-in: a deterministic responder that needs no network.

It is what the terminal chat answers with on a fresh machine, so it shows the
one thing that matters there: the bot remembers. It recalls what the user
said earlier in the session, counts what it remembers, and answers simple
questions about the conversation ("what did I say first?", "what is my
name?"). It says plainly that it is an offline stand-in, not a model.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

from core.models import Context, MessageRecord, Role
from plugins.llm.prompt import describe_attachment, is_failure_reply

TAG = "[offline stand-in]"
INTRO = (
    "No language model is configured (set LLM_BASE_URL to use one), "
    "so I answer from what I remember of this conversation."
)

_NAME_PATTERNS = [
    re.compile(r"\bmy name(?:'s| is)\s+([A-Za-zÀ-ÿ][\w'À-ÿ-]*(?:\s+[A-ZÀ-Ý][\w'À-ÿ-]*)?)", re.IGNORECASE),
    re.compile(r"\bcall me\s+([A-Za-zÀ-ÿ][\w'À-ÿ-]*)", re.IGNORECASE),
    re.compile(r"\bi(?:'m| am)\s+([A-ZÀ-Ý][\w'À-ÿ-]*)\b(?:\s*[.!,]|\s*$)"),
]
# Every text a name pattern matches contains one of these (lowercased).
_NAME_WORDS = ("name", "call me", "i'm", "i am")
_NOT_NAMES = {"not", "sure", "fine", "good", "ok", "okay", "here", "back", "tired", "sorry", "happy", "just", "a", "an", "the"}
# "my favourite colour is blue" -> ("favourite colour", "blue")
_FACT = re.compile(r"\bmy\s+([a-z][a-z '-]{0,40}?)\s+(?:is|are|was)\s+([^.!?\n]{1,120})", re.IGNORECASE)
_ASK_FACT = re.compile(r"\b(?:what(?:'s| is| was| are)|do you (?:know|remember))\s+my\s+([a-z][a-z '-]{0,40}?)\s*(?:is|are|was)?\s*\??\s*$", re.IGNORECASE)
_ABOUT = re.compile(r"\bwhat did i (?:say|tell you|mention) about\s+(.+?)\s*\??\s*$", re.IGNORECASE)


@dataclass(slots=True)
class Memory:
    """What the stand-in knows from the window, split the way it talks about it."""

    earlier: list[MessageRecord]  # everything before the current message
    mine: list[MessageRecord]  # earlier messages by the current author
    current: MessageRecord | None

    @property
    def remembered(self) -> int:
        return len(self.earlier)


def _quote(text: str, limit: int = 120) -> str:
    text = " ".join(text.split())
    if len(text) > limit:
        text = text[: limit - 1].rstrip() + "…"
    return f"“{text}”"


def _said(record: MessageRecord) -> str:
    if record.content.strip():
        return _quote(record.content)
    return ", ".join(describe_attachment(a) for a in record.attachments) or "(nothing)"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def find_name(records: list[MessageRecord]) -> str | None:
    """The latest name the author gave for themself in ``records``."""
    for record in reversed(records):
        # Most messages give no name: a substring test per message is far
        # cheaper than three regex searches (the stand-in's reply was a
        # fifth of the benchmark's CPU per message, docs/PERFORMANCE.md).
        lowered = record.content.lower()
        if not any(word in lowered for word in _NAME_WORDS):
            continue
        for pattern in _NAME_PATTERNS:
            match = pattern.search(record.content)
            if match and match.group(1).lower() not in _NOT_NAMES:
                return match.group(1).strip()
    return None


def find_fact(records: list[MessageRecord], subject: str) -> str | None:
    subject = " ".join(subject.lower().split())
    for record in reversed(records):
        for match in _FACT.finditer(record.content):
            if " ".join(match.group(1).lower().split()) == subject:
                return match.group(2).strip()
    return None


def _memory(context: Context, author_id: str, current_id: str | None) -> Memory:
    window = [m for m in context.messages if not is_failure_reply(m)]
    current = None
    if window and (current_id is None or window[-1].id == current_id):
        current = window[-1]
        window = window[:-1]
    mine = [m for m in window if m.role is Role.USER and m.author_id == author_id]
    return Memory(earlier=window, mine=mine, current=current)


def _count_line(memory: Memory) -> str:
    if not memory.earlier:
        return "This is the start of our conversation: nothing earlier in this session."
    others = sum(1 for m in memory.earlier if m.role is Role.USER) - len(memory.mine)
    bots = sum(1 for m in memory.earlier if m.role is Role.BOT)
    split = [f"{len(memory.mine)} from you"] + ([f"{others} from others"] if others else []) + [f"{bots} from me"]
    return f"I remember {_plural(memory.remembered, 'earlier message')} of this session ({', '.join(split)})."


def _recalled_line(context: Context) -> str:
    """What the recall plugin brought back from earlier conversations."""
    parts = []
    for item in context.recalled[:4]:
        when = time.strftime("%Y-%m-%d", time.gmtime(item.timestamp))
        parts.append(f"{_quote(item.content)} ({item.kind}, {when})")
    return "From earlier conversations I recall: " + "; ".join(parts) + "."


NO_MEMORY = "No memory plugin is enabled, so I cannot recall earlier messages."


def offline_reply(
    context: Context, author_id: str, current_id: str | None = None, author_name: str = "", has_memory: bool = True
) -> str:
    """The stand-in's answer to the last message of ``context``.

    ``has_memory=False`` (no plugin loads messages) makes it say why it
    remembers nothing, instead of greeting every message as the first."""
    memory = _memory(context, author_id, current_id)
    text = memory.current.content.strip() if memory.current else ""
    lowered = text.lower()
    first_turn = not any(m.role is Role.BOT for m in memory.earlier)
    name = find_name(memory.mine + ([memory.current] if memory.current else []))

    answer = _answer_question(memory, text, lowered, name)
    if answer is None:
        answer = _acknowledge(memory, text, name, author_name)
    if context.recalled:
        answer += "\n" + _recalled_line(context)
    if not has_memory:
        return f"{TAG} {INTRO} {NO_MEMORY}\n{answer}"
    prefix = f"{TAG} {INTRO}\n" if first_turn else f"{TAG} "
    return prefix + answer


def _answer_question(memory: Memory, text: str, lowered: str, name: str | None) -> str | None:
    mine = memory.mine
    if re.search(r"\b(what(?:'s| is) my name|who am i|do you know my name|remember my name)\b", lowered):
        earlier_name = find_name(mine)
        if earlier_name:
            return f"Your name is {earlier_name}: you told me earlier in this session."
        return "You haven't told me your name in this session yet. Say “my name is …” and I'll remember it."

    if re.search(r"\bwhat did i (say|write|ask|send) (first|at first|at the start)|\bmy first message\b|\bfirst thing i (said|wrote)\b", lowered):
        if not mine:
            return "This is your first message in this session, so there is nothing earlier to recall."
        return f"The first thing you said in this session (that I still remember) was {_said(mine[0])}."

    if re.search(r"\bwhat did i (just )?(say|write|ask) (last|before|previously|just now|a moment ago)|\bmy (last|previous) message\b|\bwhat did i just say\b", lowered):
        if not mine:
            return "There is no earlier message of yours in this session."
        return f"Before this, you said {_said(mine[-1])}."

    if re.search(r"\bhow many (messages|things)\b|\bwhat do you remember\b|\bwhat have i (said|told you)\b|\bsummar(y|ise|ize)\b", lowered):
        lines = [_count_line(memory)]
        if mine:
            shown = mine[-5:]
            lines.append("Your messages" + (f" (the last {len(shown)})" if len(mine) > len(shown) else "") + ":")
            lines.extend(f"- {_said(m)}" for m in shown)
        return "\n".join(lines)

    about = _ABOUT.search(text)
    if about:
        topic = about.group(1).strip(" ?.!\"'“”")
        hits = [m for m in mine if topic and topic.lower() in m.content.lower()]
        if not hits:
            return f"I don't remember you mentioning “{topic}” in this session."
        return f"About “{topic}”, you said " + "; and ".join(_said(m) for m in hits[-3:]) + "."

    ask = _ASK_FACT.search(text)
    if ask and ask.group(1).lower().strip() != "name":
        subject = ask.group(1).strip()
        value = find_fact(mine, subject)
        if value:
            return f"You told me your {subject} is {value}."
        return f"You haven't told me your {subject} in this session."

    if re.search(r"\b(what can you do|who are you|what are you|are you (an? )?(ai|bot|model|llm|gpt))\b", lowered):
        return (
            "I'm not a language model: I'm a small offline responder built into the bot. "
            "Everything you say is stored, so I can tell you what you said first or last, your name once you "
            "tell me (“my name is …”), things like “my favourite colour is …”, and how many messages I remember. "
            "Connect a real model with LLM_BASE_URL (OpenAI, Ollama, vLLM, llama.cpp, LM Studio)."
        )
    return None


def _acknowledge(memory: Memory, text: str, name: str | None, author_name: str) -> str:
    current = memory.current
    parts: list[str] = []
    newly_named = None
    if current is not None:
        given = find_name([current])
        if given and given != find_name(memory.mine):
            newly_named = given
    if newly_named:
        parts.append(f"Nice to meet you, {newly_named}! I'll remember your name for this session.")
    else:
        fact = _FACT.search(text) if text else None
        if fact and fact.group(1).lower().strip() != "name":
            parts.append(f"Got it: your {fact.group(1).strip()} is {fact.group(2).strip()}. Ask me about it later.")
        elif re.match(r"^(hi|hello|hey|good (morning|afternoon|evening)|howdy|yo)\b", text.lower()):
            who = name or author_name
            parts.append(f"Hello{', ' + who if who else ''}!")
        elif current is not None and current.attachments and not text:
            parts.append(f"You sent {_said(current)}. I can't look at it offline, but it is part of our record now.")
        elif text:
            opener = ("Noted: {}.", "Got it: {}.", "I've stored {}.")[len(memory.mine) % 3]
            parts.append(opener.format(_quote(text)))
    if current is not None and current.attachments and text:
        parts.append("Your attachment is stored: " + ", ".join(describe_attachment(a) for a in current.attachments) + ".")

    if len(memory.mine) >= 3 and len(memory.mine) % 2:
        parts.append(f"Your first message in this session was {_said(memory.mine[0])}.")
    elif memory.mine:
        parts.append(f"You told me earlier: {_said(memory.mine[-1])}.")
    others = [m for m in memory.earlier if m.role is Role.USER and m not in memory.mine]
    if others:
        last = others[-1]
        parts.append(f"{last.author_name or 'Someone'} said before: {_said(last)}.")
    parts.append(_count_line(memory))
    return " ".join(parts)
