"""The request body holds exactly the context window the real sessions
plugin builds (count limit, system prompt first, order kept)."""

from __future__ import annotations

import importlib

from pathlib import Path


from core.models import Context, Role
from core.plugins import hookimpl
from tests.llm.helpers import SYSTEM_PROMPT, Chat, TinyMemory, make_bot, run
from tests.llm.provider import FakeProvider, serving

sessions_plugin = importlib.import_module("plugins.sessions")


class ContextSpy:
    """Sees each context the reply plugins get, and answers nothing."""

    def __init__(self) -> None:
        self.contexts: list[Context] = []

    @hookimpl(tryfirst=True)
    def generate_reply(self, context: Context) -> None:
        self.contexts.append(context)


def test_request_holds_the_window_the_sessions_plugin_builds(tmp_path: Path) -> None:
    memory = TinyMemory()
    spy = ContextSpy()

    async def scenario() -> FakeProvider:
        async with serving() as provider:
            bot = make_bot(
                tmp_path, {"base_url": provider.base_url}, extra={"tinymemory": memory, "sessions": sessions_plugin, "spy": spy}
            )
            bot.settings.sections["sessions"] = {"window_messages": 4}
            await bot.start()
            assert bot.plugins.info["sessions"].state == "enabled", bot.plugins.info["sessions"].reason
            try:
                chat = Chat(bot)
                for text in ("one", "two", "three", "four"):
                    assert (await chat.say(text)).content == f"echo: {text}"
                # Another user in the same channel has their own window (default scope).
                await Chat(bot, author="bob").say("bob's line")
            finally:
                await bot.stop()
            return provider

    provider = run(scenario())
    assert len(spy.contexts) == len(provider.bodies) == 5
    for context, body in zip(spy.contexts, provider.bodies):
        roles = {Role.USER: "user", Role.BOT: "assistant"}
        assert body["messages"] == [{"role": "system", "content": context.system_prompt}] + [
            {"role": roles[m.role], "content": m.content} for m in context.messages
        ]
    fourth = provider.bodies[3]["messages"]
    assert fourth[0] == {"role": "system", "content": SYSTEM_PROMPT}
    assert 3 <= len(fourth) <= 5 and fourth[-1] == {"role": "user", "content": "four"}
    assert [m["content"] for m in fourth[1:]] == [
        m for m in ["one", "echo: one", "two", "echo: two", "three", "echo: three", "four"] if m in {x["content"] for x in fourth}
    ], "order kept"
    assert provider.bodies[4]["messages"] == [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": "bob's line"},
    ]


def test_rolling_summary_of_what_left_the_window(tmp_path: Path) -> None:
    from aiohttp import web

    from plugins.llm.summary import HEADER, INSTRUCTION
    from tests.llm.provider import completion, echo

    memory = TinyMemory()
    summaries: list[str] = []
    folded: list[list[str]] = []

    async def respond(request, body):  # noqa: ANN001, ANN202
        system = body["messages"][0]["content"]
        if system.startswith(INSTRUCTION.split("{")[0]):
            new = body["messages"][1]["content"].split("New messages:\n", 1)[1]
            folded.append(new.splitlines())
            summaries.append(f"summary {len(summaries) + 1}")
            return web.json_response(completion(summaries[-1]))
        return await echo(request, body)

    async def scenario() -> FakeProvider:
        async with serving() as provider:
            provider.default = respond
            bot = make_bot(
                tmp_path,
                {"base_url": provider.base_url, "summaries": True, "summary_every": 2},
                extra={"tinymemory": memory, "sessions": sessions_plugin},
            )
            bot.settings.sections["sessions"] = {"window_messages": 3}
            await bot.start()
            try:
                chat = Chat(bot)
                for n in range(1, 8):
                    assert (await chat.say(f"line {n}")).content == f"echo: line {n}"
            finally:
                await bot.stop()
            return provider

    provider = run(scenario())
    assert len(summaries) >= 2
    chats = [b for b in provider.bodies if not b["messages"][0]["content"].startswith(INSTRUCTION.split("{")[0])]
    last_system = chats[-1]["messages"][0]["content"]
    assert last_system == f"{SYSTEM_PROMPT}\n\n{HEADER}\n{summaries[-1]}"
    # Each message left the window into exactly one summary, in order.
    lines = [line for batch in folded for line in batch]
    assert len(lines) == len(set(lines))
    said = [line.split(": ", 1)[1] for line in lines if not line.startswith("Assistant:")]
    assert said == [f"line {n}" for n in range(1, len(said) + 1)]
    window = [m["content"] for m in chats[-1]["messages"][1:]]
    gap = [f"line {n}" for n in range(len(said) + 1, 8) if f"line {n}" not in window]
    assert len(gap) < 2, f"messages neither summarised nor in the window: {gap}"
    (session,) = memory.sessions.values()
    assert session.state["carry"]["llm_summary"]["text"] == summaries[-1]
