"""User images through an assembled bot: the prepare_message hook."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import pytest
from aiohttp import web
from PIL import ExifTags, Image

from core.models import Attachment, Role
from harness import image_corpus as corpus
from tests.images.helpers import make_bot, send_one, serve, user_message


def media_files(data_dir: Path) -> list[Path]:
    root = data_dir / "media"
    return [p for p in root.rglob("*") if p.is_file() and not p.name.startswith("index.sqlite3")] if root.exists() else []


HOSTILE = [
    pytest.param("bomb.png", "image/png", corpus.decompression_bomb(), "decompression bomb", id="decompression bomb"),
    pytest.param("cut.png", "image/png", corpus.truncated_png(), "damaged or truncated", id="truncated PNG"),
    pytest.param("cat.png", "image/png", corpus.NOT_AN_IMAGE, "not an image I accept", id="text named .png"),
    pytest.param("none.png", "image/png", corpus.png_with_header(0, 0), "no pixels", id="0x0"),
    pytest.param("thin.png", "image/png", corpus.png_with_header(1, 0), "no pixels", id="1x0"),
    pytest.param("huge.png", "image/png", corpus.png_with_header(100_000, 100_000), "limit is 16,777,216",
                 id="huge header"),
]


@pytest.mark.parametrize(("filename", "content_type", "data", "reason"), HOSTILE)
def test_hostile_file_gets_a_clear_reply_and_nothing_is_stored(
    tmp_path: Path, filename: str, content_type: str, data: bytes, reason: str
) -> None:
    bot, recorder = make_bot(tmp_path)

    async def main() -> None:
        bad = user_message("look at this", attachments=[Attachment(filename, content_type, len(data), data=data)])
        reply = await send_one(bot, bad)
        assert f"I could not take the image {filename!r}" in reply.content
        assert reason in reply.content and "Nothing was stored" in reply.content
        assert recorder.records == [] and media_files(tmp_path) == []
        # The bot is fine afterwards.
        ok = await send_one(bot, user_message("hello again"))
        assert "No reply plugin" in ok.content
        await bot.stop()

    asyncio.run(main())


def test_jpeg_with_gps_is_stored_clean_and_recorded_by_hash(tmp_path: Path) -> None:
    bot, recorder = make_bot(tmp_path)
    original = corpus.jpeg_with_gps()

    async def main() -> None:
        attachment = Attachment("IMG_0001.JPG", "image/jpeg", len(original), url="https://cdn.example/x", data=original)
        await send_one(bot, user_message("holiday", attachments=[attachment]))
        [record] = [r for r in recorder.records if r.role is Role.USER]
        [stored] = record.attachments
        assert stored.data is None and stored.url is None
        # The transport's own object is left as it came.
        assert attachment.data == original and attachment.sha256 is None
        assert (stored.filename, stored.content_type, stored.width, stored.height) == ("IMG_0001.jpg", "image/jpeg", 20, 40)
        assert stored.description and "EXIF orientation applied" in stored.description
        path = tmp_path / "media" / stored.sha256[:2] / stored.sha256[2:]
        on_disk = path.read_bytes()
        assert stored.size == len(on_disk)
        image = Image.open(io.BytesIO(on_disk))
        assert not image.getexif() and not image.getexif().get_ifd(ExifTags.IFD.GPSInfo)
        assert b"ExamplePhone" not in on_disk and b"taken at home" not in on_disk
        # The record holds no bytes; a reply plugin gets them by hash.
        assert "data" not in stored.to_dict()
        assert await bot.hooks.first("load_media", sha256=stored.sha256) == on_disk
        await bot.stop()

    asyncio.run(main())


def test_animated_gif_first_frame_and_non_images_left_alone(tmp_path: Path) -> None:
    bot, recorder = make_bot(tmp_path)

    async def main() -> None:
        gif = Attachment("dance.gif", "image/gif", data=corpus.animated_gif())
        notes = Attachment("notes.txt", "text/plain", 5, data=b"hello")
        message = user_message("two files", attachments=[gif, notes])
        await send_one(bot, message)
        gif, notes = message.attachments
        assert gif.content_type == "image/png" and gif.filename == "dance.png"
        assert "first of 3 frames" in (gif.description or "")
        assert notes.data == b"hello" and notes.sha256 is None  # not an image: not ours
        await bot.stop()

    asyncio.run(main())


def test_fetches_url_only_attachments_under_the_byte_limit(tmp_path: Path) -> None:
    png = corpus.plain_png(20, 10)

    async def endless(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()  # chunked: no Content-Length to trust
        await response.prepare(request)
        for _ in range(64):
            await response.write(b"\x89PNG\r\n\x1a\n" + b"\0" * 8192)
        return response

    async def ok(request: web.Request) -> web.Response:
        return web.Response(body=png, content_type="image/png")

    async def missing(request: web.Request) -> web.Response:
        return web.Response(status=404)

    routes = [web.get("/ok.png", ok), web.get("/endless.png", endless), web.get("/missing.png", missing)]

    async def main() -> None:
        async with serve(routes) as base:
            bot, recorder = make_bot(tmp_path, {"fetch_hosts": ["127.0.0.1"], "max_bytes": 100_000})
            ok = Attachment("ok.png", "image/png", url=f"{base}/ok.png")
            message = user_message("by url", attachments=[ok])
            await send_one(bot, message)
            [ok] = message.attachments
            assert ok.sha256 and (ok.width, ok.height) == (20, 10) and ok.url is None

            endless_one = Attachment("endless.png", "image/png", url=f"{base}/endless.png")
            reply = await send_one(bot, user_message("big", attachments=[endless_one]))
            assert "larger than the limit of 100,000 bytes" in reply.content

            missing = Attachment("missing.png", "image/png", url=f"{base}/missing.png")
            reply = await send_one(bot, user_message("404", attachments=[missing]))
            assert "HTTP 404" in reply.content

            elsewhere = Attachment("x.png", "image/png", url="http://localhost:9/x.png")
            reply = await send_one(bot, user_message("other host", attachments=[elsewhere]))
            assert "I only fetch images from 127.0.0.1" in reply.content
            await bot.stop()

    asyncio.run(main())


def test_forget_deletes_my_media_and_export_lists_it(tmp_path: Path) -> None:
    bot, _recorder = make_bot(tmp_path)

    async def main() -> None:
        mine = Attachment("mine.png", "image/png", data=corpus.plain_png(10, 10, "red"))
        shared_alice = Attachment("a.png", "image/png", data=corpus.plain_png(12, 12, "blue"))
        shared_bob = Attachment("b.png", "image/png", data=corpus.plain_png(12, 12, "blue"))
        alices = user_message("mine", attachments=[mine, shared_alice])
        bobs = user_message("bob's", author="bob", attachments=[shared_bob])
        await send_one(bot, alices)
        await send_one(bot, bobs)
        mine, shared_alice = alices.attachments
        [shared_bob] = bobs.attachments
        [export] = await bot.hooks.collect("export_user", user_id="alice")
        assert sorted(m["sha256"] for m in export["media"]) == sorted([mine.sha256, shared_alice.sha256])
        assert all(Path(m["path"]).is_file() for m in export["media"])

        [counts] = await bot.hooks.collect("forget_user", user_id="alice")
        assert counts["images"] == 2
        assert await bot.hooks.first("load_media", sha256=mine.sha256) is None
        # Bob sent the same picture: his copy stays.
        assert await bot.hooks.first("load_media", sha256=shared_bob.sha256) is not None
        [export] = await bot.hooks.collect("export_user", user_id="alice")
        assert export == {"media": []}
        await bot.stop()

    asyncio.run(main())


def test_bad_settings_fail_the_plugin_by_name_not_the_bot(tmp_path: Path) -> None:
    bot, _recorder = make_bot(tmp_path, {"max_pixls": 5})

    async def main() -> None:
        reply = await send_one(bot, user_message("hi"))
        assert "No reply plugin" in reply.content
        info = bot.plugins.info["images"]
        assert info.state == "failed" and "max_pixls" in info.reason
        await bot.stop()

    asyncio.run(main())


def test_one_bad_image_refuses_the_message_and_stores_none_of_it(tmp_path: Path) -> None:
    bot, recorder = make_bot(tmp_path)

    async def main() -> None:
        good = Attachment("good.png", "image/png", data=corpus.plain_png())
        bad = Attachment("bad.png", "image/png", data=corpus.truncated_png())
        reply = await send_one(bot, user_message("two pictures", attachments=[good, bad]))
        assert "I could not take the image 'bad.png'" in reply.content
        assert recorder.records == [] and media_files(tmp_path) == []
        await bot.stop()

    asyncio.run(main())
