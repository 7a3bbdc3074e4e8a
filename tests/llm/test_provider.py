"""The reply plugin against a real chat-completions server on 127.0.0.1,
inside an assembled bot (real core, real llm plugin, a recording store)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

import plugins.llm as llm
from core.models import Attachment, Role
from tests.llm.helpers import SYSTEM_PROMPT, Chat, RecordingStore, make_bot, run
from tests.llm.provider import FakeProvider, fail_with, raw, reply_with, serving


class Sleeps:
    """Replaces the client's sleep: records each wait and returns at once,
    so retry tests see the delays without spending them."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def _record_sleeps(bot) -> Sleeps:  # noqa: ANN001
    sleeps = Sleeps()
    runtime = llm.runtime_for(bot)
    assert runtime is not None and runtime.client is not None
    runtime.client.sleep = sleeps
    return sleeps


def test_request_holds_exactly_the_context_window(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_key: str) -> None:
    store = RecordingStore()

    async def scenario() -> FakeProvider:
        async with serving() as provider:
            monkeypatch.setenv("LLM_BASE_URL", provider.base_url)
            monkeypatch.setenv("LLM_MODEL", "test-model")
            monkeypatch.setenv("LLM_API_KEY", fake_key)
            bot = make_bot(tmp_path, {"temperature": 0.2, "max_tokens": 99}, store=store)
            await bot.start()
            chat = Chat(bot)
            try:
                assert (await chat.say("first")).content == "echo: first"
                assert (await chat.say("second")).content == "echo: second"
                assert (await chat.say("third")).content == "echo: third"
            finally:
                await bot.stop()
            return provider

    provider = run(scenario())
    assert len(provider.seen) == 3
    last = provider.seen[-1]
    assert last.path == "/v1/chat/completions"
    assert last.headers["Authorization"] == f"Bearer {fake_key}"
    assert last.body["model"] == "test-model"
    assert last.body["temperature"] == 0.2 and last.body["max_tokens"] == 99 and last.body["stream"] is False
    # Exactly the window the store built, system prompt first, order kept.
    window = store.contexts[-1].messages
    assert [m.content for m in window] == ["first", "echo: first", "second", "echo: second", "third"]
    assert last.body["messages"] == [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "echo: first"},
        {"role": "user", "content": "second"},
        {"role": "assistant", "content": "echo: second"},
        {"role": "user", "content": "third"},
    ]


def test_persona_per_bot_and_per_guild(tmp_path: Path) -> None:
    async def scenario() -> FakeProvider:
        async with serving() as provider:
            bot = make_bot(
                tmp_path,
                {"base_url": provider.base_url, "system_prompt": "Bot persona.", "guild_prompts": {"g-pirate": "Speak like a pirate."}},
            )
            await bot.start()
            try:
                await Chat(bot, guild="g-pirate").say("ahoy")
                await Chat(bot, guild="g-plain").say("hello")
                await Chat(bot, guild=None).say("a DM", is_dm=True)
            finally:
                await bot.stop()
            return provider

    provider = run(scenario())
    systems = [b["messages"][0] for b in provider.bodies]
    assert systems == [
        {"role": "system", "content": "Speak like a pirate."},
        {"role": "system", "content": "Bot persona."},
        {"role": "system", "content": "Bot persona."},
    ]


@pytest.mark.parametrize(
    "headers, expected_wait",
    [({"Retry-After": "1"}, 1.0), ({"retry-after-ms": "1500", "Retry-After": "2"}, 1.5)],
)
def test_429_is_retried_after_the_wait_the_provider_asks_for(
    tmp_path: Path, headers: dict[str, str], expected_wait: float
) -> None:
    async def scenario() -> tuple[FakeProvider, Sleeps, str]:
        async with serving() as provider:
            provider.script.append(fail_with(429, headers))
            bot = make_bot(tmp_path, {"base_url": provider.base_url, "backoff": 0.01})
            await bot.start()
            sleeps = _record_sleeps(bot)
            try:
                reply = await Chat(bot).say("hi")
            finally:
                await bot.stop()
            return provider, sleeps, reply.content

    provider, sleeps, content = run(scenario())
    assert content == "echo: hi"
    assert len(provider.seen) == 2
    assert provider.bodies[0] == provider.bodies[1]
    assert len(sleeps.waits) == 1 and sleeps.waits[0] >= expected_wait


def test_backoff_grows_with_jitter(tmp_path: Path) -> None:
    async def scenario() -> Sleeps:
        async with serving() as provider:
            provider.script.extend([fail_with(503), fail_with(502), fail_with(500)])
            bot = make_bot(tmp_path, {"base_url": provider.base_url, "backoff": 1.0, "retries": 3})
            await bot.start()
            sleeps = _record_sleeps(bot)
            try:
                assert (await Chat(bot).say("hi")).content == "echo: hi"
            finally:
                await bot.stop()
            return sleeps

    waits = run(scenario()).waits
    assert len(waits) == 3
    # attempt n waits within [0.5, 1] x backoff x 2^n
    for n, wait in enumerate(waits):
        assert 0.5 * 2**n <= wait <= 2**n


def test_retry_after_beyond_the_limit_is_not_waited_for(tmp_path: Path) -> None:
    async def scenario() -> tuple[FakeProvider, Sleeps, str]:
        async with serving() as provider:
            provider.script.append(fail_with(429, {"Retry-After": "3600"}))
            bot = make_bot(tmp_path, {"base_url": provider.base_url, "max_retry_wait": 30})
            await bot.start()
            sleeps = _record_sleeps(bot)
            try:
                reply = await Chat(bot).say("hi")
            finally:
                await bot.stop()
            return provider, sleeps, reply.content

    provider, sleeps, content = run(scenario())
    assert len(provider.seen) == 1 and sleeps.waits == []
    assert "unavailable right now" in content and "HTTP 429" in content


def test_provider_down_gives_a_clear_reply_and_the_message_stays_stored(tmp_path: Path) -> None:
    store = RecordingStore()

    async def scenario() -> tuple[FakeProvider, Sleeps, str, str]:
        async with serving() as provider:
            provider.script.extend([fail_with(500)] * 3)
            bot = make_bot(tmp_path, {"base_url": provider.base_url}, store=store)
            await bot.start()
            sleeps = _record_sleeps(bot)
            chat = Chat(bot)
            try:
                down = await chat.say("remember the blue door")
                # The provider is back: the next request carries the saved message,
                # and not the failure notice the bot sent in between.
                back = await chat.say("and the red key")
            finally:
                await bot.stop()
            return provider, sleeps, down.content, back.content

    provider, sleeps, down, back = run(scenario())
    assert "model provider is unavailable right now" in down
    assert "HTTP 500 after 3 attempts" in down and "Your message is saved" in down
    assert len(sleeps.waits) == 2
    user_records = [r.content for r in store.stored if r.role is Role.USER]
    assert user_records == ["remember the blue door", "and the red key"]
    assert back == "echo: and the red key"
    assert provider.seen[-1].body["messages"] == [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": "remember the blue door"},
        {"role": "user", "content": "and the red key"},
    ]


def test_unreachable_provider_is_reported_as_unavailable(tmp_path: Path) -> None:
    async def scenario() -> str:
        # Take a free port, then close the server so nothing listens there.
        async with serving() as provider:
            url = provider.base_url
        bot = make_bot(tmp_path, {"base_url": url, "retries": 1, "connect_timeout": 2})
        await bot.start()
        _record_sleeps(bot)
        try:
            reply = await Chat(bot).say("anyone there?")
            health = {h.component: h for h in await bot.health()}
        finally:
            await bot.stop()
        assert health["llm"].ok is False and "unreachable" in health["llm"].detail
        return reply.content

    content = run(scenario())
    assert "unavailable right now" in content and "cannot reach the provider" in content and "2 attempts" in content


def test_a_slow_provider_does_not_block_another_sessions_reply(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with serving() as provider:
            release = asyncio.Event()
            provider.hold["slow question"] = release
            provider.arrived["slow question"] = asyncio.Event()
            bot = make_bot(tmp_path, {"base_url": provider.base_url})
            await bot.start()
            try:
                slow = asyncio.create_task(Chat(bot, author="alice").say("slow question"))
                await asyncio.wait_for(provider.arrived["slow question"].wait(), 10)
                quick = await asyncio.wait_for(Chat(bot, author="bob").say("quick question"), 10)
                assert quick.content == "echo: quick question"
                assert not slow.done()
                release.set()
                assert (await asyncio.wait_for(slow, 10)).content == "echo: slow question"
            finally:
                await bot.stop()

    run(scenario())


def test_a_provider_that_never_answers_times_out_with_a_clear_reply(tmp_path: Path) -> None:
    store = RecordingStore()

    async def scenario() -> str:
        async with serving() as provider:
            provider.hold["hello?"] = asyncio.Event()  # never set
            bot = make_bot(tmp_path, {"base_url": provider.base_url, "read_timeout": 0.2, "retries": 0}, store=store)
            await bot.start()
            try:
                return (await Chat(bot).say("hello?")).content
            finally:
                await bot.stop()

    content = run(scenario())
    assert "unavailable right now (timed out after 1 attempt)" in content
    assert [r.content for r in store.stored if r.role is Role.USER] == ["hello?"]


def test_streaming_assembles_the_same_text(tmp_path: Path) -> None:
    text = "Streaming works: " + "token " * 40

    async def scenario() -> tuple[FakeProvider, str, list[str], str]:
        async with serving() as provider:
            provider.script.extend([reply_with(text), reply_with(text)])
            plain = make_bot(tmp_path, {"base_url": provider.base_url})
            await plain.start()
            try:
                whole = (await Chat(plain).say("tell me")).content
            finally:
                await plain.stop()

            streaming = make_bot(tmp_path, {"base_url": provider.base_url, "stream": True})
            await streaming.start()
            chat = Chat(streaming)
            message = chat.message("tell me")
            tokens = llm.subscribe_tokens(streaming, message.id)
            assert tokens is not None
            got = []

            async def send(reply):  # noqa: ANN001, ANN202
                got.append(reply)

            try:
                handling = asyncio.create_task(streaming.handle(message, send))
                pieces = [piece async for piece in tokens]
                await handling
            finally:
                await streaming.stop()
            return provider, whole, pieces, got[0].content

    provider, whole, pieces, streamed = run(scenario())
    assert provider.bodies[0]["stream"] is False and provider.bodies[1]["stream"] is True
    assert len(pieces) > 10
    assert "".join(pieces).strip() == whole == streamed == text.strip()


def test_a_broken_stream_keeps_what_arrived_and_says_so(tmp_path: Path) -> None:
    from tests.llm.provider import sse

    async def broken(request, body):  # noqa: ANN001, ANN202
        return await sse(request, ["Half ", "a reply"], done=False, finish=None)

    async def scenario() -> tuple[str, str]:
        async with serving() as provider:
            provider.script.append(broken)
            bot = make_bot(tmp_path, {"base_url": provider.base_url, "stream": True})
            await bot.start()
            try:
                reply = await Chat(bot).say("go")
            finally:
                await bot.stop()
            return reply.content, reply.text()

    content, shown = run(scenario())
    assert content == "Half a reply … [reply interrupted]"
    assert "broke off (the stream ended mid-reply)" in shown


@pytest.mark.parametrize(
    "responder, expected",
    [
        (raw(b""), "empty response"),
        (raw(b"<html>502 Bad Gateway</html>", "text/html"), "not JSON"),
        (raw(b'{"choices": [{"message": {"content": "cut of'), "not JSON"),
        (raw(b'{"choices": []}'), "not a chat completion"),
        (raw(b'{"unexpected": true}'), "not a chat completion"),
        (reply_with(""), "empty reply"),
        (reply_with("   \n "), "empty reply"),
        (fail_with(400), "HTTP 400"),
        (fail_with(404), "check LLM_BASE_URL and LLM_MODEL"),
    ],
)
def test_bad_provider_replies_give_a_clear_outcome_and_lose_nothing(tmp_path: Path, responder, expected: str) -> None:  # noqa: ANN001
    store = RecordingStore()

    async def scenario() -> str:
        async with serving() as provider:
            provider.script.append(responder)
            bot = make_bot(tmp_path, {"base_url": provider.base_url}, store=store)
            await bot.start()
            try:
                return (await Chat(bot).say("keep this")).content
            finally:
                await bot.stop()

    content = run(scenario())
    assert expected in content
    assert "Your message is saved" in content
    assert [r.content for r in store.stored if r.role is Role.USER] == ["keep this"]


def test_long_replies_pass_absurd_ones_are_cut_with_a_note(tmp_path: Path) -> None:
    long_text = "word " * 700  # 3500 characters: the transport splits it
    absurd = "x" * 50_000

    async def scenario() -> tuple[str, str, str]:
        async with serving() as provider:
            provider.script.extend([reply_with(long_text), reply_with(absurd), reply_with("partial", "length")])
            bot = make_bot(tmp_path, {"base_url": provider.base_url, "max_reply_chars": 12_000})
            await bot.start()
            chat = Chat(bot)
            try:
                return (await chat.say("a")).text(), (await chat.say("b")).text(), (await chat.say("c")).text()
            finally:
                await bot.stop()

    long_reply, absurd_reply, cut = run(scenario())
    assert long_reply == long_text.strip()
    assert absurd_reply.startswith("x" * 12_000 + "…")
    assert "50,000 characters; I kept the first 12,000" in absurd_reply
    assert len(absurd_reply) < 12_200
    assert cut.startswith("partial") and "max_tokens" in cut


def test_images_go_to_vision_models_as_parts_and_to_others_as_text(tmp_path: Path) -> None:
    png = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32
    attachment = Attachment("cat.png", "image/png", len(png), data=png, width=64, height=48, description="a grey cat")
    remote = Attachment("dog.jpg", "image/jpeg", 10, url="https://cdn.example.test/dog.jpg")

    async def scenario() -> FakeProvider:
        async with serving() as provider:
            for vision in (True, False):
                bot = make_bot(tmp_path, {"base_url": provider.base_url, "vision": vision})
                await bot.start()
                try:
                    await Chat(bot).say("look", attachments=[attachment, remote])
                finally:
                    await bot.stop()
            return provider

    provider = run(scenario())
    vision_user = provider.bodies[0]["messages"][-1]["content"]
    assert vision_user[0] == {"type": "text", "text": "look"}
    assert vision_user[1]["type"] == "image_url"
    assert vision_user[1]["image_url"]["url"].startswith("data:image/png;base64,iVBORw0KGgo")
    assert vision_user[2] == {"type": "image_url", "image_url": {"url": "https://cdn.example.test/dog.jpg"}}
    text_user = provider.bodies[1]["messages"][-1]["content"]
    assert text_user == "look\n[image: cat.png (64x48, a grey cat)]\n[image: dog.jpg]"


def test_azure_style_base_url_and_key_header(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_key: str) -> None:
    async def scenario() -> FakeProvider:
        async with serving("/openai/deployments/chat-dep") as provider:
            monkeypatch.setenv("LLM_API_KEY", fake_key)
            bot = make_bot(
                tmp_path,
                {"base_url": provider.base_url + "?api-version=2024-06-01", "auth_header": "api-key"},
            )
            await bot.start()
            try:
                assert (await Chat(bot).say("hi")).content == "echo: hi"
                health = {h.component: h for h in await bot.health()}
                assert health["llm"].ok, health["llm"].detail
            finally:
                await bot.stop()
            return provider

    provider = run(scenario())
    seen = provider.seen[0]
    assert seen.path == "/openai/deployments/chat-dep/chat/completions"
    assert seen.query == {"api-version": "2024-06-01"}
    assert seen.headers["api-key"] == fake_key and "Authorization" not in seen.headers


def test_the_api_key_never_reaches_logs_replies_or_health(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_key: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    # Providers sometimes quote the key back in their error body.
    leaky = fail_with(401, body='{"error": {"message": "Incorrect API key provided: %s"}}' % fake_key)
    leaky_500 = fail_with(500, body="internal error for key " + fake_key)

    async def scenario() -> list[str]:
        async with serving() as provider:
            provider.script.extend([leaky, leaky_500, leaky_500, leaky_500])
            monkeypatch.setenv("LLM_API_KEY", fake_key)
            monkeypatch.setenv("LLM_BASE_URL", provider.base_url)
            bot = make_bot(tmp_path, {"retries": 2})
            await bot.start()
            _record_sleeps(bot)
            runtime = llm.runtime_for(bot)
            assert runtime is not None
            texts = [repr(runtime.settings), str(runtime.settings.model_dump()), runtime.describe()]
            try:
                chat = Chat(bot)
                texts.append((await chat.say("one")).text())
                texts.append((await chat.say("two")).text())
                texts.extend(h.detail for h in await bot.health())
            finally:
                await bot.stop()
            assert provider.seen[0].headers["Authorization"] == f"Bearer {fake_key}"
            return texts

    texts = run(scenario())
    assert "refused the request (HTTP 401: the API key was refused: check LLM_API_KEY)" in texts[3]
    assert "unavailable right now" in texts[4]
    for text in texts:
        assert fake_key not in text
    assert caplog.records, "the failures were logged"
    assert fake_key not in caplog.text
    assert all(fake_key not in r.getMessage() for r in caplog.records)


def test_total_timeout_bounds_every_attempt_together(tmp_path: Path) -> None:
    async def scenario() -> tuple[FakeProvider, str]:
        async with serving() as provider:
            provider.hold["are you there?"] = asyncio.Event()  # never set before stop
            bot = make_bot(tmp_path, {"base_url": provider.base_url, "total_timeout": 0.3, "read_timeout": 30, "retries": 5})
            await bot.start()
            _record_sleeps(bot)
            try:
                return provider, (await Chat(bot).say("are you there?")).content
            finally:
                await bot.stop()

    provider, content = run(scenario())
    assert "unavailable right now (no reply within 0.3s after 1 attempt)" in content
    assert len(provider.seen) == 1


def test_large_bodies_are_read_whole_and_oversized_ones_refused(tmp_path: Path) -> None:
    import json as _json

    from aiohttp import web

    from tests.llm.provider import completion

    big = _json.dumps(completion("y" * 1_500_000)).encode()

    async def chunked(request, body):  # noqa: ANN001, ANN202
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        for i in range(0, len(big), 50_000):
            await response.write(big[i : i + 50_000])
            await asyncio.sleep(0)
        await response.write_eof()
        return response

    async def scenario() -> tuple[str, str]:
        async with serving() as provider:
            provider.script.extend([chunked, chunked])
            whole = make_bot(tmp_path, {"base_url": provider.base_url, "max_reply_chars": 100})
            await whole.start()
            try:
                cut = (await Chat(whole).say("big")).text()
            finally:
                await whole.stop()
            refusing = make_bot(tmp_path, {"base_url": provider.base_url, "max_response_bytes": 1_000_000})
            await refusing.start()
            try:
                refused = (await Chat(refusing).say("big")).text()
            finally:
                await refusing.stop()
            return cut, refused

    cut, refused = run(scenario())
    assert cut.startswith("y" * 100 + "…") and "1,500,000 characters; I kept the first 100" in cut
    assert "larger than 1,000,000 bytes" in refused and "Your message is saved" in refused


def test_a_giant_stream_chunk_is_cut_with_a_note(tmp_path: Path) -> None:
    from tests.llm.provider import sse

    async def giant(request, body):  # noqa: ANN001, ANN202
        return await sse(request, ["z" * 400_000])

    async def scenario() -> str:
        async with serving() as provider:
            provider.script.append(giant)
            bot = make_bot(tmp_path, {"base_url": provider.base_url, "stream": True})
            await bot.start()
            try:
                return (await Chat(bot).say("go")).text()
            finally:
                await bot.stop()

    text = run(scenario())
    assert text.startswith("z" * 12_000 + "…") and "400,000 characters; I kept the first 12,000" in text
