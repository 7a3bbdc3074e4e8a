"""Admin commands of the command line, contributed by plugins.

The core knows no backend: ``python -m core migrate`` or ``outbox replay``
are commands a plugin registers through ``register_admin_commands`` (the
memory plugin owns its schema and outbox, the ops plugin the commands built
on the core's hooks). The core parses the arguments, starts the bot when
the command asks for it, and gives the command an :class:`Output`.

Every command speaks two ways: plain lines for people, or with ``--json``
one JSON document on stdout for scripts. Progress goes to stderr: a line
redrawn in place on a terminal, plain lines otherwise.

Exit codes, the same for every command:

- 0: done, nothing needs attention;
- 1: done, and something needs attention (``doctor`` found a problem,
  migrations are pending, writes still wait in the outbox);
- 2: bad usage or config;
- 3: a backend the command needs did not answer; nothing was changed
  that the message does not say.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import IO, Any

EXIT_OK = 0
EXIT_ATTENTION = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3

CORE_COMMANDS = frozenset({"run", "chat", "plugins", "check"})


class AdminError(Exception):
    """A command cannot go on: ``str(exc)`` says why, ``code`` is the exit code."""

    def __init__(self, message: str, code: int = EXIT_UNREACHABLE) -> None:
        super().__init__(message)
        self.code = code


def _no_arguments(_parser: argparse.ArgumentParser) -> None:
    return None


@dataclass(slots=True)
class AdminCommand:
    """One command of the command line.

    ``run(bot, args, out)`` returns the exit code. ``arguments(parser)`` adds
    the command's own arguments (sub-commands included). With ``start`` the
    core starts the bot's plugins first (backends connected, as when
    serving, but no transport and no HTTP listener) and stops them after.
    """

    name: str
    help: str
    run: Callable[[Any, argparse.Namespace, Output], Awaitable[int]]
    arguments: Callable[[argparse.ArgumentParser], None] = _no_arguments
    start: bool = True
    plugin: str = ""


@dataclass
class AdminRegistry:
    """The commands plugins registered, by name; refusals in ``problems``."""

    commands: dict[str, AdminCommand] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def register_for(self, plugin: str) -> Callable[[Any], None]:
        def register(command: Any) -> None:
            if not isinstance(command, AdminCommand):
                self.problems.append(f"plugin {plugin!r} registered an admin command that is not an AdminCommand")
            elif command.name in CORE_COMMANDS or command.name in self.commands:
                self.problems.append(f"plugin {plugin!r}: admin command {command.name!r} is taken; ignored")
            else:
                command.plugin = plugin
                self.commands[command.name] = command

        return register


class Progress:
    """Progress of one long step, on stderr."""

    def __init__(self, label: str, total: int | None, stream: IO[str], live: bool) -> None:
        self.label, self.total, self.stream, self.live = label, total, stream, live
        self.done = 0
        self._said = -1
        self._last = 0.0

    def advance(self, count: int = 1) -> None:
        self.done += count
        self._show(final=False)

    def close(self) -> None:
        self._show(final=True)
        if self.live:
            self.stream.write("\n")
        self.stream.flush()

    def _text(self) -> str:
        if self.total:
            return f"{self.label}: {self.done}/{self.total} ({100 * self.done // self.total}%)"
        return f"{self.label}: {self.done}"

    def _show(self, final: bool) -> None:
        if self.live:
            now = time.monotonic()
            if final or now - self._last >= 0.1:
                self._last = now
                self.stream.write("\r" + self._text())
                self.stream.flush()
            return
        # Plain lines: every tenth of the way (or of each hundred when the
        # total is unknown) and at the end, so a log stays short.
        step = max(1, (self.total or 1000) // 10)
        tick = self.done // step
        if final or tick != self._said:
            self._said = tick
            self.stream.write(self._text() + "\n")


class Output:
    """Where a command writes what it found."""

    def __init__(self, as_json: bool, stdout: IO[str] | None = None, stderr: IO[str] | None = None) -> None:
        self.as_json = as_json
        self.stdout = stdout or sys.stdout
        self.stderr = stderr or sys.stderr
        self.document: dict[str, Any] = {}

    def line(self, text: str = "") -> None:
        """A line for people (left out with ``--json``)."""
        if not self.as_json:
            print(text, file=self.stdout)

    def data(self, **fields: Any) -> None:
        """Fields of the JSON document."""
        self.document.update(fields)

    def progress(self, label: str, total: int | None = None) -> Progress:
        live = bool(getattr(self.stderr, "isatty", lambda: False)())
        return Progress(label, total, self.stderr, live)

    def finish(self, command: str, code: int, error: str | None = None) -> None:
        if error is not None:
            print(f"error: {error}", file=self.stderr)
        if self.as_json:
            document = {"command": command, "exit_code": code, **self.document}
            if error is not None:
                document["error"] = error
            print(json.dumps(document, indent=2, sort_keys=True, default=str), file=self.stdout)
