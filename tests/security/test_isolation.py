"""Isolation (G8) and "your own data only", through the assembled bot with
the real memory (fakeredis + SQLite), sessions and images plugins.

A probe plugin answers every message with the context it was given, so a
test sees exactly what a model would see. Users: alice and bob in guild X,
bob also in guild Y; content words are unique per user so a leak shows.
"""

from __future__ import annotations

import importlib

import asyncio
import io
import itertools
import json
import types
import uuid
from pathlib import Path
from typing import Any

import pytest

from core.bot import Bot
from core.clock import ManualClock
from core.models import Attachment, Context, IncomingMessage, Reply, Sent
from core.plugins import hookimpl
from core.settings import BotSection, EnvSettings, Settings
from tests.core.helpers import FakeEntryPoint

memory_plugin = importlib.import_module("plugins.memory")
sessions_plugin = importlib.import_module("plugins.sessions")
images_plugin = importlib.import_module("plugins.images")

OWNER = "owner-1"
_ids = itertools.count(1_000)
_clock_base = 1_700_000_000.0


@pytest.fixture(autouse=True)
def _no_backend_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DATABASE_URL", "REDIS_URL", "MEMORY_DATABASE_URL", "MEMORY_REDIS_URL", "LIMITS_REDIS_URL"):
        monkeypatch.delenv(name, raising=False)


def _probe() -> types.ModuleType:
    module = types.ModuleType("probe")

    def generate_reply(context: Context) -> Reply:
        return Reply("CTX:" + " | ".join(m.content for m in context.messages if m.role.value == "user"))

    module.generate_reply = hookimpl(tryfirst=True)(generate_reply)  # type: ignore[attr-defined]
    return module


class World:
    """Bots sharing one database and one (fake) Redis, like instances of one deployment."""

    def __init__(self, tmp_path: Path, sessions: dict[str, Any] | None = None) -> None:
        self.tmp_path = tmp_path
        self.redis_name = f"iso-{uuid.uuid4().hex}"
        self.sessions = sessions or {}
        self.clock = ManualClock(_clock_base)

    def bot(self, instance: str = "A") -> Bot:
        settings = Settings(
            env=EnvSettings(data_dir=self.tmp_path, instance_id=instance),
            bot=BotSection(owner_ids=[OWNER]),
            sections={
                "memory": {"redis_url": f"fakeredis://{self.redis_name}", "database_url": f"sqlite:///{self.tmp_path}/memory.db"},
                "sessions": dict(self.sessions),
            },
        )
        eps = [
            FakeEntryPoint("memory", memory_plugin),
            FakeEntryPoint("sessions", sessions_plugin),
            FakeEntryPoint("images", images_plugin),
            FakeEntryPoint("probe", _probe()),
        ]
        return Bot(settings, clock=self.clock, entry_points=eps, instance_id=instance)

    def flush_redis(self) -> None:
        import fakeredis

        from plugins.memory.cache import fake_server

        fakeredis.FakeRedis(server=fake_server(self.redis_name)).flushall()


def msg(text: str, author: str, guild: str | None = "X", channel: str = "c1", **extra: Any) -> IncomingMessage:
    return IncomingMessage(
        id=str(next(_ids)),
        author_id=author,
        author_name=author,
        channel_id=channel,
        guild_id=guild,
        is_dm=guild is None,
        content=text,
        timestamp=_clock_base + next(_ids) / 1000,
        **extra,
    )


async def say(bot: Bot, message: IncomingMessage) -> Reply:
    sent: list[Reply] = []

    async def send(reply: Reply) -> Sent:
        sent.append(reply)
        return Sent()

    await asyncio.wait_for(bot.handle(message, send), 20)
    assert len(sent) == 1, sent
    return sent[0]


def export_text(reply: Reply) -> str:
    [attachment] = reply.attachments
    assert attachment.data is not None
    return attachment.data.decode("utf-8")


def png(color: tuple[int, int, int]) -> Attachment:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), color).save(buffer, "PNG")
    data = buffer.getvalue()
    return Attachment(filename="pic.png", content_type="image/png", size=len(data), data=data)


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 60))


async def _started(world: World, instance: str = "A") -> Bot:
    bot = world.bot(instance)
    await bot.start()
    for name in ("memory", "sessions", "images", "probe"):
        assert bot.plugins.info[name].state == "enabled", bot.plugins.info[name].reason
    return bot


def test_one_user_never_sees_another_users_context_export_or_images(tmp_path: Path) -> None:
    world = World(tmp_path)

    async def scenario() -> None:
        bot = await _started(world)
        try:
            await say(bot, msg("alice-heron", "alice"))
            await say(bot, msg("bob-otter", "bob"))
            await say(bot, msg("bob-in-guild-y-lynx", "bob", guild="Y", channel="c9"))
            await say(bot, msg("bob-dm-badger", "bob", guild=None, channel="dm-bob"))
            await say(bot, msg("look", "bob", attachments=[png((200, 10, 10))]))

            seen = (await say(bot, msg("alice-again", "alice"))).content
            assert "alice-heron" in seen and "alice-again" in seen
            assert not any(word in seen for word in ("otter", "lynx", "badger"))
            # Alice in another guild and in her DMs starts from nothing of anyone's.
            elsewhere = (await say(bot, msg("alice-in-y", "alice", guild="Y", channel="c9"))).content
            assert elsewhere == "CTX:alice-in-y"
            dm = (await say(bot, msg("alice-dm", "alice", guild=None, channel="dm-alice"))).content
            assert dm == "CTX:alice-dm"

            mine = export_text(await say(bot, msg("/export", "alice")))
            assert "alice-heron" in mine and "alice-dm" in mine
            assert not any(word in mine for word in ("otter", "lynx", "badger", '"bob"'))
            bobs = json.loads(export_text(await say(bot, msg("/export", "bob"))))
            assert bobs["data"]["media"], "bob's image is in his own export"
            assert all(item["sha256"] not in mine for item in bobs["data"]["media"])

            # Naming another user is refused for everyone but bot owners.
            for command in ("/export <@bob>", "/history <@bob>", "/forget <@bob> confirm", "/export <@!bob>"):
                refused = await say(bot, msg(command, "alice", permissions=frozenset({"administrator"})))
                assert "own data" in refused.content, command
                assert not refused.attachments
            # However it is spelled, naming bob gets alice nothing of his.
            for command in ("/export bob", "/history bob 5", "/forget bob confirm", "/session bob"):
                reply = await say(bot, msg(command, "alice"))
                assert "otter" not in reply.content and not reply.attachments, command
            still = export_text(await say(bot, msg("/export", "bob")))
            assert "bob-otter" in still

            session = (await say(bot, msg("/session", "alice"))).content
            assert "bob" not in session and "otter" not in session
        finally:
            await bot.stop()

    run(scenario())


def test_forgetting_oneself_leaves_others_untouched(tmp_path: Path) -> None:
    world = World(tmp_path)

    async def scenario() -> None:
        bot = await _started(world)
        try:
            await say(bot, msg("alice-heron", "alice"))
            await say(bot, msg("bob-otter", "bob"))
            done = (await say(bot, msg("/forget confirm", "alice"))).content
            assert done.startswith("Done")
            assert "alice-heron" not in export_text(await say(bot, msg("/export", "alice")))
            assert "bob-otter" in (await say(bot, msg("bob-again", "bob"))).content
        finally:
            await bot.stop()

    run(scenario())


def test_an_owner_may_act_on_another_user(tmp_path: Path) -> None:
    world = World(tmp_path)

    async def scenario() -> None:
        bot = await _started(world)
        try:
            await say(bot, msg("bob-otter", "bob"))
            exported = await say(bot, msg("/export <@bob>", OWNER))
            assert "bob-otter" in export_text(exported)
        finally:
            await bot.stop()

    run(scenario())


@pytest.mark.parametrize("scope", ["channel", "thread"])
def test_shared_scopes_are_shared_in_place_but_never_across_guilds(tmp_path: Path, scope: str) -> None:
    # The same channel (or thread) id in two guilds (another platform, or a
    # forged event) must not join their conversations.
    world = World(tmp_path, sessions={"scope": scope})
    where = {"channel": "shared", "thread_id": "t-shared" if scope == "thread" else None}

    async def scenario() -> None:
        bot = await _started(world)
        try:
            await say(bot, msg("alice-heron", "alice", guild="X", **where))
            together = (await say(bot, msg("bob-otter", "bob", guild="X", **where))).content
            assert "alice-heron" in together  # by design: the place shares one conversation
            apart = (await say(bot, msg("carol-lynx", "carol", guild="Y", **where))).content
            assert apart == "CTX:carol-lynx"
            if scope == "thread":
                beside = (await say(bot, msg("dave-wren", "dave", guild="X", channel="shared"))).content
                assert "heron" not in beside and "otter" not in beside
        finally:
            await bot.stop()

    run(scenario())


def test_isolation_holds_across_a_restart_a_flush_and_a_second_instance(tmp_path: Path) -> None:
    world = World(tmp_path)

    async def first() -> None:
        bot = await _started(world, "A")
        try:
            await say(bot, msg("alice-heron", "alice"))
            await say(bot, msg("bob-otter", "bob"))
        finally:
            await bot.stop()

    async def second() -> None:
        world.flush_redis()
        bot_a, bot_b = await _started(world, "A"), await _started(world, "B")
        try:
            alice = (await say(bot_b, msg("alice-back", "alice"))).content
            assert "alice-heron" in alice and "otter" not in alice
            bob = (await say(bot_a, msg("bob-back", "bob"))).content
            assert "bob-otter" in bob and "heron" not in bob
        finally:
            await bot_a.stop()
            await bot_b.stop()

    run(first())
    run(second())


def _files_holding(root: Path, needle: bytes) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and needle in p.read_bytes())


def test_forget_leaves_no_trace_of_the_text_on_disk_while_the_bot_runs(tmp_path: Path) -> None:
    # SQLite keeps deleted rows in the write-ahead log and in free pages
    # until they are overwritten; a forgotten message must not be readable
    # from the files meanwhile.
    world = World(tmp_path)
    marker = f"alice-zebra-{uuid.uuid4().hex}"
    alice = f"alice-{uuid.uuid4().hex}"

    async def scenario() -> None:
        bot = await _started(world)
        try:
            for n in range(5):
                await say(bot, msg(f"{marker} {n}", alice))
            await say(bot, msg("a picture", alice, attachments=[png((9, 8, 7))]))
            await say(bot, msg("bob-otter", "bob"))
            assert _files_holding(tmp_path, marker.encode())  # the check can see it
            assert _files_holding(tmp_path, alice.encode())
            assert (await say(bot, msg("/forget confirm", alice))).content.startswith("Done")
            assert _files_holding(tmp_path, marker.encode()) == []
            # Not even the user's id: the image index forgets its owner too.
            assert _files_holding(tmp_path, alice.encode()) == []
            assert "bob-otter" in (await say(bot, msg("bob-again", "bob"))).content
        finally:
            await bot.stop()

    run(scenario())
