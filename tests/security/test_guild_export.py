"""Who may export a server's data (``/server-export``, the sessions
plugin) and what the export holds: a server's administrators their own
server, the bot's owners any, everyone else nothing; one server's data
only; a plugin that fails refuses the whole export. Through the assembled
bot, as a transport calls it."""

from __future__ import annotations

import asyncio
import itertools
import json
import types
from pathlib import Path
from typing import Any

import pytest

from core.bot import Bot
from core.models import IncomingMessage, Reply
from core.plugins import hookimpl
from core.settings import BotSection, EnvSettings, Settings
from plugins.sessions.commands import all_commands
from tests.core.helpers import FakeEntryPoint, only_reply

_ids = itertools.count(1)
OWNER = "owner-1"
ADMIN = {"author": "ada", "permissions": frozenset({"administrator"})}
MEMBER = {"author": "mallory"}


def _data_plugin(broken: bool = False) -> types.ModuleType:
    """The export command, and a plugin that holds one message per guild
    (or raises, when ``broken``)."""
    module = types.ModuleType("guilddata")

    def register_commands(register: Any) -> None:
        for command in all_commands():
            if command.name == "server-export":
                register(command)

    def export_guild(guild_id: str) -> dict[str, Any]:
        if broken:
            raise RuntimeError("the database went away")
        return {"messages": [{"guild_id": guild_id, "content": f"said in {guild_id}"}]}

    module.register_commands = hookimpl(register_commands)  # type: ignore[attr-defined]
    module.export_guild = hookimpl(export_guild)  # type: ignore[attr-defined]
    return module


def _bot(tmp_path: Path, broken: bool = False) -> Any:
    settings = Settings(env=EnvSettings(data_dir=tmp_path, instance_id="A"), bot=BotSection(owner_ids=[OWNER]))
    instance = Bot(settings, entry_points=[FakeEntryPoint("guilddata", _data_plugin(broken))])
    loop = asyncio.new_event_loop()
    loop.run_until_complete(instance.start())
    instance._test_loop = loop
    return instance


@pytest.fixture
def bot(tmp_path: Path) -> Any:
    instance = _bot(tmp_path)
    yield instance
    instance._test_loop.run_until_complete(instance.stop())
    instance._test_loop.close()


def run(bot: Any, text: str, author: str, guild_id: str | None = "g1", **extra: Any) -> Reply:
    message = IncomingMessage(
        id=f"export{next(_ids)}",
        author_id=author,
        author_name=author,
        channel_id="c1",
        guild_id=guild_id,
        content=text,
        timestamp=1_700_000_000.0,
        is_dm=guild_id is None,
        **extra,
    )
    return only_reply(bot, message, bot._test_loop)


def exported(reply: Reply) -> dict[str, Any]:
    assert len(reply.attachments) == 1, reply.content
    data = reply.attachments[0].data
    assert data is not None
    document: dict[str, Any] = json.loads(data)
    return document


def as_(who: dict[str, Any]) -> dict[str, Any]:
    return {"author": who["author"], **({"permissions": who["permissions"]} if "permissions" in who else {})}


def test_a_member_is_refused(bot: Any) -> None:
    reply = run(bot, "/server-export", **as_(MEMBER))
    assert "You do not have permission to use /server-export (it needs: admin)" in reply.content
    assert not reply.attachments


def test_an_administrator_exports_their_own_server_with_its_settings(bot: Any) -> None:
    loop = bot._test_loop
    loop.run_until_complete(bot.change_setting("g1", "system_prompt", "Be a pirate.", by="ada"))
    loop.run_until_complete(bot.change_setting("g2", "system_prompt", "Another server's persona.", by="bob"))
    reply = run(bot, "/server-export", **as_(ADMIN))
    document = exported(reply)
    assert reply.ephemeral and reply.attachments[0].filename == "server-export-g1.json"
    assert document["guild_id"] == "g1"
    assert document["data"]["messages"] == [{"guild_id": "g1", "content": "said in g1"}]
    assert document["data"]["guild_settings"] == {"system_prompt": "Be a pirate."}
    assert "Another server" not in json.dumps(document)


def test_an_administrator_cannot_name_another_server(bot: Any) -> None:
    reply = run(bot, "/server-export 222", **as_(ADMIN))
    assert "only the bot's owners can name another server" in reply.content
    assert not reply.attachments


def test_an_administrator_may_name_their_own_server(bot: Any) -> None:
    assert exported(run(bot, "/server-export 111", guild_id="111", **as_(ADMIN)))["guild_id"] == "111"


def test_an_owner_exports_any_server_also_from_a_dm(bot: Any) -> None:
    assert exported(run(bot, "/server-export", author=OWNER))["guild_id"] == "g1"
    assert exported(run(bot, "/server-export 222", author=OWNER))["data"]["messages"][0]["guild_id"] == "222"
    assert exported(run(bot, "/server-export 333", author=OWNER, guild_id=None))["guild_id"] == "333"
    assert "There is no server here" in run(bot, "/server-export", author=OWNER, guild_id=None).content


def test_bad_arguments_get_the_usage(bot: Any) -> None:
    assert "Usage: /server-export" in run(bot, "/server-export general", **as_(ADMIN)).content


def test_a_failing_plugin_refuses_the_whole_export(tmp_path: Path) -> None:
    bot = _bot(tmp_path, broken=True)
    try:
        reply = run(bot, "/server-export", **as_(ADMIN))
    finally:
        bot._test_loop.run_until_complete(bot.stop())
        bot._test_loop.close()
    assert "Export failed in plugin guilddata" in reply.content and "nothing was sent" in reply.content
    assert not reply.attachments
