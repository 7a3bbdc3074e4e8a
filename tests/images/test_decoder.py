"""The image cost bounds: the budget checked before decoding, and decoding
in worker processes bounded in time and memory (plugins/images/decoder.py,
docs/SECURITY.md "Image cost")."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from core.models import Attachment
from plugins.images.decoder import MIB, DecodeBudget, DecodePool
from plugins.images.sanitize import ImageRejected, Limits, check_bytes, sanitize
from harness import image_corpus as corpus
from tests.images.helpers import make_bot, send_one, user_message


def run_in_pool(budget: DecodeBudget, *calls: tuple) -> list[object]:
    async def main() -> list[object]:
        pool = DecodePool(budget)
        results: list[object] = []
        try:
            for function, *args in calls:
                try:
                    results.append(await pool.run(function, *args))
                except ImageRejected as exc:
                    results.append(exc)
        finally:
            pool.close()
        return results

    return asyncio.run(main())


def test_decoding_runs_in_another_process() -> None:
    [pid] = run_in_pool(DecodeBudget(timeout=30), (os.getpid,))
    assert isinstance(pid, int) and pid != os.getpid()


def test_a_decode_over_its_time_is_refused_and_the_worker_replaced() -> None:
    slow = corpus.big_noise_webp(3000)  # seconds to decode
    refused, after = run_in_pool(
        DecodeBudget(timeout=0.3, workers=1),
        (sanitize, slow, Limits()),
        (check_bytes, corpus.plain_png(), Limits()),
    )
    assert isinstance(refused, ImageRejected)
    assert str(refused) == "decoding took longer than 0.3 s, the limit per image"
    assert after == ("PNG", 64, 48)


def test_a_decode_over_its_memory_is_refused_and_the_worker_replaced() -> None:
    big = corpus.big_flat_png(4096)  # 64 MiB of RGBA pixels once decoded
    refused, after = run_in_pool(
        DecodeBudget(timeout=60, memory_bytes=32 * MIB, workers=1),
        (sanitize, big, Limits()),
        (check_bytes, corpus.plain_png(), Limits()),
    )
    assert isinstance(refused, ImageRejected)
    assert str(refused) == "decoding needs more than 32 MiB, the limit per image"
    assert after == ("PNG", 64, 48)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        pytest.param(corpus.big_flat_png(), "6324×6324 = 39,992,976 pixels; the limit is 16,777,216", id="6324² PNG"),
        pytest.param(corpus.big_progressive_jpeg(), "6000×6000 = 36,000,000 pixels", id="6000² progressive JPEG"),
        pytest.param(corpus.big_noise_webp(), "6300×6300 = 39,690,000 pixels", id="6300² noise WebP"),
        pytest.param(corpus.png_of_empty_chunks(), "more than 4,096 chunks, the limit", id="800k empty chunks"),
        pytest.param(corpus.png_with_huge_text(b"zTXt", 0), None, id="ordinary zTXt"),
    ],
)
def test_the_budget_is_checked_from_the_bytes_before_decoding(data: bytes, reason: str | None) -> None:
    if reason is None:
        check_bytes(data, Limits())
        return
    with pytest.raises(ImageRejected, match=reason.replace("(", r"\(").replace("*", r"\*")):
        check_bytes(data, Limits())


def test_a_huge_metadata_chunk_is_refused_by_its_size() -> None:
    small = corpus.plain_png(8, 8)
    big_text = corpus.png_chunk(b"iTXt", b"Comment\x00\x00\x00\x00\x00" + b"A" * (2 * MIB))
    with pytest.raises(ImageRejected, match=r"its iTXt metadata chunk is 2\.0 MiB; the limit is 1\.0 MiB"):
        check_bytes(small[:33] + big_text + small[33:], Limits())


@pytest.mark.parametrize("kind", [b"zTXt", b"iTXt"])
def test_a_text_chunk_inflating_past_pillows_limit_says_which_limit(kind: bytes) -> None:
    with pytest.raises(ImageRejected, match=r"metadata \(text\) chunk inflates past the limit of 1\.0 MiB"):
        sanitize(corpus.png_with_huge_text(kind), Limits())


def test_the_images_of_one_message_share_a_pixel_budget(tmp_path: Path) -> None:
    bot, recorder = make_bot(tmp_path, {"max_pixels": 1000 * 1000, "max_message_pixels": 1_500_000})
    images = [Attachment(f"{i}.png", "image/png", data=corpus.plain_png(1000, 1000)) for i in range(2)]

    async def main() -> str:
        await bot.start()
        try:
            return (await send_one(bot, user_message("two", attachments=images))).content
        finally:
            await bot.stop()

    reply = asyncio.run(main())
    assert reply.startswith("The images of this message hold more than 1,500,000 pixels together, the limit per message.")
    assert "Nothing was stored" in reply
    assert recorder.records == []


def test_a_slow_image_gets_a_refusal_naming_the_limit(tmp_path: Path) -> None:
    bot, _recorder = make_bot(tmp_path, {"decode_timeout": 0.01})
    slow = Attachment("noise.webp", "image/webp", data=corpus.big_noise_webp(2048))

    async def main() -> str:
        await bot.start()
        try:
            return (await send_one(bot, user_message("look", attachments=[slow]))).content
        finally:
            await bot.stop()

    reply = asyncio.run(main())
    assert "decoding took longer than 0.01 s, the limit per image" in reply
    assert "Nothing was stored" in reply
