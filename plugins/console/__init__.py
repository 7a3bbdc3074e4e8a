"""Terminal chat: the transport used when no Discord token is set.

Each line typed is a message from the local user (the bot's operator, so an
owner) in a direct conversation; ``/commands`` work as in Discord. Files the
bot sends are saved under ``<data dir>/files/<user>/`` and their path is
printed; ``/forget`` deletes that folder. Everything printed goes through
:func:`plugins.console.terminal.printable` (no escape sequences reach the
terminal).
"""

from __future__ import annotations

import asyncio
import getpass
import sys
from typing import Any

from core.ids import snowflake
from core.models import IncomingMessage, Reply, Sent
from core.plugins import hookimpl
from plugins.console.terminal import forget_files, printable, read_line, save_attachments, user_folder

PROMPT = "you> "


async def run_console(bot: Any, stdin: Any = None, stdout: Any = None) -> None:
    stdin = stdin or sys.stdin
    stdout = stdout or sys.stdout
    user = getpass.getuser()
    author_id = f"local:{user}"
    loop = asyncio.get_running_loop()
    interactive = hasattr(stdin, "isatty") and stdin.isatty()
    prefix = bot.settings.bot.command_prefix
    name = printable(bot.settings.bot.name)
    print(f"Chatting with {name}. {prefix}help lists commands; {prefix}quit or Ctrl-D leaves.", file=stdout)

    async def send(reply: Reply) -> Sent:
        now = bot.clock.now()
        print(printable(f"{name}> {reply.text()}"), file=stdout)
        paths, problem = save_attachments(reply, user_folder(bot.settings.data_dir / "files", author_id))
        for path in paths:
            print(printable(f"  [file saved to {path}]"), file=stdout)
        if problem:
            print(printable(f"  [not saved: {problem}]"), file=stdout)
        stdout.flush()
        return Sent(id=snowflake(now), timestamp=now)

    while True:
        if interactive:
            print(PROMPT, end="", file=stdout, flush=True)
        line = await loop.run_in_executor(None, read_line, stdin)
        if not line:
            break
        text = line.rstrip("\n")
        if text.strip() in (f"{prefix}quit", f"{prefix}exit"):
            break
        if not text.strip():
            continue
        now = bot.clock.now()
        message = IncomingMessage(
            id=snowflake(now),
            author_id=author_id,
            author_name=user,
            channel_id="terminal",
            content=text,
            timestamp=now,
            transport="console",
            is_dm=True,
            is_owner=True,
        )
        await bot.handle(message, send)


@hookimpl
def register_transports(register: Any) -> None:
    register("console", run_console)


@hookimpl
async def forget_user(user_id: str, bot: Any) -> dict[str, int]:
    """The files the terminal chat saved for ``user_id`` (exports, images)."""
    removed = await asyncio.to_thread(forget_files, bot.settings.data_dir / "files", user_id)
    return {"saved_files": removed}
