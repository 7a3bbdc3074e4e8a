"""The storage service: one typed implementation, registered, isolated."""

from __future__ import annotations

import types
from pathlib import Path
from typing import Any

from core.models import MessageRecord, Session
from core.plugins import hookimpl
from core.storage import StorageBase

from tests.core.helpers import make_bot, say


def _provider(storage: Any) -> types.ModuleType:
    module = types.ModuleType("provider")
    module.register_storage = hookimpl(lambda register: register(storage))  # type: ignore[attr-defined]
    return module


class Keeping(StorageBase):
    def __init__(self) -> None:
        self.records: list[MessageRecord] = []

    async def store_message(self, record: MessageRecord, session: Session) -> bool:
        self.records.append(record)
        return True


def test_the_registered_storage_keeps_the_conversation(tmp_path: Path) -> None:
    keeping = Keeping()
    bot = make_bot(tmp_path, {"keeper": _provider(keeping)})
    say(bot, "hi")
    assert [r.content for r in keeping.records][0] == "hi" and len(keeping.records) == 2
    assert bot.storage.plugin == "keeper" and "keeper" in bot.essential_plugins()


def test_a_second_storage_is_refused_and_the_first_kept(tmp_path: Path) -> None:
    first, second = Keeping(), Keeping()
    bot = make_bot(tmp_path, {"a_first": _provider(first), "b_second": _provider(second)})
    say(bot, "hi")
    kept = first if bot.storage.plugin == "a_first" else second
    other = second if kept is first else first
    assert len(kept.records) == 2 and other.records == []


def test_an_object_that_is_not_a_storage_is_refused_with_the_reason(tmp_path: Path) -> None:
    bot = make_bot(tmp_path, {"odd": _provider(object())})
    say(bot, "hi")
    assert not bot.storage.present
    assert any(f.plugin == "odd" and "is not a core.storage.Storage" in f.error for f in bot.hooks.failures)


def test_a_failing_storage_is_isolated_named_and_the_user_told(tmp_path: Path) -> None:
    class Broken(StorageBase):
        async def store_message(self, record: MessageRecord, session: Session) -> bool:
            raise ConnectionError("disk on fire")

    bot = make_bot(tmp_path, {"broken": _provider(Broken())})
    reply = say(bot, "hi")[0]
    assert "memory is degraded" in reply.text()
    assert any(f.plugin == "broken" and f.hook == "storage.store_message" for f in bot.hooks.failures)
