"""The offline rules that find facts in what a user says."""

from __future__ import annotations

import pytest

from plugins.recall.facts import Fact, extract, place_of


@pytest.mark.parametrize(
    ("text", "facts"),
    [
        ("my favourite colour is teal", [Fact("favourite colour", "teal")]),
        ("My name is Ada and I live in Lisbon, Portugal.", [Fact("name", "Ada"), Fact("lives in", "Lisbon")]),
        ("My name is Ada Lovelace", [Fact("name", "Ada Lovelace")]),
        ("my name is ada lovelace", [Fact("name", "ada")]),
        ("Call me Ishmael.", [Fact("name", "Ishmael")]),
        ("I really like green tea", [Fact("about green tea", "likes it")]),
        ("I don't like mushrooms!", [Fact("about mushrooms", "dislikes it")]),
        ("I prefer coffee", [Fact("about coffee", "prefers it")]),
        ("my dogs are Rex and Fido", [Fact("dogs", "Rex")]),
    ],
)
def test_statements_about_oneself_are_facts(text: str, facts: list[Fact]) -> None:
    assert extract(text) == facts


@pytest.mark.parametrize(
    "text",
    [
        "what is my name?",
        "is my favourite colour teal?",
        "my name is not Bob",
        "my name is sure",
        "which colour do I like?",
        "the weather is fine",
        "",
    ],
)
def test_questions_negations_and_small_talk_are_not_facts(text: str) -> None:
    assert extract(text) == []


def test_the_last_statement_of_a_key_in_one_message_wins() -> None:
    assert extract("My favourite colour is red. Actually my favourite colour is teal.") == [Fact("favourite colour", "teal")]


def test_values_are_bounded() -> None:
    (fact,) = extract("my motto is " + "x" * 500)
    assert len(fact.value) <= 80


def test_places() -> None:
    assert place_of("123", False) == "g:123"
    assert place_of(None, True) == "dm"
    assert place_of("123", True) == "dm"
