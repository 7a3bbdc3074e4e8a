"""Token counting for the context window: pluggable, offline by default.

A counter is a callable ``count(text: str) -> int``. The ``token_counter``
setting names one:

- ``"estimate"`` (default): :func:`estimate_tokens`, a conservative offline
  estimate (no tokenizer download, no network, microseconds per message);
- ``"chars"``: one token per four characters, rounded up;
- any name added with :func:`register_counter` (e.g. by another plugin at
  import time);
- ``"package.module:function"``: imported on first use, e.g. a wrapper around
  a real tokenizer the operator installed.

Counters only need to be roughly right but should not under-count: the
budget is there so the reply model's context is not overrun.
"""

from __future__ import annotations

import functools
import importlib
import math
import re
from collections.abc import Callable

from core.models import MessageRecord

TokenCounter = Callable[[str], int]

# Chat formats spend a few tokens per message on role and separators.
MESSAGE_OVERHEAD = 4
# What an attached file costs besides its description (a low-detail image
# costs 85 tokens with OpenAI's vision models).
ATTACHMENT_COST = 85

_WORD_RUNS = re.compile(r"[A-Za-z0-9]+")
_OTHER_VISIBLE = re.compile(r"[^\sA-Za-z0-9]")


@functools.lru_cache(maxsize=8192)
def estimate_tokens(text: str) -> int:
    """Estimate BPE tokens without a tokenizer.

    Runs of ASCII letters and digits cost one token per four characters
    (rounded up), every other visible character (punctuation, accented or
    CJK letters, emoji) one token, and whitespace nothing. Real tokenizers
    merge more than that, so this errs on the high side.

    Cached: the window is re-counted on every message, and its texts repeat.
    """
    words = sum((len(run) + 3) // 4 for run in _WORD_RUNS.findall(text))
    return words + len(_OTHER_VISIBLE.findall(text))


def count_chars(text: str) -> int:
    """One token per four characters, rounded up."""
    return math.ceil(len(text) / 4)


_REGISTRY: dict[str, TokenCounter] = {"estimate": estimate_tokens, "chars": count_chars}


def register_counter(name: str, counter: TokenCounter) -> None:
    """Make ``counter`` selectable as ``token_counter = name``."""
    if not callable(counter):
        raise TypeError(f"token counter {name!r} must be callable")
    _REGISTRY[name] = counter


def counters() -> list[str]:
    return sorted(_REGISTRY)


def resolve_counter(name: str) -> TokenCounter:
    """The counter called ``name``; raises ``ValueError`` saying why not."""
    if name in _REGISTRY:
        return _REGISTRY[name]
    if ":" in name:
        module_name, _, attr = name.partition(":")
        try:
            found = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise ValueError(f"token counter {name!r} cannot be imported: {exc}") from None
        if not callable(found):
            raise ValueError(f"token counter {name!r} is not callable")
        _REGISTRY[name] = found
        return found
    raise ValueError(f"unknown token counter {name!r} (known: {', '.join(counters())}, or 'module:function')")


def record_tokens(record: MessageRecord, count: TokenCounter) -> int:
    """What one message costs in the window: author, text, attachments."""
    total = MESSAGE_OVERHEAD + count(record.content)
    if record.author_name:
        total += count(record.author_name)
    for attachment in record.attachments:
        total += ATTACHMENT_COST
        if attachment.description:
            total += count(attachment.description)
        if attachment.text:
            total += count(attachment.text)
    return total
