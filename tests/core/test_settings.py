"""Settings: TOML + environment, clear errors, secrets kept out."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from core.errors import ConfigError
from core.settings import PluginSettings, load_settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("BOT_CONFIG", "DISCORD_TOKEN", "BOT_DATA_DIR", "EXAMPLE_LIMIT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


def _toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bot.toml"
    path.write_text(text)
    return path


def test_defaults_without_a_file() -> None:
    settings = load_settings(env_file=None)
    assert settings.plugins.enabled is None and settings.plugins.disabled == []
    assert settings.bot.command_prefix == "/"


def test_file_lists_and_sections(tmp_path: Path) -> None:
    path = _toml(tmp_path, '[plugins]\ndisabled = ["images"]\n[sessions]\nidle_timeout = 60\n')
    settings = load_settings(path, env_file=None)
    assert settings.plugins.disabled == ["images"]
    assert settings.section("sessions") == {"idle_timeout": 60}


def test_bot_toml_in_the_working_directory_is_read(tmp_path: Path) -> None:
    _toml(tmp_path, '[bot]\nname = "herald"\n')
    assert load_settings(env_file=None).bot.name == "herald"


def test_malformed_toml_names_the_file(tmp_path: Path) -> None:
    path = _toml(tmp_path, "[plugins\ndisabled = 1\n")
    with pytest.raises(ConfigError, match=r"bot\.toml: not valid TOML"):
        load_settings(path, env_file=None)


def test_unknown_key_is_named(tmp_path: Path) -> None:
    path = _toml(tmp_path, '[plugins]\ndisable = ["images"]\n')
    with pytest.raises(ConfigError, match=r"\[plugins\]: disable: Extra inputs"):
        load_settings(path, env_file=None)


def test_wrong_type_is_named(tmp_path: Path) -> None:
    path = _toml(tmp_path, "[bot]\nmax_message_chars = -3\n")
    with pytest.raises(ConfigError, match=r"\[bot\]: max_message_chars"):
        load_settings(path, env_file=None)


def test_missing_file_is_clear(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_settings(tmp_path / "nope.toml", env_file=None)


@pytest.mark.parametrize(
    "line",
    # The password is built here so no URL with a password stands in the source.
    ['api_key = "abcdefgh"', 'discord_token = "abcdefgh"', 'url = "redis://user:' + "hunter" + '22@host:6379"'],
)
def test_secrets_in_the_file_are_refused_without_echoing_them(tmp_path: Path, line: str) -> None:
    path = _toml(tmp_path, f"[llm]\n{line}\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path, env_file=None)
    assert "environment" in str(info.value)
    assert "abcdefgh" not in str(info.value) and "hunter22" not in str(info.value)


def test_token_comes_from_the_environment_and_is_redacted(monkeypatch: pytest.MonkeyPatch) -> None:
    token = "tok" + "en-value-" * 3
    monkeypatch.setenv("DISCORD_TOKEN", token)
    settings = load_settings(env_file=None)
    assert settings.env.discord_token is not None
    assert settings.env.discord_token.get_secret_value() == token
    assert token not in repr(settings) and token not in str(settings.redacted())


class ExampleSettings(PluginSettings):
    model_config = SettingsConfigDict(env_prefix="EXAMPLE_")

    limit: int = Field(10, gt=0)
    name: str = "x"
    secret: SecretStr | None = None


def test_plugin_settings_env_beats_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _toml(tmp_path, "[example]\nlimit = 5\nname = 'y'\n")
    settings = load_settings(path, env_file=None)
    assert settings.for_plugin("example", ExampleSettings).limit == 5
    monkeypatch.setenv("EXAMPLE_LIMIT", "7")
    loaded = settings.for_plugin("example", ExampleSettings)
    assert (loaded.limit, loaded.name) == (7, "y")


def test_plugin_settings_errors_name_the_key(tmp_path: Path) -> None:
    path = _toml(tmp_path, "[example]\nlimit = 0\n")
    with pytest.raises(ConfigError, match=r"\[example\]: limit: Input should be greater than 0"):
        load_settings(path, env_file=None).for_plugin("example", ExampleSettings)
    path = _toml(tmp_path, "[example]\nlimt = 3\n")
    with pytest.raises(ConfigError, match=r"unknown key 'limt'"):
        load_settings(path, env_file=None).for_plugin("example", ExampleSettings)


class ListSettings(PluginSettings):
    model_config = SettingsConfigDict(env_prefix="EXAMPLE_")

    names: list[str] = Field(default_factory=list)


def test_malformed_complex_env_value_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXAMPLE_NAMES", "[not json")
    with pytest.raises(ConfigError, match="names"):
        load_settings(env_file=None).for_plugin("example", ListSettings)


def test_plugin_secrets_are_masked_in_logs_once_loaded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from core.logs import secret_filter

    secret = "plugin-" + "secret-" * 3
    monkeypatch.setenv("EXAMPLE_SECRET", secret)
    load_settings(env_file=None).for_plugin("example", ExampleSettings)
    assert secret in secret_filter().secrets
