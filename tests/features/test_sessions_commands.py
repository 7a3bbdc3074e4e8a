"""Scenarios of features/sessions_commands.feature, and the steps only they
use. Commands are said like any message (shared steps); the steps here read
what a plain reply cannot carry (the export file), look straight into Redis
and the database, and run ``python -m core check`` as an operator would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from pytest_bdd import given, parsers, scenarios, then, when

from core.models import Reply, Sent
from tests.features.test_sessions_steps import *  # noqa: F403 - the shared sessions steps
from tests.features.test_sessions_steps import redis_dump
from harness.assembly import SentReply
from tests.harness.harness import Harness, HarnessError
from harness.instances import LEAKY_ENV, LEAKY_PREFIXES
from tests.harness.steps import p



scenarios("sessions_commands.feature")

ROOT = Path(__file__).resolve().parents[2]


def run_command(harness: Harness, user: str, place: str, text: str) -> Reply:
    """Say ``text`` (a command) to the in-process instance ``A`` and return
    the whole reply, attachments included; it is also recorded like any
    reply, so the shared 'the reply to' steps see it."""
    message = harness.new_message(user, place, text)
    instance: Any = harness.instance()
    if not instance.in_process:
        raise HarnessError("commands with files need an instance in this process")
    delivery = harness.deliveries[message.id]
    delivery.times += 1
    delivery.instances.append(instance.name)
    harness.last_message = message
    got: list[Reply] = []

    async def send(reply: Reply) -> Sent:
        got.append(reply)
        return Sent(id=None, timestamp=harness.clock.now())

    harness.run(instance.bot.handle(message, send), what=f"handling {text!r}")
    if len(got) != 1:
        raise HarnessError(f"{text!r} got {len(got)} replies")
    reply = got[0]
    harness.sent.append(
        SentReply(instance.name, message.id, message.channel_id, reply.content, list(reply.notes), "", harness.clock.now())
    )
    harness._sessions_request = {user: message}  # type: ignore[attr-defined]
    return reply


def user_ids(harness: Harness, name: str) -> tuple[str, list[str]]:
    """``name``'s user id and the ids of every message they said."""
    uid = harness.world.user(name).id
    said = [mid for mid, d in harness.deliveries.items() if d.user.name == name and not d.message.content.startswith("/")]
    return uid, said


def _to_toml(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(str(k))} = {_to_toml(v)}" for k, v in value.items()) + "}"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_to_toml(v) for v in value) + "]"
    return json.dumps(str(value))


# --- Given ---------------------------------------------------------------------------


@given(p("{user:Name} is a bot owner"))
def given_owner(harness: Harness, user: str) -> None:
    """``user``'s messages are marked as from a configured bot owner."""
    harness.world.user(user).is_owner = True


# --- When ----------------------------------------------------------------------------


@when(p("{user:Name} exports {whose} data in {place:Place}"), target_fixture="export")
def when_export(harness: Harness, user: str, whose: str, place: str) -> dict[str, Any]:
    """``/export``; the JSON file of the reply becomes ``export``."""
    reply = run_command(harness, user, place, "/export")
    files = [a for a in reply.attachments if a.data is not None]
    assert len(files) == 1, f"/export replied {reply.content!r} with {len(files)} files"
    return {"file": files[0], "data": json.loads(files[0].data or b""), "reply": reply}


@when(p("{user:Name} asks to forget {other:Name} in {place:Place}"))
def when_forget_other(harness: Harness, user: str, other: str, place: str) -> None:
    """``/forget <@other> confirm``."""
    run_command(harness, user, place, f"/forget <@{harness.world.user(other).id}> confirm")


@when(p("{user:Name} asks to export the data of {other:Name} in {place:Place}"))
def when_export_other(harness: Harness, user: str, other: str, place: str) -> None:
    """``/export <@other>``."""
    run_command(harness, user, place, f"/export <@{harness.world.user(other).id}>")


@when("the operator runs the config check", target_fixture="check")
def when_config_check(harness: Harness, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Write the scenario's [sessions] settings into a bot.toml (only the
    sessions plugin enabled) and run ``python -m core check`` on it."""
    lines = ["[plugins]", 'enabled = ["sessions"]', "", "[sessions]"]
    for key, value in harness.sections.get("sessions", {}).items():
        lines.append(f"{key} = {_to_toml(value)}")
    config = tmp_path / "check" / "bot.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text("\n".join(lines) + "\n")
    env = {k: v for k, v in os.environ.items() if k not in LEAKY_ENV and not k.startswith(LEAKY_PREFIXES + ("BOT_",))}
    env["BOT_DATA_DIR"] = str(config.parent / "data")
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run(
        [sys.executable, "-m", "core", "--config", str(config), "check"],
        cwd=config.parent, env=env, capture_output=True, text=True, timeout=60,
    )


# --- Then ----------------------------------------------------------------------------


@then(p('the reply to "{text}" lists {count:d} sessions'))
def then_history_count(harness: Harness, text: str, count: int) -> None:
    """The reply has ``count`` session lines (``- <id>: ...``)."""
    replies = harness.replies_to(harness.message_said(text))
    assert replies, f"{text!r} got no reply"
    lines = [line for line in replies[-1].content.splitlines() if line.startswith("- ")]
    assert len(lines) == count, replies[-1].content


@then(p("the reply to {user:Name}'s request contains \"{fragment}\""))
def then_request_reply(harness: Harness, user: str, fragment: str) -> None:
    """The reply to ``user``'s last command said through a 'asks to' step."""
    message = harness._sessions_request[user]  # type: ignore[attr-defined]
    replies = harness.replies_to(message)
    assert replies and fragment in replies[-1].content, [r.content for r in replies]


@then(p("the export is a JSON file of {user:Name}'s data"))
def then_export_file(harness: Harness, export: dict[str, Any], user: str) -> None:
    uid = harness.world.user(user).id
    file = export["file"]
    assert file.content_type == "application/json", file.content_type
    assert file.filename == f"export-{uid}.json", file.filename
    assert export["data"]["user_id"] == uid
    assert export["reply"].ephemeral


@then(p("the export holds exactly {user:Name}'s messages and the bot's replies to them"))
def then_export_complete(harness: Harness, export: dict[str, Any], user: str) -> None:
    """Compared with plain SQL: every stored message of the user and every
    stored bot reply to one of them, nothing else."""
    uid, said = user_ids(harness, user)
    marks = ", ".join("?" for _ in said) or "''"
    rows = harness.db(
        f"SELECT message_id FROM messages WHERE author_id = ? OR (role = 'bot' AND reply_to_id IN ({marks}))",
        (uid, *said),
    )
    stored = {r[0] for r in rows}
    exported = {m["id"] for m in export["data"]["data"].get("messages", [])}
    assert stored and set(said) <= stored, f"the database lacks some of {user}'s messages: {stored}"
    assert exported == stored, f"exported {sorted(exported)}, stored {sorted(stored)}"


@then(p("the export holds nothing of {other:Name}"))
def then_export_nothing_of(harness: Harness, export: dict[str, Any], other: str) -> None:
    """Neither the other user's id nor anything they said appears anywhere
    in the file (the bot's replies to them quote them: those neither)."""
    uid, said = user_ids(harness, other)
    text = export["file"].data.decode("utf-8")
    assert uid not in text, f"{other}'s id is in the export"
    for mid in said:
        content = harness.deliveries[mid].message.content
        assert mid not in text and content not in text, f"{other}'s message {content!r} is in the export"


@then(p("the database still holds {user:Name}'s messages"))
def then_db_still(harness: Harness, user: str) -> None:
    uid, _said = user_ids(harness, user)
    count = int(harness.db("SELECT count(*) FROM messages WHERE author_id = ?", (uid,))[0][0])
    assert count > 0, f"{user}'s messages are gone already"


@then(parsers.re(r'the database holds nothing of (?P<user>[A-Za-z][\w-]*), "(?P<one>[^"]+)" or "(?P<two>[^"]+)"'))
def then_db_nothing(harness: Harness, user: str, one: str, two: str) -> None:
    """Plain SQL over ``messages`` and ``sessions``: no row by the user, none
    answering them, none holding either phrase, no session of theirs."""
    uid, said = user_ids(harness, user)
    problems = []
    for mid, author, content in harness.db("SELECT message_id, author_id, content FROM messages"):
        if author == uid or mid in said or f"reply:{mid}" in said or one in content or two in content:
            problems.append(f"messages row {mid}: {content!r}")
    replies = harness.db("SELECT reply_to_id FROM messages WHERE role = 'bot'")
    problems += [f"a reply to {r[0]}" for r in replies if r[0] in said]
    sessions = harness.db("SELECT session_id, user_id, scope_key FROM sessions")
    problems += [f"session {s[0]}" for s in sessions if s[1] == uid or uid in (s[2] or "")]
    assert not problems, f"{user}'s data is still in the database: " + "; ".join(problems)


@then(parsers.re(r'no file the bot wrote holds "(?P<one>[^"]+)" or "(?P<two>[^"]+)"'))
def then_no_file_holds(harness: Harness, one: str, two: str) -> None:
    """Every file under the scenario's directory, read as bytes while the
    bot runs: the SQLite database and its write-ahead log (fast matrix), the
    media index, the spool. A deleted row left in the log or in a free page
    is still on disk."""
    found = [
        str(path.relative_to(harness.tmp_path))
        for path in harness.tmp_path.rglob("*")
        if path.is_file() and any(word.encode() in path.read_bytes() for word in (one, two))
    ]
    assert not found, f"forgotten text still on disk in: {', '.join(found)}"


@then(parsers.re(r'Redis holds nothing of (?P<user>[A-Za-z][\w-]*), "(?P<one>[^"]+)" or "(?P<two>[^"]+)"'))
def then_redis_nothing(harness: Harness, user: str, one: str, two: str) -> None:
    """Every key and value of the scenario's Redis, read directly: neither
    the user's id, nor the ids or text of their messages, nor the ids of
    their sessions, anywhere.

    One thing is allowed: a claim marker ``claim:<message id> = done``. It
    holds no content and expires within a day, and it is what stops a
    gateway redelivery of a forgotten message from storing it again.
    """
    uid, said = user_ids(harness, user)
    sessions = {c.session_id for c in harness.contexts if c.message_id in said}
    needles = [uid, one, two, *said, *sessions]
    found = []
    for key, value in redis_dump(harness).items():
        if any(key.endswith(f"claim:{mid}") for mid in said) and value == repr(b"done"):
            continue
        if any(n in key or n in value for n in needles):
            found.append(f"{key} = {value[:120]}")
    assert not found, f"{user}'s data is still in Redis:\n" + "\n".join(found)


@then(p('the config check fails naming "{named}"'))
def then_check_fails(check: subprocess.CompletedProcess[str], named: str) -> None:
    out = check.stdout + check.stderr
    assert check.returncode == 1, f"exit {check.returncode}:\n{out}"
    assert "config: FAIL plugin sessions:" in out and "[sessions]" in out and "config: OK" not in out, out
    assert named in out, out
    assert "verdict: FAIL" in out, out
