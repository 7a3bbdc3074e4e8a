"""Command line: ``python -m core run | chat | plugins | check``, and the
admin commands that enabled plugins register (``migrate``, ``outbox``,
``doctor``...: :mod:`core.admin`)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import tempfile
from pathlib import Path
from typing import Any

from core.admin import EXIT_USAGE, AdminCommand, AdminError, AdminRegistry, Output
from core.bot import Bot
from core.errors import ConfigError
from core.scaffold import write_plugin
from core.logs import setup_logging
from core.plugins import discover
from core.settings import Settings, check_log_level, load_settings, unknown_sections

log = logging.getLogger("core.cli")


def _settings(args: argparse.Namespace) -> Settings:
    settings = load_settings(args.config)
    problems = unknown_sections(settings, [c.name for c in discover()])
    problems += _data_dir_problems(settings)
    if args.log_level:
        try:
            args.log_level = check_log_level(args.log_level)
        except ValueError as exc:
            problems.append(f"--log-level: {exc}")
    if problems:
        # One line per problem: main() prints each as a "config error:" line.
        raise ConfigError("\n".join(problems))
    secrets = [settings.env.discord_token.get_secret_value()] if settings.env.discord_token else []
    level = args.log_level or settings.env.log_level
    terminal_chat = args.command == "chat" or (args.command in (None, "run") and not settings.env.discord_token)
    quiet = terminal_chat or args.command not in (None, "run", "plugins", "check")
    if quiet and not args.log_level and "log_level" not in settings.env.model_fields_set:
        # The chat and the admin commands share the terminal with the log:
        # only what needs attention.
        level = "WARNING"
    setup_logging(level, secrets, log_format=settings.env.log_format, instance_id=settings.env.instance_id)
    return settings


def _data_dir_problems(settings: Settings) -> list[str]:
    """The embedded database, the spool, the media store and the terminal's
    files all live in the data directory: one that cannot be written is
    refused here, not found out on the first message."""
    folder = settings.data_dir
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        return [f"BOT_DATA_DIR {str(folder)!r} cannot be written: {exc.strerror or exc}"]
    return []


def _plugin_config_problems(bot: Bot) -> list[str]:
    """One line per plugin that refused its configuration at start-up."""
    return [
        f"plugin {i.name}: {line}"
        for i in bot.plugins.listing()
        if i.bad_config
        for line in i.reason.removeprefix("startup failed: ").splitlines()
    ]


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
        # A plugin whose settings are wrong is not left out quietly: a typo
        # in [limits] would turn rate limiting off.
        refused = _plugin_config_problems(bot)
        if refused:
            _print_problems(refused)
            return 2
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
    refused = _plugin_config_problems(bot)
    failed = bool(refused)
    for problem in refused:
        print(f"config: FAIL {problem}")
    if not refused:
        print("config: OK" + (f" ({settings.config_file})" if settings.config_file else " (defaults)"))
    for problem in bot.plugins.problems + bot.commands.problems:
        print(f"config: WARNING {problem}")
    for info in bot.plugins.listing():
        if info.state == "failed" and not info.bad_config:
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


def _print_problems(lines: list[str]) -> None:
    for line in lines:
        print(f"config error: {line}", file=sys.stderr)
    print("not started: fix the configuration above (`python -m core check` checks it)", file=sys.stderr)


def admin_commands(settings: Settings) -> tuple[Bot, AdminRegistry]:
    """The admin commands the enabled plugins register, on a bot not started."""
    bot = Bot(settings)
    registry = AdminRegistry()
    bot.hooks.call_registry("register_admin_commands", registry.register_for)
    return bot, registry


async def _admin(bot: Bot, command: AdminCommand, args: argparse.Namespace) -> int:
    out = Output(getattr(args, "json", False))
    # Read by plugins that must not act as a serving instance here (the ops
    # plugin's HTTP listener).
    bot.admin_command = command.name  # type: ignore[attr-defined]
    error = None
    if command.start:
        await bot.start()
    try:
        code = await command.run(bot, args, out)
    except AdminError as exc:
        code, error = exc.code, str(exc)
    finally:
        if command.start:
            await bot.stop()
    out.finish(command.name, code, error)
    return code


def _parser(registry: AdminRegistry | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m core", description="A Discord bot that never forgets.")
    parser.add_argument("--config", help="TOML config file (default: $BOT_CONFIG or ./bot.toml)")
    parser.add_argument("--log-level", help="DEBUG, INFO, WARNING, ...")
    sub = parser.add_subparsers(dest="command")
    parsers = {name: sub.add_parser(name, help=help_text) for name, (_, help_text) in CORE_COMMANDS.items()}
    parsers["new-plugin"].add_argument("name", help="the plugin's name (lower-case letters, digits, _)")
    parsers["new-plugin"].add_argument("--dir", default=".", help="where to write it (default: here)")
    parsers["plugins"].add_argument(
        "--hooks", action="store_true", help="also list each plugin's hooks and the order they are called in"
    )
    for command in (registry.commands.values() if registry else ()):
        command_parser = sub.add_parser(command.name, help=f"{command.help} [{command.plugin}]")
        command.arguments(command_parser)
        _add_json_option(command_parser)
    return parser


def _add_json_option(parser: argparse.ArgumentParser) -> None:
    """``--json`` on a command and on each of its sub-commands, so it may
    come last (``sessions list --user 1 --json``)."""
    parser.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print one JSON document for scripts")
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _add_json_option(child)


CORE_COMMANDS: dict[str, Any] = {
    "run": (cmd_run, "run the bot: Discord when DISCORD_TOKEN is set, else terminal chat"),
    "chat": (cmd_chat, "chat with the bot in this terminal"),
    "plugins": (cmd_plugins, "list plugins and their state"),
    "check": (cmd_check, "validate config and reach every configured backend"),
    "new-plugin": (cmd_new_plugin, "write a pip-installable plugin package NAME with a passing test"),
}


def _wanted(argv: list[str] | None) -> argparse.Namespace:
    """The global options and the command name, before the plugins are known."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config")
    pre.add_argument("--log-level")
    pre.add_argument("command", nargs="?")
    return pre.parse_known_args(argv)[0]


def main(argv: list[str] | None = None) -> int:
    wanted = _wanted(argv)
    try:
        if wanted.command in CORE_COMMANDS or (wanted.command is None and not _asks_help(argv)):
            args = _parser(None).parse_args(argv)
            return CORE_COMMANDS[args.command or "run"][0](args)
        # Admin commands (and --help) need the plugins' registry: config
        # and logging first.
        bot, registry = admin_commands(_settings(wanted))
        args = _parser(registry).parse_args(argv)
        if args.command in CORE_COMMANDS or args.command is None:
            return CORE_COMMANDS[args.command or "run"][0](args)
        for problem in registry.problems:
            log.warning("%s", problem)
        return asyncio.run(_admin(bot, registry.commands[args.command], args))
    except ConfigError as exc:
        _print_problems(str(exc).splitlines())
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


def _asks_help(argv: list[str] | None) -> bool:
    return any(a in ("-h", "--help") for a in (sys.argv[1:] if argv is None else argv))
