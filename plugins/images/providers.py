"""Remote image providers: an OpenAI-compatible images API and an
Automatic1111 (Stable Diffusion web UI) server.

Both raise :class:`ProviderError` with a message fit for the user when the
server is slow, down or answers nonsense. The API key is sent in a header
and appears in no message, log line or ``repr``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
from typing import Any

import aiohttp
from pydantic import SecretStr


class ProviderError(Exception):
    """The provider could not make the image; the message is for the user."""


class ProviderDown(ProviderError):
    """The provider is unreachable, too slow or failing (HTTP 5xx): worth
    not asking again for a while, unlike a refused request. ``reason`` is
    the short why ("HTTP 503")."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


async def read_limited(response: aiohttp.ClientResponse, max_bytes: int, what: str) -> bytes:
    """Read a response body, refusing more than ``max_bytes``."""
    declared = response.content_length
    if declared is not None and declared > max_bytes:
        raise ProviderError(f"{what} is {declared:,} bytes; the limit is {max_bytes:,}")
    chunks, total = [], 0
    async for chunk in response.content.iter_chunked(64 * 1024):
        total += len(chunk)
        if total > max_bytes:
            raise ProviderError(f"{what} is larger than the limit of {max_bytes:,} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _decode_b64(value: Any, max_bytes: int) -> bytes:
    if not isinstance(value, str):
        raise ProviderError("the provider answered without image data")
    if len(value) > max_bytes * 4 // 3 + 8:
        raise ProviderError(f"the image from the provider is larger than the limit of {max_bytes:,} bytes")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ProviderError("the provider sent image data that is not valid base64") from None


class HTTPProvider:
    """Shared plumbing: one session per provider, timeouts, clear errors."""

    name = "http"

    def __init__(self, base_url: str, *, api_key: SecretStr | None = None, model: str | None = None,
                 timeout: float = 60.0, max_bytes: int = 10 * 1024 * 1024) -> None:
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key
        self.model = model
        self.timeout = timeout
        self.max_bytes = max_bytes
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self.base_url!r}, model={self.model!r})"

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if self._api_key is not None and self._api_key.get_secret_value():
            headers["Authorization"] = f"Bearer {self._api_key.get_secret_value()}"
        return headers

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        return self._session

    async def close(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None

    async def _post_json(self, path: str, payload: dict[str, Any]) -> Any:
        url = f"{self.base_url}{path}"
        try:
            async with self.session().post(url, json=payload, headers=self._headers()) as response:
                if response.status >= 400:
                    detail = await self._error_detail(response)
                    if response.status in (401, 403):
                        raise ProviderError(
                            f"the image provider {self.name!r} refused the credentials (HTTP {response.status}); "
                            "check IMAGES_API_KEY"
                        )
                    if response.status in (400, 422):
                        raise ProviderError(f"the image provider {self.name!r} refused the request: {detail}")
                    raise ProviderDown(
                        f"the image provider {self.name!r} is not working right now (HTTP {response.status}); "
                        "try again later",
                        reason=f"HTTP {response.status}",
                    )
                body = await read_limited(response, self.max_bytes * 2, "the provider's answer")
        except ProviderError:
            raise
        except asyncio.TimeoutError:
            raise ProviderDown(
                f"the image provider {self.name!r} did not answer within {self.timeout:g} s; try again later",
                reason=f"no answer within {self.timeout:g} s",
            ) from None
        except aiohttp.ClientError as exc:
            raise ProviderDown(
                f"the image provider {self.name!r} cannot be reached ({type(exc).__name__}); try again later",
                reason="unreachable",
            ) from None
        try:
            return json.loads(body)
        except ValueError:
            raise ProviderError(f"the image provider {self.name!r} answered with something that is not JSON") from None

    async def _error_detail(self, response: aiohttp.ClientResponse) -> str:
        try:
            raw = await read_limited(response, 16 * 1024, "the error")
            data = json.loads(raw)
            message = data.get("error", {}).get("message") if isinstance(data.get("error"), dict) else data.get("error") or data.get("detail")
            return str(message)[:300] if message else f"HTTP {response.status}"
        except Exception:  # noqa: BLE001 - the detail is a courtesy
            return f"HTTP {response.status}"

    async def _fetch(self, url: str) -> bytes:
        if not url.startswith(("http://", "https://")):
            raise ProviderError("the provider gave an image URL that is not http(s)")
        try:
            # No API key here: the URL points at a file store, not the API.
            async with self.session().get(url) as response:
                if response.status >= 400:
                    raise ProviderError(f"the generated image could not be downloaded (HTTP {response.status})")
                return await read_limited(response, self.max_bytes, "the generated image")
        except ProviderError:
            raise
        except asyncio.TimeoutError:
            raise ProviderError(f"downloading the generated image took longer than {self.timeout:g} s") from None
        except aiohttp.ClientError as exc:
            raise ProviderError(f"the generated image could not be downloaded ({type(exc).__name__})") from None


class OpenAIImagesProvider(HTTPProvider):
    """``POST {base_url}/images/generations`` (OpenAI, and servers that copy
    its API: LocalAI, vLLM-omni, ...). Handles ``b64_json`` and ``url``."""

    name = "openai"

    def __init__(self, base_url: str, *, response_format: str | None = "b64_json", **kwargs: Any) -> None:
        super().__init__(base_url, **kwargs)
        self.response_format = response_format

    async def generate(self, prompt: str, *, size: tuple[int, int], seed: int | None, style: str | None) -> bytes:
        payload: dict[str, Any] = {"prompt": prompt, "n": 1, "size": f"{size[0]}x{size[1]}"}
        if self.model:
            payload["model"] = self.model
        if self.response_format:
            payload["response_format"] = self.response_format
        if style:
            payload["style"] = style
        if seed is not None:
            # Not in OpenAI's API, but several compatible servers honour it.
            payload["seed"] = seed
        data = await self._post_json("/images/generations", payload)
        try:
            item = data["data"][0]
        except (KeyError, IndexError, TypeError):
            raise ProviderError(f"the image provider {self.name!r} answered without an image") from None
        if isinstance(item, dict) and item.get("b64_json"):
            return _decode_b64(item["b64_json"], self.max_bytes)
        if isinstance(item, dict) and item.get("url"):
            return await self._fetch(str(item["url"]))
        raise ProviderError(f"the image provider {self.name!r} answered without b64_json or url")


class Automatic1111Provider(HTTPProvider):
    """``POST {base_url}/sdapi/v1/txt2img`` of the Stable Diffusion web UI."""

    name = "automatic1111"

    def __init__(self, base_url: str, *, steps: int = 20, **kwargs: Any) -> None:
        super().__init__(base_url, **kwargs)
        self.steps = steps

    async def generate(self, prompt: str, *, size: tuple[int, int], seed: int | None, style: str | None) -> bytes:
        payload: dict[str, Any] = {
            "prompt": prompt,
            "width": size[0],
            "height": size[1],
            "seed": -1 if seed is None else seed,
            "steps": self.steps,
            "batch_size": 1,
            "n_iter": 1,
        }
        if style:
            payload["styles"] = [style]
        if self.model:
            payload["override_settings"] = {"sd_model_checkpoint": self.model}
        data = await self._post_json("/sdapi/v1/txt2img", payload)
        images = data.get("images") if isinstance(data, dict) else None
        if not images:
            raise ProviderError(f"the image provider {self.name!r} answered without an image")
        first = images[0]
        if isinstance(first, str) and first.startswith("data:") and "," in first:
            first = first.split(",", 1)[1]
        return _decode_b64(first, self.max_bytes)
