"""Plugins switched at run time: who may switch what, where, and how every
instance follows the stored state (rules: core/switches.py,
docs/SECURITY.md "Authority")."""

from __future__ import annotations

import importlib

import asyncio
import itertools
import json
import os
import subprocess
import sys
import types
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from core.bot import Bot
from core.models import Command, IncomingMessage, Reply, Sent
from core.plugins import hookimpl
from core.settings import BotSection, EnvSettings, Settings
from core.switches import BOT_KEY, guild_key
from tests.core.helpers import FakeEntryPoint

memory_plugin = importlib.import_module("plugins.memory")
limits_plugin = importlib.import_module("plugins.limits")
sessions_plugin = importlib.import_module("plugins.sessions")

REPO = Path(__file__).resolve().parents[2]
OWNER = "owner-1"
ADMIN = frozenset({"administrator"})
_ids = itertools.count(1)


def _toy() -> types.ModuleType:
    module = types.ModuleType("toy")
    module.generate_reply = hookimpl(tryfirst=True)(lambda: Reply("toy answers"))  # type: ignore[attr-defined]

    def register_commands(register: Any) -> None:
        register(Command("toycmd", "the toy's command", lambda inv: Reply("toycmd ran")))

    module.register_commands = hookimpl(register_commands)  # type: ignore[attr-defined]
    return module


def _transport(name: str) -> types.ModuleType:
    module = types.ModuleType(name)

    async def run(bot: Any) -> None:
        return None

    def register_transports(register: Any) -> None:
        register(name, run)

    module.register_transports = hookimpl(register_transports)  # type: ignore[attr-defined]
    return module


class World:
    """Bots sharing one store (fakeredis + SQLite), like instances of one deployment."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.redis = f"switch-{uuid.uuid4().hex}"
        self.loop = asyncio.new_event_loop()
        self.bots: list[Bot] = []

    def bot(self, instance: str = "A", transport: str | None = None, memory: bool = True) -> Bot:
        settings = Settings(
            env=EnvSettings(data_dir=self.tmp_path, instance_id=instance),
            bot=BotSection(owner_ids=[OWNER]),
            sections={"memory": {"redis_url": f"fakeredis://{self.redis}",
                                 "database_url": f"sqlite:///{self.tmp_path}/memory.db"}},
        )
        eps = [FakeEntryPoint("toy", _toy()), FakeEntryPoint("limits", limits_plugin),
               FakeEntryPoint("sessions", sessions_plugin),
               FakeEntryPoint("console", _transport("console")), FakeEntryPoint("wire", _transport("wire"))]
        if memory:
            eps.append(FakeEntryPoint("memory", memory_plugin))
        bot = Bot(settings, entry_points=eps, instance_id=instance)
        bot.running_transport = transport
        self.run(bot.start())
        self.bots.append(bot)
        return bot

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(asyncio.wait_for(coro, 20))

    def say(self, bot: Bot, text: str, guild: str | None = "g1", **extra: Any) -> str:
        sent: list[Reply] = []

        async def send(reply: Reply) -> Sent:
            sent.append(reply)
            return Sent()

        message = IncomingMessage(
            id=f"sw{next(_ids)}", author_id=extra.pop("author", "mallory"), author_name="x", channel_id="c1",
            guild_id=guild, is_dm=guild is None, content=text, timestamp=1_700_000_000.0, **extra,
        )
        self.run(bot.handle(message, send))
        return "\n".join(r.content for r in sent)

    def close(self) -> None:
        for bot in self.bots:
            self.run(bot.stop())
        self.loop.close()


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    for name in ("DATABASE_URL", "REDIS_URL", "MEMORY_DATABASE_URL", "MEMORY_REDIS_URL", "LIMITS_REDIS_URL"):
        monkeypatch.delenv(name, raising=False)
    w = World(tmp_path)
    yield w
    w.close()


# --- a guild administrator: their own guild only -----------------------------


def test_a_guild_admin_switches_a_plugin_off_in_their_guild_only(world: World) -> None:
    bot = world.bot()
    assert world.say(bot, "/plugins disable toy", permissions=ADMIN) == "plugin 'toy' switched off in this server"
    assert world.say(bot, "hello", guild="g1") != "toy answers"
    assert world.say(bot, "/toycmd", guild="g1") == "/toycmd is switched off in this server (plugin 'toy')."
    assert world.say(bot, "hello", guild="g2") == "toy answers"
    assert world.say(bot, "hello", guild=None) == "toy answers"
    assert "toy" in bot.plugins.enabled()
    assert "toy: enabled (switched off in this server by mallory)" in world.say(bot, "/plugins", guild="g1")
    assert "toy: enabled\n" in world.say(bot, "/plugins", guild="g2") + "\n"
    assert world.say(bot, "/plugins enable toy", permissions=ADMIN) == "plugin 'toy' switched on in this server"
    assert world.say(bot, "hello", guild="g1") == "toy answers"


def test_a_guild_switch_is_stored_per_guild_and_followed_by_another_instance(world: World) -> None:
    a = world.bot("A")
    world.say(a, "/plugins disable toy", permissions=ADMIN, guild="g1")
    stored = world.run(a.storage.load_bot_state(guild_key("g1")))
    assert stored["switches"]["toy"]["enabled"] is False
    assert world.run(a.storage.load_bot_state(BOT_KEY)) is None
    b = world.bot("B")
    assert world.say(b, "hello", guild="g1") != "toy answers"
    assert world.say(b, "hello", guild="g2") == "toy answers"


@pytest.mark.parametrize("name", ["limits", "sessions", "memory", "core", "console", "wire"])
def test_a_guild_admin_cannot_switch_off_what_guards_or_carries_the_bot(world: World, name: str) -> None:
    bot = world.bot(transport="wire")
    reply = world.say(bot, f"/plugins disable {name}", permissions=ADMIN)
    assert reply.endswith(("cannot be switched off", "by the bot's owners")), reply
    assert name not in bot.off_in_guild("g1")
    assert bot.plugins.info[name].state == "enabled"


def test_a_guild_admin_cannot_switch_for_the_whole_bot(world: World) -> None:
    bot = world.bot()
    reply = world.say(bot, "/plugins disable toy everywhere", permissions=ADMIN)
    assert reply.startswith("Only the bot's owners can switch a plugin for the whole bot")
    assert world.say(bot, "hello", guild="g2") == "toy answers"


@pytest.mark.parametrize("who", [{}, {"permissions": frozenset({"manage_messages", "manage_guild"})}])
def test_a_member_cannot_switch_plugins_in_the_guild(world: World, who: dict[str, Any]) -> None:
    bot = world.bot()
    assert world.say(bot, "/plugins disable toy", **who).startswith("Only this server's administrators")
    assert world.say(bot, "hello") == "toy answers"


def test_a_stored_guild_switch_never_outranks_the_rules(world: World) -> None:
    """Whoever wrote it (an older version, a hand edit), a guild switch for
    limits is not followed."""
    a = world.bot("A")
    value = {"version": 2, "switches": {"limits": {"enabled": False, "by": "x", "at": 0}}}
    world.run(a.storage.save_bot_state(guild_key("g1"), value))
    b = world.bot("B")
    assert "limits" not in b.off_in_guild("g1")


# --- owners: the whole bot, never the essentials ------------------------------


def test_an_owner_switches_for_the_whole_bot_and_it_survives_a_restart(world: World) -> None:
    a = world.bot("A")
    assert world.say(a, "/plugins disable limits everywhere", author=OWNER) == "plugin 'limits' switched off for the whole bot"
    assert a.plugins.info["limits"].state == "disabled"
    b = world.bot("B")
    assert b.plugins.info["limits"].state == "disabled"
    assert "switched off for the whole bot by owner-1" in b.plugins.info["limits"].reason


@pytest.mark.parametrize(("name", "why"), [("core", "the core"), ("memory", "it stores the messages"),
                                           ("wire", "the transport this instance runs on")])
def test_essential_plugins_cannot_be_switched_off_even_by_an_owner(world: World, name: str, why: str) -> None:
    bot = world.bot(transport="wire")
    reply = world.say(bot, f"/plugins disable {name} everywhere", author=OWNER)
    assert reply == f"plugin {name!r} is essential here ({why}) and cannot be switched off"
    assert bot.plugins.info[name].state == "enabled"


def test_the_terminal_cannot_be_locked_out(world: World) -> None:
    terminal = world.bot("T", transport="console")
    assert "essential" in world.say(terminal, "/plugins disable console", guild=None, is_owner=True)
    # Switched off for the whole bot from elsewhere (an owner in Discord)...
    discord_side = world.bot("D", transport="wire")
    assert world.say(discord_side, "/plugins disable console everywhere", author=OWNER).endswith("for the whole bot")
    assert discord_side.plugins.info["console"].state == "disabled"
    # ... a terminal started afterwards still has its transport.
    later = world.bot("T2", transport="console")
    assert "console" in later.transports
    assert world.say(later, "/plugins enable console", guild=None, is_owner=True).endswith("for the whole bot")


def test_the_old_stored_form_is_read_as_bot_wide_switches(world: World) -> None:
    a = world.bot("A")
    world.run(a.storage.save_bot_state(BOT_KEY, {"disabled": ["toy", "memory"]}))
    b = world.bot("B")
    assert b.plugins.info["toy"].state == "disabled"
    assert b.plugins.info["memory"].state == "enabled"


def test_without_a_store_the_switches_hold_in_this_process(world: World) -> None:
    bot = world.bot(memory=False)
    world.say(bot, "/plugins disable toy everywhere", author=OWNER)
    world.run(bot.refresh_plugin_state())
    assert bot.plugins.info["toy"].state == "disabled"


# --- followed back, across processes --------------------------------------------


class Process:
    def __init__(self, config: dict[str, Any]) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MEMORY_", "LIMITS_", "SESSIONS_", "IMAGES_"))}
        env["PYTHONPATH"] = str(REPO)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.security.switch_worker", json.dumps(config)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=config["data_dir"], env=env,
        )
        self.ready = self.read()

    def read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line, "the worker exited"
        return json.loads(line)

    def ask(self, **request: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        return self.read()

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.mark.multiprocess
def test_instances_in_separate_processes_follow_each_other_both_ways(tmp_path: Path, backend: str) -> None:
    """A switches off, B follows; B switches back on, A follows; each without
    a message arriving at the follower. Then `python -m core plugins` shows
    the stored state."""
    from harness.backends import make_backends

    backends = make_backends(backend, tmp_path, processes=True)
    processes: list[Process] = []
    try:
        memory = backends.memory_section()
        config = {"data_dir": str(tmp_path), "plugins": ["memory", "images"], "sections": {"memory": memory}}
        a = Process({**config, "instance": "A"})
        processes.append(a)
        b = Process({**config, "instance": "B"})
        processes.append(b)
        assert a.ready["states"]["images"] == b.ready["states"]["images"] == "enabled"

        assert a.ask(say="/plugins disable images everywhere", owner=True)["reply"].endswith("for the whole bot")
        assert b.ask(wait={"images": "disabled"}, within=30)["reached"]
        assert b.ask(say="/plugins enable images everywhere", owner=True)["reply"].endswith("for the whole bot")
        assert a.ask(wait={"images": "enabled"}, within=30)["reached"]
        assert a.ask(say="/plugins disable images everywhere", owner=True)["reply"].endswith("for the whole bot")
        assert b.ask(wait={"images": "disabled"}, within=30)["reached"]
        for process in processes:
            process.close()

        toml = tmp_path / "bot.toml"
        toml.write_text(
            '[plugins]\nenabled = ["memory", "images"]\n'
            f'[memory]\nredis_url = "{memory["redis_url"]}"\ndatabase_url = "{memory["database_url"]}"\n'
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MEMORY_", "BOT_"))}
        env.update(PYTHONPATH=str(REPO), BOT_DATA_DIR=str(tmp_path))
        listed = subprocess.run([sys.executable, "-m", "core", "--config", str(toml), "plugins"], cwd=tmp_path,
                                env=env, capture_output=True, text=True, timeout=60)
    finally:
        for process in processes:
            process.close()
        backends.close()
    assert listed.returncode == 0, listed.stderr
    images = next(line for line in listed.stdout.splitlines() if line.startswith("images "))
    assert "disabled" in images and "switched off for the whole bot by owner-1" in images, listed.stdout
