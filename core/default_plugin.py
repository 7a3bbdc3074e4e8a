"""The core's own plugin: the fallback reply and the ``help`` and
``plugins`` commands. It is essential: config cannot disable it."""

from __future__ import annotations

from typing import Any

from core.commands import available, is_owner
from core.guild_settings import SETTINGS, describe, guild_export
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
    lines = [f"{prefix}{c.name} - {c.description}" for c in available(inv.bot, inv.message)]
    return Reply("Commands:\n" + "\n".join(lines))


SCOPES = ("here", "everywhere")


async def _plugins(inv: Invocation) -> Reply:
    """``/plugins [list | enable NAME [here|everywhere] | disable NAME [here|everywhere]]``.

    In a server the default scope is ``here`` (that server: its
    administrators and the owners); ``everywhere`` (the whole bot) is for
    the owners only, and the only scope in DMs and the terminal."""
    bot, message = inv.bot, inv.message
    prefix = bot.settings.bot.command_prefix
    words = inv.args.split()
    action = words[0].lower() if words else "list"
    if action == "list" and len(words) <= 1:
        return Reply(listing(bot, message.guild_id))
    scope = words[2].lower() if len(words) == 3 else ("here" if message.guild_id else "everywhere")
    if action not in ("enable", "disable") or len(words) not in (2, 3) or scope not in SCOPES:
        return Reply(f"Usage: {prefix}plugins [list | enable NAME [here|everywhere] | disable NAME [here|everywhere]]")
    owner = is_owner(message, bot.settings.bot.owner_ids)
    if scope == "everywhere" and not owner:
        return Reply(
            "Only the bot's owners can switch a plugin for the whole bot. "
            f"Server administrators can switch it in their server: {prefix}plugins {action} {words[1]} here"
        )
    if scope == "here" and not message.guild_id:
        return Reply(f"There is no server here: use {prefix}plugins {action} {words[1]} everywhere (owners only).")
    if scope == "here" and not (owner or "administrator" in message.permissions):
        return Reply("Only this server's administrators and the bot's owners can switch plugins in this server.")
    guild = message.guild_id if scope == "here" else None
    try:
        return Reply(await bot.switch_plugin(words[1], action == "enable", guild_id=guild, by=message.author_id))
    except ValueError as exc:
        return Reply(str(exc))


async def _settings(inv: Invocation) -> Reply:
    """``/settings [show | set NAME VALUE | reset NAME]``: this server's
    run-time settings (its administrators and the owners); in DMs and the
    terminal the bot-wide ones (owners)."""
    bot, message = inv.bot, inv.message
    prefix = bot.settings.bot.command_prefix
    words = inv.args.split(maxsplit=2)
    action = words[0].lower() if words else "show"
    if action == "show" and len(words) <= 1:
        return Reply(describe(bot.guild_settings, message.guild_id, prefix))
    if not ((action == "set" and len(words) == 3) or (action == "reset" and len(words) == 2)):
        return Reply(f"Usage: {prefix}settings [show | set NAME VALUE | reset NAME]")
    setting = SETTINGS.get(words[1])
    owner = is_owner(message, bot.settings.bot.owner_ids)
    if setting is not None and setting.bot_wide and not owner:
        return Reply(f"Only the bot's owners can change {setting.name} (it applies to the whole bot).")
    guild = None if setting is not None and setting.bot_wide else message.guild_id
    try:
        return Reply(await bot.change_setting(guild, words[1], words[2] if action == "set" else None, by=message.author_id))
    except ValueError as exc:
        return Reply(str(exc))


def listing(bot: Any, guild_id: str | None) -> str:
    """Every plugin and its state, as seen from ``guild_id`` (``None``: the
    whole bot)."""
    guild_board = bot.switches.guilds.get(guild_id) if guild_id else None
    off_here = bot.off_in_guild(guild_id)
    lines = []
    for info in bot.plugins.listing():
        notes = [info.reason] if info.reason else []
        if info.switch is not None and info.switch.enabled and info.state == "enabled":
            notes.append(f"switched on for the whole bot{f' by {info.switch.by}' if info.switch.by else ''}")
        if info.state == "enabled" and info.name in off_here and guild_board is not None:
            by = guild_board.switches[info.name].by
            notes.append(f"switched off in this server{f' by {by}' if by else ''}")
        note = f" ({'; '.join(notes)})" if notes else ""
        lines.append(f"{info.name}: {info.state}{note}")
    return "Plugins:\n" + "\n".join(lines)


@hookimpl
def register_commands(register: Any) -> None:
    register(Command("help", "list the commands", _help))
    register(
        Command(
            "plugins",
            "list plugins; server admins: switch one in this server; owners: everywhere",
            _plugins,
            options={
                "action": "list, enable or disable",
                "name": "plugin name",
                "scope": "here (this server, the default) or everywhere (owners only)",
            },
        )
    )
    register(
        Command(
            "settings",
            "show this server's settings; admins: set NAME VALUE or reset NAME",
            _settings,
            permission="admin",
            options={"action": "show, set or reset", "name": "the setting", "value": "its new value"},
        )
    )


@hookimpl
async def export_guild(guild_id: str, bot: Any) -> dict[str, Any]:
    # Read from the store, not this instance's copy: an export is a record.
    return guild_export(await bot.stored_states(), guild_id)


@hookimpl
def health(bot: Any) -> HealthReport:
    enabled = bot.plugins.enabled()
    failed = [i.name for i in bot.plugins.listing() if i.state == "failed"]
    detail = f"instance {bot.instance_id}; plugins enabled: {', '.join(enabled)}"
    if failed:
        detail += f"; failed: {', '.join(failed)}"
    return HealthReport("core", not failed, detail)
