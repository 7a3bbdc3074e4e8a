"""Pieces of the discord.py → core conversion that need no connection."""

from __future__ import annotations

from core.models import Attachment, Reply
from plugins.discord.client import _nonce, allowed_mentions, reply_parts
from plugins.discord.convert import clean_content


def test_leading_mention_is_dropped_and_others_read_as_names():
    assert clean_content("<@42> hi", 42, "bot") == "hi"
    assert clean_content("<@!42>, hi <@42>!", 42, "bot") == "hi @bot!"
    assert clean_content("hi <@43>", 42, "bot") == "hi <@43>"


def test_reply_parts_put_files_last_ten_a_message():
    files = [Attachment(f"{i}.txt", data=b"x") for i in range(12)]
    parts = reply_parts(Reply("text", attachments=files))
    assert [(t, len(f)) for t, f in parts] == [("text", 10), (None, 2)]
    assert reply_parts(Reply("")) == [("(empty reply)", [])]
    assert reply_parts(Reply("", attachments=[Attachment("a.png", url="http://x/a.png")])) == [("http://x/a.png", [])]
    assert reply_parts(Reply("hi", notes=["memory is degraded"]))[0][0] == "hi\n(memory is degraded)"


def test_mentions_are_off_unless_a_plugin_asks_and_never_everyone():
    assert allowed_mentions(Reply("x")).to_dict() == {"parse": []}
    asked = allowed_mentions(Reply("x", allow_mentions=True)).to_dict()
    assert asked["parse"] == ["users"]


def test_nonce_is_stable_and_fits_discord():
    assert _nonce(123, 0) == _nonce(123, 0) != _nonce(123, 1)
    assert len(str(_nonce(10**19, 5))) <= 25
