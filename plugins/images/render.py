"""The offline image generator: a procedural picture drawn with Pillow.

A prompt and a seed always give the same picture (every choice comes from a
SHA-256 of them, never from global randomness), and different prompts give
visibly different ones: the palette, time of day, mountains, water, trees
and shapes all derive from the hash, and a few words of the prompt steer
them ("night", "sunset", "sea", "forest", "snow", "desert", colour names).
The prompt is written as a caption along the bottom.

:func:`render` is blocking CPU work; :class:`PillowProvider` runs it in a
thread so the event loop keeps serving other users.
"""

from __future__ import annotations

import asyncio
import colorsys
import hashlib
import io
import random
import textwrap
from typing import cast

from PIL import Image, ImageChops, ImageDraw, ImageFilter, ImageFont

STYLES = ("landscape", "abstract", "pixel")

_COLOUR_HUES = {
    "red": 0.0, "orange": 0.07, "gold": 0.12, "yellow": 0.15, "green": 0.33, "teal": 0.48,
    "cyan": 0.5, "blue": 0.6, "purple": 0.75, "violet": 0.78, "pink": 0.9, "magenta": 0.85,
}


def _rng(prompt: str, seed: int | None, style: str) -> random.Random:
    digest = hashlib.sha256(f"{prompt}\x00{seed}\x00{style}".encode()).digest()
    return random.Random(int.from_bytes(digest, "big"))


def _hsv(h: float, s: float, v: float, a: int = 255) -> tuple[int, int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, max(0.0, min(1.0, s)), max(0.0, min(1.0, v)))
    return int(r * 255), int(g * 255), int(b * 255), a


def _mix(c1: tuple[int, ...], c2: tuple[int, ...], t: float) -> tuple[int, int, int, int]:
    return tuple(int(a + (b - a) * t) for a, b in zip(c1, c2))  # type: ignore[return-value]


def _gradient(size: tuple[int, int], top: tuple[int, ...], bottom: tuple[int, ...]) -> Image.Image:
    mask = Image.linear_gradient("L").resize(size)
    return Image.composite(Image.new("RGBA", size, bottom), Image.new("RGBA", size, top), mask)


def _ridge(rng: random.Random, width: int, base: float, roughness: float, points: int = 65) -> list[float]:
    """A mountain ridge by midpoint displacement: heights for ``points``
    evenly spaced x positions."""
    heights = [0.0] * points
    heights[0], heights[-1] = base + rng.uniform(-1, 1) * roughness, base + rng.uniform(-1, 1) * roughness
    step, spread = points - 1, roughness
    while step > 1:
        half = step // 2
        for i in range(half, points - 1, step):
            heights[i] = (heights[i - half] + heights[i + half]) / 2 + rng.uniform(-1, 1) * spread
        step, spread = half, spread * 0.55
    return heights


class _Scene:
    """The choices a prompt makes, before any drawing."""

    def __init__(self, prompt: str, rng: random.Random) -> None:
        words = set(prompt.lower().replace(",", " ").replace(".", " ").split())
        hues = [h for name, h in _COLOUR_HUES.items() if name in words]
        self.hue = hues[0] if hues else rng.random()
        if words & {"night", "moon", "stars", "starry", "midnight"}:
            self.time = "night"
        elif words & {"sunset", "sunrise", "dusk", "dawn", "evening"}:
            self.time = "dusk"
        elif words & {"day", "noon", "sunny", "morning"}:
            self.time = "day"
        else:
            self.time = rng.choice(["day", "dusk", "night", "day"])
        self.water = bool(words & {"sea", "lake", "ocean", "water", "river", "beach", "harbor", "boat"}) or rng.random() < 0.35
        self.trees = bool(words & {"forest", "tree", "trees", "woods", "pine", "jungle"}) or rng.random() < 0.5
        self.snow = bool(words & {"snow", "winter", "ice", "frozen", "alps"}) or rng.random() < 0.2
        self.desert = bool(words & {"desert", "dune", "dunes", "sand", "mars"})
        self.layers = rng.randint(3, 5)


def _sky(size: tuple[int, int], scene: _Scene, rng: random.Random) -> Image.Image:
    h = scene.hue
    if scene.time == "night":
        top, bottom = _hsv(h + 0.6, 0.7, 0.12), _hsv(h + 0.55, 0.6, 0.35)
    elif scene.time == "dusk":
        top, bottom = _hsv(h + 0.7, 0.55, 0.45), _hsv(h + 0.05, 0.75, 0.98)
    else:
        top, bottom = _hsv(0.55 + (h - 0.5) * 0.15, 0.6, 0.95), _hsv(0.55 + (h - 0.5) * 0.1, 0.2, 1.0)
    sky = _gradient(size, top, bottom)
    draw = ImageDraw.Draw(sky)
    width, height = size
    if scene.time == "night":
        for _ in range(int(width * height / 900)):
            x, y = rng.randrange(width), rng.randrange(int(height * 0.7))
            v = rng.randint(150, 255)
            draw.point((x, y), fill=(v, v, min(255, v + 20), 255))
    return sky


def _sun(canvas: Image.Image, scene: _Scene, rng: random.Random) -> None:
    width, height = canvas.size
    glow = Image.new("RGBA", canvas.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(glow)
    cx, cy = rng.uniform(0.15, 0.85) * width, rng.uniform(0.12, 0.45) * height
    radius = rng.uniform(0.05, 0.1) * min(width, height)
    if scene.time == "night":
        colour = (235, 235, 215)
    elif scene.time == "dusk":
        colour = _hsv(scene.hue + 0.02, 0.8, 1.0)[:3]
    else:
        colour = (255, 245, 200)
    for step in range(6, 0, -1):
        r = radius * (1 + step * 0.45)
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=(*colour, 14))
    draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=(*colour, 255))
    canvas.alpha_composite(glow.filter(ImageFilter.GaussianBlur(radius * 0.3)))


def _mountains(canvas: Image.Image, scene: _Scene, rng: random.Random, horizon: float) -> None:
    width, height = canvas.size
    # An RGB canvas: getpixel gives a tuple.
    haze = cast(tuple[int, ...], canvas.getpixel((width // 2, int(height * horizon) - 1)))
    near = _hsv(scene.hue + (0.08 if scene.desert else 0.3), 0.55, 0.25 if scene.time != "night" else 0.1)
    if scene.desert:
        near = _hsv(0.08 + scene.hue * 0.05, 0.6, 0.75 if scene.time == "day" else 0.4)
    for layer in range(scene.layers):
        depth = layer / max(1, scene.layers - 1)  # 0 far .. 1 near
        colour = _mix(haze, near, 0.25 + 0.75 * depth)
        base = horizon - 0.28 + depth * 0.26
        roughness = (0.05 if scene.desert else 0.12) * (1.2 - depth * 0.5)
        ridge = _ridge(rng, width, base, roughness)
        points = [(i * width / (len(ridge) - 1), r * height) for i, r in enumerate(ridge)]
        polygon = [(0, height), *points, (width, height)]
        layer_image = Image.new("RGBA", canvas.size, (0, 0, 0, 0))
        draw = ImageDraw.Draw(layer_image)
        draw.polygon(polygon, fill=colour)
        if scene.snow and depth < 0.7:
            # Snow is the part of the mountain above a wavy snow line.
            mountain = Image.new("L", canvas.size, 0)
            ImageDraw.Draw(mountain).polygon(polygon, fill=255)
            snowline = (min(ridge) + 0.06 + 0.03 * depth) * height
            wave = [(i * width / 32, snowline + rng.uniform(-0.015, 0.015) * height) for i in range(33)]
            above = Image.new("L", canvas.size, 0)
            ImageDraw.Draw(above).polygon([(0, 0), (width, 0), *reversed(wave)], fill=235)
            layer_image.paste((246, 246, 252, 255), (0, 0), ImageChops.multiply(mountain, above))
        if scene.trees and depth > 0.6:
            for _ in range(int(width / 9)):
                i = rng.randrange(len(points))
                x, y = points[i]
                x += rng.uniform(-width / 128, width / 128)
                th = rng.uniform(0.03, 0.07) * height
                tw = th * 0.35
                tree = _mix(colour, (0, 0, 0, 255), 0.35)
                draw.polygon([(x - tw, y + th * 0.3), (x, y - th), (x + tw, y + th * 0.3)], fill=tree)
        canvas.alpha_composite(layer_image)


def _water(canvas: Image.Image, scene: _Scene, rng: random.Random, horizon: float) -> None:
    width, height = canvas.size
    top = int(height * horizon)
    above = canvas.crop((0, max(0, 2 * top - height), width, top)).transpose(Image.Transpose.FLIP_TOP_BOTTOM)
    reflection = above.resize((width, height - top))
    tint = Image.new("RGBA", reflection.size, _hsv(scene.hue + 0.55, 0.5, 0.35, 110))
    reflection.alpha_composite(tint)
    draw = ImageDraw.Draw(reflection)
    for _ in range(int(height / 6)):
        y = rng.randrange(reflection.height)
        x = rng.uniform(-0.1, 0.9) * width
        length = rng.uniform(0.05, 0.3) * width
        draw.line((x, y, x + length, y), fill=(255, 255, 255, rng.randint(20, 70)), width=1)
    canvas.alpha_composite(reflection, (0, top))


def _landscape(size: tuple[int, int], prompt: str, rng: random.Random) -> Image.Image:
    scene = _Scene(prompt, rng)
    horizon = rng.uniform(0.62, 0.72) if scene.water else 0.98
    canvas = _sky(size, scene, rng)
    _sun(canvas, scene, rng)
    _mountains(canvas, scene, rng, min(horizon, 0.9))
    if scene.water:
        _water(canvas, scene, rng, horizon)
    return canvas


def _abstract(size: tuple[int, int], prompt: str, rng: random.Random) -> Image.Image:
    scene = _Scene(prompt, rng)
    width, height = size
    canvas = _gradient(size, _hsv(scene.hue, 0.6, 0.3), _hsv(scene.hue + 0.15, 0.5, 0.9))
    for _ in range(rng.randint(18, 40)):
        layer = Image.new("RGBA", size, (0, 0, 0, 0))
        draw = ImageDraw.Draw(layer)
        colour = _hsv(scene.hue + rng.choice([0, 0.08, 0.5, 0.33, -0.08]), rng.uniform(0.4, 0.9), rng.uniform(0.4, 1.0), rng.randint(60, 200))
        x, y = rng.uniform(-0.1, 1.0) * width, rng.uniform(-0.1, 1.0) * height
        w, h = rng.uniform(0.05, 0.45) * width, rng.uniform(0.05, 0.45) * height
        kind = rng.choice(["circle", "rect", "line", "triangle"])
        if kind == "circle":
            draw.ellipse((x, y, x + w, y + w), fill=colour)
        elif kind == "rect":
            draw.rectangle((x, y, x + w, y + h), fill=colour)
        elif kind == "line":
            draw.line((x, y, x + w, y + h), fill=colour, width=max(2, int(min(size) * 0.02)))
        else:
            draw.polygon([(x, y + h), (x + w / 2, y), (x + w, y + h)], fill=colour)
        canvas.alpha_composite(layer)
    return canvas


def _pixel(size: tuple[int, int], prompt: str, rng: random.Random) -> Image.Image:
    small = (max(8, size[0] // 8), max(8, size[1] // 8))
    picture = _landscape(small, prompt, rng).convert("RGB").quantize(colors=16, dither=Image.Dither.NONE)
    return picture.convert("RGBA").resize(size, Image.Resampling.NEAREST)


_STYLE_DRAWERS = {"landscape": _landscape, "abstract": _abstract, "pixel": _pixel}


def _caption(canvas: Image.Image, prompt: str) -> None:
    width, height = canvas.size
    if height < 48 or width < 64 or not prompt.strip():
        return
    font_size = max(10, min(28, width // 28))
    font = ImageFont.load_default(size=font_size)
    chars = max(8, int(width / (font_size * 0.55)))
    lines = textwrap.wrap(" ".join(prompt.split()), chars)[:2]
    if len(textwrap.wrap(" ".join(prompt.split()), chars)) > 2:
        lines[-1] = lines[-1][: max(1, chars - 1)] + "…"
    line_height = int(font_size * 1.3)
    band = line_height * len(lines) + font_size
    overlay = Image.new("RGBA", canvas.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    draw.rectangle((0, height - band, width, height), fill=(0, 0, 0, 140))
    y = height - band + font_size // 2
    for line in lines:
        draw.text((font_size // 2, y), line, font=font, fill=(255, 255, 255, 235))
        y += line_height
    canvas.alpha_composite(overlay)


def render(prompt: str, *, size: tuple[int, int] = (512, 512), seed: int | None = None, style: str | None = None) -> bytes:
    """Draw ``prompt`` as a PNG (blocking). Same arguments, same bytes."""
    style = (style or "landscape").lower()
    if style not in _STYLE_DRAWERS:
        raise ValueError(f"unknown style {style!r}; choose from {', '.join(STYLES)}")
    width, height = size
    if width < 1 or height < 1:
        raise ValueError("size must be at least 1x1")
    rng = _rng(prompt, seed, style)
    canvas = _STYLE_DRAWERS[style]((width, height), prompt, rng)
    _caption(canvas, prompt)
    out = io.BytesIO()
    canvas.convert("RGB").save(out, "PNG", compress_level=6)
    return out.getvalue()


class PillowProvider:
    """The default, offline image provider."""

    name = "pillow"
    styles = STYLES

    def __init__(self, max_side: int = 2048) -> None:
        self.max_side = max_side

    async def generate(self, prompt: str, *, size: tuple[int, int], seed: int | None, style: str | None) -> bytes:
        if max(size) > self.max_side:
            raise ValueError(f"size {size[0]}x{size[1]} is larger than {self.max_side} on a side")
        return await asyncio.to_thread(render, prompt, size=size, seed=seed, style=style)

    def __repr__(self) -> str:
        return f"PillowProvider(max_side={self.max_side})"

