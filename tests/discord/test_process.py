"""The bot started through its real entry point (``python -m core run``) in
its own process, talking to the fake Discord: it chats, and after a restart
of the process the conversation's context is still there (memory on SQLite)."""

from __future__ import annotations

import io
import sqlite3

import pytest
from PIL import Image

from tests.fake_discord.runner import BotProcess, FakeDiscordThread

pytestmark = [pytest.mark.discord, pytest.mark.multiprocess]



def test_entry_point_chats_and_context_survives_a_restart(tmp_path):
    data = tmp_path / "data"
    with FakeDiscordThread() as discord:
        guild, channel, alice = discord.world()
        with BotProcess(discord, data) as bot:
            bot.start()
            first = discord.chat(channel["id"], alice, "Hello! My name is Zed.", mention=True)
            assert first, bot.log_tail()
            dm = discord.dm_channel(alice)
            assert discord.chat(dm["id"], alice, "my favourite colour is teal")
            # An image in: downloaded from the (fake) CDN and checked by the images plugin with Pillow.
            png = io.BytesIO()
            Image.new("RGB", (64, 48), "red").save(png, "PNG")
            seen = discord.reply_to(discord.say(dm["id"], alice, "look", attachments=[("red.png", png.getvalue(), "image/png")])["id"])
            assert "red.png" in seen and "64" in seen, seen

            assert bot.stop() == 0, bot.log_tail()
            bot.start()
            answer = discord.chat(channel["id"], alice, "What is my name?", mention=True)
            assert "Zed" in answer, f"{answer!r}\n{bot.log_tail()}"
            assert "teal" in discord.chat(dm["id"], alice, "what is my favourite colour?")
            assert discord.sessions_identified() == 2

            # Slash commands of the real plugins, and an image out.
            [picture] = [f for r in discord.interact("imagine", alice, channel["id"], {"prompt": "a red circle"})
                         for f in r["files"]]
            assert picture["data"].startswith(b"\x89PNG"), bot.log_tail()
            # Runtime plugin management from Discord: refused to a member, done
            # by the application's owner, and still in force after a restart.
            owner = discord.fake.owner_user
            assert "administrators and the bot's owners" in discord.interaction("plugins", alice, channel["id"],
                                                                  {"action": "disable", "name": "images"})
            owner_dm = discord.dm_channel(owner)
            assert discord.interaction("plugins", owner, owner_dm["id"],
                                       {"action": "disable", "name": "images"}) == "plugin 'images' switched off for the whole bot"
            bot.restart()
            assert "images: disabled" in discord.interaction("plugins", alice, channel["id"])
            assert "imagine" not in {c["name"] for c in discord.fake.commands[None]}
            assert bot.stop() == 0, bot.log_tail()
        log = bot.log_text()

    db = data / "memory.db"
    assert db.exists(), "the memory plugin did not write its SQLite database"
    with sqlite3.connect(db) as conn:
        contents = [row[0] for row in conn.execute("SELECT content FROM messages ORDER BY ts")]
    assert "Hello! My name is Zed." in contents and "What is my name?" in contents
    assert discord.fake.token not in log, "the token leaked into the log"


def _redis_up() -> bool:
    import socket

    try:
        socket.create_connection(("127.0.0.1", 6379), 0.5).close()
        return True
    except OSError:
        return False


def test_two_processes_split_the_guilds_by_shard(tmp_path):
    with FakeDiscordThread() as discord:
        from tests.discord.test_sharding import guilds_on_each_shard

        def build():
            guilds = guilds_on_each_shard(discord.fake, 2)
            alice = discord.fake.make_user("alice")
            channels = {}
            for shard, guild in guilds.items():
                discord.fake.add_member(guild, alice)
                channels[shard] = discord.fake.add_channel(guild, "general")
            return alice, channels

        alice, channels = discord.do(build)
        with BotProcess(discord, tmp_path / "a", name="a",
                        env={"DISCORD_SHARD_COUNT": "2", "DISCORD_SHARD_IDS": "[0]"}) as a, \
                BotProcess(discord, tmp_path / "b", name="b",
                           env={"DISCORD_SHARD_COUNT": "2", "DISCORD_SHARD_IDS": "[1]"}) as b:
            a.start()
            b.start()
            assert sorted(tuple(i["shard"]) for i in discord.fake.identifies) == [(0, 2), (1, 2)]
            for shard, channel in channels.items():
                assert discord.chat(channel["id"], alice, f"my name is Shard{shard}", mention=True)
            posts = discord.do(lambda: [p for m, p, s in discord.fake.requests if m == "POST" and p.endswith("/messages")])
            assert len(posts) == 2
            assert a.stop() == 0 and b.stop() == 0
    # Each process stored only its own shard's conversation.
    for name, shard in (("a", 0), ("b", 1)):
        with sqlite3.connect(tmp_path / name / "memory.db") as conn:
            contents = {row[0] for row in conn.execute("SELECT content FROM messages WHERE role = 'user'")}
        assert contents == {f"my name is Shard{shard}"}


@pytest.mark.real
def test_two_instances_on_one_shard_answer_each_message_once(tmp_path):
    """Active-active: both processes receive every message (same shard); the
    memory's claim lets one answer, and the other stays silent."""
    import uuid

    if not _redis_up():
        # The real matrix fails, never skips (--backend fast leaves it out).
        pytest.fail("needs Redis on 127.0.0.1:6379 (scripts/services.sh starts it)", pytrace=False)

    shared = {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'shared.db'}",
        "REDIS_URL": "redis://127.0.0.1:6379/0",
        # A prefix of our own on the shared Redis: nothing else is touched.
        "MEMORY_KEY_PREFIX": f"test-discord-{uuid.uuid4().hex[:8]}:",
        "LIMITS_KEY_PREFIX": f"test-discord-limits-{uuid.uuid4().hex[:8]}:",
    }
    try:
        posts, replies, a, b = _active_active(tmp_path, shared)
    finally:
        _delete_keys(shared["MEMORY_KEY_PREFIX"], shared["LIMITS_KEY_PREFIX"])
    # One POST per message: the second instance did not even try (the fake's
    # nonce check would have hidden a duplicate from users, not from this count).
    assert len(posts) == 4, f"{posts}\n--- a ---\n{a.log_tail()}\n--- b ---\n{b.log_tail()}"
    assert len(replies) == 4
    assert "Both" in replies[1]["content"]


def _delete_keys(*prefixes: str) -> None:
    import redis

    client = redis.Redis(host="127.0.0.1", port=6379)
    try:
        for prefix in prefixes:
            keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
            if keys:
                client.delete(*keys)
    finally:
        client.close()


def _active_active(tmp_path, shared):
    with FakeDiscordThread() as discord:
        guild, channel, alice = discord.world()
        with BotProcess(discord, tmp_path / "a", name="a", env=dict(shared, BOT_INSTANCE_ID="A")) as a, \
                BotProcess(discord, tmp_path / "b", name="b", env=dict(shared, BOT_INSTANCE_ID="B")) as b:
            a.start()
            b.start()
            said = []
            for text in ("my name is Both", "what is my name?", "third message"):
                message = discord.say(channel["id"], alice, text, mention=True)
                said.append(message["id"])
                assert discord.reply_to(message["id"])
            # The last message's reply is posted: wait for any second answer to settle by
            # sending one more and waiting for its reply as well.
            sentinel = discord.say(channel["id"], alice, "sentinel", mention=True)
            discord.reply_to(sentinel["id"])
            # A slash command reaches both instances too: one runs it.
            assert "Session" in discord.interaction("session", alice, channel["id"])
            assert discord.interaction("help", alice, channel["id"]).startswith("Commands:")
            assert a.stop() == 0 and b.stop() == 0, a.log_tail() + b.log_tail()
            # Counted after both stopped: a late duplicate would be counted too.
            posts = discord.do(lambda: [s for m, p, s in discord.fake.requests if m == "POST" and p.endswith("/messages")])
            replies = discord.do(lambda: list(discord.fake.bot_messages))
            callbacks = discord.do(lambda: [s for m, p, s in discord.fake.requests if p.endswith("/callback")])
    assert callbacks == [200, 200], f"{callbacks}: an interaction was answered twice (or not at all)"
    return posts, replies, a, b


@pytest.mark.fault
@pytest.mark.real
def test_context_survives_redis_flush_and_outage_through_discord(tmp_path):
    """A private redis-server (never the shared one): flushed, then killed,
    then back; the bot in its own process keeps the conversation."""
    from harness.backends import RedisServer

    redis = RedisServer(tmp_path / "redis")
    redis.start()
    try:
        with FakeDiscordThread() as discord:
            guild, channel, alice = discord.world()
            env = {"REDIS_URL": f"redis://127.0.0.1:{redis.port}/0"}
            with BotProcess(discord, tmp_path / "data", env=env) as bot:
                bot.start()
                assert discord.chat(channel["id"], alice, "Hi, my name is Flo.", mention=True)
                with redis.client() as client:
                    client.flushall()
                assert "Flo" in discord.chat(channel["id"], alice, "What is my name?", mention=True), bot.log_tail()
                redis.kill()
                down = discord.chat(channel["id"], alice, "what is my name?", mention=True)
                assert "Flo" in down, bot.log_tail()
                redis.start()
                assert "Flo" in discord.chat(channel["id"], alice, "Do you remember my name?", mention=True), bot.log_tail()
                assert bot.stop() == 0, bot.log_tail()
    finally:
        redis.stop()


def test_context_survives_a_crash_kill_9(tmp_path):
    with FakeDiscordThread() as discord:
        guild, channel, alice = discord.world()
        with BotProcess(discord, tmp_path / "data") as bot:
            bot.start()
            assert discord.chat(channel["id"], alice, "My name is Kay.", mention=True)
            assert bot.kill() == -9
            bot.start()
            assert "Kay" in discord.chat(channel["id"], alice, "What is my name?", mention=True), bot.log_tail()
            bot.stop()
