"""Steps of features/recall.feature and features/retention.feature: what a
reply recalled (recorded by the test reply plugin), the facts table read
with plain SQL, export, the retention setting. Imported whole by
test_recall.py and test_retention.py (pytest-bdd registers steps as
fixtures in the importing module)."""

from __future__ import annotations

import json
from typing import Any

from pytest_bdd import given, then, when

from core.models import Reply, Sent
from harness.assembly import RecordedContext
from tests.harness.harness import Harness, HarnessError
from tests.harness.steps import _rows, p



def _recalled(harness: Harness, text: str) -> RecordedContext:
    return harness.context_of_reply(harness.message_said(text))


def _facts(harness: Harness, user: str) -> list[str]:
    uid = harness.world.user(user).id
    rows = harness.db("SELECT fact_key, value FROM facts WHERE user_id = ? AND deleted = 0 ORDER BY fact_key", (uid,))
    return [f"{k}: {v}" for k, v in rows]


@then(p('the reply to "{text}" recalled the fact "{fact}"'))
def then_recalled_fact(harness: Harness, text: str, fact: str) -> None:
    """Among what the reply's context recalled is the fact ``fact``, with a date."""
    recalled = _recalled(harness, text).recalled
    assert any(r["kind"] == "fact" and r["content"] == fact and r["timestamp"] > 0 for r in recalled), recalled


@then(p('the reply to "{text}" recalled the message "{said}"'))
def then_recalled_message(harness: Harness, text: str, said: str) -> None:
    """Among what the reply's context recalled is the earlier message ``said``, with its date and id."""
    recalled = _recalled(harness, text).recalled
    original = harness.message_said(said)
    assert any(
        r["kind"] == "message" and r["content"] == said and r["source_id"] == original.id and r["timestamp"] == original.timestamp
        for r in recalled
    ), recalled


@then(p('the reply to "{text}" did not recall "{fragment}"'))
def then_not_recalled(harness: Harness, text: str, fragment: str) -> None:
    recalled = _recalled(harness, text).recalled
    assert not any(fragment in r["content"] for r in recalled), recalled


@then(p('the reply to "{text}" recalled nothing'))
def then_recalled_nothing(harness: Harness, text: str) -> None:
    context = _recalled(harness, text)
    assert context.recalled == [], context.recalled


@then(p('the reply to "{text}" does not mention "{fragment}"'))
def then_reply_not_mention(harness: Harness, text: str, fragment: str) -> None:
    """The (last) reply to ``text`` does not hold ``fragment``."""
    replies = harness.replies_to(harness.message_said(text))
    assert replies and fragment not in replies[-1].content, [r.content for r in replies]


@then(p("{user:Name} has exactly these facts:"))
def then_facts(harness: Harness, user: str, datatable: list[list[str]]) -> None:
    """The database's facts of ``user`` (not deleted), one row each."""
    want = sorted(row["fact"] for row in _rows(datatable))
    got = sorted(_facts(harness, user))
    assert got == want, f"{user}'s facts: {got}"


@then(p("eventually {user:Name} has exactly these facts:"))
def then_facts_eventually(harness: Harness, user: str, datatable: list[list[str]]) -> None:
    """As above, waiting (bounded) for background work (retention deletes
    messages first, then facts, in separate batches)."""
    harness.wait_until(lambda: then_facts(harness, user, datatable), f"{user}'s facts")


@then(p("{user:Name} has no facts"))
def then_no_facts(harness: Harness, user: str) -> None:
    assert _facts(harness, user) == []


@when(p("{user:Name} exports their data in {place:Place}"), target_fixture="export")
def when_export(harness: Harness, user: str, place: str) -> dict[str, Any]:
    """``/export`` to the in-process instance ``A``; its JSON file."""
    message = harness.new_message(user, place, "/export")
    instance: Any = harness.instance()
    if not instance.in_process:
        raise HarnessError("commands with files need an instance in this process")
    got: list[Reply] = []

    async def send(reply: Reply) -> Sent:
        got.append(reply)
        return Sent(id=None, timestamp=harness.clock.now())

    harness.run(instance.bot.handle(message, send), what="handling /export")
    files = [a for a in got[0].attachments if a.data is not None] if got else []
    assert len(files) == 1, f"/export replied {[r.content for r in got]!r}"
    return json.loads(files[0].data or b"")


@then(p('the export holds the fact "{fact}"'))
def then_export_fact(export: dict[str, Any], fact: str) -> None:
    facts = export["data"].get("facts", [])
    assert any(f"{f['key']}: {f['value']}" == fact and f["source_id"] and f["timestamp"] for f in facts), facts


@then(p("the database holds nothing of {user:Name} in the search index"))
def then_search_index_empty(harness: Harness, user: str) -> None:
    """No fact row (deleted or not), no hidden-source row, and no message of
    theirs the full-text search can find."""
    uid = harness.world.user(user).id
    assert harness.db("SELECT count(*) FROM facts WHERE user_id = ?", (uid,))[0][0] == 0
    assert harness.db("SELECT count(*) FROM recall_hidden WHERE user_id = ?", (uid,))[0][0] == 0
    if harness.backends.name == "fast":
        rows = harness.db("SELECT count(*) FROM messages_search WHERE messages_search MATCH ?", ("teal",))
    else:
        rows = harness.db("SELECT count(*) FROM messages WHERE search @@ to_tsquery('simple', 'teal')")
    assert rows[0][0] == 0


@given(p("the guild of {place:Place} keeps messages for {days:d} days"))
def given_retention(harness: Harness, place: str, days: int) -> None:
    """``[memory] retention`` for the guild of ``place``."""
    guild = harness.world.place(place, harness.world.user("alice")).guild_id
    harness.configure("memory", "retention", {f"guild:{guild}": days})
