"""Facts found by the model when one is configured: the request, the
checks on its answer, and the fall back on the offline rules."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

import plugins.memory
import plugins.recall
import plugins.sessions
from plugins.recall.facts import Fact
from plugins.recall.model_facts import INSTRUCTION, parse, worth_asking
from tests.llm.helpers import Chat, make_bot, run
from tests.llm.provider import completion, echo, serving


@pytest.mark.parametrize(
    ("reply", "facts"),
    [
        ('[{"key": "Name", "value": "Ada"}, {"key": "lives in", "value": "Lisbon"}]', [Fact("name", "Ada"), Fact("lives in", "Lisbon")]),
        ('Sure! [{"key": "job", "value": "pilot"}]', [Fact("job", "pilot")]),
        ("[]", []),
        ('[{"key": "age", "value": 36}]', [Fact("age", "36")]),
    ],
)
def test_a_usable_answer_gives_its_facts(reply: str, facts: list[Fact]) -> None:
    assert parse(reply) == facts


@pytest.mark.parametrize("reply", ["no facts here", '{"key": "name"}', '["Ada"]', '[{"key": "name", "value": ["Ada"]}]', "[oops]"])
def test_an_unusable_answer_is_refused(reply: str) -> None:
    assert parse(reply) is None


def test_answers_are_bounded() -> None:
    many = json.dumps([{"key": f"k{n}" * 30, "value": "v" * 500} for n in range(20)])
    facts = parse(many)
    assert facts is not None and len(facts) == 5
    assert all(len(f.key) <= 40 and len(f.value) <= 80 for f in facts)


def test_only_first_person_statements_are_sent() -> None:
    assert worth_asking("I moved to Porto last year")
    assert not worth_asking("what is my name?")
    assert not worth_asking("the weather is nice")


async def _facts_of(bot: Any) -> list[tuple[str, str]]:
    durable = bot.plugin_state["memory"].db
    rows = await durable.run(lambda: durable.db.execute_sql("SELECT fact_key, value FROM facts WHERE deleted = 0 ORDER BY fact_key").fetchall())
    return [tuple(r) for r in rows]


@pytest.mark.parametrize(
    ("answer", "want"),
    [
        ('[{"key": "job", "value": "pilot"}]', [("job", "pilot")]),
        ("I cannot help with that", [("favourite colour", "teal")]),  # unusable: the rules
    ],
)
def test_the_model_finds_the_facts_and_the_rules_stand_in(tmp_path: Path, answer: str, want: list[tuple[str, str]]) -> None:
    asked: list[str] = []

    async def respond(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        if body["messages"][0]["content"] == INSTRUCTION:
            asked.append(body["messages"][1]["content"])
            return web.json_response(completion(answer))
        return await echo(request, body)

    async def scenario() -> list[tuple[str, str]]:
        async with serving() as provider:
            provider.default = respond
            bot = make_bot(
                tmp_path, {"base_url": provider.base_url},
                extra={"memory": plugins.memory, "sessions": plugins.sessions, "recall": plugins.recall},
            )
            bot.settings.sections["memory"] = {"redis_url": f"fakeredis://recall-{uuid.uuid4().hex[:8]}"}
            await bot.start()
            try:
                chat = Chat(bot)
                await chat.say("my favourite colour is teal")
                await chat.say("what is my name?")
                state = bot.plugin_state["recall"]
                await asyncio.gather(*state.tasks)
                return await _facts_of(bot)
            finally:
                await bot.stop()

    assert run(scenario()) == want
    assert asked == ["my favourite colour is teal"]
