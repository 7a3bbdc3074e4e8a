"""Scenarios of features/edits.feature: edits and deletions reach memory
(docs/MEMORY.md, E1-E5), through the core's ``handle_edit`` and
``handle_deletion`` on every running instance, as Discord delivers them."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable
from typing import Any

from pytest_bdd import scenarios, then, when

from core.models import MessageDeletion, MessageEdit, ReplyId
from tests.harness.harness import Harness, HarnessError
from tests.harness.steps import p

scenarios("edits.feature")


def _bots(harness: Harness) -> list:
    bots = [getattr(i, "bot", None) for i in harness.instances.values()]
    if not bots or any(b is None for b in bots):
        raise HarnessError("edits and deletions are delivered to in-process instances only")
    return bots


async def _all(calls: Iterable[Awaitable[None]]) -> None:
    await asyncio.gather(*calls)


def _edit(harness: Harness, text: str, new: str, at: float) -> MessageEdit:
    said = harness.message_said(text)
    return MessageEdit(id=said.id, author_id=said.author_id, channel_id=said.channel_id, guild_id=said.guild_id,
                       content=new, edited_at=at)


def _deliver_edits(harness: Harness, edits: list[MessageEdit]) -> None:
    """Each edit to every instance at once (Discord sends every event to
    every connection), one edit after the other."""
    for edit in edits:
        harness.run(_all(b.handle_edit(edit) for b in _bots(harness)), what="delivering an edit")


def _delete(harness: Harness, ids: list[str], channel_id: str, guild_id: str | None) -> None:
    deletion = MessageDeletion(ids=ids, channel_id=channel_id, guild_id=guild_id, deleted_at=harness.clock.now())
    harness.run(_all(b.handle_deletion(deletion) for b in _bots(harness)), what="delivering a deletion")


@when(p('{user:Name} edits "{text}" to "{new}"'))
def when_edits(harness: Harness, user: str, text: str, new: str) -> None:
    """``user`` edits their message ``text``; the edit's platform time is now."""
    harness.advance_clock(1)
    _deliver_edits(harness, [_edit(harness, text, new, harness.clock.now())])


@when(p('{user:Name} edits "{text}" to "{first}" and then to "{second}", delivered in reverse order'))
def when_edits_reversed(harness: Harness, user: str, text: str, first: str, second: str) -> None:
    """Two edits, ``second`` one second after ``first`` (platform time);
    the later one reaches the bot first."""
    harness.advance_clock(1)
    earlier = _edit(harness, text, first, harness.clock.now())
    later = _edit(harness, text, second, harness.clock.now() + 1)
    _deliver_edits(harness, [later, earlier])


@when(p('{user:Name} deletes "{text}"'))
@when(p('{user:Name} deletes "{text}" again'))
def when_deletes(harness: Harness, user: str, text: str) -> None:
    said = harness.message_said(text)
    _delete(harness, [said.id], said.channel_id, said.guild_id)


@when(p('a moderator deletes "{first}" and "{second}" at once'))
def when_bulk_deletes(harness: Harness, first: str, second: str) -> None:
    """One bulk deletion event naming both messages."""
    one, two = harness.message_said(first), harness.message_said(second)
    _delete(harness, [one.id, two.id], one.channel_id, one.guild_id)


@when(p('{user:Name}\'s message "{text}" in {place:Place} is deleted before the bot receives it'))
def when_deleted_first(harness: Harness, user: str, text: str, place: str) -> None:
    """The deletion event overtakes the message: it reaches every instance
    first, then the message itself is delivered."""
    message = harness.new_message(user, place, text)
    _delete(harness, [message.id], message.channel_id, message.guild_id)
    harness.deliver(message)


def _stored_content(harness: Harness, text: str) -> list[tuple[str]]:
    return [tuple(r) for r in harness.db("SELECT content FROM messages WHERE message_id = ?", (harness.message_said(text).id,))]


@then(p('the database holds "{text}" as "{content}"'))
def then_stored_as(harness: Harness, text: str, content: str) -> None:
    """Plain SQL: the row of the message said as ``text`` holds ``content``."""
    rows = _stored_content(harness, text)
    assert rows == [(content,)], f"the row of {text!r} holds {rows}"


@then(p('eventually the database holds "{text}" as "{content}"'))
def then_stored_as_eventually(harness: Harness, text: str, content: str) -> None:
    def check() -> None:
        then_stored_as(harness, text, content)

    harness.wait_until(check, f"the edit of {text!r} in the database")


@then(p('the database holds no trace of "{text}"'))
def then_no_trace(harness: Harness, text: str) -> None:
    """No row for the message, nor for the bot's reply to it; its
    tombstone is there (a late copy can never be stored)."""
    said = harness.message_said(text)
    rows = harness.db("SELECT message_id FROM messages WHERE message_id IN (?, ?) OR reply_to_id = ?",
                      (said.id, str(ReplyId(said.id)), said.id))
    assert rows == [], f"still stored: {rows}"
    tombstones = harness.db("SELECT count(*) FROM deleted_messages WHERE message_id = ?", (said.id,))
    assert tombstones[0][0] == 1, "no tombstone"


@then(p('eventually the database holds no trace of "{text}"'))
def then_no_trace_eventually(harness: Harness, text: str) -> None:
    def check() -> None:
        then_no_trace(harness, text)

    harness.wait_until(check, f"the deletion of {text!r} in the database")


@when(p("{user:Name} leaves the server of {place:Place}"))
@when(p("{user:Name} leaves the server of {place:Place} again"))
def when_member_leaves(harness: Harness, user: str, place: str) -> None:
    """The platform tells every instance that ``user`` left (or was
    removed from) the server ``place`` is in, as Discord's
    GUILD_MEMBER_REMOVE reaches every connection."""
    member = harness.world.user(user)
    guild = harness.world.place(place, member).guild_id
    if guild is None:
        raise HarnessError(f"{place} is not in a server")
    harness.advance_clock(1)
    left_at = harness.clock.now()
    harness.run(_all(_left(b, member.id, guild, left_at) for b in _bots(harness)), what="delivering a member leaving")


async def _left(bot: Any, user_id: str, guild_id: str, left_at: float) -> None:
    await bot.handle_member_left(user_id, guild_id, left_at)
