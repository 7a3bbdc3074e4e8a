"""Transport-neutral commands: parsing, permissions and dispatch."""

from __future__ import annotations

import asyncio
import inspect
import logging
from typing import Any

from core.errors import Refused
from core.models import Command, IncomingMessage, Invocation, Reply

log = logging.getLogger("core.commands")


def parse(content: str, prefix: str) -> tuple[str, str] | None:
    """``"/plugins disable images"`` → ``("plugins", "disable images")``."""
    if not prefix or not content.startswith(prefix):
        return None
    body = content[len(prefix):].strip()
    if not body:
        return None
    name, _, args = body.partition(" ")
    return name.lower(), args.strip()


def is_owner(message: IncomingMessage, owner_ids: list[str]) -> bool:
    """A configured bot owner: marked by the transport, or named by id."""
    return message.is_owner or message.author_id in owner_ids


def is_allowed(command: Command, message: IncomingMessage, owner_ids: list[str]) -> bool:
    owner = is_owner(message, owner_ids)
    perms = message.permissions
    if command.permission == "everyone" or owner:
        return True
    if command.permission == "manage_messages":
        return message.is_dm or bool({"manage_messages", "administrator"} & perms)
    if command.permission == "admin":
        return "administrator" in perms
    return False


class CommandRegistry:
    def __init__(self) -> None:
        self.commands: dict[str, Command] = {}
        self.problems: list[str] = []

    def register_for(self, plugin: str) -> Any:
        def register(command: Command) -> None:
            if not isinstance(command, Command):
                raise TypeError(f"register_commands: expected a Command, got {type(command).__name__}")
            name = command.name.lower()
            if not name.replace("-", "").replace("_", "").isalnum():
                raise ValueError(f"command name {command.name!r} must be letters, digits, - or _")
            if name in self.commands:
                problem = f"command {name!r} from {plugin!r} ignored: {self.commands[name].plugin!r} has it"
                self.problems.append(problem)
                log.warning(problem)
                return
            command.name, command.plugin = name, plugin
            self.commands[name] = command

        return register

    async def run(self, bot: Any, message: IncomingMessage, name: str, args: str) -> Reply:
        command = self.commands.get(name)
        prefix = bot.settings.bot.command_prefix
        if command is None:
            return Reply(f"Unknown command {prefix}{name}. Try {prefix}help for the list.")
        if command.plugin in _off_here(bot, message):
            return Reply(f"{prefix}{name} is switched off in this server (plugin {command.plugin!r}).")
        if not is_allowed(command, message, bot.settings.bot.owner_ids):
            return Reply(f"You do not have permission to use {prefix}{name} (it needs: {command.permission}).")
        deadline: asyncio.Timeout | None = None
        try:
            hooks = getattr(bot, "hooks", None)
            if hooks is not None:
                await hooks.broadcast("before_command", command=command, message=message, args=args)
            result = command.handler(Invocation(bot, message, name, args))
            if inspect.isawaitable(result):
                async with asyncio.timeout(_timeout(bot)) as deadline:
                    result = await result
        except Refused as refused:
            return Reply(refused.reply)
        except TimeoutError as exc:
            if deadline is None or not deadline.expired():
                return _failed(prefix, name, command, exc)
            log.error("command %s from plugin %r did not finish within %g s", name, command.plugin, _timeout(bot))
            return Reply(f"{prefix}{name} did not finish in time (plugin {command.plugin!r}); the error was logged.")
        except Exception as exc:  # noqa: BLE001 - a broken command must not take the bot down
            return _failed(prefix, name, command, exc)
        return result if isinstance(result, Reply) else Reply(str(result))


def _failed(prefix: str, name: str, command: Command, exc: Exception) -> Reply:
    log.error("command %s from plugin %r failed: %s", name, command.plugin, exc, exc_info=exc)
    return Reply(f"{prefix}{name} failed inside plugin {command.plugin!r}; the error was logged.")


def _timeout(bot: Any) -> float:
    """The command hook_timeout ([bot] hook_timeouts["command"], else hook_timeout)."""
    settings = bot.settings.bot
    return float(settings.hook_timeouts.get("command", settings.hook_timeout))


def _off_here(bot: Any, message: IncomingMessage) -> set[str]:
    off_in_guild = getattr(bot, "off_in_guild", None)
    return off_in_guild(message.guild_id) if off_in_guild is not None else set()


def available(bot: Any, message: IncomingMessage) -> list[Command]:
    """The commands ``message``'s author can reach where they are, by name."""
    off = _off_here(bot, message)
    return sorted((c for c in bot.commands.commands.values() if c.plugin not in off), key=lambda c: c.name)
