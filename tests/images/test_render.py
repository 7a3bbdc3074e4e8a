"""Golden-image tests for the offline renderer."""

from __future__ import annotations

import asyncio
import hashlib
import io
import subprocess
import sys

import pytest
from PIL import Image, ImageChops, ImageStat

from plugins.images.render import STYLES, PillowProvider, render


def pixels_sha256(png: bytes) -> str:
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG"
    return hashlib.sha256(image.convert("RGB").tobytes()).hexdigest()


def mean_difference(a: bytes, b: bytes) -> float:
    """Mean absolute difference per channel, 0..255."""
    first, second = (Image.open(io.BytesIO(x)).convert("RGB") for x in (a, b))
    return sum(ImageStat.Stat(ImageChops.difference(first, second)).mean) / 3


@pytest.mark.parametrize("style", STYLES)
def test_same_prompt_and_seed_give_identical_pixels(style: str) -> None:
    first = render("a lighthouse on a cliff at dusk", size=(256, 192), seed=42, style=style)
    second = render("a lighthouse on a cliff at dusk", size=(256, 192), seed=42, style=style)
    assert pixels_sha256(first) == pixels_sha256(second)
    assert first == second  # the PNG encoding is deterministic too


def test_identical_in_another_process() -> None:
    # Another interpreter has another hash() seed: nothing may depend on it.
    code = (
        "import hashlib,io,sys; from PIL import Image; from plugins.images.render import render;"
        "png=render('a red fox in the snow', size=(200,150), seed=7);"
        "sys.stdout.write(hashlib.sha256(Image.open(io.BytesIO(png)).convert('RGB').tobytes()).hexdigest())"
    )
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True,
                           env={"PYTHONHASHSEED": "12345", "PATH": ""}, cwd=".")
    here = pixels_sha256(render("a red fox in the snow", size=(200, 150), seed=7))
    assert other.stdout == here


def test_different_prompts_give_measurably_different_pictures() -> None:
    prompts = ["a quiet lake at night", "red desert dunes at noon", "a pine forest in winter", "a cat"]
    pictures = [render(p, size=(256, 256), seed=1) for p in prompts]
    for i in range(len(pictures)):
        for j in range(i + 1, len(pictures)):
            assert mean_difference(pictures[i], pictures[j]) > 10, (prompts[i], prompts[j])


def test_different_seeds_give_different_pictures() -> None:
    assert mean_difference(render("a harbour", size=(256, 256), seed=1), render("a harbour", size=(256, 256), seed=2)) > 5


def test_a_real_picture_not_flat_and_captioned() -> None:
    png = render("mountains over a lake", size=(320, 240), seed=3)
    image = Image.open(io.BytesIO(png)).convert("RGB")
    assert image.size == (320, 240)
    colours = image.getcolors(maxcolors=320 * 240)
    assert colours is not None and len(colours) > 200  # gradients and shapes, not text on grey
    # The caption band at the bottom holds light text on a dark band.
    band = image.crop((0, 200, 320, 240)).convert("L")
    low, high = band.getextrema()
    assert high > 200 and low < 80


def test_colour_words_steer_the_palette() -> None:
    def mean_hue(png: bytes) -> float:
        return ImageStat.Stat(Image.open(io.BytesIO(png)).convert("HSV").crop((0, 0, 256, 100))).mean[0]

    blue = [mean_hue(render(f"blue {w}", size=(256, 256), seed=5, style="abstract")) for w in ("dream", "song")]
    red = [mean_hue(render(f"red {w}", size=(256, 256), seed=5, style="abstract")) for w in ("dream", "song")]
    assert all(abs(b - r) > 20 for b in blue for r in red)


def test_unknown_style_and_bad_size_are_value_errors() -> None:
    with pytest.raises(ValueError, match="unknown style"):
        render("x", style="cubism")
    with pytest.raises(ValueError):
        render("x", size=(0, 10))


def test_provider_renders_off_the_event_loop() -> None:
    provider = PillowProvider(max_side=512)
    ticks = 0

    async def ticker(done: asyncio.Event) -> None:
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            await asyncio.sleep(0)

    async def main() -> bytes:
        done = asyncio.Event()
        task = asyncio.create_task(ticker(done))
        await asyncio.sleep(0)
        before = ticks
        png = await provider.generate("a busy loop", size=(512, 512), seed=1, style=None)
        done.set()
        await task
        # The ticker ran while the picture was drawn in a thread.
        assert ticks > before
        return png

    png = asyncio.run(main())
    assert Image.open(io.BytesIO(png)).size == (512, 512)


def test_provider_refuses_oversized_requests() -> None:
    with pytest.raises(ValueError, match="larger than 256"):
        asyncio.run(PillowProvider(max_side=256).generate("x", size=(512, 512), seed=1, style=None))
