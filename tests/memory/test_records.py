"""Encoding and checking of records (no backends)."""

from __future__ import annotations

import pytest

from core.errors import Refused
from core.models import Role, Session
from plugins.memory import records
from tests.memory.helpers import SESSION, rec, with_attachment


def test_cache_entry_round_trips_every_field() -> None:
    original = with_attachment(rec(1, content="a\x01b\u200b\U0001f600", reply_to_id="7"))
    decoded = records.decode_entries([records.encode_entry(original)], SESSION)
    assert [d.to_dict() for d in decoded] == [original.to_dict()]


def test_row_round_trips_every_field() -> None:
    original = with_attachment(rec(2, role=Role.BOT, author="bot", id="reply:1001"))
    assert records.from_row(records.to_row(original, 5.0)).to_dict() == original.to_dict()


def test_sort_key_of_an_entry_matches_the_record() -> None:
    r = rec(3, ts=12.5, id="abc")
    assert records.entry_sort_key(records.encode_entry(r)) == r.sort_key


@pytest.mark.parametrize(
    "order, expected",
    [([1, 2, 3], True), ([1, 3, 2], False), ([1, 1], False), ([], True)],
)
def test_is_ordered_means_strictly_increasing(order: list[int], expected: bool) -> None:
    assert records.is_ordered([rec(n) for n in order]) is expected


def test_oversized_user_message_is_refused_with_its_size() -> None:
    with pytest.raises(Refused, match="10,001 bytes.*10,000"):
        records.check_record(rec(1, content="x" * 10_001), 10_000)
    records.check_record(rec(1, content="é" * 5_000), 10_000)  # 10,000 bytes: fits exactly


def test_nul_and_broken_utf8_in_a_user_message_are_refused() -> None:
    with pytest.raises(Refused, match="NUL"):
        records.check_record(rec(1, content="a\x00b"), 1000)
    with pytest.raises(Refused, match="UTF-8"):
        records.check_record(rec(1, content="bad \ud800 half"), 1000)


def test_a_bot_reply_is_repaired_not_refused() -> None:
    reply = records.check_record(rec(1, role=Role.BOT, content="a\x00b\ud800" + "y" * 50), 20)
    assert "\x00" not in reply.content and len(reply.content.encode()) <= 20
    reply.content.encode("utf-8")  # encodable


def test_control_characters_are_kept_faithfully() -> None:
    text = "tab\tbell\x07esc\x1b[0m\r\n"
    assert records.check_record(rec(1, content=text), 1000).content == text


def test_session_dict_round_trip() -> None:
    s = Session("i", "k", 1.0, 2.0, "g", "c", "u", 3.0, {"a": [1]})
    assert records.session_from_dict(records.session_to_dict(s)) == s
