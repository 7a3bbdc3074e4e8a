"""The images plugin's work, one :class:`ImagesService` per running bot.

- :meth:`ImagesService.prepare` checks every image a user sends (before the
  core stores the message): bytes fetched under the limit, decoded and
  re-encoded off the event loop, stored in the media store, and the
  attachment filled in (hash, size, dimensions, description) with its bytes
  and original URL dropped.
- :meth:`ImagesService.imagine` is the ``imagine`` command.
- forget/export/load work on the media store.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
import math
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from core.errors import Refused
from core.models import Attachment, IncomingMessage, Invocation, Reply
from plugins.images.imagine import parse_imagine
from plugins.images.media import MediaStore
from plugins.images.providers import (
    Automatic1111Provider,
    OpenAIImagesProvider,
    ProviderDown,
    ProviderError,
    read_limited,
)
from plugins.images.ratelimit import RateLimiter
from plugins.images.render import PillowProvider
from plugins.images.decoder import DecodeBudget, DecodePool
from plugins.images.sanitize import CleanImage, ImageRejected, Limits, check_bytes, sanitize, sniff_format
from plugins.images.settings import ImagesSettings

log = logging.getLogger("plugins.images")

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".jpe", ".gif", ".webp", ".bmp", ".tif", ".tiff",
                    ".heic", ".heif", ".avif", ".svg", ".ico", ".jfif")
USAGE = "imagine <what to draw> [--size WxH] [--seed N] [--style S]"
# Discord refuses file descriptions (alt text) longer than this.
MAX_DESCRIPTION = 1000


def _safe_filename(name: str, extension: str) -> str:
    stem = Path(name or "image").stem
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._")[:80] or "image"
    return f"{stem}{extension}"


def _mib(n: int) -> str:
    return f"{n / (1024 * 1024):g} MiB"


class ImagesService:
    """Everything the images plugin keeps for one bot."""

    def __init__(self, bot: Any, settings: ImagesSettings, media: MediaStore) -> None:
        self.bot = bot
        self.settings = settings
        self.media = media
        self.limits = Limits(
            max_bytes=settings.max_bytes,
            max_pixels=settings.max_pixels,
            allowed_formats=tuple(settings.allowed_formats),
            upload_limit=settings.upload_limit,
            thumbnail_size=settings.thumbnail_size,
            max_png_chunks=settings.max_png_chunks,
            max_metadata_chunk=settings.max_metadata_chunk,
            jpeg_decode_side=settings.jpeg_decode_side,
        )
        self.rate = RateLimiter(settings.rate_limit, settings.rate_window, bot.clock.now)
        # One user's image must not stall the bot or other users: decodes run
        # in a few worker processes, each bounded in time and memory.
        self.decoder = DecodePool(
            DecodeBudget(settings.decode_timeout, settings.decode_memory, settings.decode_workers)
        )
        self._http: aiohttp.ClientSession | None = None
        self.providers = self._build_providers()
        # provider name -> (clock time it may be tried again, why it is down)
        self._outages: dict[str, tuple[float, str]] = {}

    @classmethod
    async def create(cls, bot: Any, settings: ImagesSettings) -> ImagesService:
        root = settings.resolved_media_dir(bot.settings.data_dir)
        media = await asyncio.to_thread(MediaStore, root)
        return cls(bot, settings, media)

    def _build_providers(self) -> dict[str, Any]:
        s = self.settings
        common = {"api_key": s.api_key, "model": s.model, "timeout": s.timeout, "max_bytes": s.max_bytes}
        return {
            "pillow": PillowProvider(max_side=s.max_size),
            "openai": OpenAIImagesProvider(
                s.resolved_base_url("openai") or "", response_format=s.response_format, **common
            ),
            "automatic1111": Automatic1111Provider(s.resolved_base_url("automatic1111") or "", steps=s.steps, **common),
        }

    async def close(self) -> None:
        for provider in self.providers.values():
            closer = getattr(provider, "close", None)
            if closer is not None:
                with contextlib.suppress(Exception):
                    await closer()
        if self._http is not None and not self._http.closed:
            await self._http.close()
        await asyncio.to_thread(self.decoder.close)
        await asyncio.to_thread(self.media.close)

    # --- user images ---------------------------------------------------------------

    @staticmethod
    def looks_like_image(attachment: Attachment) -> bool:
        """Whether an attachment is ours to check: it claims to be an image
        (type or name) or its bytes are one."""
        if attachment.sha256 and attachment.data is None:
            return False  # already checked and stored
        if attachment.content_type.lower().startswith("image/"):
            return True
        if attachment.filename.lower().endswith(IMAGE_EXTENSIONS):
            return True
        return attachment.data is not None and sniff_format(attachment.data[:16]) is not None

    async def prepare(self, message: IncomingMessage) -> None:
        """Check, clean and store each image of ``message``; raise
        :class:`Refused` with the reason when one cannot be taken.

        ``message.attachments`` is replaced by a new list of new objects:
        the transport's own attachments are left as they came (another
        instance may be handed the same message)."""
        fetched: list[tuple[int, Attachment, bytes]] = []
        pixels = 0
        for index, attachment in enumerate(message.attachments):
            if not self.looks_like_image(attachment):
                continue
            try:
                data = attachment.data if attachment.data is not None else await self._fetch(attachment)
                # The budget, before anything is decoded: header checks only.
                _fmt, width, height = check_bytes(data, self.limits)
            except ImageRejected as rejected:
                raise Refused(self._refusal(attachment, str(rejected))) from None
            pixels += width * height
            if pixels > self.settings.max_message_pixels:
                raise Refused(
                    f"The images of this message hold more than {self.settings.max_message_pixels:,} pixels "
                    "together, the limit per message. Nothing was stored: please send them in separate messages."
                )
            fetched.append((index, attachment, data))
        checked: list[tuple[int, Attachment, CleanImage]] = []
        for index, attachment, data in fetched:
            try:
                clean = await self.decoder.run(sanitize, data, self.limits)
            except ImageRejected as rejected:
                raise Refused(self._refusal(attachment, str(rejected))) from None
            checked.append((index, attachment, clean))
        if not checked:
            return
        # Stored only once every image passed, so a refused message leaves nothing behind.
        attachments = list(message.attachments)
        for index, original, clean in checked:
            await self._store(clean, owner=message.author_id, kind="upload")
            attachment = dataclasses.replace(original)
            self._fill(attachment, clean, _safe_filename(original.filename, clean.extension))
            attachments[index] = attachment
        message.attachments = attachments

    def _refusal(self, attachment: Attachment, reason: str) -> str:
        formats = ", ".join(f.title() if f != "JPEG" else f for f in self.limits.allowed_formats)
        return (
            f"I could not take the image {attachment.filename!r}: {reason}. "
            f"Nothing was stored. I accept {formats} images up to {_mib(self.limits.max_bytes)} "
            f"and {self.limits.max_pixels:,} pixels."
        )

    async def _store(self, clean: CleanImage, *, owner: str, kind: str) -> None:
        await asyncio.to_thread(
            self.media.put,
            clean.data,
            owner=owner,
            content_type=clean.content_type,
            width=clean.width,
            height=clean.height,
            thumbnail=clean.thumbnail,
            kind=kind,
            now=self.bot.clock.now(),
        )

    @staticmethod
    def _fill(attachment: Attachment, clean: CleanImage, filename: str, description: str | None = None) -> None:
        attachment.filename = filename
        attachment.content_type = clean.content_type
        attachment.size = len(clean.data)
        attachment.sha256 = clean.sha256
        attachment.width = clean.width
        attachment.height = clean.height
        attachment.description = (description or clean.describe())[:MAX_DESCRIPTION]
        # The original may carry GPS and other metadata: neither its bytes
        # nor its URL are kept; the cleaned copy is in the media store.
        attachment.data = None
        attachment.url = None

    async def _fetch(self, attachment: Attachment) -> bytes:
        url = attachment.url
        if not url:
            raise ImageRejected("it arrived without its content")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise ImageRejected("its address is not http(s)")
        hosts = self.settings.fetch_hosts
        if hosts and (parts.hostname or "").lower() not in {h.lower() for h in hosts}:
            raise ImageRejected(f"I only fetch images from {', '.join(hosts)}")
        if attachment.size and attachment.size > self.limits.max_bytes:
            raise ImageRejected(f"the file is {_mib(attachment.size)}; the limit is {_mib(self.limits.max_bytes)}")
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.settings.timeout))
        try:
            async with self._http.get(url) as response:
                if response.status >= 400:
                    raise ImageRejected(f"downloading it failed (HTTP {response.status})")
                return await read_limited(response, self.limits.max_bytes, "the file")
        except ProviderError as exc:
            raise ImageRejected(str(exc)) from None
        except asyncio.TimeoutError:
            raise ImageRejected(f"downloading it took longer than {self.settings.timeout:g} s") from None
        except aiohttp.ClientError as exc:
            raise ImageRejected(f"downloading it failed ({type(exc).__name__})") from None

    # --- imagine -------------------------------------------------------------------

    async def imagine(self, inv: Invocation) -> Reply:
        s = self.settings
        prefix = self.bot.settings.bot.command_prefix
        if s.rate_limit == 0:
            return Reply("Image generation is switched off on this bot.")
        try:
            request = parse_imagine(inv.args, s.default_size, s.max_size)
        except ValueError as exc:
            return Reply(f"{exc}. Usage: {prefix}{USAGE}")
        if request.size[0] * request.size[1] > s.max_pixels:
            return Reply(f"{request.size[0]}x{request.size[1]} is more than {s.max_pixels:,} pixels; ask for a smaller size.")
        provider = self.bot.image_providers.get(s.provider)
        if provider is None:
            available = ", ".join(sorted(self.bot.image_providers)) or "none"
            return Reply(f"The image provider {s.provider!r} is not installed (available: {available}).")
        outage = self._outages.get(s.provider)
        if outage is not None:
            until, why = outage
            if self.bot.clock.now() < until:
                return Reply(
                    f"The image provider {s.provider!r} is down ({why}); I will try it again in "
                    f"{math.ceil(until - self.bot.clock.now())} s."
                )
            del self._outages[s.provider]
        user = inv.message.author_id
        wait = self.rate.try_acquire(user)
        if wait:
            return Reply(
                f"You can make {s.rate_limit} image{'s' if s.rate_limit != 1 else ''} every {s.rate_window:g} s; "
                f"try again in {math.ceil(wait)} s."
            )
        # A concrete seed, so the user can ask for the same picture again.
        seed = request.seed if request.seed is not None else int(hashlib.sha256(request.prompt.encode()).hexdigest()[:8], 16)
        try:
            raw = await asyncio.wait_for(
                provider.generate(request.prompt, size=request.size, seed=seed, style=request.style),
                timeout=s.timeout + 5,
            )
            if not isinstance(raw, (bytes, bytearray)):
                raise ProviderError("the provider returned no image bytes")
            clean = await self.decoder.run(sanitize, bytes(raw), self.limits, force_png=True)
        except asyncio.TimeoutError:
            self.rate.refund(user)
            self._mark_down(f"no answer within {s.timeout:g} s")
            return Reply(f"The image provider {s.provider!r} is taking too long (over {s.timeout:g} s). Please try again later.")
        except ProviderError as exc:
            self.rate.refund(user)
            if isinstance(exc, ProviderDown):
                self._mark_down(exc.reason)
            return Reply(f"Sorry, I could not make that image: {exc}.")
        except ImageRejected as exc:
            self.rate.refund(user)
            return Reply(f"Sorry, the image provider {s.provider!r} sent an image I cannot use: {exc}.")
        except ValueError as exc:  # e.g. an unknown style for this provider
            self.rate.refund(user)
            return Reply(f"{exc}. Usage: {prefix}{USAGE}")
        await self._store(clean, owner=user, kind="generated")
        name = getattr(provider, "name", s.provider)
        style = f", style {request.style}" if request.style else ""
        attachment = Attachment(filename=f"imagine-{clean.sha256[:12]}.png", data=clean.data)
        self._fill(attachment, clean, attachment.filename,
                   description=f"generated by {name} from the prompt {request.prompt!r} (seed {seed}{style})")
        attachment.data = clean.data  # _fill drops bytes; this one is being sent
        # With record_in_conversation the core stores the request and the
        # picture in the session, like any turn of the conversation.
        return Reply(
            f"Here is \u201c{request.prompt}\u201d ({clean.width}\u00d7{clean.height}, seed {seed}{style}, by {name}).",
            attachments=[attachment],
            in_conversation=s.record_in_conversation,
        )

    def _mark_down(self, why: str) -> None:
        """Leave a failing provider alone for a while, so users get an
        answer at once instead of each waiting for the same timeout."""
        if self.settings.outage_cooldown > 0:
            self._outages[self.settings.provider] = (self.bot.clock.now() + self.settings.outage_cooldown, why)
            log.warning("image provider %r is down (%s)", self.settings.provider, why)

    # --- people's data -----------------------------------------------------------

    async def forget(self, user_id: str) -> dict[str, int]:
        return await asyncio.to_thread(self.media.forget, user_id)

    async def export(self, user_id: str) -> dict[str, Any]:
        items = await asyncio.to_thread(self.media.owned_by, user_id)
        return {
            "media": [
                {**item.to_dict(), "path": str(self.media.path_for(item.sha256))} for item in items
            ]
        }

    async def load(self, sha256: str) -> bytes | None:
        return await asyncio.to_thread(self.media.get, sha256)

    async def health(self) -> tuple[bool, str, dict[str, Any]]:
        stats = await asyncio.to_thread(self.media.stats)
        present = self.settings.provider in self.bot.image_providers
        outage = self._outages.get(self.settings.provider)
        down = outage is not None and self.bot.clock.now() < outage[0]
        state = "not installed" if not present else f"down: {outage[1]}" if down and outage else "ready"
        detail = (
            f"provider {self.settings.provider} ({state}); "
            f"media store {stats['files']} files, {stats['bytes'] / (1024 * 1024):.1f} MiB"
        )
        return present and not down, detail, stats
