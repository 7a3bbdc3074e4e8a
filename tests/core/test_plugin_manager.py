"""The plugin manager: discovery, config switches, broken plugins."""

from __future__ import annotations

import importlib
import subprocess
import sys
import types
from pathlib import Path

import pytest

from core.bot import Bot
from core.models import Reply
from core.plugins import ESSENTIAL, hookimpl
from core.storage import StorageBase
from core.settings import PluginsSection

from tests.core.helpers import FakeEntryPoint, make_bot, make_settings, say


def _replier(text: str) -> types.ModuleType:
    module = types.ModuleType(f"replier_{text}")

    @hookimpl
    def generate_reply():  # noqa: ANN202
        return Reply(text)

    module.generate_reply = generate_reply  # type: ignore[attr-defined]
    return module


def test_builtin_plugins_are_found_through_entry_points(tmp_path: Path) -> None:
    bot = Bot(make_settings(tmp_path))
    names = {info.name for info in bot.plugins.listing()}
    assert {"core", "console", "memory", "sessions", "llm", "images", "discord"} <= names
    assert bot.plugins.info["console"].source.startswith("discord-bot")


def test_a_disabled_plugin_is_never_imported(tmp_path: Path) -> None:
    loaded = []

    class Ep(FakeEntryPoint):
        def load(self):  # noqa: ANN201
            loaded.append(self.name)
            return super().load()

    eps = [Ep("a", _replier("a")), Ep("b", _replier("b"))]
    bot = Bot(make_settings(tmp_path, disabled=["b"]), entry_points=eps)
    assert loaded == ["a"]
    assert bot.plugins.info["b"].state == "disabled"


def test_enabled_is_an_allow_list(tmp_path: Path) -> None:
    bot = make_bot(tmp_path, {"a": _replier("a"), "b": _replier("b")}, enabled=["b"])
    assert bot.plugins.enabled() == ["core", "b"]


def test_essential_plugin_cannot_be_disabled(tmp_path: Path) -> None:
    bot = make_bot(tmp_path, {}, disabled=["core"])
    assert "core" in bot.plugins.enabled()
    assert any("essential" in p for p in bot.plugins.problems)
    with pytest.raises(ValueError, match="essential"):
        bot.plugins.disable("core")
    assert ESSENTIAL == {"core"}


def test_unknown_plugin_names_are_reported(tmp_path: Path) -> None:
    bot = make_bot(tmp_path, {"a": _replier("a")}, disabled=["nosuch"], enabled=["a", "typo"])
    problems = " ".join(bot.plugins.problems)
    assert "'nosuch'" in problems and "'typo'" in problems and "installed: a, core" in problems
    assert bot.plugins.info["typo"].state == "unknown"


def test_a_plugin_that_fails_to_import_is_reported_and_the_bot_starts(tmp_path: Path) -> None:
    bot = make_bot(tmp_path, {"broken": ImportError("no module named frobnicate"), "a": _replier("a")})
    assert bot.plugins.info["broken"].state == "failed"
    assert "frobnicate" in bot.plugins.info["broken"].reason
    assert [r.content for r in say(bot, "hi")] == ["a"]


def test_a_plugin_whose_startup_raises_is_taken_out(tmp_path: Path) -> None:
    module = _replier("half-started")

    @hookimpl
    def startup():  # noqa: ANN202
        raise ConnectionError("backend down")

    module.startup = startup  # type: ignore[attr-defined]
    bot = make_bot(tmp_path, {"flaky": module})
    replies = say(bot, "hi")
    assert bot.plugins.info["flaky"].state == "failed"
    assert "backend down" in bot.plugins.info["flaky"].reason
    assert "No reply plugin" in replies[0].content


def test_runtime_disable_and_enable(tmp_path: Path) -> None:
    bot = make_bot(tmp_path, {"a": _replier("a")})
    owner = {"is_owner": True}
    assert say(bot, "/plugins disable a everywhere", **owner)[0].content == "plugin 'a' switched off for the whole bot"
    assert "No reply plugin" in say(bot, "hello")[0].content
    assert say(bot, "/plugins enable a everywhere", **owner)[0].content == "plugin 'a' switched on for the whole bot"
    assert say(bot, "hello")[0].content == "a"


def test_runtime_plugin_switch_needs_authority(tmp_path: Path) -> None:
    bot = make_bot(tmp_path, {"a": _replier("a")})
    assert "Only this server's administrators" in say(bot, "/plugins disable a")[0].content
    admin = {"permissions": frozenset({"administrator"})}
    assert say(bot, "/plugins disable a", **admin)[0].content == "plugin 'a' switched off in this server"


def test_third_party_plugin_installed_with_pip_is_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "site"
    source = Path(__file__).parent / "sample_plugin"
    build = tmp_path / "build"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--no-index", "--target", str(target), str(source)],
        check=True,
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "TMPDIR": str(build.parent), "PIP_CONFIG_FILE": "/dev/null"},
    )
    monkeypatch.syspath_prepend(str(target))
    importlib.invalidate_caches()
    bot = Bot(make_settings(tmp_path, enabled=["sample"]))
    assert bot.plugins.info["sample"].state == "enabled"
    assert bot.plugins.info["sample"].source == "sample-bot-plugin 0.1.0"
    assert [r.content for r in say(bot, "hi")] == ["sample says hi"]
    blocked = Bot(make_settings(tmp_path, disabled=["sample"]))
    assert blocked.plugins.info["sample"].state == "disabled"
    assert "sample_bot_plugin" not in sys.modules or blocked.plugins.pm.get_plugin("sample") is None


def test_plugins_section_rejects_unknown_keys() -> None:
    with pytest.raises(Exception, match="extra"):
        PluginsSection(enable=["a"])  # type: ignore[call-arg]


def _module_with(**hooks: object) -> types.ModuleType:
    module = types.ModuleType("authored")
    for name, func in hooks.items():
        setattr(module, name, hookimpl(func))
    return module


def test_a_hook_name_typo_fails_the_plugin_naming_the_closest_hook(tmp_path: Path) -> None:
    typo = _module_with(generate_replies=lambda context: Reply("never called"))
    bot = make_bot(tmp_path, {"typo": typo})
    info = bot.plugins.info["typo"]
    assert info.state == "failed"
    assert info.reason == "generate_replies is not a hook (did you mean generate_reply?)"


def test_a_wrong_argument_name_fails_the_plugin_in_one_line(tmp_path: Path) -> None:
    wrong = _module_with(generate_reply=lambda ctx: Reply("never called"))
    bot = make_bot(tmp_path, {"wrong": wrong})
    info = bot.plugins.info["wrong"]
    assert info.state == "failed" and "\n" not in info.reason
    assert info.reason.startswith("generate_reply asks for ctx, which the hook does not pass (it passes context")


def test_pluggy_check_pending_backs_the_contract_check(tmp_path: Path) -> None:
    """A plugin registered behind the contract check (an unknown hook name)
    is still failed at start-up, not left enabled doing nothing."""
    bot = make_bot(tmp_path, {})
    sneaky = _module_with(generate_replies=lambda context: None)
    bot.plugins.pm.register(sneaky, name="sneaky")
    bot.plugins.check_pending()
    assert bot.plugins.info["sneaky"].state == "failed"
    assert "generate_replies" in bot.plugins.info["sneaky"].reason
    assert not bot.plugins.pm.has_plugin("sneaky")


def test_a_hung_reply_plugin_is_given_up_on_and_the_session_is_free(tmp_path: Path) -> None:
    import asyncio

    from core.models import Sent
    from tests.core.helpers import message

    never = asyncio.Event()

    async def generate_reply(context):  # noqa: ANN001, ANN202
        await never.wait()

    held: list[str] = []

    class Lease:
        async def __aenter__(self) -> None:
            held.append("enter")

        async def __aexit__(self, *exc: object) -> None:
            held.append("exit")

    class Leasing(StorageBase):
        async def session_lease(self, message: object) -> Lease:
            return Lease()

    leasing = Leasing()
    hung = _module_with(generate_reply=generate_reply, register_storage=lambda register: register(leasing))
    bot = make_bot(tmp_path, {"hung": hung})
    bot.settings.bot.hook_timeouts = {"generate_reply": 0.05}
    sent: list[Reply] = []

    async def send(reply: Reply) -> Sent:
        sent.append(reply)
        return Sent()

    async def go() -> None:
        await bot.start()
        await bot.handle(message("hi"), send)

    asyncio.run(go())
    assert [r.content for r in sent] == ["Sorry, I could not generate a reply (plugin hung did not answer in time)."]
    assert held == ["enter", "exit"]
    assert bot.hooks.failures[-1].plugin == "hung" and "no answer within 0.05 s" in bot.hooks.failures[-1].error


def test_a_hung_command_is_given_up_on(tmp_path: Path) -> None:
    import asyncio

    from core.models import Command

    async def stuck(inv):  # noqa: ANN001, ANN202
        await asyncio.Event().wait()

    module = _module_with(register_commands=lambda register: register(Command("stuck", "hangs", stuck)))
    bot = make_bot(tmp_path, {"slow": module})
    bot.settings.bot.hook_timeouts = {"command": 0.05}
    assert say(bot, "/stuck")[0].content == "/stuck did not finish in time (plugin 'slow'); the error was logged."


def test_the_hook_listing_shows_marks_and_call_order(tmp_path: Path) -> None:
    from core.cli import hook_listing

    bot = make_bot(tmp_path, {"aping": _replier("pong"), "zping": _replier("zpong")})
    lines = hook_listing(bot)
    assert "generate_reply (first answer): zping -> aping -> core [trylast]" in lines
    assert "core: export_guild, generate_reply [trylast], health, register_commands" in lines
