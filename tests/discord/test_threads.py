"""Busy channels where each new conversation opens a thread
(``[discord] thread_channels``): through the real discord.py client against
the fake Discord."""

from __future__ import annotations

import pytest

from core.models import IncomingMessage
from plugins.sessions.scope import scope_key
from tests.discord.test_chat import discord_world

pytestmark = pytest.mark.discord


def test_a_conversation_in_a_thread_channel_opens_a_thread_and_continues_there(run, make_bot, recorder):
    async def scenario():
        async with discord_world(make_bot, configure=lambda w: {"thread_channels": [int(w.channel["id"])]}) as w:
            first = await w.fake.send_user_message(w.channel["id"], w.alice, "plan the trip", mention_bot=True)
            await w.fake.wait_until(lambda: w.fake.bot_messages_in(first["id"]), 10, "a reply in the thread")
            thread = w.fake.threads[0]
            later = await w.fake.send_user_message(thread["id"], w.alice, "and the budget?")
            await w.fake.wait_until(lambda: len(w.fake.bot_messages_in(thread["id"])) >= 2, 10, "a second reply")
            # Not a thread channel: answered in place, as a Discord reply.
            other = await w.fake.send_user_message(w.other_channel["id"], w.alice, "elsewhere", mention_bot=True)
            await w.fake.wait_for_reply_to(other["id"])
            return w, first, thread, later

    w, first, thread, later = run(scenario())
    assert (thread["id"], thread["parent_id"], thread["name"]) == (first["id"], w.channel["id"], "plan the trip")
    assert len(w.fake.threads) == 1
    assert [m["content"] for m in w.fake.bot_messages_in(thread["id"])] == ["echo: plan the trip", "echo: and the budget?"]
    assert w.fake.bot_messages_in(w.channel["id"]) == []
    one, two = recorder.seen[0], recorder.seen[1]
    assert (one.channel_id, one.thread_id) == (w.channel["id"], first["id"])
    assert (two.channel_id, two.thread_id) == (w.channel["id"], thread["id"])
    for scope in ("user_channel", "thread", "channel"):
        assert scope_key(one, scope) == scope_key(two, scope), scope
    assert isinstance(recorder.seen[2], IncomingMessage) and recorder.seen[2].thread_id is None


def test_a_thread_that_cannot_be_opened_leaves_the_answer_in_the_channel(run, make_bot):
    async def scenario():
        async with discord_world(make_bot, configure=lambda w: {"thread_channels": [int(w.channel["id"])]}) as w:
            w.fake.fail("POST", r"/channels/\d+/messages/\d+/threads", 403)
            sent = await w.fake.send_user_message(w.channel["id"], w.alice, "hello", mention_bot=True)
            return await w.fake.wait_for_reply_to(sent["id"]), w

    reply, w = run(scenario())
    assert reply[0]["content"] == "echo: hello" and reply[0]["channel_id"] == w.channel["id"]
