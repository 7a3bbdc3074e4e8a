"""Optional semantic recall: embeddings from the configured provider's
OpenAI-compatible ``/embeddings`` endpoint (the llm plugin's base URL, key
and HTTP session), stored beside the messages, compared by cosine.

Vectors are normalised and packed as little-endian float32, so a cosine is
a dot product (``sum(map(mul, a, b))``, in C): 50 ms for :data:`REACH`
vectors of 1536 dimensions (33 ns a dimension, unpacking included, measured
on the 2-core development machine), so semantic recall needs a larger
``time_budget`` than words alone. No numpy, no vector extension.
"""

from __future__ import annotations

import math
import sys
from array import array
from collections.abc import Iterable
from operator import mul
from typing import Any

# How many of a user's newest vectors in a place a search compares.
REACH = 1000
MAX_INPUT_CHARS = 8000


class EmbeddingError(Exception):
    """The endpoint gave no usable vectors (the text search still runs)."""


def embeddings_url(base_url: str) -> str:
    """``{base}/embeddings`` beside ``{base}/chat/completions``, the base
    URL's query kept (Azure's ``api-version``)."""
    base, _, query = base_url.partition("?")
    base = base.rstrip("/").removesuffix("/chat/completions").rstrip("/")
    return f"{base}/embeddings" + (f"?{query}" if query else "")


def pack(vector: Iterable[float]) -> bytes:
    values = array("f", vector)
    norm = math.sqrt(sum(map(mul, values, values))) or 1.0
    values = array("f", (v / norm for v in values))
    if sys.byteorder != "little":
        values.byteswap()
    return values.tobytes()


def unpack(blob: bytes) -> array:
    values = array("f")
    values.frombytes(bytes(blob))
    if sys.byteorder != "little":
        values.byteswap()
    return values


def similarity(a: array, b: array) -> float:
    if len(a) != len(b):
        return -1.0
    return float(sum(map(mul, a, b)))


async def embed(runtime: Any, model: str, texts: list[str], timeout: float) -> list[bytes]:
    """Packed vectors of ``texts``, one request; raises :class:`EmbeddingError`."""
    import aiohttp

    client = getattr(runtime, "client", None)
    http = getattr(runtime, "http", None)
    base = getattr(getattr(runtime, "settings", None), "base_url", None)
    if client is None or http is None or not base:
        raise EmbeddingError("no model provider is configured")
    body = {"model": model, "input": [t[:MAX_INPUT_CHARS] for t in texts]}
    try:
        async with http.post(embeddings_url(base), json=body, headers=client.headers(), timeout=aiohttp.ClientTimeout(total=timeout)) as response:
            if response.status != 200:
                raise EmbeddingError(f"HTTP {response.status}")
            data = await response.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        raise EmbeddingError(type(exc).__name__) from None
    try:
        items = sorted(data["data"], key=lambda item: item.get("index", 0))
        vectors = [pack(float(v) for v in item["embedding"]) for item in items]
    except (KeyError, TypeError, ValueError) as exc:
        raise EmbeddingError(f"not an embeddings response ({type(exc).__name__})") from None
    if len(vectors) != len(texts) or not all(vectors):
        raise EmbeddingError("wrong number of vectors")
    return vectors
