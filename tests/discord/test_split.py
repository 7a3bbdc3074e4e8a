"""Splitting replies into Discord-sized messages."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings, strategies as st

from plugins.discord.split import split_message


def test_short_text_is_one_part():
    assert split_message("hello") == ["hello"]
    assert split_message("") == []
    assert split_message("\n\n") == []


def test_prefers_paragraphs_then_lines_then_sentences_then_words():
    para = "a" * 60
    assert split_message(f"{para}\n\n{para}", limit=100) == [para, para]
    assert split_message(f"{para}\n{para}", limit=100) == [para, para]
    sentences = "First sentence here. " * 5
    parts = split_message(sentences.strip(), limit=50)
    assert all(p.endswith(".") for p in parts[:-1])
    words = " ".join(["word"] * 40)
    assert all(not p.startswith(" ") and "wor d" not in p for p in split_message(words, limit=50))
    assert split_message("x" * 250, limit=100) == ["x" * 96, "x" * 96, "x" * 58]


def test_code_block_cut_in_two_is_closed_and_reopened():
    text = "```py\n" + "\n".join(f"print({i})" for i in range(40)) + "\n```"
    parts = split_message(text, limit=100)
    assert len(parts) > 1
    assert all(p.count("```") % 2 == 0 for p in parts)
    assert all(p.startswith("```py\n") for p in parts)


def test_limit_below_twenty_is_refused():
    with pytest.raises(ValueError):
        split_message("abc", limit=5)


def test_a_cut_on_the_fences_own_line_reopens_without_a_tag():
    # The line "`````a ```…" was cut after "a": "a" is not known to be the
    # whole tag, and re-adding it would say a word twice.
    assert split_message("`````a ``````````````", limit=20) == ["`````a\n```", "```\n``````````````"]


# A fence's language tag is re-added when a block is reopened (tested above),
# so here every run of backticks ends its line: no tag, and each word of the
# text is in the parts exactly once.
_untagged = st.text(alphabet=st.sampled_from("ab .\n`"), max_size=3000).map(lambda t: re.sub(r"(`+)(?=[^`\n])", "\\1\n", t))


@settings(max_examples=200, deadline=None)
@given(_untagged, st.integers(min_value=20, max_value=400))
def test_parts_fit_and_lose_no_word(text, limit):
    parts = split_message(text, limit=limit)
    assert all(0 < len(p) <= limit for p in parts)
    words = [w for w in text.replace("`", " ").split()]
    got = [w for p in parts for w in p.replace("`", " ").split()]
    # Hard cuts may split a word in two; joined, the characters are all there.
    assert "".join(got) == "".join(words)
