"""Secrets never reach a log line, an error text or the config file.

Every log test goes through the real handler that ``core.logs.setup_logging``
installs, and every secret is built at run time (see ``fake_secret``).
"""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import SettingsConfigDict

from core.errors import ConfigError
from core.logs import MASK, redact, secret_filter, secret_values
from core.settings import EnvSettings, PluginSettings, Settings, load_settings
from harness.backends import free_port
from tests.fake_urls import password_url
from tests.security.conftest import fake_secret

log = logging.getLogger("tests.security")


class ProviderSettings(PluginSettings):
    """Shaped like the settings an LLM or memory plugin reads."""

    model_config = SettingsConfigDict(env_prefix="SECTEST_", env_file=None, extra="ignore")

    api_key: SecretStr | None = None
    redis_url: str = Field("redis://127.0.0.1:6379/0", validation_alias=AliasChoices("redis_url", "SECTEST_REDIS_URL"))
    timeout: float = 5.0


# --- logging a settings object ------------------------------------------------


def test_logging_settings_never_shows_the_discord_token(
    monkeypatch: pytest.MonkeyPatch, log_stream: io.StringIO, tmp_path: Path
) -> None:
    token = fake_secret("discordtok", 40)
    monkeypatch.setenv("DISCORD_TOKEN", token)
    settings = Settings(env=EnvSettings(_env_file=None, data_dir=tmp_path))  # type: ignore[call-arg]
    assert settings.env.discord_token is not None

    # Not registered with the filter on purpose: SecretStr alone must hold.
    log.info("settings: %s", settings)
    log.info("settings repr: %r", settings)
    log.info("redacted: %s", settings.redacted())
    log.info("dump: %s", settings.model_dump())
    log.info("token field: %s / %r", settings.env.discord_token, settings.env.discord_token)

    output = log_stream.getvalue()
    assert token not in output
    assert output.count(MASK) >= 5
    assert settings.redacted()["env"]["discord_token"] == MASK


def test_a_registered_secret_is_masked_even_when_logged_raw(log_stream: io.StringIO) -> None:
    token = fake_secret("rawtok", 32)
    secret_filter().add(token)
    # The mistake the known-value layer exists for: get_secret_value() in a log call.
    log.warning("about to log in with %s", SecretStr(token).get_secret_value())
    output = log_stream.getvalue()
    assert token not in output
    assert "about to log in with " + MASK in output


def test_plugin_settings_with_a_password_url_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, log_stream: io.StringIO
) -> None:
    password = fake_secret("redispw", 20)
    api_key = fake_secret("apikey", 30)
    monkeypatch.setenv("SECTEST_REDIS_URL", password_url("redis", "default", password, "127.0.0.1:6379/0"))
    monkeypatch.setenv("SECTEST_API_KEY", api_key)
    loaded = Settings(env=EnvSettings(_env_file=None)).for_plugin("provider", ProviderSettings)  # type: ignore[call-arg]
    assert password in loaded.redis_url  # the plugin itself still gets the real value

    log.info("provider settings: %r", loaded)
    log.info("provider settings: %s", loaded.model_dump())
    output = log_stream.getvalue()
    assert password not in output and api_key not in output
    assert password_url("redis", "default", "***", "127.0.0.1:6379/0") in output

    # What a plugin registers in one call.
    assert set(secret_values(loaded)) == {password, api_key}


def test_a_failed_database_connection_string_is_masked(log_stream: io.StringIO) -> None:
    psycopg2 = pytest.importorskip("psycopg2")
    password = "".join(["pg", "pass", "word", "-", "x" * 12])  # built at run time
    url = password_url("postgresql", "app", password, f"127.0.0.1:{free_port()}/bot")
    with pytest.raises(psycopg2.OperationalError) as caught:
        psycopg2.connect(url, connect_timeout=2)
    log.error("database %s unreachable: %s", url, caught.value, exc_info=caught.value)
    output = log_stream.getvalue()
    assert password not in output
    assert password_url("postgresql", "app", "***", "127.0.0.1") in output
    assert "Traceback" in output  # the traceback went through the filter too


def test_a_secret_inside_an_exception_traceback_is_masked(log_stream: io.StringIO) -> None:
    password = fake_secret("tbpw", 18)
    url = password_url("rediss", "worker", password, "cache.internal:6380/2")

    def connect() -> None:
        raise ConnectionError(f"cannot reach {url}")

    try:
        connect()
    except ConnectionError:
        log.exception("redis down")
    logging.getLogger("redis.asyncio.connection").warning("retrying %s", url)  # a library's own logger
    output = log_stream.getvalue()
    assert password not in output
    assert output.count(password_url("rediss", "worker", "***", "cache.internal:6380/2")) == 2


@pytest.mark.parametrize(
    "template",
    [
        "host=db user=app password={s} dbname=bot",
        '{{"api_key": "{s}", "model": "m"}}',
        "GET /v1/images?access_token={s}&size=1",
        "Authorization: Bearer {s}",
        "headers={{'Authorization': 'Bot {s}'}}",
        "client_secret: {s}",
    ],
)
def test_secret_shapes_in_free_text_are_masked(template: str, log_stream: io.StringIO) -> None:
    secret = fake_secret("shape", 26)
    log.info(template.format(s=secret))
    output = log_stream.getvalue()
    assert secret not in output and MASK in output


def test_token_shapes_are_masked_without_registration() -> None:
    discord_like = "M" + "x" * 25 + "." + "y" * 6 + "." + "z" * 30
    openai_like = "sk-" + "proj-" + "q" * 40
    aws_like = "AKIA" + "Q" * 16
    webhook_token = "w" * 68
    key_block = "-----BEGIN " + "RSA PRIVATE KEY-----\n" + "m" * 64 + "\n-----END RSA PRIVATE KEY-----"
    webhook = "https://discord.com/api/" + "webhooks/" + "1" * 18 + "/" + webhook_token
    text = f"tokens: {discord_like} {openai_like} {aws_like} {webhook}\n{key_block}"
    masked = redact(text)
    assert "https://discord.com/api/webhooks/" + MASK in masked
    for secret in (discord_like, openai_like, aws_like, webhook_token, "m" * 64):
        assert secret not in masked


def test_ordinary_text_is_left_readable() -> None:
    text = "token_budget=3000 max_tokens=256 tokens_used: 12 session g:1:c:2:u:3 https://example.com/a:b@c"
    # The last URL has no password part before its path: nothing to mask but
    # the form is ambiguous; the budget words must stay intact.
    masked = redact(text)
    assert "token_budget=3000 max_tokens=256 tokens_used: 12 session g:1:c:2:u:3" in masked


@hsettings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs", "Zs", "Cc"), blacklist_characters="/"), min_size=1))
def test_any_url_password_is_masked_whole(password: str) -> None:
    assert redact(password_url("postgresql", "user", password, "db.example:5432/bot")) == password_url("postgresql", "user", "***", "db.example:5432/bot")


# --- error texts never echo a secret -------------------------------------------


def test_config_error_from_the_environment_does_not_echo_the_value(monkeypatch: pytest.MonkeyPatch) -> None:
    secret = fake_secret("envval", 22)
    monkeypatch.setenv("SECTEST_TIMEOUT", secret)  # a secret pasted into the wrong variable
    with pytest.raises(ConfigError) as caught:
        Settings(env=EnvSettings(_env_file=None)).for_plugin("provider", ProviderSettings)  # type: ignore[call-arg]
    assert "timeout" in str(caught.value)
    assert secret not in str(caught.value)


@pytest.mark.parametrize(
    "toml",
    [
        '[llm]\napi_key = "{s}"\n',
        '[discord]\ntoken = "{s}"\n',
        '[bot]\ndiscord_token = "{s}"\n',
        '[memory]\nredis_url = "' + password_url("redis", "", "{s}", "127.0.0.1:6379/0") + '"\n',
        '[memory]\ndatabase_url = "' + password_url("postgresql", "app", "{s}", "db/bot") + '"\n',
        '[images.openai]\nsecret = "{s}"\n',
        '[llm]\nPassword = "{s}"\n',
    ],
)
def test_a_config_file_holding_a_secret_is_refused_without_echoing_it(toml: str, tmp_path: Path) -> None:
    secret = fake_secret("tomlsecret", 20)
    path = tmp_path / "bot.toml"
    path.write_text(toml.format(s=secret), encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_settings(path, env_file=None)
    text = str(caught.value)
    assert "environment" in text
    assert secret not in text


def test_a_broken_config_file_does_not_echo_its_content(tmp_path: Path) -> None:
    secret = fake_secret("brokentoml", 20)
    path = tmp_path / "bot.toml"
    path.write_text(f'[llm]\nmodel = "{secret}\n', encoding="utf-8")  # unterminated string
    with pytest.raises(ConfigError) as caught:
        load_settings(path, env_file=None)
    assert "not valid TOML" in str(caught.value)
    assert secret not in str(caught.value)


def test_numeric_budget_keys_are_not_mistaken_for_secrets(tmp_path: Path) -> None:
    path = tmp_path / "bot.toml"
    path.write_text("[sessions]\ntoken_budget = 3000\n[llm]\nmax_tokens = 256\n", encoding="utf-8")
    assert load_settings(path, env_file=None).section("sessions") == {"token_budget": 3000}


def test_a_password_url_inside_a_list_is_refused(tmp_path: Path) -> None:
    secret = fake_secret("listpw", 16)
    path = tmp_path / "bot.toml"
    path.write_text('[memory]\nreplicas = ["' + password_url("redis", "", secret, "10.0.0.1:6379") + '"]\n', encoding="utf-8")
    with pytest.raises(ConfigError):
        load_settings(path, env_file=None)




@pytest.mark.parametrize(
    "key",
    [
        "auth_token",
        "client-secret",
        "[nested]\ndb_password",
        "botToken",
        "clientSecret",
        "private_key",
        "access_key",
        "api-key",
    ],
)
def test_secret_key_spellings_are_refused(key: str, tmp_path: Path) -> None:
    secret = fake_secret("spelling", 20)
    table, _, name = key.rpartition("\n")
    path = tmp_path / "bot.toml"
    path.write_text(f"[llm]\n{table}\n{name} = \"{secret}\"\n" if table else f'[llm]\n{name} = "{secret}"\n', encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_settings(path, env_file=None)
    assert secret not in str(caught.value)


def test_a_discord_webhook_url_is_refused(tmp_path: Path) -> None:
    webhook = "https://discord.com/api/" + "webhooks/" + "1" * 18 + "/" + fake_secret("hook", 60)
    path = tmp_path / "bot.toml"
    path.write_text(f'[alerts]\nurl = "{webhook}"\n', encoding="utf-8")
    with pytest.raises(ConfigError):
        load_settings(path, env_file=None)


def _discord_like() -> str:
    return "M" + fake_secret("dtok", 25) + "." + "y" * 6 + "." + fake_secret("dsig", 30)


@pytest.mark.parametrize(
    ("toml", "build"),
    [
        # A secret in a URL's query string, not in its user info.
        ('[llm]\nbase_url = "https://llm.example/v1?{q}={s}"\n', lambda: fake_secret("qpw", 20)),
        ('[images]\nwebhook = "https://hooks.example/x?a=1&access_token={s}"\n', lambda: fake_secret("qtok", 24)),
        # A key pasted into prose: the system prompt reaches the model.
        ('[bot]\nsystem_prompt = "You help. Use key {s} when asked."\n', lambda: "sk-" + "proj-" + fake_secret("prompt", 40)),
        # A token pasted where a name goes is shown to every user.
        ('[bot]\nname = "{s}"\n', _discord_like),
        ('[bot]\nsystem_prompt = "Data lives at ' + password_url("postgresql", "app", "{s}", "db/bot") + '"\n',
         lambda: fake_secret("inprose", 16)),
    ],
)
def test_a_secret_shape_anywhere_in_the_file_is_refused(toml: str, build: Any, tmp_path: Path) -> None:
    secret = build()
    path = tmp_path / "bot.toml"
    path.write_text(toml.format(s=secret, q="pass" + "word"), encoding="utf-8")
    with pytest.raises(ConfigError, match="environment variables only") as caught:
        load_settings(path, env_file=None)
    assert secret not in str(caught.value)


def test_prose_about_secrets_is_not_mistaken_for_one(tmp_path: Path) -> None:
    prompt = "Never reveal a password: refuse. Keep to a token budget; the API key is not yours to share."
    path = tmp_path / "bot.toml"
    path.write_text(f'[bot]\nname = "herald-bot"\nsystem_prompt = "{prompt}"\n[llm]\nbase_url = "https://x.example/v1?max_tokens=5"\n',
                    encoding="utf-8")
    assert load_settings(path, env_file=None).bot.system_prompt == prompt
