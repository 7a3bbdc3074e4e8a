"""The reply plugin's parts, without a bot: settings, URLs, prompt, waits."""

from __future__ import annotations

import asyncio
import email.utils
import os
from pathlib import Path

import pytest

from core.errors import ConfigError
from core.models import Attachment, Context, MessageRecord, Recalled, Role, Session
from core.settings import EnvSettings, Settings
from plugins.llm.client import completions_url, models_url, parse_retry_after
from plugins.llm.prompt import FAILURE_MARK, build_messages
from plugins.llm.settings import LlmSettings, check_base_url, load_llm_settings
from tests.fake_urls import password_url
from tests.llm.helpers import Chat, make_bot, run


def _settings(section: dict) -> LlmSettings:  # noqa: ANN001
    return load_llm_settings(Settings(env=EnvSettings(data_dir=Path("."), instance_id="x"), sections={"llm": section}))


def test_unset_or_blank_base_url_means_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _settings({}).offline
    monkeypatch.setenv("LLM_BASE_URL", "  ")
    assert _settings({}).offline


def test_environment_wins_over_the_section(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLM_MODEL", "from-env")
    monkeypatch.setenv("LLM_GUILD_PROMPTS", '{"42": "Be brief."}')
    monkeypatch.setenv("LLM_STREAM", "true")
    settings = _settings({"model": "from-file", "base_url": "http://127.0.0.1:9/v1"})
    assert settings.model == "from-env" and settings.stream is True
    assert settings.persona("42", "default") == "Be brief."
    assert settings.persona("7", "default") == "default"


def test_api_key_comes_from_the_environment_only(monkeypatch: pytest.MonkeyPatch, fake_key: str) -> None:
    with pytest.raises(ConfigError, match="LLM_API_KEY"):
        _settings({"api_key": fake_key})
    monkeypatch.setenv("LLM_API_KEY", fake_key)
    settings = _settings({})
    assert settings.api_key_value() == fake_key
    assert fake_key not in repr(settings) and fake_key not in str(settings.model_dump())


def test_unknown_and_invalid_keys_are_named() -> None:
    with pytest.raises(ConfigError, match="unknown key 'temprature'"):
        _settings({"temprature": 1})
    with pytest.raises(ConfigError, match="temperature"):
        _settings({"temperature": 9})


@pytest.mark.parametrize(
    "url, problem",
    [
        ("ftp://127.0.0.1/v1", "must start with http:// or https://"),
        ("localhost:11434/v1", "must start with http:// or https://"),
        ("127.0.0.1:11434", "must start with http:// or https://"),
        ("http:///v1", "no host name"),
        ("http://127.0.0.1:99999/v1", "port out of range"),
        ("http://[::1/v1", "invalid ipv6 url"),
        ("http://127.0.0.1:11434/v1#x", "fragment"),
    ],
)
def test_malformed_base_url_is_a_clear_config_error(url: str, problem: str) -> None:
    with pytest.raises(ConfigError, match="LLM_BASE_URL") as caught:
        check_base_url(url)
    assert problem in str(caught.value)


def test_malformed_base_url_fails_the_plugin_at_startup_without_echoing_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    password = "pw" + "q" * 10
    monkeypatch.setenv("LLM_BASE_URL", password_url("htps", "user", password, "127.0.0.1/v1"))

    async def scenario() -> str:
        bot = make_bot(tmp_path, {})
        await bot.start()
        try:
            info = bot.plugins.info["llm"]
            assert info.state == "failed"
            assert "LLM_BASE_URL must start with http:// or https://" in info.reason
            assert password not in info.reason
            # The bot still answers (the core's fallback), and says why.
            return (await Chat(bot).say("hello")).content
        finally:
            await bot.stop()

    assert "No reply plugin is enabled" in run(scenario())


@pytest.mark.parametrize(
    "base, expected",
    [
        ("http://127.0.0.1:11434/v1", "http://127.0.0.1:11434/v1/chat/completions"),
        ("http://127.0.0.1:11434/v1/", "http://127.0.0.1:11434/v1/chat/completions"),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080/chat/completions"),
        ("http://127.0.0.1:8080/v1/chat/completions", "http://127.0.0.1:8080/v1/chat/completions"),
        (
            "https://res.example.test/openai/deployments/d1?api-version=2024-06-01",
            "https://res.example.test/openai/deployments/d1/chat/completions?api-version=2024-06-01",
        ),
    ],
)
def test_completions_url(base: str, expected: str) -> None:
    assert str(completions_url(LlmSettings(base_url=base))) == expected


def test_api_version_setting_and_models_url() -> None:
    settings = LlmSettings(base_url="https://res.example.test/openai/deployments/d1", api_version="2024-06-01")
    assert str(completions_url(settings)).endswith("/d1/chat/completions?api-version=2024-06-01")
    assert str(models_url(LlmSettings(base_url="http://h:1/v1/chat/completions"))) == "http://h:1/v1/models"


def test_retry_after_forms() -> None:
    assert parse_retry_after({"Retry-After": "7"}) == 7.0
    assert parse_retry_after({"retry-after-ms": "250"}) == 0.25
    assert parse_retry_after({}) is None
    assert parse_retry_after({"Retry-After": "soon"}) is None
    date = email.utils.formatdate(1_000_030, usegmt=True)
    assert parse_retry_after({"Retry-After": date}, now=1_000_000) == pytest.approx(30, abs=1)


def _rec(n: int, role: Role, author: str, text: str, **extra) -> MessageRecord:  # noqa: ANN003
    return MessageRecord(
        id=str(n), session_id="s", scope_key="k", role=role, author_id=author, author_name=author.title(),
        content=text, timestamp=float(n), **extra,
    )


def test_several_speakers_are_named_and_notes_reach_the_system_prompt() -> None:
    context = Context(
        Session("s", "k", 0, 0),
        "Persona.",
        [
            _rec(1, Role.USER, "alice", "hi all"),
            _rec(2, Role.USER, "bob", "hey"),
            _rec(3, Role.BOT, "bot", f"{FAILURE_MARK} The model provider is unavailable right now."),
            _rec(4, Role.BOT, "bot", "hello both"),
            _rec(5, Role.USER, "alice", "what now?"),
        ],
        notes=["memory is degraded"],
    )
    messages = asyncio.run(build_messages(context, "Persona."))
    assert messages == [
        {"role": "system", "content": "Persona.\n\nNote: memory is degraded."},
        {"role": "user", "content": "Alice: hi all"},
        {"role": "user", "content": "Bob: hey"},
        {"role": "assistant", "content": "hello both"},
        {"role": "user", "content": "Alice: what now?"},
    ]


def test_recalled_items_reach_the_system_prompt_marked_with_their_dates() -> None:
    context = Context(
        Session("s", "k", 0, 0),
        "Persona.",
        [_rec(5, Role.USER, "alice", "which colour?")],
        recalled=[
            Recalled("fact", "favourite colour: teal", 1_764_547_200.0, "m1"),
            Recalled("message", "we painted the hall teal", 1_764_460_800.0, "m2"),
        ],
    )
    messages = asyncio.run(build_messages(context, "Persona."))
    assert messages[0]["content"] == (
        "Persona.\n\nRecalled from earlier conversations with this user (not part of the conversation below; "
        "use only if relevant):\n- [2025-12-01] fact: favourite colour: teal\n- [2025-11-30] they said: we painted the hall teal"
    )
    assert messages[1:] == [{"role": "user", "content": "which colour?"}]


def test_stored_images_come_from_the_media_loader_and_oversized_ones_are_described() -> None:
    stored = Attachment("a.png", "image/png", 4, sha256="ab" * 32)
    huge = Attachment("b.png", "image/png", 10, data=b"x" * 10)
    context = Context(Session("s", "k", 0, 0), "P", [_rec(1, Role.USER, "alice", "", attachments=[stored, huge])])
    asked: list[str | None] = []

    async def load(attachment: Attachment) -> bytes | None:
        asked.append(attachment.sha256)
        return b"img!"

    messages = asyncio.run(build_messages(context, "P", vision=True, max_image_bytes=5, load_media=load))
    assert asked == ["ab" * 32]
    assert messages[1]["content"] == [
        {"type": "text", "text": "[image: b.png]"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,aW1nIQ=="}},
    ]


def test_no_stray_llm_environment_in_tests() -> None:
    assert not [k for k in os.environ if k.startswith("LLM_")]


def test_persona_precedence() -> None:
    settings = LlmSettings(system_prompt="Bot persona.", guild_prompts={"g1": "Guild persona."})
    assert settings.persona("g1", "Default.", "Default.") == "Guild persona."
    assert settings.persona("g2", "Default.", "Default.") == "Bot persona."
    # A prompt the sessions plugin chose for this channel beats the bot-wide persona.
    assert settings.persona("g2", "Channel prompt.", "Default.") == "Channel prompt."
    assert LlmSettings().persona(None, "Default.", "Default.") == "Default."


def test_a_config_file_llm_section_loads(tmp_path: Path) -> None:
    from core.settings import load_settings

    config = tmp_path / "bot.toml"
    config.write_text(
        '[llm]\nbase_url = "http://127.0.0.1:11434/v1"\nmodel = "llama3.2"\ntemperature = 0.3\n'
        'auth_header = "api-key"\nstream = true\nvision = true\n'
        '[llm.guild_prompts]\n"123456789" = "You are the help desk of the Example server."\n',
        encoding="utf-8",
    )
    settings = load_llm_settings(load_settings(config, env_file=None))
    assert settings.model == "llama3.2" and settings.stream and settings.vision and settings.temperature == 0.3
    assert settings.persona("123456789", "d", "d") == "You are the help desk of the Example server."


def test_max_tokens_in_the_config_file(tmp_path: Path) -> None:
    from core.settings import load_settings

    config = tmp_path / "bot.toml"
    config.write_text("[llm]\nmax_tokens = 300\n", encoding="utf-8")
    assert load_llm_settings(load_settings(config, env_file=None)).max_tokens == 300
