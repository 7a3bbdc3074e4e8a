"""The JSON log format: the pipeline's context on every line, secrets masked."""

from __future__ import annotations

import io
import json
import logging
import types
from collections.abc import Iterator
from typing import Any

import pytest

from core.logs import setup_logging
from core.plugins import hookimpl
from tests.core.helpers import make_bot, say
from tests.fake_urls import password_url

SECRET = "".join(["hunter", "2-", "x" * 16])  # built at run time: no secret-shaped line in the sources


def _plugin() -> types.ModuleType:
    module = types.ModuleType("chatty")
    log = logging.getLogger("plugins.chatty")

    @hookimpl
    def prepare_message(message: Any) -> None:
        log.info("preparing %s", message.id)

    @hookimpl
    def reply_sent(record: Any) -> None:
        log.info("sent %s", record.id)

    @hookimpl
    def generate_reply(message: Any) -> None:
        try:
            raise RuntimeError(f"cannot reach {password_url('postgresql', 'bot', SECRET, 'db/bot')}")
        except RuntimeError:
            log.exception("model call failed")

    module.prepare_message = prepare_message  # type: ignore[attr-defined]
    module.reply_sent = reply_sent  # type: ignore[attr-defined]
    module.generate_reply = generate_reply  # type: ignore[attr-defined]
    return module


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    stream = io.StringIO()
    setup_logging("INFO", secrets=[SECRET], stream=stream, log_format="json", instance_id="host-1")
    try:
        yield stream
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)


def test_every_pipeline_line_says_message_session_instance_and_plugin(tmp_path: Any, json_log: io.StringIO) -> None:
    bot = make_bot(tmp_path, {"chatty": _plugin()})
    say(bot, "hello")
    lines = [json.loads(line) for line in json_log.getvalue().splitlines()]
    mine = [line for line in lines if line["logger"] == "plugins.chatty"]
    assert [line["message"].split()[0] for line in mine] == ["preparing", "model", "sent"]
    for line in mine:
        assert line["message_id"] and line["session_id"], line
        assert line["instance_id"] == "test"
        assert line["plugin"] == "chatty"
    failure = next(line for line in mine if line["message"] == "model call failed")
    assert "RuntimeError" in failure["exception"]


def test_secrets_stay_masked_in_json_lines(tmp_path: Any, json_log: io.StringIO) -> None:
    bot = make_bot(tmp_path, {"chatty": _plugin()})
    say(bot, "hello")
    logging.getLogger("plugins.chatty").warning("token=%s", SECRET)
    text = json_log.getvalue()
    assert SECRET not in text
    assert password_url("postgresql", "bot", "***", "db/bot") in text


def test_an_unknown_log_format_is_refused() -> None:
    with pytest.raises(ValueError, match="json"):
        setup_logging("INFO", log_format="yaml")
