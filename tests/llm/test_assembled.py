"""The llm plugin in the assembled bot: real memory (fakeredis + SQLite),
real sessions, real images, and a chat-completions server on 127.0.0.1."""

from __future__ import annotations

import importlib

import io
import sqlite3
import uuid
from pathlib import Path

import pytest

from tests.llm.helpers import Chat, make_bot, run
from tests.llm.provider import FakeProvider, fail_with, serving

memory_plugin = importlib.import_module("plugins.memory")
sessions_plugin = importlib.import_module("plugins.sessions")


@pytest.fixture(autouse=True)
def no_backend_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DATABASE_URL", "REDIS_URL", "MEMORY_DATABASE_URL", "MEMORY_REDIS_URL"):
        monkeypatch.delenv(name, raising=False)


def _assembled(tmp_path: Path, llm: dict, redis_name: str, *, images: bool = False):  # noqa: ANN001, ANN202
    extra = {"memory": memory_plugin, "sessions": sessions_plugin}
    if images:
        extra["images"] = importlib.import_module("plugins.images")
    bot = make_bot(tmp_path, llm, extra=extra)
    bot.settings.sections["memory"] = {"redis_url": f"fakeredis://{redis_name}", "database_url": f"sqlite:///{tmp_path}/memory.db"}
    return bot


def _flush(redis_name: str) -> None:
    import fakeredis

    from plugins.memory.cache import fake_server

    fakeredis.FakeRedis(server=fake_server(redis_name)).flushall()


def _stored_user_texts(tmp_path: Path) -> list[str]:
    with sqlite3.connect(tmp_path / "memory.db") as db:
        return [row[0] for row in db.execute("SELECT content FROM messages WHERE role = 'user' ORDER BY ts")]


def test_provider_down_then_redis_flushed_the_model_still_gets_the_whole_context(tmp_path: Path) -> None:
    redis_name = f"llm-{uuid.uuid4().hex}"

    async def scenario() -> tuple[FakeProvider, str]:
        async with serving() as provider:
            bot = _assembled(tmp_path, {"base_url": provider.base_url, "backoff": 0.01}, redis_name)
            await bot.start()
            for name in ("memory", "sessions", "llm"):
                assert bot.plugins.info[name].state == "enabled", bot.plugins.info[name].reason
            chat = Chat(bot)
            try:
                await chat.say("the code word is heron")
                provider.script.extend([fail_with(500)] * 3)
                down = (await chat.say("and the door is blue")).content
                _flush(redis_name)
                await chat.say("what do you know?")
            finally:
                await bot.stop()
            return provider, down

    provider, down = run(scenario())
    assert "model provider is unavailable right now" in down and "Your message is saved" in down
    assert _stored_user_texts(tmp_path) == ["the code word is heron", "and the door is blue", "what do you know?"]
    # After the failure and the flush, the model gets everything, in order,
    # without the failure notice.
    assert [(m["role"], m["content"]) for m in provider.bodies[-1]["messages"][1:]] == [
        ("user", "the code word is heron"),
        ("assistant", "echo: the code word is heron"),
        ("user", "and the door is blue"),
        ("user", "what do you know?"),
    ]


def test_offline_default_recalls_across_a_restart(tmp_path: Path) -> None:
    redis_name = f"llm-{uuid.uuid4().hex}"

    async def scenario() -> str:
        first = _assembled(tmp_path, {}, redis_name)
        await first.start()
        try:
            await Chat(first).say("my name is Ana")
        finally:
            await first.stop()
        _flush(redis_name)
        second = _assembled(tmp_path, {}, redis_name)
        await second.start()
        try:
            return (await Chat(second).say("what is my name?")).text()
        finally:
            await second.stop()

    assert "Your name is Ana" in run(scenario())


def test_an_earlier_image_reaches_a_vision_model_from_the_media_store(tmp_path: Path) -> None:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (32, 24), (200, 30, 30)).save(buffer, "PNG")
    png = buffer.getvalue()
    redis_name = f"llm-{uuid.uuid4().hex}"

    async def scenario() -> FakeProvider:
        from core.models import Attachment

        async with serving() as provider:
            bot = _assembled(tmp_path, {"base_url": provider.base_url, "vision": True}, redis_name, images=True)
            await bot.start()
            assert bot.plugins.info["images"].state == "enabled", bot.plugins.info["images"].reason
            chat = Chat(bot)
            try:
                await chat.say("look at this", attachments=[Attachment("red.png", "image/png", len(png), data=png)])
                await chat.say("what colour was it?")
            finally:
                await bot.stop()
            return provider

    provider = run(scenario())
    first_turn = provider.bodies[0]["messages"][-1]["content"]
    later = provider.bodies[1]["messages"][1]["content"]
    for content in (first_turn, later):
        assert content[0] == {"type": "text", "text": "look at this"}
        assert content[1]["type"] == "image_url"
        assert content[1]["image_url"]["url"].startswith("data:image/")
    # The later request read the image back from the media store, not from the pipeline.
    assert later[1] == first_turn[1]
