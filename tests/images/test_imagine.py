"""The imagine command through an assembled bot (default offline provider)."""

from __future__ import annotations

import asyncio
import hashlib
import io
import re
from pathlib import Path

import pytest
from PIL import Image

import plugins.console as console_plugin
from core.clock import ManualClock
from core.models import Role
from plugins.images.imagine import parse_imagine
from tests.images.helpers import make_bot, send_one, user_message


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("IMAGES_PROVIDER", "IMAGES_RATE_LIMIT", "IMAGES_DEFAULT_SIZE", "IMAGES_MEDIA_DIR"):
        monkeypatch.delenv(name, raising=False)


def test_imagine_replies_with_a_png_recorded_in_the_conversation(tmp_path: Path) -> None:
    bot, recorder = make_bot(tmp_path)

    async def main() -> None:
        first = await send_one(bot, user_message("/imagine a lighthouse at dusk --size 320x240 --seed 5"))
        again = await send_one(bot, user_message("/imagine a lighthouse at dusk --size 320x240 --seed 5"))
        [attachment] = first.attachments
        assert attachment.data is not None and attachment.data == again.attachments[0].data  # deterministic
        assert attachment.content_type == "image/png" and attachment.filename.endswith(".png")
        assert attachment.sha256 == hashlib.sha256(attachment.data).hexdigest()
        assert (attachment.width, attachment.height) == (320, 240) == Image.open(io.BytesIO(attachment.data)).size
        assert attachment.size == len(attachment.data)
        assert "a lighthouse at dusk" in (attachment.description or "")
        assert "seed 5" in first.content and "by pillow" in first.content
        # Stored in the media store under the asker's name ...
        assert await bot.hooks.first("load_media", sha256=attachment.sha256) == attachment.data
        [export] = await bot.hooks.collect("export_user", user_id="alice")
        assert [m["kind"] for m in export["media"]] == ["generated"]
        # ... and recorded with the conversation, without the bytes.
        roles = [(r.role, r.content[:8]) for r in recorder.records[:2]]
        assert roles == [(Role.USER, "/imagine"), (Role.BOT, "Here is ")]
        [recorded] = recorder.records[1].attachments
        assert recorded.sha256 == attachment.sha256 and recorded.data is None
        await bot.stop()

    asyncio.run(main())


def test_seed_defaults_to_the_prompt(tmp_path: Path) -> None:
    bot, _ = make_bot(tmp_path, {"default_size": "128x96"})

    async def main() -> None:
        one = await send_one(bot, user_message("/imagine a red kite"))
        two = await send_one(bot, user_message("/imagine a red kite"))
        other = await send_one(bot, user_message("/imagine a blue kite"))
        assert one.attachments[0].sha256 == two.attachments[0].sha256 != other.attachments[0].sha256
        assert (one.attachments[0].width, one.attachments[0].height) == (128, 96)
        seed = re.search(r"seed (\d+)", one.content)
        assert seed is not None
        explicit = await send_one(bot, user_message(f"/imagine a red kite --seed {seed.group(1)}"))
        assert explicit.attachments[0].sha256 == one.attachments[0].sha256
        await bot.stop()

    asyncio.run(main())


def test_rate_limit_per_user_by_the_bot_clock(tmp_path: Path) -> None:
    clock = ManualClock()
    bot, _ = make_bot(tmp_path, {"rate_limit": 2, "rate_window": 60, "default_size": "64x64"}, clock=clock)

    async def main() -> None:
        for _ in range(2):
            assert (await send_one(bot, user_message("/imagine a dot"))).attachments
        refused = await send_one(bot, user_message("/imagine a dot"))
        assert refused.attachments == []
        assert "You can make 2 images every 60 s; try again in 60 s." == refused.content
        # Someone else is not limited by alice.
        assert (await send_one(bot, user_message("/imagine a dot", author="bob"))).attachments
        clock.advance(30)
        assert "try again in 30 s" in (await send_one(bot, user_message("/imagine a dot"))).content
        clock.advance(30)
        assert (await send_one(bot, user_message("/imagine a dot"))).attachments
        await bot.stop()

    asyncio.run(main())


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("/imagine", "tell me what to draw"),
        ("/imagine --size 512x512", "tell me what to draw"),
        ("/imagine a cat --size 8x8", "each side must be 16 to 2048"),
        ("/imagine a cat --size big", "is not WIDTHxHEIGHT"),
        ("/imagine a cat --seed x1", "is not a whole number"),
        ("/imagine a cat --style cubism", "unknown style 'cubism'; choose from landscape, abstract, pixel"),
        ("/imagine a cat --size 64x64 --size 32x32", "--size is given twice"),
    ],
)
def test_bad_arguments_get_usage(tmp_path: Path, text: str, expected: str) -> None:
    bot, _ = make_bot(tmp_path)

    async def main() -> None:
        reply = await send_one(bot, user_message(text))
        assert expected in reply.content and reply.attachments == []
        await bot.stop()

    asyncio.run(main())


def test_unknown_provider_is_named(tmp_path: Path) -> None:
    bot, _ = make_bot(tmp_path, {"provider": "dalle-9"})

    async def main() -> None:
        reply = await send_one(bot, user_message("/imagine a cat"))
        assert reply.content == "The image provider 'dalle-9' is not installed (available: automatic1111, openai, pillow)."
        await bot.stop()

    asyncio.run(main())


def test_third_party_provider_through_the_registry(tmp_path: Path) -> None:
    from core.plugins import hookimpl

    class Stripes:
        async def generate(self, prompt: str, *, size: tuple[int, int], seed: int | None, style: str | None) -> bytes:
            image = Image.new("RGB", size, "white")
            for x in range(0, size[0], 8):
                image.paste((0, 0, 0), (x, 0, x + 4, size[1]))
            out = io.BytesIO()
            image.save(out, "PNG")
            return out.getvalue()

    class StripesPlugin:
        @hookimpl
        def register_image_providers(self, register: object) -> None:
            register("stripes", Stripes())  # type: ignore[operator]

    bot, _ = make_bot(tmp_path, {"provider": "stripes"}, extra={"stripes": StripesPlugin()})

    async def main() -> None:
        reply = await send_one(bot, user_message("/imagine zebra --size 64x32"))
        image = Image.open(io.BytesIO(reply.attachments[0].data)).convert("RGB")
        assert image.size == (64, 32) and image.getpixel((1, 1)) == (0, 0, 0) and image.getpixel((5, 1)) == (255, 255, 255)
        await bot.stop()

    asyncio.run(main())


def test_terminal_chat_saves_the_png_and_prints_its_path(tmp_path: Path) -> None:
    bot, _ = make_bot(tmp_path, {"default_size": "200x100"}, extra={"console": console_plugin})
    stdin = io.StringIO("/imagine a paper boat --seed 3\n/quit\n")
    stdout = io.StringIO()

    async def main() -> None:
        await bot.start()
        await asyncio.wait_for(console_plugin.run_console(bot, stdin=stdin, stdout=stdout), 30)
        await bot.stop()

    asyncio.run(main())
    printed = stdout.getvalue()
    match = re.search(r"\[file saved to (.+\.png)\]", printed)
    assert match, printed
    saved = Path(match.group(1))
    assert saved.is_file() and saved.parent.parent == (tmp_path / "files").resolve()
    assert Image.open(saved).size == (200, 100)


@pytest.mark.parametrize(
    ("args", "prompt", "size", "seed", "style"),
    [
        ("a cat", "a cat", (512, 512), None, None),
        ("a cat --size 640x480 --seed 7 --style Pixel", "a cat", (640, 480), 7, "pixel"),
        ("--seed=3 a cat --size=100x200", "a cat", (100, 200), 3, None),
        ("a cat size:300x300 seed:-4 style:abstract", "a cat", (300, 300), -4, "abstract"),
        ("a   cat,  sized: like a dog", "a cat, sized: like a dog", (512, 512), None, None),
        # As Discord's slash command joins option values: prompt size seed style.
        ("a cat 640x480 7 pixel", "a cat", (640, 480), 7, "pixel"),
        ("a cat 640x480", "a cat", (640, 480), None, None),
        ("a cat 640x480 abstract", "a cat", (640, 480), None, "abstract"),
        ("room 101 in 1984", "room 101 in 1984", (512, 512), None, None),
    ],
)
def test_parse_imagine(args: str, prompt: str, size: tuple[int, int], seed: int | None, style: str | None) -> None:
    request = parse_imagine(args, "512x512", 2048)
    assert (request.prompt, request.size, request.seed, request.style) == (prompt, size, seed, style)
