"""Logging set-up with a filter that keeps secrets out of every log line.

Two layers, because neither alone is enough:

- **known values**: every secret the bot loads (the Discord token, API keys,
  passwords inside backend URLs) is registered with :func:`secret_filter`
  and masked wherever it appears, whatever the shape;
- **shapes**: URL passwords, ``password=...``-style pairs, ``Authorization``
  headers, private key blocks and token-shaped strings (Discord bot tokens,
  ``sk-...`` API keys, AWS and GitHub keys) are masked even when nobody
  registered them, e.g. a password built at run time into a failed
  connection string.

The filter rewrites the fully formatted message, the traceback text and the
stack text of each record, so a secret hidden in a log argument or an
exception message is masked too.

``log_format="json"`` writes one JSON object per line instead of text, with
the pipeline's context on every line: the message and session being
handled and the plugin running (context variables the hook dispatcher sets,
:func:`note_message`), and the instance id. The JSON is built from the
record after the filter masked it.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterable
from contextvars import ContextVar
from typing import IO, Any

MASK = "**********"

# ``scheme://user:password@host``. The password runs to the last ``@`` before
# the path, so a password holding an unescaped ``@`` is masked whole.
_URL_PASSWORD = re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://[^/@\s:]*:)[^/\s]*@")
# ``password=...``, ``"api_key": "..."``, ``?token=...`` (libpq DSNs, query
# strings, dict reprs). The key must end with the secret word, so
# ``token_budget=3000`` or ``max_tokens=100`` stay readable; a value that is
# already masked (``SecretStr('**********')``) is left alone.
_KEY_VALUE = re.compile(
    r"""(?ix)
    (\b[\w.-]*(?:password|passwd|pwd|secret|token|api[_-]?key|apikey|access[_-]?key|private[_-]?key)
     ['"]?\s*[=:]\s*['"]?)
    (?!SecretStr\(|\*{3})
    ([^\s'",;&)}\]]+)
    """
)
_AUTH_HEADER = re.compile(r"(?i)\b(authorization['\"]?\s*[:=]\s*['\"]?(?:bearer|bot|basic|token)\s+)[^\s'\",]+")
_BEARER = re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/-]{16,}=*")
_PRIVATE_KEY = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?(?:-----END [A-Z ]*PRIVATE KEY-----|\Z)")
_TOKEN_SHAPES = re.compile(
    r"""(?x)
    [A-Za-z0-9_-]{23,28}\.[A-Za-z0-9_-]{6,7}\.[A-Za-z0-9_-]{27,}   # Discord bot token
    | (?<=/webhooks/)\d+/[A-Za-z0-9_-]{30,}                       # Discord webhook id/token
    | \bsk-[A-Za-z0-9_-]{20,}                                     # OpenAI-style API key
    | \b(?:AKIA|ASIA)[0-9A-Z]{16}\b                               # AWS access key id
    | \bgh[pousr]_[A-Za-z0-9]{30,}                                # GitHub token
    | \bxox[abprs]-[A-Za-z0-9-]{10,}                              # Slack token
    | \beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}  # JWT
    """
)


# ``?password=...`` in a URL's query string: the key ends with a secret word.
_QUERY_SECRET = re.compile(
    r"(?i)[?&;][\w.-]*(?:password|passwd|pwd|secret|token|api[_-]?key|apikey|access[_-]?key|private[_-]?key|signature)"
    r"=[^&#\s]+"
)
_SHAPES = (
    ("a private key", _PRIVATE_KEY),
    ("a URL with a password", _URL_PASSWORD),
    ("a secret in a URL's query string", _QUERY_SECRET),
    ("a token or API key", _TOKEN_SHAPES),
)


def secret_shape(text: str) -> str | None:
    """What kind of secret ``text`` holds somewhere, by its shape (a private
    key, a URL with a password or a secret query parameter, a token or API
    key), or ``None``. Never returns the secret itself. Unlike :func:`redact`
    it does not flag ``name: value`` pairs, which ordinary prose has."""
    return next((kind for kind, pattern in _SHAPES if pattern.search(text)), None)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """Mask known ``secrets`` and anything shaped like a secret in ``text``."""
    # Longest first, so a secret that contains another is masked whole.
    for secret in sorted((s for s in secrets if s and len(s) >= 4), key=len, reverse=True):
        text = text.replace(secret, MASK)
    text = _PRIVATE_KEY.sub("-----PRIVATE KEY " + MASK + "-----", text)
    text = _URL_PASSWORD.sub(r"\1***@", text)
    text = _AUTH_HEADER.sub(r"\1" + MASK, text)
    text = _BEARER.sub(r"\1" + MASK, text)
    text = _TOKEN_SHAPES.sub(MASK, text)
    return _KEY_VALUE.sub(r"\1" + MASK, text)


def secret_values(obj: Any) -> list[str]:
    """Every secret value inside ``obj``: ``SecretStr`` fields (nested
    models, dicts and lists included) and passwords inside URL strings.

    Lets a plugin register what it loaded in one call:
    ``secret_filter().add_all(secret_values(settings))``. Duck-typed so the
    module needs nothing but the standard library.
    """
    found: list[str] = []

    def walk(value: Any, depth: int) -> None:
        if depth > 20:
            return
        getter = getattr(value, "get_secret_value", None)
        if callable(getter):
            secret = getter()
            if isinstance(secret, str) and secret:
                found.append(secret)
                found.extend(_url_passwords(secret))
            return
        if isinstance(value, str):
            found.extend(_url_passwords(value))
        elif isinstance(value, dict):
            for item in value.values():
                walk(item, depth + 1)
        elif isinstance(value, (list, tuple, set, frozenset)):
            for item in value:
                walk(item, depth + 1)
        elif not isinstance(value, type) and hasattr(type(value), "model_fields"):
            for name in type(value).model_fields:
                walk(getattr(value, name, None), depth + 1)

    walk(obj, 0)
    return found


def _url_passwords(text: str) -> list[str]:
    passwords = []
    for match in re.finditer(r"://[^/@\s:]*:([^/\s]*)@", text):
        if match.group(1):
            passwords.append(match.group(1))
    return passwords


class RedactingFilter(logging.Filter):
    """Masks known secret values, URL passwords and token-shaped strings in
    the fully formatted message (arguments and tracebacks included)."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s]

    def add(self, secret: str | None) -> None:
        """Mask ``secret`` from now on (values shorter than 4 characters are
        ignored: masking them would garble ordinary words)."""
        if secret and secret not in self.secrets:
            self.secrets.append(secret)

    def add_all(self, secrets: Iterable[str]) -> None:
        for secret in secrets:
            self.add(secret)

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string must not hide the record
            message = f"{record.msg!r} % {record.args!r}"
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        record.msg = redact(message, self.secrets)
        record.args = None
        if record.exc_text:
            record.exc_text = redact(record.exc_text, self.secrets)
        if record.stack_info:
            record.stack_info = redact(record.stack_info, self.secrets)
        return True


_FILTER = RedactingFilter()


def secret_filter() -> RedactingFilter:
    """The process-wide filter; plugins add the secrets they load."""
    return _FILTER


# What the pipeline is working on, for the JSON log lines. Set (not reset)
# by each hook call that concerns a message, so the core's own lines between
# two hooks carry them too; each message's first hook overwrites them.
MESSAGE_ID: ContextVar[str | None] = ContextVar("log_message_id", default=None)
SESSION_ID: ContextVar[str | None] = ContextVar("log_session_id", default=None)
INSTANCE_ID: ContextVar[str | None] = ContextVar("log_instance_id", default=None)
# The plugin whose hook implementation runs now.
PLUGIN: ContextVar[str | None] = ContextVar("log_plugin", default=None)


def note_message(message_id: str | None, session_id: str | None, instance_id: str | None) -> None:
    """Record the message (and its session, once known) a hook call is about."""
    if message_id is not None and message_id != MESSAGE_ID.get():
        MESSAGE_ID.set(message_id)
        SESSION_ID.set(None)
    if session_id is not None:
        SESSION_ID.set(session_id)
    if instance_id is not None:
        INSTANCE_ID.set(instance_id)


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, the
    pipeline's context and the traceback (all already redacted)."""

    def __init__(self, instance_id: str | None = None) -> None:
        super().__init__()
        self.instance_id = instance_id

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "instance_id": INSTANCE_ID.get() or self.instance_id,
            "message_id": MESSAGE_ID.get(),
            "session_id": SESSION_ID.get(),
            "plugin": PLUGIN.get() or _plugin_of(record.name),
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = redact(self.formatException(record.exc_info), _FILTER.secrets)
        if record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = record.stack_info
        return json.dumps(line, ensure_ascii=False, default=str)


def _plugin_of(logger_name: str) -> str | None:
    # plugins.memory.store -> memory: a line logged outside a hook call (a
    # background task) still says whose it is.
    parts = logger_name.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "plugins" else None


LOG_FORMATS = ("text", "json")


def setup_logging(
    level: str = "INFO",
    secrets: Iterable[str] = (),
    stream: IO[str] | None = None,
    log_format: str = "text",
    instance_id: str | None = None,
) -> None:
    """Log to ``stream`` (stderr by default) through the redacting filter,
    as text or as JSON lines (``log_format``).

    The filter sits on the handler, not on a logger, so records from every
    logger (discord.py, redis, aiohttp...) pass through it.
    """
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}, not {log_format!r}")
    for secret in secrets:
        _FILTER.add(secret)
    handler = logging.StreamHandler(stream)
    if log_format == "json":
        handler.setFormatter(JsonFormatter(instance_id))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(_FILTER)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
