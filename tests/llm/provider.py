"""A tiny OpenAI-compatible chat-completions server on 127.0.0.1 for tests.

It records every request (body and headers) and answers from a script: each
request takes the next scripted responder, and when the script is empty it
echoes the last user message (``"echo: <text>"``), streaming it when asked.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

Responder = Callable[[web.Request, dict[str, Any]], Awaitable[web.StreamResponse]]


@dataclass
class Seen:
    """One request the provider received."""

    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: dict[str, Any]


def last_user_text(body: dict[str, Any]) -> str:
    for message in reversed(body.get("messages", [])):
        if message.get("role") == "user":
            content = message["content"]
            if isinstance(content, list):
                return " ".join(p.get("text", "") for p in content if p.get("type") == "text")
            return content
    return ""


def completion(text: str, finish_reason: str = "stop") -> dict[str, Any]:
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "model": "test-model",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish_reason}],
    }


async def sse(request: web.Request, pieces: list[str], *, done: bool = True, finish: str | None = "stop") -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    for i, piece in enumerate(pieces):
        chunk = {"choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]}
        await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
        if i == 0:
            await response.write(b": keep-alive comment\n\n")
    if finish is not None:
        chunk = {"choices": [{"index": 0, "delta": {}, "finish_reason": finish}]}
        await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
    if done:
        await response.write(b"data: [DONE]\n\n")
    await response.write_eof()
    return response


def split_pieces(text: str, size: int = 3) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


# --- responders ----------------------------------------------------------------


def reply_with(text: str, finish_reason: str = "stop") -> Responder:
    async def respond(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        if body.get("stream"):
            return await sse(request, split_pieces(text), finish=finish_reason)
        return web.json_response(completion(text, finish_reason))

    return respond


def fail_with(status: int, headers: dict[str, str] | None = None, body: str = '{"error": {"message": "boom"}}') -> Responder:
    async def respond(request: web.Request, _body: dict[str, Any]) -> web.StreamResponse:
        return web.Response(status=status, text=body, headers=headers or {}, content_type="application/json")

    return respond


def raw(payload: bytes, content_type: str = "application/json", status: int = 200) -> Responder:
    async def respond(request: web.Request, _body: dict[str, Any]) -> web.StreamResponse:
        return web.Response(status=status, body=payload, content_type=content_type)

    return respond


async def echo(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
    text = f"echo: {last_user_text(body)}"
    if body.get("stream"):
        return await sse(request, split_pieces(text))
    return web.json_response(completion(text))


@dataclass
class FakeProvider:
    """The server. ``script`` holds responders for the next requests;
    ``hold`` maps a user text to an event the reply waits for."""

    script: deque[Responder] = field(default_factory=deque)
    seen: list[Seen] = field(default_factory=list)
    hold: dict[str, asyncio.Event] = field(default_factory=dict)
    arrived: dict[str, asyncio.Event] = field(default_factory=dict)
    default: Responder = echo
    # Answers POST /embeddings when set: texts -> vectors.
    embedder: Callable[[list[str]], list[list[float]]] | None = None
    runner: web.AppRunner | None = None
    base_url: str = ""

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw_body = await request.read()
        body = json.loads(raw_body) if raw_body else {}
        self.seen.append(Seen(request.path, dict(request.query), dict(request.headers), body))
        user_text = last_user_text(body)
        if user_text in self.arrived:
            self.arrived[user_text].set()
        if user_text in self.hold:
            await self.hold[user_text].wait()
        responder = self.script.popleft() if self.script else self.default
        return await responder(request, body)

    async def _embeddings(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.seen.append(Seen(request.path, dict(request.query), dict(request.headers), body))
        if self.embedder is None:
            return web.json_response({"error": {"message": "no embeddings here"}}, status=404)
        vectors = self.embedder(list(body["input"]))
        data = [{"object": "embedding", "index": n, "embedding": v} for n, v in enumerate(vectors)]
        return web.json_response({"object": "list", "data": data, "model": body.get("model")})

    async def _models(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({"object": "list", "data": [{"id": "test-model", "object": "model"}]})

    async def start(self, prefix: str = "/v1") -> str:
        app = web.Application()
        app.router.add_post(f"{prefix}/chat/completions", self._handle)
        app.router.add_get(f"{prefix}/models", self._models)
        app.router.add_post(f"{prefix}/embeddings", self._embeddings)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base_url = f"http://127.0.0.1:{port}{prefix}"
        return self.base_url

    async def stop(self) -> None:
        for event in self.hold.values():
            event.set()  # a held request must not keep the server from closing
        if self.runner is not None:
            await self.runner.cleanup()

    @property
    def bodies(self) -> list[dict[str, Any]]:
        return [s.body for s in self.seen]


class serving:
    """``async with serving(prefix) as provider:`` runs a FakeProvider."""

    def __init__(self, prefix: str = "/v1") -> None:
        self.provider = FakeProvider()
        self.prefix = prefix

    async def __aenter__(self) -> FakeProvider:
        await self.provider.start(self.prefix)
        return self.provider

    async def __aexit__(self, *exc: object) -> None:
        await self.provider.stop()
