"""What the terminal chat needs beyond the pipeline: text that is safe to
print, lines read whatever bytes arrive, and the files it writes per user.

Everything printed may hold text a user or a model chose. A terminal obeys
escape sequences in what it prints: CSI (``ESC [``, clear the screen, move
the cursor), OSC (``ESC ]``, set the window title, write hyperlinks or the
clipboard), and lone control characters (a carriage return overwrites the
line shown). :func:`printable` removes the sequences whole and shows any
other control character as U+FFFD, so the reader sees that something was
there but the terminal does nothing.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

from core.models import Reply

# OSC and the other string sequences (DCS, SOS, PM, APC) run to BEL or ST;
# one left open by a hostile message runs to the end of the text.
_STRING_SEQUENCE = re.compile(r"(?:\x1b[\]PX^_]|[\x90\x98\x9d\x9e\x9f]).*?(?:\x07|\x1b\\|\x9c|$)", re.DOTALL)
_CSI = re.compile(r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]?")
_OTHER_ESCAPE = re.compile(r"\x1b[ -/]*[0-~]?")
# C0 and C1 controls but tab and newline; lone surrogates (undecodable
# input bytes) would make a strict terminal encoding fail.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")


def printable(text: str) -> str:
    """``text`` with every terminal control sequence neutralised."""
    text = text.replace("\r\n", "\n")
    for pattern in (_STRING_SEQUENCE, _CSI, _OTHER_ESCAPE):
        text = pattern.sub("", text)
    return _CONTROL.sub("\ufffd", text)


def read_line(stdin: Any) -> str:
    """One line from ``stdin``; bytes that are not valid in its encoding
    arrive as surrogates (the pipeline refuses such a message with a clear
    reply) instead of raising, whatever ``errors`` the stream was opened
    with."""
    raw = getattr(stdin, "buffer", None)
    if raw is None:
        return stdin.readline()
    line: bytes = raw.readline()
    return line.decode(getattr(stdin, "encoding", None) or "utf-8", "surrogateescape")


def user_folder(files: Path, user_id: str) -> Path:
    """Where the files sent to ``user_id`` are saved: one folder per user,
    so forgetting the user removes them all."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", user_id).lstrip(".") or "_"
    return files / safe


def save_attachments(reply: Reply, folder: Path) -> tuple[list[Path], str | None]:
    """Write the reply's files; return their paths and, when writing failed,
    why (the reply itself is shown either way)."""
    paths: list[Path] = []
    for attachment in reply.attachments:
        if attachment.data is None:
            continue
        name = Path(attachment.filename).name or "file.bin"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / name
            path.write_bytes(attachment.data)
        except OSError as exc:
            return paths, f"{name} could not be saved in {folder}: {exc.strerror or exc}"
        paths.append(path.resolve())
    return paths, None


def forget_files(files: Path, user_id: str) -> int:
    """Delete every file saved for ``user_id``; return how many."""
    folder = user_folder(files, user_id)
    if not folder.is_dir():
        return 0
    count = sum(1 for p in folder.rglob("*") if p.is_file())
    shutil.rmtree(folder)
    return count
