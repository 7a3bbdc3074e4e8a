"""The terminal chat under hostile input: escape sequences in what it
prints, undecodable bytes on stdin, a data directory it cannot write, and
the files it saved for a user who asks to be forgotten."""

from __future__ import annotations

import asyncio
import getpass
import io
import types
from pathlib import Path

import pytest

import plugins.console as console_plugin
from core.models import Attachment, Context, IncomingMessage, Reply
from core.plugins import hookimpl
from plugins.console.terminal import printable
from tests.core.helpers import make_bot

HOSTILE = [
    "\x1b[2J\x1b[H",  # clear the screen, cursor home
    "\x1b]0;pwned\x07",  # set the window title (BEL)
    "\x1b]8;;http://evil.example\x1b\\link\x1b]8;;\x1b\\",  # hyperlink (ST)
    "\x1b]52;c;Y3VybCBldmls\x07",  # write the clipboard
    "\x9b31m",  # 8-bit CSI
    "\x9d0;title\x9c",  # 8-bit OSC
    "\x1bP+q\x1b\\",  # DCS
    "\x1b]0;never closed",  # an OSC left open
    "\x1bc",  # full reset
    "safe\rFAKE",  # a carriage return rewrites the line shown
]


@pytest.mark.parametrize("sequence", HOSTILE)
def test_printable_neutralises_every_control_sequence(sequence: str) -> None:
    shown = printable(f"before {sequence} after")
    assert "\x1b" not in shown and "\x07" not in shown and "\r" not in shown
    assert not any(0x80 <= ord(c) <= 0x9F for c in shown)
    assert "pwned" not in shown and "evil" not in shown and "Y3Vy" not in shown
    assert shown.startswith("before ")


def test_printable_keeps_ordinary_text() -> None:
    text = "Line one\n\tindented — «quotes», emoji 🦊, 中文\nwindows line\r\n"
    assert printable(text) == text.replace("\r\n", "\n")


def _echo(attachment: Attachment | None = None) -> types.ModuleType:
    """A reply generator that repeats the message, as a model might."""
    module = types.ModuleType("echo")

    def generate_reply(context: Context, message: IncomingMessage) -> Reply:
        return Reply(f"you said: {message.content}", attachments=[attachment] if attachment else [])

    module.generate_reply = hookimpl(tryfirst=True)(generate_reply)  # type: ignore[attr-defined]
    return module


def chat(tmp_path: Path, stdin: io.TextIOBase, data_dir: Path | None = None, echo: types.ModuleType | None = None) -> str:
    bot = make_bot(tmp_path, {"console": console_plugin, "echo": echo or _echo()})
    if data_dir is not None:
        bot.settings.env.data_dir = data_dir
    stdout = io.StringIO()

    async def main() -> None:
        await bot.start()
        try:
            await asyncio.wait_for(console_plugin.run_console(bot, stdin=stdin, stdout=stdout), 30)
        finally:
            await bot.stop()

    asyncio.run(main())
    return stdout.getvalue()


def test_the_terminal_never_prints_an_escape_sequence_from_a_message(tmp_path: Path) -> None:
    stdin = io.StringIO("".join(f"hi {s} there\n" for s in HOSTILE) + "/quit\n")
    printed = chat(tmp_path, stdin)
    assert printed.count("you said: hi") == len(HOSTILE)
    assert "\x1b" not in printed and "\x07" not in printed and "\r" not in printed


def test_undecodable_bytes_on_a_strict_stdin_do_not_end_the_chat(tmp_path: Path) -> None:
    stdin = io.TextIOWrapper(io.BytesIO(b"caf\xe9 \xff\nstill here\n/quit\n"), encoding="utf-8", errors="strict")
    printed = chat(tmp_path, stdin)
    assert "you said: caf\ufffd \ufffd" in printed
    assert "you said: still here" in printed


def _file() -> Attachment:
    return Attachment("notes.txt", "text/plain", size=5, data=b"hello")


def test_a_data_dir_that_cannot_be_written_costs_the_file_not_the_reply(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    stdin = io.StringIO("one\ntwo\n/quit\n")
    printed = chat(tmp_path, stdin, data_dir=tmp_path / "a-file", echo=_echo(_file()))
    assert "you said: one" in printed and "you said: two" in printed
    assert printed.count("[not saved: notes.txt could not be saved") == 2


def test_forget_deletes_the_files_saved_for_that_user_only(tmp_path: Path) -> None:
    printed = chat(tmp_path, io.StringIO("send it\n/quit\n"), echo=_echo(_file()))
    assert "[file saved to" in printed
    files = tmp_path / "files"
    other = files / "someone-else"
    other.mkdir()
    (other / "export.json").write_text("{}")
    me = f"local:{getpass.getuser()}"

    bot = make_bot(tmp_path, {"console": console_plugin})

    async def forget() -> list[object]:
        return await bot.hooks.collect("forget_user", user_id=me)

    assert asyncio.run(forget()) == [{"saved_files": 1}]
    assert [p.name for p in files.iterdir()] == ["someone-else"]


def _streaming_echo(stdout: io.StringIO, seen_live: list[bool]) -> types.ModuleType:
    """A reply generator that publishes its reply in pieces (an escape
    sequence split across two of them) and, before returning the whole
    reply, notes whether the pieces were already on the terminal."""
    module = types.ModuleType("streaming_echo")

    async def generate_reply(context: Context, message: IncomingMessage, bot: object) -> Reply:
        pieces = ["you said: ", "hi \x1b", "[2J there", " — streamed"]
        for piece in pieces:
            bot.tokens.publish(message.id, piece)  # type: ignore[attr-defined]
            await asyncio.sleep(0.01)
        for _ in range(100):
            if "streamed" in stdout.getvalue():
                break
            await asyncio.sleep(0.01)
        seen_live.append("you said: hi" in stdout.getvalue() and "streamed" in stdout.getvalue())
        return Reply("".join(pieces), notes=["a note"])

    module.generate_reply = hookimpl(tryfirst=True)(generate_reply)  # type: ignore[attr-defined]
    return module


def test_a_streamed_reply_is_printed_as_it_is_written_and_stays_printable(tmp_path: Path) -> None:
    bot = make_bot(tmp_path, {"console": console_plugin})
    stdout = io.StringIO()
    seen_live: list[bool] = []
    bot.plugins.pm.register(_streaming_echo(stdout, seen_live), "streaming_echo")

    async def main() -> None:
        await bot.start()
        try:
            await asyncio.wait_for(console_plugin.run_console(bot, stdin=io.StringIO("hello\n/quit\n"), stdout=stdout), 30)
        finally:
            await bot.stop()

    asyncio.run(main())
    printed = stdout.getvalue()
    assert seen_live == [True], "the pieces were not printed before the reply was complete"
    assert "\x1b" not in printed
    assert printed.count("you said: hi") == 1
    assert "— streamed\n(a note)\n" in printed
