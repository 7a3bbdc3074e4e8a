"""Scope keys (G8) and the [sessions] settings, overrides included."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.errors import ConfigError
from core.models import IncomingMessage
from core.settings import EnvSettings, Settings

from plugins.sessions.config import SessionsSettings, effective, load
from plugins.sessions.scope import is_shared, scope_key

ROOT = Path(__file__).resolve().parents[2]


def msg(user: str = "u1", channel: str = "c1", guild: str | None = "g1", thread: str | None = None) -> IncomingMessage:
    return IncomingMessage(
        id="1", author_id=user, channel_id=channel, content="hi", timestamp=0.0,
        guild_id=guild, thread_id=thread, is_dm=guild is None,
    )


def settings(**section: object) -> Settings:
    return Settings(env=EnvSettings(data_dir=Path(".")), sections={"sessions": dict(section)})


@pytest.mark.parametrize(
    ("scope", "message", "expected"),
    [
        ("user_channel", msg(), "g:g1:c:c1:u:u1"),
        ("channel", msg(), "g:g1:c:c1"),
        ("thread", msg(thread="t9"), "g:g1:t:t9"),
        # Outside a thread the thread scope is per user per channel.
        ("thread", msg(), "g:g1:c:c1:u:u1"),
        # A thread is its own channel: never shares with its parent.
        ("user_channel", msg(thread="t9"), "g:g1:c:t9:u:u1"),
        ("channel", msg(thread="t9"), "g:g1:c:t9"),
        # DMs are per user whatever the scope.
        ("channel", msg(guild=None), "dm:u1"),
        ("thread", msg(guild=None, thread="t9"), "dm:u1"),
    ],
)
def test_scope_keys(scope: str, message: IncomingMessage, expected: str) -> None:
    assert scope_key(message, scope) == expected


def test_scope_keys_isolate_users_channels_and_guilds() -> None:
    keys = {
        scope_key(msg(user=u, channel=c, guild=g), "user_channel")
        for u in ("u1", "u2") for c in ("c1", "c2") for g in ("g1", "g2")
    }
    assert len(keys) == 8
    shared = {scope_key(msg(user=u, channel="c1"), "channel") for u in ("u1", "u2")}
    assert shared == {"g:g1:c:c1"}


def test_an_id_with_separators_cannot_forge_another_scope() -> None:
    forged = scope_key(msg(user="u1", channel="c1:u:u2"), "channel")
    assert forged != scope_key(msg(user="u2", channel="c1"), "user_channel")
    assert forged == "g:g1:c:c1%3Au%3Au2"
    assert scope_key(msg(guild=None, user="local:bob"), "user_channel") == "dm:local%3Abob"


def test_shared_scopes() -> None:
    assert is_shared("g:g1:c:c1") and is_shared("g:g1:t:t1")
    assert not is_shared("g:g1:c:c1:u:u1") and not is_shared("dm:u1")


def test_defaults() -> None:
    cfg = load(settings())
    assert (cfg.scope, cfg.idle_timeout, cfg.max_age, cfg.window_messages, cfg.token_budget) == (
        "user_channel", 1800, None, 50, 3000)


def test_overrides_most_specific_wins() -> None:
    cfg = load(settings(
        scope="user_channel",
        idle_timeout=100,
        overrides={
            "guild:g1": {"scope": "channel", "system_prompt": "guild prompt", "idle_timeout": 50},
            "channel:c2": {"scope": "thread"},
            "channel:t7": {"window_messages": 3},
        },
    ))
    assert effective(cfg, msg()).scope == "channel"
    assert effective(cfg, msg()).idle_timeout == 50
    assert effective(cfg, msg()).system_prompt == "guild prompt"
    in_c2 = effective(cfg, msg(channel="c2"))
    assert (in_c2.scope, in_c2.idle_timeout, in_c2.system_prompt) == ("thread", 50, "guild prompt")
    in_thread = effective(cfg, msg(channel="c2", thread="t7"))
    assert (in_thread.scope, in_thread.window_messages) == ("thread", 3)
    other_guild = effective(cfg, msg(guild="g2"))
    assert (other_guild.scope, other_guild.idle_timeout, other_guild.system_prompt) == ("user_channel", 100, None)
    # Overrides never reach DMs: they are per user and out of any guild.
    assert effective(cfg, msg(guild=None)).idle_timeout == 100


@pytest.mark.parametrize(
    ("section", "names"),
    [
        ({"scope": "per_room"}, ["scope", "user_channel"]),
        ({"overrides": {"guild:1": {"scope": "room"}}}, ["overrides.guild:1.scope"]),
        ({"overrides": {"guld:1": {"scope": "channel"}}}, ["overrides", "'guld:1'", "guild:<id>"]),
        ({"overrides": {"channel:5": {"scoop": "channel"}}}, ["overrides.channel:5.scoop"]),
        ({"overrides": {"channel:5": "channel"}}, ["overrides.channel:5"]),
        ({"idle_timeout": -1}, ["idle_timeout"]),
        ({"window_messages": 0}, ["window_messages"]),
        ({"token_counter": "nope"}, ["token_counter", "unknown token counter 'nope'"]),
        ({"scopes": "channel"}, ["unknown key 'scopes'"]),
    ],
)
def test_malformed_settings_name_the_key(section: dict[str, object], names: list[str]) -> None:
    with pytest.raises(ConfigError) as caught:
        load(settings(**section))
    text = str(caught.value)
    assert "[sessions]" in text
    for name in names:
        assert name in text, text


def test_environment_beats_the_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SESSIONS_SCOPE", "channel")
    monkeypatch.setenv("SESSIONS_OVERRIDES", '{"guild:g1": {"scope": "thread"}}')
    cfg = load(settings(scope="user_channel"))
    assert cfg.scope == "channel"
    assert cfg.overrides["guild:g1"].scope == "thread"
    monkeypatch.setenv("SESSIONS_SCOPE", "room")
    with pytest.raises(ConfigError, match="scope"):
        load(settings())


def test_token_counter_by_import_path() -> None:
    cfg = load(settings(token_counter="tests.sessions.test_window:count_words"))
    assert isinstance(cfg, SessionsSettings)
    with pytest.raises(ConfigError, match="cannot be imported"):
        load(settings(token_counter="tests.sessions.no_such_module:count"))


def test_core_check_reports_a_malformed_scope(tmp_path: Path) -> None:
    """``python -m core check`` names the key and fails, as an operator sees it."""
    config = tmp_path / "bot.toml"
    config.write_text('[plugins]\nenabled = ["sessions"]\n\n[sessions.overrides."guild:1"]\nscope = "room"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SESSIONS_", "BOT_", "DATABASE_URL", "REDIS_URL"))}
    env["BOT_DATA_DIR"] = str(tmp_path / "data")
    env["PYTHONPATH"] = str(ROOT)
    done = subprocess.run(
        [sys.executable, "-m", "core", "--config", str(config), "check"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 1, out
    assert "config: FAIL plugin sessions:" in out and "config: OK" not in out, out
    assert "overrides.guild:1.scope" in out, out
    assert "verdict: FAIL" in out, out
