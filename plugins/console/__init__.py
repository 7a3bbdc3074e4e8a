"""Terminal chat: the transport used when no Discord token is set.

Each line typed is a message from the local user (the bot's operator, so an
owner) in a direct conversation; a reply the reply plugin streams is
printed as it is written; ``/commands`` work as in Discord. Files the
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
from core.streaming import TokenStream
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

    live: LiveLine | None = None

    async def send(reply: Reply) -> Sent:
        now = bot.clock.now()
        shown = await live.end() if live is not None else ""
        print(printable(rest_of(reply.text(), shown, name)), file=stdout)
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
        live = LiveLine(stdout, name, bot.tokens.subscribe(message.id))
        try:
            await bot.handle(message, send)
        finally:
            await live.end()


class LiveLine:
    """Prints a reply's pieces as the reply plugin publishes them
    (``bot.tokens``, :mod:`core.streaming`); each piece made printable on
    its own, so no escape sequence survives being split across pieces."""

    def __init__(self, stdout: Any, name: str, tokens: TokenStream) -> None:
        self.stdout = stdout
        self.name = name
        self.tokens = tokens
        self.shown = ""
        self.task = asyncio.create_task(self._follow())

    async def _follow(self) -> None:
        async for piece in self.tokens:
            if not self.shown:
                print(f"{self.name}> ", end="", file=self.stdout)
            self.shown += piece
            print(printable(piece), end="", file=self.stdout, flush=True)

    async def end(self) -> str:
        """Stop following (pieces already published are printed first);
        return what was printed. Idempotent."""
        self.tokens.close()
        await self.task
        return self.shown


def rest_of(full: str, shown: str, name: str) -> str:
    """What is left to print of the final reply ``full`` once ``shown``
    was printed live: the rest of it, or the whole reply on a line of its
    own when it is not a continuation (the reply plugin changed it)."""
    if not shown:
        return f"{name}> {full}"
    if full.startswith(shown):
        return full[len(shown):]
    return f"\n{name}> {full}"


@hookimpl
def register_transports(register: Any) -> None:
    register("console", run_console)


@hookimpl
async def forget_user(user_id: str, bot: Any) -> dict[str, int]:
    """The files the terminal chat saved for ``user_id`` (exports, images)."""
    removed = await asyncio.to_thread(forget_files, bot.settings.data_dir / "files", user_id)
    return {"saved_files": removed}
