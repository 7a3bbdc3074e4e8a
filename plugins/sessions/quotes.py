"""Replying to an earlier message brings that exchange back into the context.

Rules (the sessions README says them for operators):

1. When a message replies to an earlier one (``message.quoted``, which the
   transport fills only for a message of the same channel), the exchange
   it belongs to is looked up in memory by id, whatever session or window
   it is in: a user's message with the bot's reply to it
   (``reply:<id>``), or, for a reply of the bot, the message it answered
   and the reply.
2. Only records of the same guild and channel count: what the user can see
   where they are, never more (G8). When memory does not hold it (a message
   not addressed to the bot, or the database is unreachable), the quote the
   platform sent stands in.
3. An exchange already in the window is not repeated. Otherwise it comes
   first, before the window (it is older), beyond ``window_messages`` (at
   most two messages), and a note tells the model the message replies to it.
"""

from __future__ import annotations

from typing import Any

from core.models import IncomingMessage, MessageRecord, Quote, ReplyId, Role, Session

NOTE = "the current message replies to an earlier message, shown first in the conversation"


def exchange_ids(quote: Quote) -> list[str]:
    asked = quote.answers_id if quote.from_bot and quote.answers_id else quote.id
    return [asked, str(ReplyId(asked))]


def same_place(record: MessageRecord, message: IncomingMessage) -> bool:
    return record.guild_id == message.guild_id and record.channel_id == message.channel_id


def stand_in(quote: Quote, message: IncomingMessage, session: Session) -> MessageRecord:
    """The quoted message as the platform showed it, for when memory does
    not hold it."""
    return MessageRecord(
        id=quote.id,
        session_id=session.id,
        scope_key=session.scope_key,
        role=Role.BOT if quote.from_bot else Role.USER,
        author_id=quote.author_id,
        author_name=quote.author_name,
        content=quote.content,
        timestamp=quote.timestamp,
        guild_id=message.guild_id,
        channel_id=message.channel_id,
    )


async def quoted_exchange(bot: Any, message: IncomingMessage, session: Session, window: list[MessageRecord]) -> list[MessageRecord]:
    """The records to put before ``window`` (conversation order), or ``[]``."""
    quote = message.quoted
    if quote is None:
        return []
    ids = exchange_ids(quote)
    shown = {r.id for r in window}
    if quote.id in shown or any(i in shown for i in ids):
        return []
    found = [r for r in await bot.storage.load_records(ids) if same_place(r, message) and r.id != message.id]
    if not found:
        found = [stand_in(quote, message, session)]
    return sorted(found, key=lambda r: r.sort_key)
