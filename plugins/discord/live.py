"""A reply shown while it is written: post the first words, then edit.

The reply plugin publishes the reply piece by piece on the bot's hub
(``bot.tokens``, :mod:`core.streaming`); :class:`LiveReply` follows it:

- the first piece is posted at once (as a reply to the user's message,
  with the nonce of the reply's first part, mentions off), after the core's
  ``may_send`` check: an instance that lost the message shows nothing;
- then each posted message is edited at most once per ``interval`` seconds
  (Discord rate-limits edits; the final edit waits its turn too), and text
  past 2,000 characters goes on in a follow-up message, split where
  :func:`split_message` splits;
- when the core sends the final reply (the one stored), the messages are
  edited to show exactly it (notes and files included), follow-ups posted
  or left-over ones deleted. A preview that failed to post or edit is given
  up quietly; the final reply is still sent.

A stream that breaks midway is the reply plugin's to end clearly (the llm
plugin ends the text with "[reply interrupted]"); this shows what it sends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import discord

from core.models import IncomingMessage, Reply, Sent
from core.streaming import TokenStream
from plugins.discord.parts import allowed_mentions, reply_parts
from plugins.discord.split import split_message

log = logging.getLogger("plugins.discord")


class LiveReply:
    """The live reply to one Discord message. ``client`` is the transport
    (:class:`plugins.discord.client.TransportMixin`)."""

    def __init__(
        self,
        client: Any,
        message: discord.Message,
        incoming: IncomingMessage,
        interval: float,
        before_first: Callable[[], Awaitable[None]],
        place: Any = None,
    ) -> None:
        self.client = client
        self.place = place
        self.message = message
        self.incoming = incoming
        self.interval = interval
        self.before_first = before_first
        self.text = ""
        self.posted: list[discord.Message] = []
        self.shown: list[str | None] = []
        self.edited_at: dict[int, float] = {}  # message id -> loop time of its last edit
        self.given_up = False
        self.stopping = False
        self.painting = False
        self.changed = asyncio.Event()
        self.reader: asyncio.Task[None] | None = None
        self.painter: asyncio.Task[None] | None = None

    def follow(self, tokens: TokenStream) -> None:
        self.tokens = tokens
        self.reader = asyncio.create_task(self._read(tokens))
        self.painter = asyncio.create_task(self._paint_loop())

    async def _read(self, tokens: TokenStream) -> None:
        async for piece in tokens:
            self.text += piece
            self.changed.set()

    async def _paint_loop(self) -> None:
        while not self.stopping and not self.given_up:
            await self.changed.wait()
            self.changed.clear()
            if self.stopping:
                return
            self.painting = True
            try:
                await self._paint()
            except (discord.HTTPException, aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
                log.warning("live reply to %s given up (%s); the final reply will still be sent", self.message.id, exc)
                self.given_up = True
            finally:
                self.painting = False
            await asyncio.sleep(self.interval)

    async def _paint(self) -> None:
        chunks = split_message(self.text)
        if not chunks:
            return
        if not self.posted:
            if not await self.client.core.may_send(self.incoming):
                self.given_up = True
                return
            await self.before_first()
        mentions = discord.AllowedMentions.none()
        for index, chunk in enumerate(chunks):
            if index < len(self.posted):
                if self.shown[index] != chunk:
                    await self._edit(index, chunk, [], mentions)
            else:
                self.posted.append(await self.client.post_part(self.message, index, chunk, [], mentions, self.place))
                self.shown.append(chunk)

    async def _edit(self, index: int, text: str | None, files: list[Any], mentions: discord.AllowedMentions) -> None:
        """Edit posted message ``index``, no sooner than ``interval`` after
        its last edit (the final one waits too: the limit is Discord's)."""
        loop = asyncio.get_running_loop()
        message_id = self.posted[index].id
        last = self.edited_at.get(message_id)
        if last is not None and loop.time() - last < self.interval:
            await asyncio.sleep(self.interval - (loop.time() - last))
        self.posted[index] = await self.client.edit_part(self.posted[index], text, files, mentions)
        self.edited_at[message_id] = loop.time()
        self.shown[index] = text

    async def close(self) -> None:
        """Stop following (a paint in flight finishes first). Idempotent."""
        self.stopping = True
        for task in (self.reader, self.painter):
            if task is None:
                continue
            if task is self.painter and self.painting:
                with contextlib.suppress(asyncio.CancelledError, asyncio.TimeoutError):
                    await asyncio.wait_for(asyncio.shield(task), 30)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.reader is not None:
            self.tokens.close()

    async def deliver(self, reply: Reply) -> Sent:
        """Show the final ``reply`` (the stored one) in place of the preview."""
        await self.close()
        if not self.posted:
            return await self.client.send_reply(self.message, reply, self.place)
        mentions = allowed_mentions(reply)
        parts = reply_parts(reply)
        for index, (text, files) in enumerate(parts):
            if index < len(self.posted):
                if files or self.shown[index] != text or reply.allow_mentions:
                    await self._edit(index, text, files, mentions)
            else:
                self.posted.append(await self.client.post_part(self.message, index, text, files, mentions, self.place))
                self.shown.append(text)
        for extra in self.posted[len(parts):]:
            with contextlib.suppress(discord.NotFound):
                await extra.delete()
        first = self.posted[0]
        return Sent(id=str(first.id), timestamp=first.created_at.timestamp())
