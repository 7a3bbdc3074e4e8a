"""A bot instance in its own OS process, for the plugin-switch tests.

Run as ``python -m tests.security.switch_worker SETTINGS_JSON`` from the
repository root. It assembles the installed plugins (real entry points) on
the backends the settings name, then serves one JSON request per stdin
line, answering one JSON line on stdout:

- ``{"say": text, "guild": id|null, "owner": bool, "admin": bool}`` →
  ``{"reply": text}``
- ``{"states": true}`` → ``{"states": {plugin: state}}``
- ``{"wait": {plugin: state}, "within": seconds}`` → ``{"states": ...,
  "reached": bool}``: waits for this instance to follow a switch made
  elsewhere, without any message arriving here.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import sys
from typing import Any

from core.bot import Bot
from core.models import IncomingMessage, Reply, Sent
from core.settings import BotSection, EnvSettings, PluginsSection, Settings

_ids = itertools.count(1)


def build(config: dict[str, Any]) -> Bot:
    settings = Settings(
        env=EnvSettings(data_dir=config["data_dir"], instance_id=config["instance"], _env_file=None),  # type: ignore[call-arg]
        bot=BotSection(owner_ids=["owner-1"], plugin_state_refresh=config.get("refresh", 0.05)),
        plugins=PluginsSection(enabled=config["plugins"]),
        sections=config.get("sections", {}),
    )
    return Bot(settings, instance_id=config["instance"])


def states(bot: Bot) -> dict[str, str]:
    return {i.name: i.state for i in bot.plugins.listing()}


async def say(bot: Bot, request: dict[str, Any]) -> str:
    sent: list[Reply] = []

    async def send(reply: Reply) -> Sent:
        sent.append(reply)
        return Sent()

    guild = request.get("guild")
    message = IncomingMessage(
        id=f"{bot.instance_id}-{next(_ids)}",
        author_id="owner-1" if request.get("owner") else "someone",
        author_name="someone",
        channel_id="c1",
        guild_id=guild,
        is_dm=guild is None,
        content=request["say"],
        timestamp=1_700_000_000.0,
        permissions=frozenset({"administrator"}) if request.get("admin") else frozenset(),
    )
    await bot.handle(message, send)
    return "\n".join(r.content for r in sent)


async def wait(bot: Bot, wanted: dict[str, str], within: float) -> dict[str, Any]:
    # A bounded wait on the condition: this instance's background follower
    # is what must change the state; nothing here refreshes it.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while loop.time() < deadline:
        now = states(bot)
        if all(now.get(k) == v for k, v in wanted.items()):
            return {"states": now, "reached": True}
        await asyncio.sleep(0.02)
    return {"states": states(bot), "reached": False}


async def serve(config: dict[str, Any]) -> None:
    bot = build(config)
    await bot.start()
    loop = asyncio.get_running_loop()
    try:
        print(json.dumps({"ready": True, "states": states(bot)}), flush=True)
        while line := await loop.run_in_executor(None, sys.stdin.readline):
            request = json.loads(line)
            if "say" in request:
                answer: dict[str, Any] = {"reply": await say(bot, request)}
            elif "wait" in request:
                answer = await wait(bot, request["wait"], float(request.get("within", 30)))
            else:
                answer = {"states": states(bot)}
            print(json.dumps(answer), flush=True)
    finally:
        await bot.stop()


if __name__ == "__main__":
    asyncio.run(serve(json.loads(sys.argv[1])))
