"""The files plugin's rules (plugins/files/reader.py): which files are read,
how they are decoded, and the limits."""

from __future__ import annotations

import codecs

import pytest

from core.models import Attachment
from plugins.files.reader import Limits, decode, read_texts
from plugins.files.settings import DEFAULT_EXTENSIONS

LIMITS = Limits(max_bytes=1000, max_chars=200, max_message_chars=300, extensions=frozenset(DEFAULT_EXTENSIONS))


def file(name: str, data: bytes | None, content_type: str = "application/octet-stream") -> Attachment:
    return Attachment(name, content_type, size=len(data or b""), data=data)


@pytest.mark.parametrize(
    "name, content_type",
    [("notes.txt", "text/plain"), ("README.md", "application/octet-stream"), ("main.py", "text/x-python"),
     ("data.csv", "text/csv"), ("config.json", "application/json"), ("noext", "text/plain; charset=utf-8"),
     ("Dockerfile", "application/octet-stream")],
)
def test_text_like_files_are_read_with_their_names(name: str, content_type: str) -> None:
    read = read_texts([file(name, b"line one\nline two", content_type)], LIMITS)
    assert read is not None and read[0].text == "line one\nline two" and read[0].filename == name


def test_images_and_other_binaries_are_left_alone() -> None:
    attachments = [file("cat.png", b"\x89PNG...", "image/png"), file("tool.exe", b"MZ\x00\x00")]
    assert read_texts(attachments, LIMITS) is None


def test_the_transports_objects_are_not_changed() -> None:
    original = file("a.txt", b"hello")
    read = read_texts([original], LIMITS)
    assert read is not None and read[0] is not original and original.text is None


@pytest.mark.parametrize(
    "data, expected",
    [
        (codecs.BOM_UTF8 + "é".encode(), "é"),
        (codecs.BOM_UTF16_LE + "ünï".encode("utf-16-le"), "ünï"),
        (b"a\r\nb\rc", "a\nb\nc"),
        (b"bell\x07 esc\x1b[2J tab\tend", "bell esc[2J tab\tend"),
    ],
)
def test_decoding(data: bytes, expected: str) -> None:
    assert decode(data) == expected


@pytest.mark.parametrize(
    "data, why",
    [(b"caf\xe9 latin-1", "not UTF-8 text"), (b"text\x00with nul", "binary content"), (None, "not downloaded"),
     (b"x" * 1001, "1,001 bytes, more than the 1,000 read")],
)
def test_a_file_that_cannot_be_read_says_why_and_is_kept(data: bytes | None, why: str) -> None:
    read = read_texts([file("f.txt", data)], LIMITS)
    assert read is not None and read[0].text is None and read[0].description == f"not read: {why}"


def test_long_files_are_cut_and_the_cut_is_said() -> None:
    read = read_texts([file("long.txt", b"a" * 500)], LIMITS)
    assert read is not None and read[0].text is not None
    assert read[0].text.startswith("a" * 200 + "\n[… cut: the first 200 of 500 characters]")


def test_the_files_of_one_message_share_a_budget() -> None:
    read = read_texts([file(f"{i}.txt", b"b" * 150) for i in range(3)], LIMITS)
    assert read is not None
    assert [len(a.text or "") for a in read[:2]] == [150, 150]
    assert read[2].text is None and read[2].description == "not read: the message's other files filled the room for text"


def test_the_text_is_kept_in_the_record() -> None:
    read = read_texts([file("a.txt", b"kept")], LIMITS)
    assert read is not None
    assert Attachment.from_dict(read[0].to_dict()).text == "kept"
    assert "text" not in file("b.bin", b"x").to_dict()
