"""Replies shown while they are written (plugins/discord/live.py): through
the real discord.py client against the fake Discord, whose REST log shows
every post and edit."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from core.models import Context, IncomingMessage, Reply
from core.plugins import hookimpl
from core.storage import StorageBase
from plugins.discord.parts import reply_parts
from tests.discord.test_chat import discord_world

pytestmark = pytest.mark.discord

INTERVAL = 0.3


class Streamer:
    """A reply plugin that writes its reply piece by piece, as a streaming
    model does: each piece published on the bot's hub, ``gap`` apart."""

    def __init__(self, pieces: list[str], gap: float = 0.1, notes: list[str] | None = None) -> None:
        self.pieces = pieces
        self.gap = gap
        self.notes = notes or []

    @hookimpl(tryfirst=True)
    async def generate_reply(self, context: Context, message: IncomingMessage, bot: Any) -> Reply:
        for piece in self.pieces:
            bot.tokens.publish(message.id, piece)
            await asyncio.sleep(self.gap)
        bot.tokens.finish(message.id)
        return Reply("".join(self.pieces), notes=list(self.notes))


def edits_of(fake: Any, message_id: str) -> list[dict[str, Any]]:
    return [e for e in fake.edits if e["message_id"] == message_id]


def posts(fake: Any) -> int:
    return sum(1 for m, path, _ in fake.requests if m == "POST" and path.endswith("/messages"))


def test_a_streamed_reply_is_posted_then_edited_at_most_once_per_interval(run, make_bot):
    pieces = [f"word{i} " for i in range(20)]
    streamer = Streamer(pieces, gap=0.08, notes=["a note"])

    async def scenario():
        async with discord_world(make_bot, bot_options={}, configure=lambda w: {"stream_edit_interval": INTERVAL},
                                 ) as w:
            w.client.core.plugins.pm.register(streamer, "streamer")
            sent = await w.fake.send_user_message(w.dm["id"], w.alice, "hello")
            final = Reply("".join(pieces), notes=["a note"]).text()
            await w.fake.wait_until(lambda: any(m["content"] == final for m in w.fake.bot_messages), 10, "final text")
            reply = await w.fake.wait_for_reply_to(sent["id"])
            edits = edits_of(w.fake, reply[0]["id"])
            return reply, edits, posts(w.fake), final

    reply, edits, post_count, final = run(scenario())
    assert post_count == 1, "one message, edited: not one post per piece"
    assert [m["content"] for m in reply] == [final]
    # The preview grew: at least two edits before the final one, each
    # showing more of the reply than the one before.
    shown = [e["content"] for e in edits]
    assert len(shown) >= 3, shown
    assert all(len(a) < len(b) for a, b in zip(shown, shown[1:])), shown
    gaps = [b["at"] - a["at"] for a, b in zip(edits, edits[1:])]
    assert all(gap >= INTERVAL * 0.9 for gap in gaps), f"edits closer than {INTERVAL}s: {gaps}"


def test_a_streamed_reply_past_2000_characters_goes_on_in_follow_ups(run, make_bot):
    paragraph = ("This sentence is part of a long streamed reply. " * 12).strip()
    text = "\n\n".join(f"{i}: {paragraph}" for i in range(8))
    pieces = [text[i:i + 400] for i in range(0, len(text), 400)]
    streamer = Streamer(pieces, gap=0.05)

    async def scenario():
        async with discord_world(make_bot, configure=lambda w: {"stream_edit_interval": INTERVAL}) as w:
            w.client.core.plugins.pm.register(streamer, "streamer")
            sent = await w.fake.send_user_message(w.dm["id"], w.alice, "long please")
            expected = [t for t, _ in reply_parts(Reply(text))]
            await w.fake.wait_until(lambda: [m["content"] for m in w.fake.bot_messages] == expected, 10, "the parts")
            return await w.fake.wait_for_reply_to(sent["id"]), expected, posts(w.fake)

    reply, expected, post_count = run(scenario())
    assert len(expected) >= 3
    assert [m["content"] for m in reply] == expected
    assert post_count == len(expected)
    assert all(len(m["content"]) <= 2000 for m in reply)


def test_streaming_off_posts_the_whole_reply_once(run, make_bot):
    streamer = Streamer(["one ", "two ", "three"], gap=0.05)

    async def scenario():
        async with discord_world(make_bot, configure=lambda w: {"stream_replies": False}) as w:
            w.client.core.plugins.pm.register(streamer, "streamer")
            sent = await w.fake.send_user_message(w.dm["id"], w.alice, "hi")
            return await w.fake.wait_for_reply_to(sent["id"]), list(w.fake.edits)

    reply, edits = run(scenario())
    assert [m["content"] for m in reply] == ["one two three"]
    assert edits == []


class LostClaim(StorageBase):
    """A storage whose every claim was taken over by another instance."""

    @hookimpl
    def register_storage(self, register: Any) -> None:
        register(self)

    async def confirm_reply(self, message: IncomingMessage) -> bool:
        return False


def test_an_instance_that_lost_the_message_shows_no_preview(run, tmp_path):
    from core.bot import Bot
    from core.settings import BotSection, EnvSettings, Settings
    from tests.discord.conftest import _EntryPoint

    streamer = Streamer(["never ", "shown"], gap=0.05)

    def make_bot(**_: Any) -> Bot:
        settings = Settings(env=EnvSettings(_env_file=None, data_dir=tmp_path, instance_id="A"), bot=BotSection())
        return Bot(settings, entry_points=[_EntryPoint("lost", LostClaim()), _EntryPoint("streamer", streamer)])

    async def scenario():
        async with discord_world(make_bot, configure=lambda w: {"stream_edit_interval": INTERVAL}) as w:
            await w.fake.send_user_message(w.dm["id"], w.alice, "hi")
            sentinel_wait = asyncio.sleep(0.6)
            await sentinel_wait
            return list(w.fake.bot_messages), list(w.fake.edits)

    bot_messages, edits = run(scenario())
    assert bot_messages == [] and edits == []
