"""Command line: ``python -m core run | chat | plugins | check``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path
from typing import Any

from core.bot import Bot
from core.errors import ConfigError
from core.scaffold import write_plugin
from core.logs import setup_logging
from core.settings import Settings, load_settings

log = logging.getLogger("core.cli")


def _settings(args: argparse.Namespace) -> Settings:
    settings = load_settings(args.config)
    secrets = [settings.env.discord_token.get_secret_value()] if settings.env.discord_token else []
    level = args.log_level or settings.env.log_level
    terminal_chat = args.command == "chat" or (args.command in (None, "run") and not settings.env.discord_token)
    if terminal_chat and not args.log_level and "log_level" not in settings.env.model_fields_set:
        # The chat shares the terminal with the log: only what needs attention.
        level = "WARNING"
    setup_logging(level, secrets)
    return settings


async def _serve(settings: Settings, transport: str | None) -> int:
    bot = Bot(settings)
    if transport is None:
        discord_on = bot.plugins.info.get("discord") is not None and bot.plugins.info["discord"].state == "enabled"
        transport = "discord" if settings.env.discord_token and discord_on else "console"
        if settings.env.discord_token and not discord_on:
            log.warning("DISCORD_TOKEN is set but the discord plugin is not enabled; using the terminal")
    # Known before start: no stored switch can take away the transport this
    # instance serves (the terminal cannot be locked out from Discord).
    bot.running_transport = transport
    await bot.start()
    try:
        for problem in bot.plugins.problems + bot.commands.problems:
            log.warning("%s", problem)
        run = bot.transports.get(transport)
        if run is None:
            print(f"transport {transport!r} is not available (enabled: {', '.join(bot.transports) or 'none'})", file=sys.stderr)
            return 2
        await run(bot)
        return 0
    finally:
        await bot.stop()


def cmd_run(args: argparse.Namespace) -> int:
    return asyncio.run(_serve(_settings(args), None))


def cmd_chat(args: argparse.Namespace) -> int:
    return asyncio.run(_serve(_settings(args), "console"))


HOOK_ORDER_NOTE = (
    "Order: tryfirst implementations run first, trylast ones last; among the rest the plugin registered last "
    "runs first, and plugins register in name order (core first), so the name that sorts last is asked first. "
    "For a first-answer hook the first non-None answer wins."
)


def _marks(impl: Any) -> str:
    return "".join(f" [{m}]" for m in ("tryfirst", "trylast") if getattr(impl, m, False))


def hook_listing(bot: Bot) -> list[str]:
    """Each enabled plugin's hooks (with tryfirst/trylast), then the call
    order of every hook more than one plugin implements."""
    lines = [HOOK_ORDER_NOTE, ""]
    by_plugin: dict[str, list[str]] = {}
    orders: list[str] = []
    for name in sorted(n for n in bot.plugins.pm.hook.__dict__ if not n.startswith("_")):
        caller = getattr(bot.plugins.pm.hook, name)
        if getattr(caller, "spec", None) is None:
            continue
        impls = bot.hooks.implementations(name)
        for impl in impls:
            by_plugin.setdefault(impl.plugin_name, []).append(name + _marks(impl))
        if len(impls) > 1:
            mode = bot.hooks.mode(name).value
            orders.append(f"{name} ({mode}): " + " -> ".join(i.plugin_name + _marks(i) for i in impls))
    for plugin in sorted(by_plugin, key=lambda n: (n != "core", n)):
        lines.append(f"{plugin}: {', '.join(by_plugin[plugin])}")
    lines += ["", "call order where several plugins implement a hook:", *orders]
    return lines


async def _plugins(settings: Settings, hooks: bool = False) -> int:
    # Started, so the listing shows the switches stored at run time, as a
    # running instance would follow them.
    bot = Bot(settings)
    await bot.start()
    try:
        read = await bot.refresh_plugin_state()
    finally:
        await bot.stop()
    print(f"{'plugin':<12} {'state':<9} {'source':<28} note")
    for info in bot.plugins.listing():
        notes = [info.reason] if info.reason else []
        if info.switch is not None and info.switch.enabled and info.state == "enabled":
            notes.append(f"switched on for the whole bot by {info.switch.by or '?'}")
        print(f"{info.name:<12} {info.state:<9} {info.source:<28} {'; '.join(notes)}".rstrip())
    for guild, board in sorted(bot.switches.guilds.items()):
        for name, switch in sorted(board.switches.items()):
            print(f"guild {guild}: {name} switched {'on' if switch.enabled else 'off'} by {switch.by or '?'}")
    if not read:
        print("problem: the switches stored at run time could not be read (memory unreachable)")
    for problem in bot.plugins.problems:
        print(f"problem: {problem}")
    if hooks:
        print()
        print("\n".join(hook_listing(bot)))
    return 0


def cmd_plugins(args: argparse.Namespace) -> int:
    return asyncio.run(_plugins(_settings(args), hooks=getattr(args, "hooks", False)))


async def _check(settings: Settings) -> int:
    bot = Bot(settings)
    await bot.start()
    try:
        reports = await bot.health()
    finally:
        await bot.stop()
    failed = False
    print("config: OK" + (f" ({settings.config_file})" if settings.config_file else " (defaults)"))
    for problem in bot.plugins.problems + bot.commands.problems:
        print(f"config: WARNING {problem}")
    for info in bot.plugins.listing():
        if info.state == "failed":
            failed = True
            print(f"plugin {info.name}: FAILED {info.reason}")
    for report in reports:
        failed |= not report.ok
        print(f"{report.component}: {'OK' if report.ok else 'FAIL'} {report.detail}")
    print("verdict: " + ("FAIL" if failed else "OK"))
    return 1 if failed else 0


def cmd_check(args: argparse.Namespace) -> int:
    return asyncio.run(_check(_settings(args)))


def cmd_new_plugin(args: argparse.Namespace) -> int:
    try:
        root = write_plugin(args.name, Path(args.dir))
    except ValueError as exc:
        print(f"new-plugin: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {root}: install it with  pip install -e {root}  and test it with  python -m pytest {root / 'tests'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core", description="A Discord bot that never forgets.")
    parser.add_argument("--config", help="TOML config file (default: $BOT_CONFIG or ./bot.toml)")
    parser.add_argument("--log-level", help="DEBUG, INFO, WARNING, ...")
    sub = parser.add_subparsers(dest="command")
    commands: dict[str, Any] = {
        "run": (cmd_run, "run the bot: Discord when DISCORD_TOKEN is set, else terminal chat"),
        "chat": (cmd_chat, "chat with the bot in this terminal"),
        "plugins": (cmd_plugins, "list plugins and their state"),
        "check": (cmd_check, "validate config and reach every configured backend"),
        "new-plugin": (cmd_new_plugin, "write a pip-installable plugin package NAME with a passing test"),
    }
    parsers = {name: sub.add_parser(name, help=help_text) for name, (_, help_text) in commands.items()}
    parsers["new-plugin"].add_argument("name", help="the plugin's name (lower-case letters, digits, _)")
    parsers["new-plugin"].add_argument("--dir", default=".", help="where to write it (default: here)")
    parsers["plugins"].add_argument(
        "--hooks", action="store_true", help="also list each plugin's hooks and the order they are called in"
    )
    args = parser.parse_args(argv)
    command = args.command or "run"
    if command == "new-plugin":
        return cmd_new_plugin(args)
    try:
        return commands[command][0](args)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
