"""The offline stand-in: no network, deterministic, visibly uses the context."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from core.models import Context, MessageRecord, Recalled, Role, Session
from plugins.llm.offline import TAG, offline_reply
from plugins.llm.prompt import FAILURE_MARK
from tests.llm.helpers import Chat, RecordingStore, make_bot, run


def _conversation(tmp_path: Path, lines: list[str]) -> list[str]:
    async def scenario() -> list[str]:
        bot = make_bot(tmp_path, {}, store=RecordingStore())
        await bot.start()
        try:
            chat = Chat(bot)
            return [(await chat.say(line)).text() for line in lines]
        finally:
            await bot.stop()

    return run(scenario())


def test_offline_default_recalls_earlier_context(tmp_path: Path) -> None:
    replies = _conversation(
        tmp_path,
        [
            "hello there",
            "my name is Ana",
            "my favourite colour is green",
            "I am planning a trip to Lisbon",
            "what is my name?",
            "what did I say first?",
            "what's my favourite colour?",
            "what did I tell you about Lisbon?",
            "how many messages do you remember?",
            "what did I just say?",
        ],
    )
    assert all(r.startswith(TAG) for r in replies)
    assert "no language model is configured" in replies[0].lower()
    assert all("configured" not in r and "No memory plugin" not in r for r in replies[1:])
    assert "This is the start of our conversation" in replies[0]
    assert "Nice to meet you, Ana" in replies[1]
    assert "You told me earlier: “hello there”" in replies[1]
    assert "your favourite colour is green" in replies[2]
    assert "Your name is Ana" in replies[4]
    assert "“hello there”" in replies[5]
    assert "favourite colour is green" in replies[6]
    assert "“I am planning a trip to Lisbon”" in replies[7]
    assert "I remember 16 earlier messages of this session (8 from you, 8 from me)" in replies[8]
    assert "“how many messages do you remember?”" in replies[9]


def test_offline_default_is_deterministic_and_says_what_it_is(tmp_path: Path) -> None:
    lines = ["hi", "I like tea", "are you an AI?", "what did I say first?"]
    first = _conversation(tmp_path / "a", lines)
    second = _conversation(tmp_path / "b", lines)
    assert first == second
    assert "not a language model" in first[2] and "LLM_BASE_URL" in first[2]


def test_offline_default_without_memory_says_it_has_nothing_earlier(tmp_path: Path) -> None:
    # No store: the core's own context holds the current message only.
    async def scenario() -> list[str]:
        bot = make_bot(tmp_path, {})
        await bot.start()
        try:
            chat = Chat(bot)
            return [(await chat.say(t)).text() for t in ("my name is Bo", "what is my name?")]
        finally:
            await bot.stop()

    replies = run(scenario())
    assert all("No memory plugin is enabled" in r for r in replies)
    assert "Nice to meet you, Bo" in replies[0]
    assert "haven't told me your name" in replies[1]


def _record(n: int, role: Role, author: str, text: str) -> MessageRecord:
    return MessageRecord(
        id=str(n), session_id="s", scope_key="k", role=role, author_id=author, author_name=author.title(),
        content=text, timestamp=float(n),
    )


def test_offline_reply_tells_speakers_apart_and_skips_failure_notices() -> None:
    session = Session("s", "k", 0.0, 0.0)
    context = Context(
        session,
        "sys",
        [
            _record(1, Role.USER, "alice", "my name is Alice"),
            _record(2, Role.BOT, "bot", f"{FAILURE_MARK} The model provider is unavailable right now."),
            _record(3, Role.USER, "bob", "I brought the cake"),
            _record(4, Role.USER, "alice", "what is my name?"),
        ],
    )
    text = offline_reply(context, "alice", "4")
    assert "Your name is Alice" in text
    # The failure notice is not counted as a bot turn: this is still the first reply.
    assert "no language model is configured" in text.lower()

    context.messages[-1] = _record(4, Role.USER, "alice", "see you")
    text = offline_reply(context, "alice", "4")
    assert "Bob said before: “I brought the cake”" in text
    assert "(1 from you, 1 from others, 0 from me)" in text


def test_the_stand_in_repeats_what_was_recalled_with_dates() -> None:
    context = Context(
        Session("s", "k", 0.0, 0.0),
        "sys",
        [_record(1, Role.USER, "alice", "which colour should I paint my room?")],
        recalled=[Recalled("fact", "favourite colour: teal", 1_764_547_200.0, "m1")],
    )
    text = offline_reply(context, "alice", "1")
    assert text.endswith("From earlier conversations I recall: “favourite colour: teal” (fact, 2025-12-01).")


_WORDS = ["My", "my", "NAME", "name's", "is", "call", "me", "CALL ME", "i'm", "I'm", "i", "am", "Ana", "bob", "Zoé", "not", "sure", ".", "!", "hello", "named", "game"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(st.sampled_from(_WORDS), max_size=8).map(" ".join), max_size=6))
def test_find_name_skips_only_messages_no_pattern_could_match(texts: list[str]) -> None:
    """The substring test before the regexes never hides a name they find."""
    from plugins.llm import offline

    def by_regex_alone(records: list[MessageRecord]) -> str | None:
        for record in reversed(records):
            for pattern in offline._NAME_PATTERNS:
                match = pattern.search(record.content)
                if match and match.group(1).lower() not in offline._NOT_NAMES:
                    return match.group(1).strip()
        return None

    records = [
        MessageRecord(str(i), "s", "dm:u", Role.USER, "u", text, float(i)) for i, text in enumerate(texts)
    ]
    assert offline.find_name(records) == by_regex_alone(records)
