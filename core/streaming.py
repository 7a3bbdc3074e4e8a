"""Replies as they are written, for transports that show them live.

The reply hook returns one finished :class:`core.models.Reply`. A reply
plugin that produces text piece by piece (a streaming model) also publishes
each piece on the bot's hub, ``bot.tokens.publish(message.id, piece)``, and
calls ``bot.tokens.finish(message.id)`` when done. A transport that wants
to show the reply while it is written subscribes to the message it is
handling *before* calling ``bot.handle``::

    tokens = bot.tokens.subscribe(message.id)
    handling = asyncio.create_task(bot.handle(message, send))
    shown = ""
    async for piece in tokens:          # ends when the reply is complete
        shown += piece
        ...                              # edit the message, rate-limited
    await handling                       # ``send`` gets the final Reply

``send`` still receives the complete reply (with notes), so a transport
that edits live simply replaces the message's text with it at the end. The
iterator ends when generation ends (successfully or not) and also when the
subscription is closed; it never raises. A subscription that nobody feeds
(a command, a refused message) ends when ``bot.handle`` returns (the core
finishes every message's streams) or when ``tokens.close()`` is called.

What was streamed is a preview: the final reply, the one stored, is what
``send`` receives. A transport posting a preview asks ``bot.may_send``
first, as the core does before any send (docs/MEMORY.md, A4).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

_END = object()


class TokenStream:
    """An async iterator of text pieces of one reply."""

    def __init__(self, hub: TokenHub, message_id: str) -> None:
        self._hub = hub
        self.message_id = message_id
        self._queue: asyncio.Queue[object] = asyncio.Queue()
        self.closed = False

    def __aiter__(self) -> AsyncIterator[str]:
        return self._pieces()

    async def _pieces(self) -> AsyncIterator[str]:
        while True:
            item = await self._queue.get()
            if item is _END:
                return
            assert isinstance(item, str)
            yield item

    def _put(self, piece: str) -> None:
        if not self.closed:
            self._queue.put_nowait(piece)

    def close(self) -> None:
        """End the iteration (idempotent) and unsubscribe."""
        if not self.closed:
            self.closed = True
            self._queue.put_nowait(_END)
        self._hub._drop(self)


class TokenHub:
    """Subscriptions keyed by the id of the message being answered."""

    def __init__(self) -> None:
        self._streams: dict[str, list[TokenStream]] = {}

    def subscribe(self, message_id: str) -> TokenStream:
        stream = TokenStream(self, message_id)
        self._streams.setdefault(message_id, []).append(stream)
        return stream

    def wanted(self, message_id: str) -> bool:
        return bool(self._streams.get(message_id))

    def publish(self, message_id: str, piece: str) -> None:
        for stream in self._streams.get(message_id, []):
            stream._put(piece)

    def finish(self, message_id: str) -> None:
        for stream in list(self._streams.get(message_id, [])):
            stream.close()

    def _drop(self, stream: TokenStream) -> None:
        streams = self._streams.get(stream.message_id)
        if streams and stream in streams:
            streams.remove(stream)
        if not streams:
            self._streams.pop(stream.message_id, None)
