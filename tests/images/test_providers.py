"""Remote providers against real HTTP servers on 127.0.0.1, through the bot."""

from __future__ import annotations

import asyncio
import base64
import io
import logging
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from PIL import Image

from core.clock import ManualClock

from harness import image_corpus as corpus
from tests.images.helpers import make_bot, send_one, serve, user_message


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("IMAGES_API_KEY", "IMAGES_PROVIDER", "IMAGES_BASE_URL", "IMAGES_MODEL"):
        monkeypatch.delenv(name, raising=False)


def fake_key() -> str:
    return "k" * 24  # obviously not a real key


async def imagine(tmp_path: Path, settings: dict[str, Any], text: str) -> tuple[Any, Any]:
    bot, recorder = make_bot(tmp_path, settings)
    reply = await send_one(bot, user_message(text))
    await bot.stop()
    return reply, recorder


def as_png(reply: Any) -> Image.Image:
    [attachment] = reply.attachments
    assert attachment.content_type == "image/png" and attachment.data.startswith(b"\x89PNG\r\n\x1a\n")
    image = Image.open(io.BytesIO(attachment.data))
    assert (attachment.width, attachment.height) == image.size
    return image


def test_openai_b64_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("IMAGES_API_KEY", fake_key())
    seen: dict[str, Any] = {}

    async def generations(request: web.Request) -> web.Response:
        seen["auth"] = request.headers.get("Authorization")
        seen["body"] = await request.json()
        png = corpus.plain_png(256, 128, "teal")
        return web.json_response({"created": 1, "data": [{"b64_json": base64.b64encode(png).decode()}]})

    async def main() -> Any:
        async with serve([web.post("/v1/images/generations", generations)]) as base:
            settings = {"provider": "openai", "base_url": f"{base}/v1", "model": "test-model"}
            return await imagine(tmp_path, settings, "/imagine a teal banner --size 256x128 --style vivid")

    caplog.set_level(logging.DEBUG)
    reply, _ = asyncio.run(main())
    assert as_png(reply).size == (256, 128)
    assert "by openai" in reply.content
    assert seen["auth"] == f"Bearer {fake_key()}"
    assert seen["body"]["prompt"] == "a teal banner" and seen["body"]["size"] == "256x128"
    assert seen["body"]["model"] == "test-model" and seen["body"]["response_format"] == "b64_json"
    assert seen["body"]["style"] == "vivid"
    assert fake_key() not in reply.content and fake_key() not in caplog.text


def test_openai_url_response_is_downloaded_without_the_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMAGES_API_KEY", fake_key())
    seen: dict[str, Any] = {}
    # A JPEG with GPS from the provider: what the bot sends on is a clean PNG.
    jpeg = corpus.jpeg_with_gps(orientation=1)

    async def generations(request: web.Request) -> web.Response:
        return web.json_response({"data": [{"url": f"{seen['base']}/files/1.jpg"}]})

    async def file(request: web.Request) -> web.Response:
        seen["file_auth"] = request.headers.get("Authorization")
        return web.Response(body=jpeg, content_type="image/jpeg")

    async def main() -> Any:
        routes = [web.post("/images/generations", generations), web.get("/files/1.jpg", file)]
        async with serve(routes) as base:
            seen["base"] = base
            return await imagine(tmp_path, {"provider": "openai", "base_url": base, "response_format": "url"},
                                 "/imagine a red flag")

    reply, _ = asyncio.run(main())
    image = as_png(reply)
    assert image.size == (40, 20) and not image.getexif()
    assert b"ExamplePhone" not in reply.attachments[0].data
    assert seen["file_auth"] is None


def test_automatic1111_txt2img(tmp_path: Path) -> None:
    seen: dict[str, Any] = {}

    async def txt2img(request: web.Request) -> web.Response:
        seen["body"] = await request.json()
        body = seen["body"]
        png = corpus.plain_png(body["width"], body["height"], "navy")
        return web.json_response({"images": [base64.b64encode(png).decode()], "parameters": {}, "info": "{}"})

    async def main() -> Any:
        async with serve([web.post("/sdapi/v1/txt2img", txt2img)]) as base:
            return await imagine(tmp_path, {"provider": "automatic1111", "base_url": base},
                                 "/imagine a ship at sea --size 320x192 --seed 99")

    reply, _ = asyncio.run(main())
    assert as_png(reply).size == (320, 192)
    assert seen["body"]["prompt"] == "a ship at sea" and seen["body"]["seed"] == 99
    assert (seen["body"]["width"], seen["body"]["height"]) == (320, 192)
    assert "seed 99" in reply.content and "by automatic1111" in reply.content


@pytest.mark.parametrize(
    ("provider", "path"), [("openai", "/images/generations"), ("automatic1111", "/sdapi/v1/txt2img")]
)
def test_server_error_gives_a_clear_message_then_a_cooldown(tmp_path: Path, provider: str, path: str) -> None:
    calls = 0
    clock = ManualClock()

    async def broken(request: web.Request) -> web.Response:
        nonlocal calls
        calls += 1
        return web.json_response({"error": {"message": "internal"}}, status=500)

    async def main() -> list[Any]:
        async with serve([web.post(path, broken)]) as base:
            settings = {"provider": provider, "base_url": base, "rate_limit": 1, "outage_cooldown": 30}
            bot, recorder = make_bot(tmp_path, settings, clock=clock)
            replies = [await send_one(bot, user_message("/imagine a cat"))]
            clock.advance(10)
            # While it is down, people are told at once instead of each waiting.
            replies.append(await send_one(bot, user_message("/imagine a cat")))
            [health] = [h for h in await bot.health() if h.component == "images"]
            assert not health.ok and "down: HTTP 500" in health.detail
            clock.advance(20)
            # Tried again after the cooldown; the failure did not use up the rate limit of 1.
            replies.append(await send_one(bot, user_message("/imagine a cat")))
            await bot.stop()
            return replies

    first, during, after = asyncio.run(main())
    for reply in (first, after):
        assert f"the image provider {provider!r} is not working right now (HTTP 500)" in reply.content
    assert during.content == f"The image provider {provider!r} is down (HTTP 500); I will try it again in 20 s."
    assert all(r.attachments == [] for r in (first, during, after))
    assert calls == 2


def test_slow_provider_times_out_with_a_clear_message(tmp_path: Path) -> None:
    release = asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        await asyncio.wait_for(release.wait(), 10)
        return web.json_response({"data": []})

    async def main() -> Any:
        async with serve([web.post("/images/generations", slow)]) as base:
            try:
                return await imagine(tmp_path, {"provider": "openai", "base_url": base, "timeout": 0.3}, "/imagine a snail")
            finally:
                release.set()

    reply, _ = asyncio.run(main())
    assert reply.attachments == []
    assert "did not answer within 0.3 s" in reply.content and "try again later" in reply.content


def test_unreachable_provider(tmp_path: Path) -> None:
    async def main() -> Any:
        async with serve([]) as base:
            pass  # the port is closed again: nothing listens there now
        return await imagine(tmp_path, {"provider": "automatic1111", "base_url": base}, "/imagine anything")

    reply, _ = asyncio.run(main())
    assert "cannot be reached" in reply.content and reply.attachments == []


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ({"data": [{"b64_json": base64.b64encode(b"not a picture").decode()}]}, "sent an image I cannot use"),
        ({"data": [{"b64_json": "%%% not base64 %%%"}]}, "not valid base64"),
        ({"data": []}, "answered without an image"),
        ({"data": [{"revised_prompt": "x"}]}, "without b64_json or url"),
    ],
)
def test_nonsense_answers(tmp_path: Path, answer: dict[str, Any], expected: str) -> None:
    async def nonsense(request: web.Request) -> web.Response:
        return web.json_response(answer)

    async def main() -> Any:
        async with serve([web.post("/images/generations", nonsense)]) as base:
            return await imagine(tmp_path, {"provider": "openai", "base_url": base}, "/imagine a thing")

    reply, _ = asyncio.run(main())
    assert expected in reply.content and reply.attachments == []


def test_refused_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMAGES_API_KEY", fake_key())

    async def unauthorised(request: web.Request) -> web.Response:
        return web.json_response({"error": {"message": "bad key " + fake_key()}}, status=401)

    async def main() -> Any:
        async with serve([web.post("/images/generations", unauthorised)]) as base:
            return await imagine(tmp_path, {"provider": "openai", "base_url": base}, "/imagine a key")

    reply, _ = asyncio.run(main())
    assert "refused the credentials (HTTP 401); check IMAGES_API_KEY" in reply.content
    assert fake_key() not in reply.content
