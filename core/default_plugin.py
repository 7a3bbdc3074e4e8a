"""The core's own plugin: the fallback reply and the ``help`` and
``plugins`` commands. It is essential: config cannot disable it."""

from __future__ import annotations

from typing import Any

from core.hookspecs import PROJECT_NAME
from core.models import Command, Context, HealthReport, Invocation, Reply
import pluggy

hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookimpl(trylast=True)
def generate_reply(context: Context) -> Reply:
    remembered = len(context.messages) - 1
    return Reply(
        "No reply plugin is enabled, so I cannot really answer. "
        f"I have {remembered} earlier message{'s' if remembered != 1 else ''} of this conversation in context."
    )


async def _help(inv: Invocation) -> Reply:
    prefix = inv.bot.settings.bot.command_prefix
    lines = [f"{prefix}{c.name} - {c.description}" for c in sorted(inv.bot.commands.commands.values(), key=lambda c: c.name)]
    return Reply("Commands:\n" + "\n".join(lines))


async def _plugins(inv: Invocation) -> Reply:
    bot = inv.bot
    action, _, name = inv.args.partition(" ")
    action, name = action.strip().lower(), name.strip()
    if action in ("enable", "disable"):
        if not (inv.message.is_owner or inv.message.author_id in bot.settings.bot.owner_ids or "administrator" in inv.message.permissions):
            return Reply("Only the bot's owners and server administrators can switch plugins.")
        if not name:
            return Reply(f"Usage: {bot.settings.bot.command_prefix}plugins {action} NAME")
        try:
            return Reply(await bot.set_plugin_enabled(name, action == "enable"))
        except ValueError as exc:
            return Reply(str(exc))
    if action not in ("", "list"):
        return Reply(f"Usage: {bot.settings.bot.command_prefix}plugins [list | enable NAME | disable NAME]")
    lines = [f"{i.name}: {i.state}{f' ({i.reason})' if i.reason else ''}" for i in bot.plugins.listing()]
    return Reply("Plugins:\n" + "\n".join(lines))


@hookimpl
def register_commands(register: Any) -> None:
    register(Command("help", "list the commands", _help))
    register(
        Command(
            "plugins",
            "list plugins; admins: enable or disable one",
            _plugins,
            options={"action": "list, enable or disable", "name": "plugin name"},
        )
    )


@hookimpl
def health(bot: Any) -> HealthReport:
    enabled = bot.plugins.enabled()
    failed = [i.name for i in bot.plugins.listing() if i.state == "failed"]
    detail = f"instance {bot.instance_id}; plugins enabled: {', '.join(enabled)}"
    if failed:
        detail += f"; failed: {', '.join(failed)}"
    return HealthReport("core", not failed, detail)
