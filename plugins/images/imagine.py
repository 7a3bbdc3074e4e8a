"""Parsing ``imagine <prompt> [--size WxH] [--seed N] [--style S]``."""

from __future__ import annotations

import re
from dataclasses import dataclass

from plugins.images.settings import parse_size

OPTIONS = ("size", "seed", "style")
# "--size 512x512", "--size=512x512", "size:512x512" or "size=512x512".
_OPTION = re.compile(r"(?:^|\s)(?:--(size|seed|style)(?:=|\s+)|(size|seed|style)[:=])(\S+)", re.IGNORECASE)
# Discord's slash command joins its option values in order (prompt, size,
# seed, style) without their names: "a cat 640x480 7 pixel". A trailing
# size, optionally followed by a seed and a style, is read as those.
_POSITIONAL_TAIL = re.compile(r"\s(\d{1,5}[x×]\d{1,5})(?:\s+(-?\d{1,19}))?(?:\s+([A-Za-z][\w-]{0,31}))?\s*$")
MAX_PROMPT = 1000


@dataclass(slots=True)
class ImagineRequest:
    prompt: str
    size: tuple[int, int]
    seed: int | None
    style: str | None


def parse_imagine(args: str, default_size: str, max_side: int) -> ImagineRequest:
    """Split the command's arguments; ``ValueError`` says what is wrong."""
    found: dict[str, str] = {}

    def take(match: re.Match[str]) -> str:
        name = (match.group(1) or match.group(2)).lower()
        if name in found:
            raise ValueError(f"--{name} is given twice")
        found[name] = match.group(3)
        return " "

    rest = _OPTION.sub(take, args)
    if not found:
        tail = _POSITIONAL_TAIL.search(rest)
        if tail:
            rest = rest[: tail.start()]
            for name, value in zip(OPTIONS, tail.groups()):
                if value is not None:
                    found[name] = value
    prompt = " ".join(rest.split())
    if not prompt:
        raise ValueError("tell me what to draw, e.g. imagine a lighthouse at dusk --size 512x512")
    if len(prompt) > MAX_PROMPT:
        raise ValueError(f"the prompt is {len(prompt)} characters; the limit is {MAX_PROMPT}")
    size = parse_size(found.get("size", default_size))
    if not (16 <= size[0] <= max_side and 16 <= size[1] <= max_side):
        raise ValueError(f"size {size[0]}x{size[1]} is out of range: each side must be 16 to {max_side}")
    seed = None
    if "seed" in found:
        if not re.fullmatch(r"-?\d{1,19}", found["seed"]):
            raise ValueError(f"seed {found['seed']!r} is not a whole number")
        seed = int(found["seed"])
    style = found.get("style")
    return ImagineRequest(prompt, size, seed, style.lower() if style else None)
