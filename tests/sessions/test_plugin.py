"""The sessions plugin inside an assembled bot, on the in-memory stand-in
store: the pipeline's view of scopes, timeouts, windows and commands."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from core.clock import ManualClock
from core.models import MessageRecord, Sent, Session

from tests.sessions.standin import Harness, Store

Make = Callable[..., Harness]


def test_idle_timeout_starts_fresh(make_harness: Make, clock: ManualClock) -> None:
    h = make_harness({"idle_timeout": 600})
    h.say("my name is Alice")
    h.say("what is my name?")
    assert h.recorder.texts() == ["my name is Alice", "ok 1", "what is my name?"]
    first = h.recorder.last.session.id
    clock.advance(601)
    h.say("hello again")
    assert h.recorder.texts() == ["hello again"]
    assert h.recorder.last.session.id != first


def test_a_timeout_survives_a_restart(make_harness: Make, store: Store, clock: ManualClock) -> None:
    h = make_harness({"idle_timeout": 600})
    h.say("remember 42")
    first = h.recorder.last.session.id
    h.close()
    clock.advance(300)
    h2 = make_harness({"idle_timeout": 600})
    h2.say("still there?")
    assert h2.recorder.last.session.id == first
    assert h2.recorder.texts()[0] == "remember 42"
    h2.close()
    clock.advance(601)
    h3 = make_harness({"idle_timeout": 600})
    h3.say("and now?")
    assert h3.recorder.last.session.id != first
    assert h3.recorder.texts() == ["and now?"]
    assert store.sessions[first].closed_at is not None


def test_two_instances_share_timeouts(make_harness: Make, clock: ManualClock) -> None:
    a = make_harness({"idle_timeout": 600}, instance="A")
    b = make_harness({"idle_timeout": 600}, instance="B")
    a.say("one")
    clock.advance(500)
    b.say("two")  # B touches the session A opened
    clock.advance(500)
    a.say("three")  # 1000 s after "one" but only 500 after "two"
    assert a.recorder.texts() == ["one", "ok 1", "two", "ok 3", "three"]


def test_a_message_is_judged_at_the_time_it_was_sent(make_harness: Make, clock: ManualClock) -> None:
    """Rule 12 (docs/MEMORY_SESSIONS.md): a message sent before the idle
    timeout passed continues the session, however late it is handled (a
    standby taking it over, a wait for a lease); a platform clock ahead of
    ours does not count."""
    h = make_harness({"idle_timeout": 600})
    h.say("one")
    first = h.recorder.last.session.id
    clock.advance(598)  # "one" was sent at 0 s; the clock ticked 1 s since
    late = h.message("sent at 599 s")
    clock.advance(120)  # handled at 719 s: idle by our clock, not when sent
    replies: list[Any] = []

    async def send(reply: Any) -> Sent:
        replies.append(reply)
        return Sent(timestamp=clock.now())

    h.run(h.bot.handle(late, send))
    assert h.recorder.last.session.id == first
    assert h.recorder.texts() == ["one", "ok 1", "sent at 599 s"]
    ahead = h.message("stamped in our future")
    ahead.timestamp = clock.now() + 10_000  # judged now: 120 s after the last
    h.run(h.bot.handle(ahead, send))
    assert h.recorder.last.session.id == first


def test_a_message_answered_late_keeps_the_conversation_open_from_its_answer(
    make_harness: Make, store: Store, clock: ManualClock
) -> None:
    """Rule 12's other half: the session's activity is when the message was
    handled (the reply goes out then), not when it was sent. A user who
    answers a late reply within the idle timeout goes on in the same
    conversation; and the stored activity is the bot's clock at handling,
    as the database's newest write says (an instance reading the session
    from there judges the same)."""
    h = make_harness({"idle_timeout": 600})
    h.say("my name is Alice")
    first = h.recorder.last.session.id
    late = h.message("what is my name?")
    clock.advance(300)  # handled 300 s after it was sent
    handled = clock.now()

    async def send(reply: Any) -> Sent:
        return Sent(timestamp=clock.now())

    h.run(h.bot.handle(late, send))
    assert store.sessions[first].last_active_at == handled
    clock.advance(400)  # 700 s after it was sent, 400 s after the answer
    h.say("and what did I just ask?")
    assert h.recorder.last.session.id == first


def test_window_keeps_the_last_n(make_harness: Make) -> None:
    h = make_harness({"window_messages": 5})
    for n in range(6):
        h.say(f"message {n}")
    assert h.recorder.texts() == ["message 3", "ok 5", "message 4", "ok 5", "message 5"]
    assert len(h.recorder.last.messages) == 5


def test_window_fits_the_token_budget(make_harness: Make) -> None:
    h = make_harness({"token_budget": 60, "window_messages": 50}, bot_config={"system_prompt": "Be brief."})
    for n in range(8):
        h.say(f"message number {n} with a few words")
    ctx = h.recorder.last
    assert ctx.token_budget == 60
    assert ctx.tokens_used is not None and ctx.tokens_used <= 60
    assert ctx.messages[-1].content == "message number 7 with a few words"
    assert 1 < len(ctx.messages) < 15
    assert ctx.system_prompt == "Be brief."


def test_system_prompt_per_guild(make_harness: Make) -> None:
    h = make_harness({"overrides": {"guild:g2": {"system_prompt": "You are the g2 helper."}}})
    h.say("hi", guild="g2")
    assert h.recorder.last.system_prompt == "You are the g2 helper."
    h.say("hi", guild="g1")
    assert h.recorder.last.system_prompt == h.bot.settings.bot.system_prompt


def test_channel_scope_shares_per_user_isolates(make_harness: Make) -> None:
    h = make_harness({"scope": "user_channel", "overrides": {"channel:room": {"scope": "channel"}}})
    h.say("alice in room", user="alice", channel="room")
    h.say("bob in room", user="bob", channel="room")
    assert h.recorder.texts() == ["alice in room", "ok 1", "bob in room"]
    h.say("alice private", user="alice", channel="c1")
    h.say("bob private", user="bob", channel="c1")
    assert h.recorder.texts() == ["bob private"]
    h.say("alice elsewhere", user="alice", channel="c1", guild="g2")
    assert h.recorder.texts() == ["alice elsewhere"]
    h.say("alice dm", user="alice", guild=None)
    assert h.recorder.texts() == ["alice dm"]
    h.say("alice private again", user="alice", channel="c1")
    assert h.recorder.texts() == ["alice private", "ok 1", "alice private again"]


def test_threads_are_their_own_conversation(make_harness: Make) -> None:
    h = make_harness({"scope": "thread"})
    h.say("in thread", user="alice", channel="c1", thread_id="t1")
    h.say("bob in thread", user="bob", channel="c1", thread_id="t1")
    assert h.recorder.texts() == ["in thread", "ok 1", "bob in thread"]
    h.say("in parent", user="bob", channel="c1")
    assert h.recorder.texts() == ["in parent"]


def test_without_storage_the_core_default_applies(make_harness: Make) -> None:
    h = make_harness(with_store=False)
    h.say("hi")
    assert h.recorder.last.session.id == "g1:c1:alice"
    assert "No memory plugin" in h.say("/reset").content


def test_malformed_config_fails_the_plugin_at_startup(make_harness: Make) -> None:
    h = make_harness({"scope": "room"})
    info = h.bot.plugins.info["sessions"]
    assert info.state == "failed"
    assert "scope" in info.reason
    # The bot still answers (core's default session); nothing is lost.
    assert h.say("hi").content == "ok 1"


# --- commands ------------------------------------------------------------------


def test_reset(make_harness: Make, store: Store) -> None:
    h = make_harness()
    h.say("before")
    first = h.recorder.last.session.id
    reply = h.say("/reset")
    assert "new session" in reply.content
    h.say("after")
    assert h.recorder.texts() == ["after"]
    assert store.sessions[first].state["closed_reason"] == "reset"


def test_reset_of_a_shared_session_needs_manage_messages(make_harness: Make) -> None:
    h = make_harness({"scope": "channel"})
    h.say("shared history", user="alice")
    refused = h.say("/reset", user="bob")
    assert "Manage Messages" in refused.content
    h.say("still shared?", user="bob")
    assert h.recorder.texts()[0] == "shared history"
    assert "new session" in h.say("/reset", user="mod", permissions=frozenset({"manage_messages"})).content
    h.say("fresh", user="bob")
    assert h.recorder.texts() == ["fresh"]


def test_session_info(make_harness: Make, clock: ManualClock) -> None:
    h = make_harness({"idle_timeout": 600, "window_messages": 3})
    assert "No session here yet" in h.say("/session").content
    for n in range(3):
        h.say(f"m{n}")
    clock.advance(58)
    text = h.say("/session").content
    assert h.recorder.last.session.id in text
    assert "Age: 1m 1s" in text
    assert "Idle: 59s; closes after 9m 1s" in text
    assert "Context window: 2 of 6 messages (limit 3)" in text
    assert "Tokens: " in text and "/ 3000" in text
    assert "standin-store: OK (in memory; outbox 0)" in text
    assert "core: OK" in text
    clock.advance(600)
    assert "ended" in h.say("/session").content


def test_history(make_harness: Make, clock: ManualClock) -> None:
    h = make_harness({"idle_timeout": 60})
    h.say("one")
    clock.advance(120)
    h.say("two")
    text = h.say("/history").content
    assert text.count("\n- ") == 2
    assert "closed" in text and "(idle)" in text and "open: the current session here" in text
    assert "only the bot's owners" in h.say("/history <@bob>").content


def test_export_only_my_data(make_harness: Make) -> None:
    h = make_harness({"scope": "channel"})
    h.say("alice secret", user="alice")
    h.say("bob secret", user="bob")
    reply = h.say("/export", user="alice")
    assert reply.ephemeral and len(reply.attachments) == 1
    file = reply.attachments[0]
    assert file.content_type == "application/json" and file.filename == "export-alice.json"
    doc = json.loads(file.data or b"")
    assert doc["user_id"] == "alice"
    contents = [m["content"] for m in doc["data"]["messages"]]
    assert contents == ["alice secret"]
    assert "bob" not in json.dumps(doc)
    assert "only the bot's owners" in h.say("/export <@bob>", user="alice").content
    owner = h.say("/export <@bob>", user="alice", is_owner=True)
    assert [m["content"] for m in json.loads(owner.attachments[0].data or b"")["data"]["messages"]] == ["bob secret"]


def test_forget_asks_first_then_deletes(make_harness: Make, store: Store) -> None:
    h = make_harness()
    h.say("alice data", user="alice")
    h.say("bob data", user="bob")
    explained = h.say("/forget", user="alice")
    assert "/forget confirm" in explained.content and "cannot be undone" in explained.content
    alice_ids = {m.id for m in store.messages.values() if m.author_id == "alice"}
    assert alice_ids
    assert "only the bot's owners" in h.say("/forget <@bob> confirm", user="alice").content
    done = h.say("/forget confirm", user="alice")
    assert done.content.startswith("Done") and "2 messages" in done.content and "1 sessions" in done.content
    assert not any(m.author_id == "alice" or m.reply_to_id in alice_ids for m in store.messages.values())
    assert not any(s.user_id == "alice" for s in store.sessions.values())
    assert [m.content for m in store.messages.values() if m.author_id == "bob"] == ["bob data"]
    h.say("hello", user="alice")
    assert h.recorder.texts() == ["hello"]


def test_forget_reports_a_plugin_that_failed(make_harness: Make, store: Store, monkeypatch: Any) -> None:
    h = make_harness()
    h.say("data")

    def broken(user_id: str) -> dict[str, int]:
        raise RuntimeError("database unreachable")

    monkeypatch.setattr(store, "forget_user", broken)
    # pluggy holds the bound method registered at start; patch the impl too.
    for impl in h.bot.hooks.implementations("forget_user"):
        if impl.plugin is store:
            monkeypatch.setattr(impl, "function", broken)
    reply = h.say("/forget confirm")
    assert "failed in plugin standin" in reply.content and "again" in reply.content


def test_unknown_command_and_help(make_harness: Make) -> None:
    h = make_harness()
    assert "Unknown command /nope" in h.say("/nope").content
    listing = h.say("/help").content
    for name in ("reset", "session", "history", "export", "forget"):
        assert f"/{name} - " in listing


def test_arguments_in_any_order_and_clear_usage(make_harness: Make, store: Store) -> None:
    from plugins.sessions.commands import parse_args

    assert parse_args("confirm <@42>") == ("42", True, None, [])
    assert parse_args("<@!42> confirm") == ("42", True, None, [])
    assert parse_args("local:bob") == ("local:bob", False, None, [])
    assert parse_args("5 12345678901234", counts=True) == ("12345678901234", False, 5, [])
    assert parse_args("5") == ("5", False, None, [])
    assert parse_args("yes please") == (None, False, None, ["yes", "please"])
    h = make_harness()
    h.say("keep me")
    reply = h.say("/forget yes")
    assert "I did not understand 'yes'" in reply.content and "/forget [confirm]" in reply.content
    assert any(m.author_id == "alice" for m in store.messages.values())
    assert "/history [count]" in h.say("/history lots").content


def test_a_failing_storage_call_does_not_start_a_new_conversation(
    make_harness: Make, store: Store, monkeypatch: Any
) -> None:
    h = make_harness()
    h.say("before the failure")
    first = h.recorder.last.session.id

    def broken(scope_key: str) -> None:
        raise RuntimeError("storage exploded")

    monkeypatch.setattr(store, "load_session", broken)
    h.say("during the failure")
    assert h.recorder.last.session.id == first
    assert h.recorder.texts()[0] == "before the failure"
    # A scope this instance never saw has nothing to fall back on.
    h.say("someone new", user="zoe")
    assert h.recorder.last.session.id != first
    # ...so its session is provisional: storage joins it to whatever the
    # scope had once the state is back.
    assert h.recorder.last.session.state["provisional"] == {"idle_timeout": 1800.0, "max_age": None}


class LeakyStore(Store):
    """A storage plugin whose ``load_messages`` ignores the session it is
    asked about and answers the newest messages of every conversation."""

    def load_messages(self, session: Session, limit: int) -> list[MessageRecord]:
        found = sorted(self.messages.values(), key=lambda m: m.sort_key)
        return copy.deepcopy(found[-limit:]) if limit > 0 else []


def test_g8_records_of_other_sessions_from_a_storage_plugin_never_reach_the_context(clock: ManualClock, tmp_path: Path) -> None:
    """Another user's, another channel's and another guild's messages, and
    alice's own earlier session, all handed back by a storage plugin that
    does not filter: the context holds only the current session's."""
    h = Harness(LeakyStore(), clock, {"idle_timeout": 600}, data_dir=tmp_path)
    try:
        h.say("alice before the timeout", user="alice", channel="c1")
        clock.advance(601)
        h.say("alice here", user="alice", channel="c1")
        h.say("bob here", user="bob", channel="c1")
        h.say("alice in another channel", user="alice", channel="c2")
        h.say("alice in another guild", user="alice", channel="c1", guild="g2")
        h.say("alice in a DM", user="alice", guild=None)
        h.say("alice again", user="alice", channel="c1")
        assert h.recorder.texts() == ["alice here", "ok 1", "alice again"]
        assert {m.session_id for m in h.recorder.last.messages} == {h.recorder.last.session.id}
    finally:
        h.close()
