"""The message pipeline: order of hooks, bad input, isolation."""

from __future__ import annotations

import types
from pathlib import Path

from core.errors import Refused
from core.models import Reply
from core.plugins import hookimpl
from core.storage import Storage, StorageBase

from tests.core.helpers import make_bot, say


STORAGE_METHODS = {m for m in vars(Storage) if not m.startswith("_")}


def _module(**hooks: object) -> types.ModuleType:
    """A plugin module with these hook implementations; storage methods
    (``store_message``, ``session_lease``…) go to the storage it registers."""
    module = types.ModuleType("m")
    storage = StorageBase()
    for name, func in hooks.items():
        if name in STORAGE_METHODS:
            setattr(storage, name, func)
        else:
            setattr(module, name, hookimpl(func))
    if STORAGE_METHODS & set(hooks):
        module.register_storage = hookimpl(lambda register: register(storage))  # type: ignore[attr-defined]
    return module


def test_hooks_run_in_pipeline_order(tmp_path: Path) -> None:
    calls: list[str] = []

    def resolve_session(message):  # noqa: ANN001, ANN202
        calls.append("resolve_session")

    def prepare_message(message, session):  # noqa: ANN001, ANN202
        calls.append("prepare_message")

    def store_message(record):  # noqa: ANN001, ANN202
        calls.append(f"store:{record.role.value}")
        return True

    def build_context(session, message):  # noqa: ANN001, ANN202
        calls.append("build_context")

    def generate_reply(context):  # noqa: ANN001, ANN202
        calls.append("generate_reply")
        return Reply(f"{len(context.messages)} in context")

    def reply_sent(record):  # noqa: ANN001, ANN202
        calls.append(f"reply_sent:{record.id.split(':')[0]}")

    module = _module(
        resolve_session=resolve_session,
        prepare_message=prepare_message,
        store_message=store_message,
        build_context=build_context,
        generate_reply=generate_reply,
        reply_sent=reply_sent,
    )
    bot = make_bot(tmp_path, {"recorder": module})
    assert [r.content for r in say(bot, "hi")] == ["1 in context"]
    assert calls == [
        "resolve_session",
        "prepare_message",
        "store:user",
        "build_context",
        "generate_reply",
        "store:bot",
        "reply_sent:reply",
    ]


def test_empty_message_gets_a_clear_reply(tmp_path: Path) -> None:
    bot = make_bot(tmp_path, {})
    assert "empty message" in say(bot, "   ")[0].content


def test_oversized_message_is_refused_and_not_stored(tmp_path: Path) -> None:
    stored = []
    bot = make_bot(tmp_path, {"m": _module(store_message=lambda record: stored.append(record))})
    reply = say(bot, "x" * 5000)[0].content
    assert "5,000 characters" in reply and "Nothing was stored" in reply
    assert stored == []


def test_a_refusing_plugin_stops_the_message_with_its_text(tmp_path: Path) -> None:
    stored = []

    def prepare_message(message):  # noqa: ANN001, ANN202
        raise Refused("that image is too large")

    bot = make_bot(tmp_path, {"m": _module(prepare_message=prepare_message, store_message=lambda record: stored.append(record))})
    assert say(bot, "look")[0].content == "that image is too large"
    assert stored == []


def test_a_broken_reply_plugin_falls_back(tmp_path: Path) -> None:
    def generate_reply():  # noqa: ANN202
        raise RuntimeError("model exploded")

    bot = make_bot(tmp_path, {"m": _module(generate_reply=generate_reply)})
    replies = say(bot, "hi")
    assert replies[0].content == "Sorry, I could not generate a reply (plugin m failed)."
    assert bot.hooks.failures[-1].plugin == "m"


def test_failed_storage_tells_the_user_memory_is_degraded(tmp_path: Path) -> None:
    def store_message():  # noqa: ANN202
        raise ConnectionError("database gone")

    bot = make_bot(tmp_path, {"m": _module(store_message=store_message)})
    assert "memory is degraded" in say(bot, "hi")[0].text()


def test_claimed_elsewhere_means_no_reply(tmp_path: Path) -> None:
    bot = make_bot(tmp_path, {"m": _module(claim_message=lambda message: False)})
    assert say(bot, "hi") == []


def test_bot_authors_are_ignored(tmp_path: Path) -> None:
    bot = make_bot(tmp_path, {})
    assert say(bot, "hi", author_is_bot=True) == []


def test_unknown_command_and_permission(tmp_path: Path) -> None:
    bot = make_bot(tmp_path, {})
    assert "Unknown command /frob" in say(bot, "/frob now")[0].content
    assert say(bot, "/help")[0].content.startswith("Commands:")


def test_a_broken_command_is_isolated(tmp_path: Path) -> None:
    from core.models import Command

    def boom(inv):  # noqa: ANN001, ANN202
        raise RuntimeError("kaput")

    def register_commands(register):  # noqa: ANN001, ANN202
        register(Command("boom", "breaks", boom))

    bot = make_bot(tmp_path, {"m": _module(register_commands=register_commands)})
    assert "failed inside plugin 'm'" in say(bot, "/boom")[0].content


def test_a_lease_that_cannot_be_taken_does_not_cost_the_reply(tmp_path: Path) -> None:
    class Unavailable:
        async def __aenter__(self) -> None:
            raise ConnectionError("redis and database down")

        async def __aexit__(self, *exc: object) -> None:
            raise AssertionError("never entered, never exited")

    bot = make_bot(tmp_path, {"m": _module(session_lease=lambda message: Unavailable())})
    assert "No reply plugin" in say(bot, "hi")[0].content


def test_a_lease_is_held_around_the_whole_conversation(tmp_path: Path) -> None:
    events: list[str] = []

    class Lease:
        async def __aenter__(self) -> None:
            events.append("enter")

        async def __aexit__(self, *exc: object) -> None:
            events.append("exit")

    def store_message(record):  # noqa: ANN001, ANN202
        events.append(f"store:{record.role.value}")

    bot = make_bot(tmp_path, {"m": _module(session_lease=lambda message: Lease(), store_message=store_message)})
    say(bot, "hi")
    assert events == ["enter", "store:user", "store:bot", "exit"]


def test_a_memory_plugin_that_failed_to_start_means_memory_is_degraded(tmp_path: Path) -> None:
    def startup():  # noqa: ANN202
        raise ConnectionError("redis went away during start-up")

    bot = make_bot(tmp_path, {"m": _module(startup=startup, store_message=lambda record: True)})
    assert "memory is degraded" in say(bot, "hi")[0].text()
    assert bot.plugins.info["m"].state == "failed"


def test_a_command_answer_in_the_conversation_is_stored_like_a_turn(tmp_path: Path) -> None:
    """An /imagine-like command: the core, not the plugin, stores the
    request and the answer under the session's lease, and marks it answered."""
    from core.models import Attachment, Command, ReplyId

    events: list[str] = []

    class Lease:
        async def __aenter__(self) -> None:
            events.append("enter")

        async def __aexit__(self, *exc: object) -> None:
            events.append("exit")

    def draw(inv):  # noqa: ANN001, ANN202
        events.append("command")
        return Reply("a cat", attachments=[Attachment("cat.png", "image/png", data=b"png")], in_conversation=True)

    def store_message(record):  # noqa: ANN001, ANN202
        events.append(f"store:{record.id}:{[a.data for a in record.attachments]}")

    module = _module(
        register_commands=lambda register: register(Command("draw", "draws", draw)),
        session_lease=lambda message: Lease(),
        store_message=store_message,
        confirm_reply=lambda message: events.append("confirm"),
        message_answered=lambda message: events.append("answered"),
    )
    bot = make_bot(tmp_path, {"m": module})
    assert [r.content for r in say(bot, "/draw a cat")] == ["a cat"]
    user, answer = (e for e in events if e.startswith("store:"))
    assert answer.startswith(f"store:{ReplyId(user.split(':')[1])}:") and answer.endswith("[None]")
    assert [e.split(":")[0] for e in events] == ["command", "enter", "store", "confirm", "store", "exit", "answered"]


def test_a_command_that_holds_the_session_runs_under_its_lease(tmp_path: Path) -> None:
    from core.models import Command

    events: list[str] = []

    class Lease:
        async def __aenter__(self) -> None:
            events.append("enter")

        async def __aexit__(self, *exc: object) -> None:
            events.append("exit")

    def reset(inv):  # noqa: ANN001, ANN202
        events.append("reset")
        return Reply("done")

    module = _module(
        register_commands=lambda register: register(Command("reset", "resets", reset, holds_session=True)),
        session_lease=lambda message: Lease(),
        message_answered=lambda message: events.append("answered"),
    )
    bot = make_bot(tmp_path, {"m": module})
    assert [r.content for r in say(bot, "/reset")] == ["done"]
    assert events == ["enter", "reset", "exit", "answered"]


def test_a_command_taken_over_elsewhere_is_not_answered_twice(tmp_path: Path) -> None:
    from core.models import Command

    module = _module(
        register_commands=lambda register: register(Command("ping", "pong", lambda inv: Reply("pong"))),
        confirm_reply=lambda message: False,
    )
    assert say(make_bot(tmp_path, {"m": module}), "/ping") == []


def test_a_holder_taken_over_keeps_watch_and_answers_when_the_other_one_dies(tmp_path: Path) -> None:
    """Rule A4: the send is refused (another instance took the message
    over); the core asks for the claim again, which keeps watch as a
    standby; here the other one died and the claim comes back."""
    calls: list[str] = []
    confirms = iter([False, True])
    module = _module(
        claim_message=lambda message: calls.append("claim") or True,
        confirm_reply=lambda message: calls.append("confirm") or next(confirms),
        store_message=lambda record: calls.append(f"store:{record.role.value}") or True,
    )
    assert len(say(make_bot(tmp_path, {"m": module}), "hello")) == 1
    # The answer made in the first round is sent: nothing runs twice.
    assert calls == ["claim", "store:user", "confirm", "claim", "confirm", "store:bot"]


def test_a_holder_taken_over_is_silent_when_the_other_one_answers(tmp_path: Path) -> None:
    claims = iter([True, False])  # the second ask: the other instance answered
    calls: list[str] = []
    module = _module(
        claim_message=lambda message: calls.append("claim") or next(claims),
        confirm_reply=lambda message: False,
        store_message=lambda record: True,
    )
    assert say(make_bot(tmp_path, {"m": module}), "hello") == []
    assert calls == ["claim", "claim"]


def test_reply_id_names_the_message_it_answers() -> None:
    from core.models import ReplyId

    assert ReplyId("1001") == "reply:1001" and ReplyId("1001").message_id == "1001"
    assert ReplyId.parse("reply:1001") == ReplyId("1001") and ReplyId.parse("1001") is None
