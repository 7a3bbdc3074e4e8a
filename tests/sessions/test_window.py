"""The context window: count limit, token budget, exchanges kept whole."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from core.models import Attachment, MessageRecord, Role

from plugins.sessions.tokens import (
    MESSAGE_OVERHEAD,
    count_chars,
    estimate_tokens,
    record_tokens,
    register_counter,
    resolve_counter,
)
from plugins.sessions.window import exchanges, fit


def count_words(text: str) -> int:
    """A custom counter, importable by path (used by the settings tests)."""
    return len(text.split())


def user(i: int, text: str = "question") -> MessageRecord:
    return MessageRecord(f"m{i:04d}", "s", "k", Role.USER, "alice", text, float(i), author_name="alice")


def bot(i: int, answers: int, text: str = "answer") -> MessageRecord:
    return MessageRecord(f"r{i:04d}", "s", "k", Role.BOT, "bot", text, float(i), author_name="bot",
                         reply_to_id=f"m{answers:04d}")


def conversation(pairs: int) -> list[MessageRecord]:
    out = []
    for n in range(pairs):
        out += [user(2 * n), bot(2 * n + 1, 2 * n)]
    return out


def test_estimator_is_offline_and_not_optimistic() -> None:
    assert estimate_tokens("") == 0
    assert estimate_tokens("hello world") == 4  # real BPE: 2
    assert estimate_tokens("日本語") == 3
    assert estimate_tokens("a, b.") == 4
    long = "word " * 1000
    assert estimate_tokens(long) >= 1000
    assert count_chars("abcde") == 2


def test_counter_registry() -> None:
    register_counter("words", count_words)
    assert resolve_counter("words") is count_words
    assert resolve_counter("tests.sessions.test_window:count_words") is count_words


def test_record_tokens_counts_attachments() -> None:
    plain = user(1, "hi there")
    with_image = user(2, "hi there")
    with_image.attachments = [Attachment("a.png", "image/png", description="a red square")]
    assert record_tokens(with_image, estimate_tokens) > record_tokens(plain, estimate_tokens) + 85
    assert record_tokens(plain, count_words) == MESSAGE_OVERHEAD + 2 + 1  # text + author name


def test_keeps_the_last_n_messages() -> None:
    earlier = conversation(10)
    window = fit(earlier, user(100, "now"), "sys", 5, 10_000, count_words)
    # 4 earlier messages = the last two exchanges, then the current message.
    assert [m.id for m in window.messages] == ["m0016", "r0017", "m0018", "r0019", "m0100"]
    assert window.dropped == 16


def test_an_exchange_is_never_split() -> None:
    earlier = conversation(10)
    # Room for 3 earlier messages: only one whole exchange fits, not a half.
    window = fit(earlier, user(100, "now"), "sys", 4, 10_000, count_words)
    assert [m.id for m in window.messages] == ["m0018", "r0019", "m0100"]


def test_orphan_replies_are_left_out() -> None:
    earlier = conversation(3)[1:]  # starts with a reply whose question is gone
    window = fit(earlier, user(100, "now"), "sys", 50, 10_000, count_words)
    assert [m.id for m in window.messages] == ["m0002", "r0003", "m0004", "r0005", "m0100"]


def test_token_budget_is_tighter_than_the_count() -> None:
    earlier = conversation(10)
    per_message = MESSAGE_OVERHEAD + 2  # one word + author name
    budget = 1 + per_message + 2 * per_message * 2  # system prompt, current, two exchanges
    window = fit(earlier, user(100, "now"), "sys", 50, budget, count_words)
    assert len(window.messages) == 5
    assert window.tokens_used == budget
    window = fit(earlier, user(100, "now"), "sys", 50, budget - 1, count_words)
    assert len(window.messages) == 3


def test_system_prompt_and_current_message_always_fit() -> None:
    huge = user(100, "word " * 500)
    window = fit(conversation(3), huge, "a long system prompt", 50, 10, count_words)
    assert [m.id for m in window.messages] == ["m0100"]
    assert window.tokens_used > 10


def test_interleaved_exchanges_keep_their_order() -> None:
    # Shared channel: bob asks before the bot answers alice.
    records = [user(1), user(2), bot(3, 1), bot(4, 2)]
    assert [[m.id for m in g] for g in exchanges(records)] == [["m0001", "r0003"], ["m0002", "r0004"]]
    window = fit(records, user(9), "", 50, 10_000, count_words)
    assert [m.id for m in window.messages] == ["m0001", "m0002", "r0003", "r0004", "m0009"]
    window = fit(records, user(9), "", 3, 10_000, count_words)
    assert [m.id for m in window.messages] == ["m0002", "r0004", "m0009"]


def test_between_messages_window() -> None:
    window = fit(conversation(4), None, "sys", 3, 10_000, count_words)
    assert [m.id for m in window.messages] == ["m0006", "r0007"]


@settings(max_examples=200, deadline=None)
@given(
    shape=st.lists(st.tuples(st.booleans(), st.integers(0, 30)), max_size=40),
    limit=st.integers(1, 20),
    budget=st.integers(1, 400),
)
def test_window_invariants(shape: list[tuple[bool, int]], limit: int, budget: int) -> None:
    """Whatever the conversation: the current message ends the window, the
    limits hold (beyond the always-kept part), no reply lacks its question,
    and the window is a contiguous tail of the conversation's exchanges."""
    records: list[MessageRecord] = []
    last_user: int | None = None
    for i, (is_reply, words) in enumerate(shape):
        text = "w " * words
        if is_reply and last_user is not None:
            records.append(bot(i, last_user, text))
        else:
            records.append(user(i, text))
            last_user = i
    current = user(999, "now")
    window = fit(records, current, "sys", limit, budget, count_words)
    assert window.messages[-1] is current
    kept = window.messages[:-1]
    if kept:
        assert len(window.messages) <= limit
        assert window.tokens_used <= budget
    ids = {m.id for m in kept}
    for m in kept:
        if m.role == Role.BOT and m.reply_to_id:
            assert m.reply_to_id in ids
    groups = exchanges(records)
    chosen = [g for g in groups if g[0].id in ids]
    assert chosen == groups[len(groups) - len(chosen):]
    assert sum(len(g) for g in chosen) == len(kept)
    assert kept == sorted(kept, key=lambda m: m.sort_key)
