"""Logging set-up with a filter that keeps secrets out of every log line."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

_URL_PASSWORD = re.compile(r"(://[^/@\s:]*:)[^/@\s]+@")
# Discord bot tokens and OpenAI-style keys, in case one is pasted somewhere.
_TOKEN_SHAPES = re.compile(r"[MNO][A-Za-z0-9_-]{23,28}\.[A-Za-z0-9_-]{6}\.[A-Za-z0-9_-]{27,}|sk-[A-Za-z0-9_-]{20,}")


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "**********")
    text = _URL_PASSWORD.sub(r"\1***@", text)
    return _TOKEN_SHAPES.sub("**********", text)


class RedactingFilter(logging.Filter):
    """Masks known secret values, URL passwords and token-shaped strings in
    the fully formatted message (arguments and tracebacks included)."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s]

    def add(self, secret: str | None) -> None:
        if secret and secret not in self.secrets:
            self.secrets.append(secret)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        record.msg = redact(message, self.secrets)
        record.args = None
        if record.exc_text:
            record.exc_text = redact(record.exc_text, self.secrets)
        return True


_FILTER = RedactingFilter()


def secret_filter() -> RedactingFilter:
    """The process-wide filter; plugins add the secrets they load."""
    return _FILTER


def setup_logging(level: str = "INFO", secrets: Iterable[str] = ()) -> None:
    for secret in secrets:
        _FILTER.add(secret)
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(_FILTER)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
