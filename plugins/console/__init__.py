"""Terminal chat: the transport used when no Discord token is set.

Each line typed is a message from the local user (the bot's operator, so an
owner) in a direct conversation; ``/commands`` work as in Discord. Files the
bot sends are saved under ``<data dir>/files/`` and their path is printed.
"""

from __future__ import annotations

import asyncio
import getpass
import sys
from pathlib import Path
from typing import Any

from core.ids import snowflake
from core.models import IncomingMessage, Reply, Sent
from core.plugins import hookimpl

PROMPT = "you> "


def save_attachments(reply: Reply, folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for attachment in reply.attachments:
        if attachment.data is None:
            continue
        name = Path(attachment.filename).name or "file.bin"
        path = folder / name
        path.write_bytes(attachment.data)
        paths.append(path.resolve())
    return paths


async def run_console(bot: Any, stdin: Any = None, stdout: Any = None) -> None:
    stdin = stdin or sys.stdin
    stdout = stdout or sys.stdout
    user = getpass.getuser()
    loop = asyncio.get_running_loop()
    interactive = hasattr(stdin, "isatty") and stdin.isatty()
    prefix = bot.settings.bot.command_prefix
    print(f"Chatting with {bot.settings.bot.name}. {prefix}help lists commands; {prefix}quit or Ctrl-D leaves.", file=stdout)

    async def send(reply: Reply) -> Sent:
        now = bot.clock.now()
        print(f"{bot.settings.bot.name}> {reply.text()}", file=stdout)
        for path in save_attachments(reply, bot.settings.data_dir / "files"):
            print(f"  [file saved to {path}]", file=stdout)
        stdout.flush()
        return Sent(id=snowflake(now), timestamp=now)

    while True:
        if interactive:
            print(PROMPT, end="", file=stdout, flush=True)
        line = await loop.run_in_executor(None, stdin.readline)
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
            author_id=f"local:{user}",
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
