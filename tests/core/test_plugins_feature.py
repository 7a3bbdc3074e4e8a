"""Steps for features/plugins.feature: a bot assembled from the config file
the scenario writes, with plugins given as entry points."""

from __future__ import annotations

import asyncio
import logging
import types
from pathlib import Path
from typing import Any

import pytest
from pytest_bdd import given, parsers, scenarios, then, when

from core.bot import Bot
from core.models import Reply
from core.plugins import hookimpl
from core.storage import StorageBase
from core.settings import load_settings

from tests.core.helpers import FakeEntryPoint, message

scenarios("plugins.feature")


class World:
    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.modules: dict[str, Any] = {}
        self.disabled: list[str] = []
        self.bot: Bot | None = None
        self.replies: list[Reply] = []


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> World:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("BOT_CONFIG", raising=False)
    return World(tmp_path)


# --- Given -----------------------------------------------------------------


@given(parsers.parse('a reply plugin "{name}" that answers "{text}"'))
def reply_plugin(world: World, name: str, text: str) -> None:
    """A plugin whose generate_reply always answers ``text``."""
    module = types.ModuleType(name)
    module.generate_reply = hookimpl(lambda: Reply(text))  # type: ignore[attr-defined]
    world.modules[name] = module


@given(parsers.parse('a plugin "{name}" that raises in every hook'))
def raising_plugin(world: World, name: str) -> None:
    """A plugin that raises from startup, resolve_session, build_context,
    generate_reply and its storage's store_message."""

    def boom() -> None:
        raise RuntimeError(f"{name} is broken")

    class BrokenStorage(StorageBase):
        async def store_message(self, record: Any, session: Any) -> bool:
            boom()
            return True

    module = types.ModuleType(name)
    for hook in ("startup", "resolve_session", "build_context"):
        setattr(module, hook, hookimpl(boom))
    module.register_storage = hookimpl(lambda register: register(BrokenStorage()))  # type: ignore[attr-defined]
    module.generate_reply = hookimpl(tryfirst=True)(boom)  # type: ignore[attr-defined]
    world.modules[name] = module


@given(parsers.parse('a reply plugin "{name}" whose hook is spelt "{hook}"'))
def misspelt_plugin(world: World, name: str, hook: str) -> None:
    """A reply plugin whose one hookimpl has a name that is not a hook."""
    module = types.ModuleType(name)
    setattr(module, hook, hookimpl(lambda context: Reply("never called")))
    world.modules[name] = module


@given(parsers.parse('a reply plugin "{name}" whose generate_reply asks for "{arg}"'))
def wrong_argument_plugin(world: World, name: str, arg: str) -> None:
    """A reply plugin whose generate_reply takes an argument by a name the
    hook does not pass."""
    module = types.ModuleType(name)
    namespace: dict[str, Any] = {"Reply": Reply}
    exec(f"def generate_reply({arg}):\n    return Reply('never called')", namespace)  # noqa: S102
    module.generate_reply = hookimpl(namespace["generate_reply"])  # type: ignore[attr-defined]
    world.modules[name] = module


@given(parsers.parse('a reply plugin "{name}" that never answers'))
def hung_plugin(world: World, name: str) -> None:
    """A reply plugin whose generate_reply waits forever."""

    async def generate_reply() -> None:
        await asyncio.Event().wait()

    module = types.ModuleType(name)
    module.generate_reply = hookimpl(generate_reply)  # type: ignore[attr-defined]
    world.modules[name] = module


@given(parsers.parse("the config file gives every hook {seconds:g} seconds"))
def config_hook_timeout(world: World, seconds: float) -> None:
    """Appends ``[bot] hook_timeout`` to bot.toml."""
    with (world.tmp_path / "bot.toml").open("a") as config:
        config.write(f"[bot]\nhook_timeout = {seconds}\n")


@given(parsers.parse('a plugin "{name}" that fails to import'))
def unimportable_plugin(world: World, name: str) -> None:
    """An entry point whose module raises ImportError when loaded."""
    world.modules[name] = ImportError(f"No module named '{name}_dependency'")


@given(parsers.parse('the config file disables "{name}"'))
def config_disables(world: World, name: str) -> None:
    """Writes ``[plugins] disabled = [name]`` to bot.toml."""
    world.disabled.append(name)
    listed = ", ".join(f'"{n}"' for n in world.disabled)
    (world.tmp_path / "bot.toml").write_text(f"[plugins]\ndisabled = [{listed}]\n")


@given(parsers.parse('a plugin "{name}" that only the bot\'s owners may switch'))
def owners_only_plugin(world: World, name: str) -> None:
    """A plugin that declares ``SWITCHED_BY_OWNERS_ONLY = True``, as the
    limits plugin does."""
    module = types.ModuleType(name)
    module.SWITCHED_BY_OWNERS_ONLY = True  # type: ignore[attr-defined]
    module.startup = hookimpl(lambda: None)  # type: ignore[attr-defined]
    world.modules[name] = module


# --- When --------------------------------------------------------------------


@when("the bot starts")
def bot_starts(world: World) -> None:
    """Loads bot.toml and starts a bot whose installed plugins are the
    scenario's plugins."""
    settings = load_settings(env_file=None)
    eps = [FakeEntryPoint(name, module) for name, module in world.modules.items()]
    world.bot = Bot(settings, entry_points=eps)
    asyncio.run(world.bot.start())


@when(parsers.parse('alice says "{text}"'))
@then(parsers.parse('alice says "{text}"'))
def alice_says(world: World, text: str) -> None:
    """Sends a message from alice through the whole pipeline."""
    assert world.bot is not None

    async def send(reply: Reply) -> None:
        world.replies.append(reply)

    asyncio.run(world.bot.handle(message(text), send))


SPEAKERS: dict[str, dict[str, Any]] = {
    "alice": {},
    "an administrator": {"author": "ada", "permissions": frozenset({"administrator"})},
    "the owner": {"author": "olive", "is_owner": True},
}


@when(parsers.parse('in server "{guild}" {who} says "{text}"'))
def says_in_server(world: World, guild: str, who: str, text: str) -> None:
    """Sends a message in ``guild`` from alice (a member), an administrator
    of that server, or the bot's owner; only this message's answer is kept."""
    assert world.bot is not None
    world.replies.clear()

    async def send(reply: Reply) -> None:
        world.replies.append(reply)

    asyncio.run(world.bot.handle(message(text, guild_id=guild, **SPEAKERS[who]), send))


# --- Then --------------------------------------------------------------------


@then(parsers.parse('the bot answers "{text}"'))
def answers(world: World, text: str) -> None:
    assert [r.content for r in world.replies] == [text]


@then(parsers.parse('the bot\'s answer starts with "{text}"'))
def answer_starts_with(world: World, text: str) -> None:
    assert len(world.replies) == 1 and world.replies[0].content.startswith(text), world.replies


@then("the bot answers")
def answers_something(world: World) -> None:
    assert len(world.replies) == 1 and world.replies[0].content


@then(parsers.parse('the bot does not answer "{text}"'))
def does_not_answer(world: World, text: str) -> None:
    assert len(world.replies) == 1
    assert world.replies[0].content != text


@then(parsers.parse('the plugin list shows "{name}" as {state}'))
def plugin_state(world: World, name: str, state: str) -> None:
    assert world.bot is not None
    assert world.bot.plugins.info[name].state == state


@then(parsers.parse('the plugin list gives "{name}" the reason "{reason}"'))
def plugin_reason(world: World, name: str, reason: str) -> None:
    assert world.bot is not None
    assert world.bot.plugins.info[name].reason == reason


@then(parsers.parse('the plugin list gives "{name}" a one-line reason naming "{word}"'))
def plugin_one_line_reason(world: World, name: str, word: str) -> None:
    assert world.bot is not None
    reason = world.bot.plugins.info[name].reason
    assert word in reason and "\n" not in reason and len(reason) <= 200, reason


@then(parsers.parse('the log names the plugin "{name}"'))
def log_names(world: World, name: str, caplog: pytest.LogCaptureFixture) -> None:
    assert world.bot is not None
    assert name in {f.plugin for f in world.bot.hooks.failures}
    assert any(name in r.getMessage() and r.levelno >= logging.ERROR for r in caplog.records)


@then(parsers.parse('the bot reports the unknown plugin "{name}"'))
def reports_unknown(world: World, name: str) -> None:
    assert world.bot is not None
    assert any(f"unknown plugin {name!r}" in p for p in world.bot.plugins.problems)
