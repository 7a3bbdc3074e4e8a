"""The Discord transport, through the real discord.py client over real HTTP
and websockets, against the fake Discord on 127.0.0.1."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from core.models import ReplyId

from tests.fake_discord.inprocess import connected
from tests.fake_discord.server import FakeDiscord

pytestmark = pytest.mark.discord


@dataclass
class World:
    fake: FakeDiscord
    guild: Any
    channel: dict[str, Any]
    other_channel: dict[str, Any]
    alice: dict[str, Any]
    mod: dict[str, Any]
    admin: dict[str, Any]
    other_bot: dict[str, Any]
    client: Any = None

    @property
    def dm(self) -> dict[str, Any]:
        return self.fake.dm_channel(self.alice)


def build_world(fake: FakeDiscord) -> World:
    guild = fake.add_guild("g")
    channel = fake.add_channel(guild, "general")
    other = fake.add_channel(guild, "random")
    alice, mod, admin = fake.make_user("alice"), fake.make_user("mod"), fake.make_user("admin")
    other_bot = fake.make_user("otherbot", bot=True)
    fake.add_member(guild, alice)
    fake.add_member(guild, mod, ["mod"])
    fake.add_member(guild, admin, ["admin"])
    fake.add_member(guild, other_bot)
    return World(fake, guild, channel, other, alice, mod, admin, other_bot)


@contextlib.asynccontextmanager
async def discord_world(
    make_bot: Callable[..., Any],
    *,
    fake_options: dict[str, Any] | None = None,
    bot_options: dict[str, Any] | None = None,
    configure: Callable[[World], dict[str, Any]] = lambda w: {},
) -> AsyncIterator[World]:
    async with FakeDiscord(**(fake_options or {})) as fake:
        world = build_world(fake)
        bot = make_bot(**(bot_options or {}))
        await bot.start()
        try:
            async with connected(bot, fake, **configure(world)) as client:
                world.client = client
                yield world
                assert fake.unknown_requests == [], "the bot called routes the fake does not know"
        finally:
            await bot.stop()


@pytest.mark.parametrize("frames", ["auto", "text"])
def test_dm_is_answered_with_typing_shown(run, make_bot, recorder, frames):
    async def scenario():
        async with discord_world(make_bot, fake_options={"frames": frames}) as w:
            sent = await w.fake.send_user_message(w.dm["id"], w.alice, "hello there")
            reply = await w.fake.wait_for_reply_to(sent["id"])
            assert reply[0]["content"] == "echo: hello there"
            assert w.dm["id"] in w.fake.typing
            assert w.fake.frame_modes[0] == ("zlib-stream" if frames == "auto" else "text")
        seen = recorder.seen[0]
        assert (seen.id, seen.is_dm, seen.guild_id, seen.transport) == (sent["id"], True, None, "discord")
        assert seen.author_id == w.alice["id"] and seen.channel_id == w.dm["id"]

    run(scenario())


def test_split_zlib_frames_are_reassembled(run, make_bot):
    async def scenario():
        async with discord_world(make_bot, fake_options={"split_zlib_frames": True}) as w:
            sent = await w.fake.send_user_message(w.dm["id"], w.alice, "in two frames")
            assert (await w.fake.wait_for_reply_to(sent["id"]))[0]["content"] == "echo: in two frames"

    run(scenario())


def test_mention_in_a_guild_is_answered_without_the_mention(run, make_bot, recorder):
    async def scenario():
        async with discord_world(make_bot) as w:
            sent = await w.fake.send_user_message(w.channel["id"], w.alice, "what's up?", mention_bot=True)
            reply = await w.fake.wait_for_reply_to(sent["id"])
            assert reply[0]["content"] == "echo: what's up?"
        seen = recorder.seen[0]
        assert seen.mentions_bot and not seen.is_dm
        assert (seen.guild_id, seen.channel_id, seen.thread_id) == (w.guild.id, w.channel["id"], None)
        assert seen.permissions == frozenset()

    run(scenario())


def test_reply_to_the_bot_is_answered_and_carries_reply_to(run, make_bot, recorder):
    async def scenario():
        async with discord_world(make_bot) as w:
            first = await w.fake.send_user_message(w.channel["id"], w.alice, "one", mention_bot=True)
            bot_reply = (await w.fake.wait_for_reply_to(first["id"]))[0]
            second = await w.fake.send_user_message(w.channel["id"], w.alice, "two", reply_to=bot_reply["id"])
            assert (await w.fake.wait_for_reply_to(second["id"]))[0]["content"] == "echo: two"
        assert recorder.seen[1].reply_to_id == bot_reply["id"]

    run(scenario())


def test_messages_not_for_the_bot_and_from_bots_are_ignored(run, make_bot, recorder):
    async def scenario():
        async with discord_world(make_bot) as w:
            await w.fake.send_user_message(w.channel["id"], w.alice, "talking to people")
            await w.fake.send_user_message(w.channel["id"], w.other_bot, "bot chatter", mention_bot=True)
            bot_dm = w.fake.dm_channel(w.other_bot)
            await w.fake.send_user_message(bot_dm["id"], w.other_bot, "bot in dm")
            # A message that is answered, sent last: once its reply is there,
            # the earlier ones were dispatched and dropped.
            sentinel = await w.fake.send_user_message(w.channel["id"], w.alice, "sentinel", mention_bot=True)
            await w.fake.wait_for_reply_to(sentinel["id"])
            # The fake echoed the bot's own reply back as MESSAGE_CREATE; it was not answered either.
            assert [m["content"] for m in w.fake.bot_messages] == ["echo: sentinel"]
        assert [m.content for m in recorder.seen] == ["sentinel"]

    run(scenario())


def test_configured_channel_without_message_content_intent(run, make_bot, recorder):
    """Discord blanks unaddressed guild messages without the intent: the bot
    stays silent on those (no "empty message" spam) and still answers mentions."""

    async def scenario():
        async with discord_world(
            make_bot, configure=lambda w: {"channels": [int(w.channel["id"])], "message_content_intent": False}
        ) as w:
            assert not w.fake.identifies[0]["intents"] & (1 << 15)
            await w.fake.send_user_message(w.channel["id"], w.alice, "secret text")
            sentinel = await w.fake.send_user_message(w.channel["id"], w.alice, "addressed", mention_bot=True)
            await w.fake.wait_for_reply_to(sentinel["id"])
            assert [m["content"] for m in w.fake.bot_messages] == ["echo: addressed"]
        assert [m.content for m in recorder.seen] == ["addressed"]

    run(scenario())


def test_configured_channel_with_the_intent_answers_everything(run, make_bot, recorder):
    async def scenario():
        async with discord_world(make_bot, configure=lambda w: {"channels": [int(w.channel["id"])]}) as w:
            sent = await w.fake.send_user_message(w.channel["id"], w.alice, "no mention needed")
            assert (await w.fake.wait_for_reply_to(sent["id"]))[0]["content"] == "echo: no mention needed"
            sentinel_other = await w.fake.send_user_message(w.other_channel["id"], w.alice, "elsewhere")
            sentinel = await w.fake.send_user_message(w.other_channel["id"], w.alice, "x", mention_bot=True)
            await w.fake.wait_for_reply_to(sentinel["id"])
            assert all((m.get("message_reference") or {}).get("message_id") != sentinel_other["id"]
                       for m in w.fake.bot_messages)

    run(scenario())


def test_thread_message_carries_parent_channel_and_thread(run, make_bot, recorder):
    async def scenario():
        async with FakeDiscord() as fake:
            w = build_world(fake)
            thread = fake.add_channel(w.guild, "a-thread", parent_id=w.channel["id"])
            bot = make_bot()
            await bot.start()
            async with connected(bot, fake, channels=[int(w.channel["id"])]):
                sent = await fake.send_user_message(thread["id"], w.alice, "in a thread")
                reply = await fake.wait_for_reply_to(sent["id"])
                assert reply[0]["channel_id"] == thread["id"]
            await bot.stop()
        assert (recorder.seen[0].channel_id, recorder.seen[0].thread_id) == (w.channel["id"], thread["id"])

    run(scenario())


def test_privileged_intent_not_enabled_in_portal_fails_clearly(run, make_bot):
    import discord

    async def scenario():
        async with FakeDiscord(privileged_intents=0) as fake:
            build_world(fake)
            bot = make_bot()
            await bot.start()
            with pytest.raises(discord.PrivilegedIntentsRequired):
                async with connected(bot, fake):
                    pass
            # Without the intent setting it connects.
            async with connected(bot, fake, message_content_intent=False):
                pass
            await bot.stop()

    run(scenario())


def test_long_reply_is_split_under_2000_on_paragraphs(run, make_bot, recorder):
    async def scenario():
        async with discord_world(make_bot) as w:
            sent = await w.fake.send_user_message(w.dm["id"], w.alice, "long please")
            parts = await w.fake.wait_for_bot_messages(w.dm["id"], 3)
        assert all(0 < len(p["content"]) <= 2000 for p in parts)
        assert parts[0]["message_reference"]["message_id"] == sent["id"]
        assert all("message_reference" not in p for p in parts[1:])
        expected = recorder.seen and "\n\n".join(
            f"{i}: " + ("This sentence is part of a long reply. " * 20).strip() for i in range(6))
        assert "\n\n".join(p["content"] for p in parts) == expected
        assert all(p["content"][0].isdigit() for p in parts), "cut inside a paragraph"

    run(scenario())


def test_four_thousand_characters_in_and_oversized_refused(run, make_bot, recorder):
    async def scenario():
        async with discord_world(make_bot) as w:
            ok = await w.fake.send_user_message(w.dm["id"], w.alice, "y" * 4000)
            reply = await w.fake.wait_for_reply_to(ok["id"])
            assert [len(p["content"]) for p in reply] == [2000, 2000, 6] or all(len(p["content"]) <= 2000 for p in reply)
            too_long = await w.fake.send_user_message(w.dm["id"], w.alice, "z" * 4001)
            refused = await w.fake.wait_for_reply_to(too_long["id"])
            assert "limit is 4,000" in refused[0]["content"]
        assert [len(m.content) for m in recorder.seen] == [4000]

    run(scenario())


def test_attachments_in_and_out(run, make_bot, recorder):
    async def scenario():
        async with discord_world(make_bot, configure=lambda w: {"max_attachment_bytes": 1000}) as w:
            sent = await w.fake.send_user_message(
                w.dm["id"], w.alice, "look",
                attachments=[("a.txt", b"12345", "text/plain"), ("big.bin", b"x" * 2000, "application/octet-stream")],
            )
            reply = await w.fake.wait_for_reply_to(sent["id"])
            assert reply[0]["content"] == "echo: look [a.txt:5,big.bin:0]"
            only_file = await w.fake.send_user_message(w.dm["id"], w.alice, "", attachments=[("b.txt", b"hi", "text/plain")])
            assert (await w.fake.wait_for_reply_to(only_file["id"]))[0]["content"] == "echo:  [b.txt:2]"
            asked = await w.fake.send_user_message(w.dm["id"], w.alice, "file please")
            out = await w.fake.wait_for_reply_to(asked["id"])
        big = recorder.seen[0].attachments[1]
        assert big.data is None and big.url and big.size == 2000
        assert out[0]["content"] == "here is a file"
        assert [(f["filename"], f["data"]) for f in out[0]["files"]] == [("out.txt", b"hello")]

    run(scenario())


def test_empty_sticker_and_embed_only_messages_get_a_clear_answer(run, make_bot, recorder):
    async def scenario():
        async with discord_world(make_bot) as w:
            empty = await w.fake.send_user_message(w.dm["id"], w.alice, "")
            assert "empty message" in (await w.fake.wait_for_reply_to(empty["id"]))[0]["content"]
            sticker = await w.fake.send_user_message(w.dm["id"], w.alice, "", stickers=["wave"])
            assert (await w.fake.wait_for_reply_to(sticker["id"]))[0]["content"] == "echo: [sticker: wave]"
            embed = await w.fake.send_user_message(w.dm["id"], w.alice, "",
                                                   embeds=[{"type": "rich", "title": "News", "description": "big"}])
            assert (await w.fake.wait_for_reply_to(embed["id"]))[0]["content"] == "echo: [embed: News - big]"

    run(scenario())


def test_model_output_cannot_ping(run, make_bot):
    async def scenario():
        async with discord_world(make_bot) as w:
            sent = await w.fake.send_user_message(w.channel["id"], w.alice, "ping", mention_bot=True)
            reply = (await w.fake.wait_for_reply_to(sent["id"]))[0]
        assert reply["content"].startswith("@everyone")
        assert reply["allowed_mentions"]["parse"] == [] and not reply["allowed_mentions"].get("replied_user")
        # The reply does not ping the author either.
        assert w.alice["id"] not in [m["id"] for m in reply["mentions"]]

    run(scenario())


@pytest.mark.parametrize("via", [True, False], ids=["429-with-via", "429-without-via"])
def test_429_on_send_is_retried(run, make_bot, recorder, via):
    async def scenario():
        async with discord_world(make_bot) as w:
            w.fake.fail("POST", r"/channels/\d+/messages", 429, count=2, via=via)
            sent = await w.fake.send_user_message(w.dm["id"], w.alice, "rate limited")
            reply = await w.fake.wait_for_reply_to(sent["id"])
            statuses = [s for m, p, s in w.fake.requests if m == "POST" and p.endswith("/messages")]
        assert [r["content"] for r in reply] == ["echo: rate limited"]
        assert statuses == [429, 429, 200]
        assert [r.id for r in recorder.stored] == [sent["id"], ReplyId(sent["id"])]

    run(scenario())


def test_5xx_after_the_message_was_created_does_not_post_twice(run, make_bot, recorder):
    async def scenario():
        async with discord_world(make_bot) as w:
            w.fake.fail("POST", r"/channels/\d+/messages", 500, count=1, after_effect=True)
            sent = await w.fake.send_user_message(w.dm["id"], w.alice, "flaky")
            await w.fake.wait_for_reply_to(sent["id"])
            sentinel = await w.fake.send_user_message(w.dm["id"], w.alice, "after")
            await w.fake.wait_for_reply_to(sentinel["id"])
            statuses = [s for m, p, s in w.fake.requests if m == "POST" and p.endswith("/messages")]
            assert [m["content"] for m in w.fake.bot_messages] == ["echo: flaky", "echo: after"]
        assert statuses[0] == 500 and statuses.count(200) >= 2

    run(scenario())


def test_send_that_keeps_failing_loses_no_user_message(run, make_bot, recorder):
    async def scenario():
        async with discord_world(make_bot, configure=lambda w: {"send_retries": 1}) as w:
            w.fake.fail("POST", r"/channels/\d+/messages", 403, count=1)  # a 403 is final: not retried
            sent = await w.fake.send_user_message(w.dm["id"], w.alice, "into the void")
            await w.fake.wait_until(lambda: any(s == 403 for _m, _p, s in w.fake.requests), what="the 403")
            sentinel = await w.fake.send_user_message(w.dm["id"], w.alice, "later")
            await w.fake.wait_for_reply_to(sentinel["id"])
        stored = [r.id for r in recorder.stored]
        # The user's message was stored before the send failed; the reply
        # nobody saw was not recorded as said.
        assert sent["id"] in stored and ReplyId(sent["id"]) not in stored

    run(scenario())


@pytest.mark.parametrize("how", ["drop", "op7"])
def test_gateway_disconnect_resumes_without_double_processing(run, make_bot, recorder, how):
    async def scenario():
        # The fake replays two already-delivered events on RESUME (at-least-once delivery).
        async with discord_world(make_bot, fake_options={"resume_overlap": 2}) as w:
            before = await w.fake.send_user_message(w.dm["id"], w.alice, "before")
            await w.fake.wait_for_reply_to(before["id"])
            if how == "drop":
                await w.fake.drop_connections()
            else:
                await w.fake.send_reconnect()
            during = await w.fake.send_user_message(w.dm["id"], w.alice, "during")  # buffered or replayed
            await w.fake.wait_for_reply_to(during["id"], timeout=20)
            after = await w.fake.send_user_message(w.dm["id"], w.alice, "after")
            await w.fake.wait_for_reply_to(after["id"])
            assert len(w.fake.resumes) >= 1 and len(w.fake.identifies) == 1
            assert [m["content"] for m in w.fake.bot_messages] == ["echo: before", "echo: during", "echo: after"]
        assert [m.content for m in recorder.seen] == ["before", "during", "after"]

    run(scenario())


def test_heartbeats_are_acked_and_keep_the_connection(run, make_bot):
    async def scenario():
        async with discord_world(make_bot, fake_options={"heartbeat_interval_ms": 30}) as w:
            await w.fake.wait_until(lambda: w.fake.heartbeats >= 5, what="five heartbeats")
            assert len(w.fake.connected_sessions()) == 1 and w.fake.resumes == []
            sent = await w.fake.send_user_message(w.dm["id"], w.alice, "still here")
            await w.fake.wait_for_reply_to(sent["id"])

    run(scenario())


def test_resume_refused_means_a_fresh_identify(run, make_bot, recorder, monkeypatch):
    """When Discord no longer knows the session (op 9 on RESUME), the client
    identifies again and goes on answering."""

    async def no_pause(self, shard_id, *, initial=False):
        return None  # discord.py waits 5 s before a re-IDENTIFY (Discord's identify limit)

    monkeypatch.setattr("plugins.discord.client.DiscordBot.before_identify_hook", no_pause)

    async def scenario():
        async with discord_world(make_bot) as w:
            for session in w.fake.sessions.values():
                session.invalid = True
            await w.fake.drop_connections()
            await w.fake.wait_until(lambda: len(w.fake.identifies) == 2 and w.fake.connected_sessions(),
                                    what="a second IDENTIFY")
            await w.fake.wait_until(lambda: w.client.is_ready(), what="ready again")
            sent = await w.fake.send_user_message(w.dm["id"], w.alice, "after re-identify")
            assert (await w.fake.wait_for_reply_to(sent["id"]))[0]["content"] == "echo: after re-identify"

    run(scenario())
