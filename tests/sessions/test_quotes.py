"""Replying to an earlier message (plugins/sessions/quotes.py): which
exchange comes back into the context, and what never does (G8)."""

from __future__ import annotations

import asyncio
import types
from typing import Any

from core.models import IncomingMessage, MessageRecord, Quote, ReplyId, Role, Session
from plugins.sessions.quotes import quoted_exchange

SESSION = Session("s2", "g:1:c:2:u:3", 0.0, 0.0, guild_id="1", channel_id="2", user_id="3")


def record(rid: str, content: str, *, role: Role = Role.USER, channel: str = "2", ts: float = 1.0) -> MessageRecord:
    return MessageRecord(rid, "s1", "g:1:c:2:u:3", role, "3" if role is Role.USER else "bot", content, ts,
                         guild_id="1", channel_id=channel, reply_to_id=ReplyId(rid).message_id if role is Role.BOT else None)


class Memory:
    def __init__(self, *records: MessageRecord) -> None:
        self.records = {r.id: r for r in records}
        self.asked: list[list[str]] = []

    async def load_records(self, ids: list[str]) -> list[MessageRecord]:
        self.asked.append(list(ids))
        return [self.records[i] for i in ids if i in self.records]


def bot_with(memory: Memory) -> Any:
    return types.SimpleNamespace(storage=memory)


def message(quote: Quote | None) -> IncomingMessage:
    return IncomingMessage("900", "3", "2", "which one?", 50.0, guild_id="1", reply_to_id=quote.id if quote else None,
                           quoted=quote)


def run(bot: Any, msg: IncomingMessage, window: list[MessageRecord] | None = None) -> list[MessageRecord]:
    return asyncio.run(quoted_exchange(bot, msg, SESSION, window or []))


QUESTION = record("100", "my locker is 17")
ANSWER = MessageRecord("reply:100", "s1", "g:1:c:2:u:3", Role.BOT, "bot", "noted: 17", 2.0, guild_id="1",
                       channel_id="2", reply_to_id="100")


def test_replying_to_the_bots_answer_brings_back_the_question_and_the_answer() -> None:
    memory = Memory(QUESTION, ANSWER)
    quote = Quote("555", "bot", "noted: 17", 2.0, from_bot=True, answers_id="100")
    assert [r.id for r in run(bot_with(memory), message(quote))] == ["100", "reply:100"]
    assert memory.asked == [["100", "reply:100"]]


def test_replying_to_a_users_message_brings_back_it_and_the_bots_answer() -> None:
    quote = Quote("100", "3", "my locker is 17", 1.0)
    assert [r.id for r in run(bot_with(Memory(QUESTION, ANSWER)), message(quote))] == ["100", "reply:100"]


def test_an_exchange_already_in_the_window_is_not_repeated() -> None:
    quote = Quote("100", "3", "my locker is 17", 1.0)
    assert run(bot_with(Memory(QUESTION, ANSWER)), message(quote), [QUESTION, ANSWER]) == []


def test_records_of_another_channel_never_come_back() -> None:
    elsewhere = record("100", "said in another channel", channel="99")
    quote = Quote("100", "3", "what Discord quoted", 1.0)
    got = run(bot_with(Memory(elsewhere)), message(quote))
    assert [(r.id, r.content, r.channel_id) for r in got] == [("100", "what Discord quoted", "2")]


def test_what_memory_does_not_hold_is_shown_as_quoted() -> None:
    quote = Quote("777", "4", "bob's aside", 3.0, author_name="bob")
    got = run(bot_with(Memory()), message(quote))
    assert [(r.role, r.author_name, r.content, r.session_id) for r in got] == [(Role.USER, "bob", "bob's aside", "s2")]


def test_no_quote_no_lookup() -> None:
    memory = Memory(QUESTION)
    assert run(bot_with(memory), message(None)) == [] and memory.asked == []
