"""Images settings: defaults, environment overrides, the secret key."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.errors import ConfigError
from core.settings import EnvSettings, Settings
from plugins.images.providers import OpenAIImagesProvider
from plugins.images.settings import ImagesSettings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("IMAGES_API_KEY", "IMAGES_PROVIDER", "IMAGES_MAX_BYTES", "IMAGES_UPLOAD_LIMIT", "IMAGES_MEDIA_DIR"):
        monkeypatch.delenv(name, raising=False)


def settings(tmp_path: Path, section: dict[str, object]) -> ImagesSettings:
    return Settings(env=EnvSettings(data_dir=tmp_path), sections={"images": section}).for_plugin("images", ImagesSettings)


def test_defaults(tmp_path: Path) -> None:
    s = settings(tmp_path, {})
    assert (s.provider, s.max_bytes, s.upload_limit, s.max_pixels) == ("pillow", 10 * 2**20, 10 * 2**20, 4096 * 4096)
    assert s.allowed_formats == ["PNG", "JPEG", "WEBP", "GIF"]
    assert s.resolved_media_dir(tmp_path) == tmp_path / "media"
    assert s.resolved_base_url("openai") == "https://api.openai.com/v1"


def test_environment_beats_the_file_and_the_key_stays_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = "z" * 20
    monkeypatch.setenv("IMAGES_API_KEY", key)
    monkeypatch.setenv("IMAGES_UPLOAD_LIMIT", str(25 * 2**20))
    s = settings(tmp_path, {"upload_limit": 1000, "provider": "OpenAI"})
    assert s.upload_limit == 25 * 2**20 and s.provider == "openai"
    assert s.api_key is not None and s.api_key.get_secret_value() == key
    assert key not in repr(s) and key not in str(s.model_dump())
    provider = OpenAIImagesProvider("http://127.0.0.1:1", api_key=s.api_key)
    assert key not in repr(provider)


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"allowed_formats": ["PNG", "BMP"]}, "unsupported format"),
        ({"default_size": "huge"}, "not WIDTHxHEIGHT"),
        ({"max_bytes": 0}, "max_bytes"),
        ({"upload_limit": 10**10}, "upload_limit"),
        ({"no_such_key": 1}, "unknown key 'no_such_key'"),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, section: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        settings(tmp_path, section)


def test_jpg_is_an_alias(tmp_path: Path) -> None:
    assert settings(tmp_path, {"allowed_formats": ["png", "jpg"]}).allowed_formats == ["PNG", "JPEG"]
