"""A small OpenAI-compatible chat-completions client over aiohttp.

Speaks ``POST {base_url}/chat/completions`` as OpenAI, Azure OpenAI (a
deployment URL with ``api-version``), Ollama, vLLM, llama.cpp server and LM
Studio understand it. It retries 429, 5xx, timeouts and connection errors with
exponential backoff and jitter, honouring ``Retry-After`` / ``retry-after-ms``;
everything else fails at once with a :class:`ProviderError` whose text is safe
to show (it never holds the API key or the provider's raw error body).
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from yarl import URL

from core.logs import redact
from plugins.llm.settings import LlmSettings, check_base_url

log = logging.getLogger("plugins.llm")

RETRYABLE_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504, 520, 521, 522, 523, 524, 529})


class ProviderError(Exception):
    """The provider did not give a usable reply. ``str()`` is safe to show
    to users and logs; ``kind`` says what went wrong:

    ``unavailable`` (down, overloaded, rate limited, timed out, after the
    retries), ``refused`` (4xx: key, model or request rejected), ``bad_reply``
    (empty, not JSON, not chat-completions, too large).
    """

    def __init__(self, kind: str, message: str, status: int | None = None, attempts: int = 1) -> None:
        super().__init__(message)
        self.kind = kind
        self.status = status
        self.attempts = attempts


@dataclass(slots=True)
class Completion:
    """A finished reply: its text, why it ended, and how many attempts it took."""

    text: str
    finish_reason: str | None = None
    attempts: int = 1
    model: str | None = None

    @property
    def cut_short(self) -> bool:
        return self.finish_reason == "length"


class _Retry(Exception):
    def __init__(self, reason: str, status: int | None = None, wait: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.wait = wait


def completions_url(settings: LlmSettings) -> URL:
    """``{base_url}/chat/completions``, keeping the base URL's query
    (Azure's ``api-version``) and adding ``api_version`` if set."""
    base = check_base_url(settings.base_url or "")
    path = base.path.rstrip("/")
    if not path.endswith("/chat/completions"):
        path += "/chat/completions"
    url = base.with_path(path).with_query(base.query)
    if settings.api_version:
        url = url.update_query({"api-version": settings.api_version})
    return url


def models_url(settings: LlmSettings) -> URL:
    base = check_base_url(settings.base_url or "")
    path = base.path.rstrip("/").removesuffix("/chat/completions")
    return base.with_path(path + "/models").with_query(base.query)


def parse_retry_after(headers: Any, now: float | None = None) -> float | None:
    """Seconds to wait according to ``retry-after-ms`` or ``Retry-After``
    (delta seconds or an HTTP date); ``None`` when absent or unreadable."""
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        try:
            return max(0.0, float(raw_ms) / 1000)
        except ValueError:
            pass
    raw = headers.get("Retry-After")
    if not raw:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (now if now is not None else time.time()))


def _short(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


class ChatClient:
    """Chat completions against one provider.

    ``session`` is the bot's own :class:`aiohttp.ClientSession` (one per
    bot, so a slow provider only holds up the conversation waiting for it).
    ``sleep`` and ``random`` are swappable so tests can see the waits.
    """

    def __init__(
        self,
        settings: LlmSettings,
        session: aiohttp.ClientSession,
        *,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.settings = settings
        self.session = session
        self.url = completions_url(settings)
        self.sleep = sleep
        self.rng = rng
        self.timeout = aiohttp.ClientTimeout(
            total=None, connect=settings.connect_timeout, sock_connect=settings.connect_timeout,
            sock_read=settings.read_timeout,
        )
        key = settings.api_key_value()
        self._secrets = [key] if key else []

    # --- request parts ---------------------------------------------------------

    def headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
        key = self.settings.api_key_value()
        if key:
            if self.settings.auth_header.lower() == "authorization":
                headers["Authorization"] = f"Bearer {key}"
            else:
                headers[self.settings.auth_header] = key
        return headers

    def body(self, messages: list[dict[str, Any]], stream: bool, model: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"model": model or self.settings.model, "messages": messages, "stream": stream}
        if self.settings.temperature is not None:
            body["temperature"] = self.settings.temperature
        if self.settings.max_tokens is not None:
            body["max_tokens"] = self.settings.max_tokens
        return body

    def _safe(self, text: str) -> str:
        return redact(text, self._secrets)

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        # Full jitter over an exponential cap, but never sooner than the
        # provider asked for.
        cap = self.settings.backoff * (2**attempt)
        delay = cap * (0.5 + self.rng() / 2)
        if retry_after is not None:
            delay = max(delay, retry_after)
        return delay

    # --- calling -----------------------------------------------------------------

    async def _with_retries(self, attempt_once: Callable[[int], Awaitable[Any]]) -> Any:
        attempts = self.settings.retries + 1
        total = self.settings.total_timeout
        loop = asyncio.get_running_loop()
        deadline = loop.time() + total
        last: _Retry | None = None
        done = 0
        for attempt in range(attempts):
            done = attempt + 1
            try:
                async with asyncio.timeout(max(0.0, deadline - loop.time())):
                    return await attempt_once(done)
            except _Retry as retry:
                last = retry
            except TimeoutError:
                last = _Retry(f"no reply within {total:g}s")
                break
            if done >= attempts:
                break
            if last.wait is not None and last.wait > self.settings.max_retry_wait:
                log.warning("llm provider asks to wait %.0fs (over max_retry_wait); not retrying", last.wait)
                break
            delay = self._delay(attempt, last.wait)
            if loop.time() + delay >= deadline:
                log.warning("llm provider: no time left for another attempt within total_timeout")
                break
            log.warning("llm provider attempt %d/%d failed (%s); retrying in %.2fs", done, attempts, last.reason, delay)
            await self.sleep(delay)
        assert last is not None
        raise ProviderError(
            "unavailable", f"{last.reason} after {done} attempt{'s' if done != 1 else ''}", last.status, done
        )

    async def _error_for_status(self, response: aiohttp.ClientResponse) -> None:
        status = response.status
        if status < 400:
            return
        try:
            raw = await response.content.read(4096)
            detail = self._safe(_short(raw.decode("utf-8", "replace")))
        except (aiohttp.ClientError, asyncio.TimeoutError):
            detail = ""
        log.warning("llm provider answered HTTP %d: %s", status, detail or "(no body)")
        if status in RETRYABLE_STATUS:
            raise _Retry(f"HTTP {status}", status, parse_retry_after(response.headers))
        hints = {
            401: "the API key was refused: check LLM_API_KEY",
            403: "access was refused: check LLM_API_KEY and the account's permissions",
            404: "not found: check LLM_BASE_URL and LLM_MODEL",
            413: "the request was too large for the provider",
        }
        hint = hints.get(status, "the provider rejected the request")
        raise ProviderError("refused", f"HTTP {status}: {hint}", status)

    async def complete(self, messages: list[dict[str, Any]], model: str | None = None) -> Completion:
        """One reply, non-streaming (``model``: another than the
        configured one). Raises :class:`ProviderError`."""

        async def once(attempt: int) -> Completion:
            try:
                async with self.session.post(
                    self.url, json=self.body(messages, False, model), headers=self.headers(), timeout=self.timeout
                ) as response:
                    await self._error_for_status(response)
                    raw = await _read_limited(response, self.settings.max_response_bytes + 1)
            except asyncio.TimeoutError:
                raise _Retry("timed out") from None
            except aiohttp.ClientPayloadError:
                raise _Retry("connection dropped mid-reply") from None
            except aiohttp.ClientError as exc:
                raise _Retry(f"cannot reach the provider ({type(exc).__name__})") from None
            if len(raw) > self.settings.max_response_bytes:
                raise ProviderError("bad_reply", f"the reply is larger than {self.settings.max_response_bytes:,} bytes")
            completion = self._parse(raw)
            completion.attempts = attempt
            return completion

        return await self._with_retries(once)

    def _parse(self, raw: bytes) -> Completion:
        if not raw.strip():
            raise ProviderError("bad_reply", "the provider sent an empty response")
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            log.warning("llm provider sent a non-JSON body: %s", self._safe(_short(raw[:300].decode("utf-8", "replace"))))
            raise ProviderError("bad_reply", "the provider's response is not JSON (truncated or not an API reply)") from None
        if isinstance(data, dict) and isinstance(data.get("error"), (dict, str)):
            raise ProviderError("refused", "the provider answered with an error")
        try:
            choice = data["choices"][0]
            message = choice.get("message") or {}
            text = message.get("content")
            if text is None:
                text = message.get("refusal")
            if isinstance(text, list):
                # Some servers return content parts even for text.
                text = "".join(p.get("text", "") for p in text if isinstance(p, dict))
        except (KeyError, IndexError, TypeError, AttributeError):
            raise ProviderError("bad_reply", "the provider's response is not a chat completion") from None
        if not isinstance(text, str) or not text.strip():
            raise ProviderError("bad_reply", "the model returned an empty reply")
        return Completion(text=text, finish_reason=choice.get("finish_reason"), model=data.get("model"))

    def stream(self, messages: list[dict[str, Any]], model: str | None = None) -> ChatStream:
        """The reply's text as it arrives (server-sent events): iterate the
        returned :class:`ChatStream` with ``async for``."""
        return ChatStream(self, messages, model)

    async def _open_stream(self, messages: list[dict[str, Any]], model: str | None = None) -> Any:
        async def once(attempt: int) -> Any:
            try:
                response = await self.session.post(
                    self.url, json=self.body(messages, True, model), headers=self.headers(), timeout=self.timeout
                )
            except asyncio.TimeoutError:
                raise _Retry("timed out") from None
            except aiohttp.ClientError as exc:
                raise _Retry(f"cannot reach the provider ({type(exc).__name__})") from None
            try:
                await self._error_for_status(response)
            except BaseException:
                response.release()
                raise
            content_type = response.headers.get("Content-Type", "")
            if "text/event-stream" not in content_type:
                # A server that ignores "stream": true sends one JSON body.
                try:
                    raw = await _read_limited(response, self.settings.max_response_bytes + 1)
                except (aiohttp.ClientError, asyncio.TimeoutError):
                    raise _Retry("connection dropped mid-reply") from None
                finally:
                    response.release()
                return _OneShot(self._parse(raw))
            return response

        return await self._with_retries(once)


class ChatStream:
    """One streamed reply. ``async for piece in stream`` yields text pieces;
    joined, they are the text a non-streaming call returns.

    Connecting is retried like :meth:`ChatClient.complete`. Once text has
    arrived, a broken or unfinished stream raises :class:`ProviderError`
    (``kind="bad_reply"``) after the pieces already yielded, so the caller
    can keep them. ``finish_reason`` is set when the stream ends
    (``"length"`` when ``max_tokens`` cut it short).
    """

    def __init__(self, client: ChatClient, messages: list[dict[str, Any]], model: str | None = None) -> None:
        self.client = client
        self.messages = messages
        self.model = model
        self.finish_reason: str | None = None
        self.text = ""

    def __aiter__(self) -> AsyncIterator[str]:
        return self._pieces()

    async def _pieces(self) -> AsyncIterator[str]:
        response = await self.client._open_stream(self.messages, self.model)
        finished = False
        try:
            async for event in _sse_events(response, self.client.settings.max_response_bytes):
                if event.strip() == "[DONE]":
                    finished = True
                    break
                try:
                    data = json.loads(event)
                except ValueError:
                    raise ProviderError("bad_reply", "the provider sent a stream event that is not JSON") from None
                if not isinstance(data, dict):
                    raise ProviderError("bad_reply", "the provider sent a stream event that is not a chat chunk")
                if data.get("error"):
                    raise ProviderError("refused", "the provider reported an error mid-stream")
                for choice in data.get("choices") or []:
                    if not isinstance(choice, dict):
                        continue
                    piece = (choice.get("delta") or {}).get("content")
                    if isinstance(piece, str) and piece:
                        self.text += piece
                        yield piece
                    if choice.get("finish_reason"):
                        self.finish_reason = choice["finish_reason"]
        except ValueError:
            # aiohttp refuses a line longer than its buffer (about 128 KB).
            raise ProviderError("bad_reply", "the provider sent a stream line that is too long") from None
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            what = "timed out" if isinstance(exc, asyncio.TimeoutError) else "broke off"
            raise ProviderError("bad_reply", f"the stream {what} {'mid-reply' if self.text else 'before any text'}") from None
        finally:
            response.release()
        if not self.text.strip():
            raise ProviderError("bad_reply", "the model returned an empty reply")
        if not finished and self.finish_reason is None:
            raise ProviderError("bad_reply", "the stream ended mid-reply")


async def _read_limited(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """The body, or its first ``limit`` bytes when it is longer (a single
    ``read(n)`` returns whatever has arrived, not ``n`` bytes)."""
    chunks: list[bytes] = []
    total = 0
    while total < limit:
        chunk = await response.content.read(min(65536, limit - total))
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    return b"".join(chunks)


class _OneShot:
    """Stands in for a streaming response when the server sent plain JSON."""

    def __init__(self, completion: Completion) -> None:
        chunk = {"choices": [{"delta": {"content": completion.text}, "finish_reason": completion.finish_reason}]}
        payload = json.dumps(chunk)
        self.content = _Lines([f"data: {payload}\n".encode(), b"\n", b"data: [DONE]\n"])

    def release(self) -> None:
        return None


class _Lines:
    def __init__(self, lines: list[bytes]) -> None:
        self._lines = lines

    async def readline(self) -> bytes:
        return self._lines.pop(0) if self._lines else b""


async def _sse_events(response: Any, max_bytes: int) -> AsyncIterator[str]:
    """The ``data:`` payloads of a server-sent-events body, one per event."""
    data: list[str] = []
    total = 0
    while True:
        line_bytes = await response.content.readline()
        if not line_bytes:
            break
        total += len(line_bytes)
        if total > max_bytes:
            raise ProviderError("bad_reply", f"the streamed reply is larger than {max_bytes:,} bytes")
        line = line_bytes.decode("utf-8", "replace").rstrip("\r\n")
        if not line:
            if data:
                yield "\n".join(data)
                data = []
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        if field == "data":
            data.append(value[1:] if value.startswith(" ") else value)
    if data:
        yield "\n".join(data)
