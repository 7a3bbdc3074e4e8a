"""imagine and user images through the real discord.py transport, against
the fake Discord on 127.0.0.1 (tests/fake_discord)."""

from __future__ import annotations

import asyncio
import io
import os
from pathlib import Path

import pytest
from PIL import Image

from core.models import Role
from tests.fake_discord.inprocess import connected
from tests.fake_discord.server import FakeDiscord
from harness import image_corpus as corpus
from tests.images.helpers import make_bot

pytestmark = pytest.mark.discord


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(("DISCORD_", "BOT_", "IMAGES_")):
            monkeypatch.delenv(name)


def test_slash_imagine_answers_with_a_png(tmp_path: Path) -> None:
    async def scenario() -> list[dict]:
        async with FakeDiscord() as fake:
            guild = fake.add_guild("g")
            channel = fake.add_channel(guild, "general")
            alice = fake.make_user("alice")
            fake.add_member(guild, alice)
            bot, _recorder = make_bot(tmp_path)
            await bot.start()
            try:
                async with connected(bot, fake):
                    synced = {c["name"]: c for c in fake.commands[None]}
                    assert [o["name"] for o in synced["imagine"]["options"]] == ["prompt", "size", "seed", "style"]
                    interaction = await fake.send_interaction(
                        "imagine", alice, channel["id"], {"prompt": "a red boat", "size": "160x96", "seed": "4"}
                    )
                    return await fake.wait_for_interaction_response(interaction["id"])
            finally:
                await bot.stop()

    responses = asyncio.run(asyncio.wait_for(scenario(), 60))
    files = [f for r in responses for f in r["files"]]
    assert len(files) == 1, responses
    [file] = files
    # discord.py uploads every file as application/octet-stream; Discord goes by the name.
    assert file["filename"].endswith(".png") and file["data"].startswith(b"\x89PNG\r\n\x1a\n")
    image = Image.open(io.BytesIO(file["data"]))
    assert image.format == "PNG" and image.size == (160, 96)
    assert any("a red boat" in r["content"] and "seed 4" in r["content"] for r in responses)


def test_photo_sent_in_discord_is_stored_without_gps(tmp_path: Path) -> None:
    """The transport hands over the bytes it downloaded; default settings."""
    async def scenario() -> None:
        async with FakeDiscord() as fake:
            alice = fake.make_user("alice")
            bot, recorder = make_bot(tmp_path)
            await bot.start()
            try:
                async with connected(bot, fake):
                    dm = fake.dm_channel(alice)
                    photo = corpus.jpeg_with_gps()
                    sent = await fake.send_user_message(dm["id"], alice, "my holiday",
                                                        attachments=[("IMG_0042.JPG", photo, "image/jpeg")])
                    await fake.wait_for_reply_to(sent["id"])
                    [record] = [r for r in recorder.records if r.role is Role.USER]
                    [stored] = record.attachments
                    assert stored.sha256 and (stored.width, stored.height) == (20, 40) and stored.url is None
                    data = await bot.hooks.first("load_media", sha256=stored.sha256)
                    assert data is not None and not Image.open(io.BytesIO(data)).getexif()
                    assert b"ExamplePhone" not in data
            finally:
                await bot.stop()

    asyncio.run(asyncio.wait_for(scenario(), 60))
