"""The ``[images]`` section, overridable by ``IMAGES_*`` environment variables.

``api_key`` is a secret: it comes from ``IMAGES_API_KEY`` only (the core
refuses a config file that holds it) and is a ``SecretStr``, so it never
shows up in a log line or a ``repr``.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import SettingsConfigDict

from core.settings import PluginSettings

MIB = 1024 * 1024
FORMATS = ("PNG", "JPEG", "WEBP", "GIF")
PROVIDER_DEFAULT_URLS = {
    "openai": "https://api.openai.com/v1",
    "automatic1111": "http://127.0.0.1:7860",
}


def parse_size(text: str) -> tuple[int, int]:
    """``"512x384"`` → ``(512, 384)``; raises ``ValueError`` with a readable message."""
    width, sep, height = text.lower().replace("×", "x").partition("x")
    if not sep or not width.strip().isdigit() or not height.strip().isdigit():
        raise ValueError(f"size {text!r} is not WIDTHxHEIGHT, e.g. 512x512")
    return int(width), int(height)


class ImagesSettings(PluginSettings):
    """Settings of the images plugin."""

    model_config = SettingsConfigDict(env_prefix="IMAGES_", env_file=".env", extra="ignore")

    provider: str = "pillow"
    base_url: str | None = None
    api_key: SecretStr | None = None
    model: str | None = None
    default_size: str = "512x512"
    max_size: int = Field(2048, ge=16, description="largest side of a generated image")
    timeout: float = Field(60.0, gt=0, description="seconds a provider may take")
    outage_cooldown: float = Field(30.0, ge=0, description="seconds a failing provider is left alone; 0: always retry")
    steps: int = Field(20, ge=1, le=200, description="sampling steps (automatic1111)")
    response_format: str | None = "b64_json"

    max_bytes: int = Field(10 * MIB, gt=0)
    # The decode budget (docs/SECURITY.md, "Image cost"): checked before
    # anything is decoded, per image and per message.
    max_pixels: int = Field(4096 * 4096, gt=0)
    max_message_pixels: int = Field(2 * 4096 * 4096, gt=0, description="all images of one message together")
    max_png_chunks: int = Field(4096, gt=0)
    max_metadata_chunk: int = Field(MIB, gt=0, description="bytes of one PNG text/ICC/EXIF chunk")
    jpeg_decode_side: int = Field(
        2048, ge=0, description="a JPEG at least twice this on its longer side is decoded at 1/2, 1/4 or 1/8 scale; 0: full size"
    )
    # Decoding runs in worker processes, each decode bounded in time and memory.
    decode_timeout: float = Field(3.0, gt=0, description="seconds one image may take to decode and re-encode")
    decode_memory: int = Field(512 * MIB, ge=64 * MIB, description="bytes one decode may use above the worker's own")
    decode_workers: int = Field(2, ge=1, le=16, description="images decoded at once")
    allowed_formats: list[str] = Field(default_factory=lambda: list(FORMATS))
    upload_limit: int = Field(10 * MIB, gt=0, le=500 * MIB)
    thumbnail_size: int = Field(256, ge=16, le=1024)
    # Hosts attachment URLs may be fetched from; empty means any http(s) host.
    fetch_hosts: list[str] = Field(
        default_factory=lambda: ["cdn.discordapp.com", "media.discordapp.net"]
    )

    rate_limit: int = Field(5, ge=0, description="images per user per window; 0 switches imagine off")
    rate_window: float = Field(60.0, gt=0)
    record_in_conversation: bool = True
    media_dir: Path | None = None

    @field_validator("provider")
    @classmethod
    def _lower_provider(cls, value: str) -> str:
        return value.strip().lower()

    @field_validator("default_size")
    @classmethod
    def _check_size(cls, value: str) -> str:
        width, height = parse_size(value)
        if width < 1 or height < 1:
            raise ValueError("default_size must be at least 1x1")
        return f"{width}x{height}"

    @field_validator("allowed_formats")
    @classmethod
    def _check_formats(cls, value: list[str]) -> list[str]:
        wanted = [f.strip().upper().replace("JPG", "JPEG") for f in value]
        unknown = [f for f in wanted if f not in FORMATS]
        if unknown:
            raise ValueError(f"unsupported format(s) {unknown}; choose from {list(FORMATS)}")
        return wanted

    def resolved_media_dir(self, data_dir: Path) -> Path:
        return self.media_dir if self.media_dir is not None else Path(data_dir) / "media"

    def resolved_base_url(self, provider: str) -> str | None:
        url = self.base_url or PROVIDER_DEFAULT_URLS.get(provider)
        return url.rstrip("/") if url else None
