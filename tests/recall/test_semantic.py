"""Optional semantic recall: vectors from the provider's /embeddings
endpoint, stored beside the messages, the nearest recalled first; words
alone would not find them. On SQLite (fast) and PostgreSQL (real)."""

from __future__ import annotations

import asyncio
import re
import uuid
import zlib
from pathlib import Path
from typing import Any

import pytest

import plugins.memory
import plugins.recall
import plugins.sessions
from plugins.recall.embeddings import embeddings_url, pack, similarity, unpack
from tests.llm.helpers import Chat, make_bot, run
from tests.llm.provider import last_user_text, serving
from tests.memory.conftest import Backend

# The fake model's notion of meaning: these words mean the same.
SAME = {"kitten": "cat", "kitty": "cat", "cat": "cat", "cats": "cat"}
IGNORED = {"we", "a", "any", "for", "my", "the", "is", "i", "what", "do", "with", "tips"}


def fake_embed(texts: list[str]) -> list[list[float]]:
    out = []
    for text in texts:
        vector = [0.0] * 64
        for word in re.findall(r"[a-z]+", text.lower()):
            if word not in IGNORED:
                vector[zlib.crc32(SAME.get(word, word).encode()) % 64] += 1.0
        out.append(vector)
    return out


def test_vectors_are_normalised_and_compared_by_cosine() -> None:
    a, b = unpack(pack([3.0, 4.0])), unpack(pack([6.0, 8.0]))
    assert similarity(a, b) == pytest.approx(1.0)
    assert similarity(a, unpack(pack([-4.0, 3.0]))) == pytest.approx(0.0, abs=1e-6)
    assert similarity(a, unpack(pack([1.0, 0.0, 0.0]))) == -1.0  # another model's vector never matches


def test_the_embeddings_url_sits_beside_chat_completions() -> None:
    assert embeddings_url("http://h:1/v1") == "http://h:1/v1/embeddings"
    assert embeddings_url("http://h:1/v1/chat/completions?api-version=2") == "http://h:1/v1/embeddings?api-version=2"


@pytest.mark.parametrize("semantic", [True, False])
def test_a_message_is_recalled_by_meaning_when_semantic_recall_is_on(backend: Backend, tmp_path: Path, semantic: bool) -> None:
    async def scenario() -> tuple[str, Any]:
        async with serving() as provider:
            provider.embedder = fake_embed
            bot = make_bot(
                tmp_path, {"base_url": provider.base_url},
                extra={"memory": plugins.memory, "sessions": plugins.sessions, "recall": plugins.recall},
            )
            bot.settings.sections["memory"] = {"database_url": backend.database_url, "redis_url": f"fakeredis://sem-{uuid.uuid4().hex[:8]}"}
            bot.settings.sections["sessions"] = {"idle_timeout": 600}
            bot.settings.sections["recall"] = {"semantic": semantic, "time_budget": 2.0, "extract": "rules"}
            await bot.start()
            try:
                chat = Chat(bot)
                await chat.say("we adopted a kitten")
                await chat.say("the weather is fine today")
                await asyncio.gather(*bot.plugin_state["recall"].tasks)
                bot.clock.advance(11 * 60)
                await chat.say("any tips for my cat?")
                await asyncio.gather(*bot.plugin_state["recall"].tasks)
                stored = await bot.plugin_state["memory"].db.run(
                    lambda db: db.execute_sql("SELECT count(*) FROM message_vectors").fetchall()[0][0], bot.plugin_state["memory"].db.db
                )
            finally:
                await bot.stop()
            (request,) = [b for b in provider.bodies if "messages" in b and last_user_text(b) == "any tips for my cat?"]
            return request["messages"][0]["content"], stored

    system, stored = run(scenario())
    if semantic:
        assert stored == 3
        assert "they said: we adopted a kitten" in system
        assert "weather" not in system
    else:
        assert stored == 0
        assert "Recalled from earlier conversations" not in system
