"""The command line refuses to start on invalid configuration, with one
clear line per problem and no traceback (docs/SECURITY.md, "Configuration");
the plugin-section cases are scenarios of features/configuration.feature."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

# Variables of this machine that would change what the bot reads.
_PREFIXES = ("BOT_", "DISCORD_", "LIMITS_", "MEMORY_", "SESSIONS_", "IMAGES_", "LLM_", "REDIS_", "DATABASE_")


def run_cli(tmp_path: Path, *args: str, toml: str | None = None, stdin: bytes = b"/quit\n", **env: str) -> subprocess.CompletedProcess[str]:
    if toml is not None:
        (tmp_path / "bot.toml").write_text(toml)
    clean = {k: v for k, v in os.environ.items() if not k.startswith(_PREFIXES)}
    clean.setdefault("BOT_DATA_DIR", str(tmp_path / "data"))
    clean.update(env)
    done = subprocess.run(
        [sys.executable, "-m", "core", *args],
        cwd=tmp_path,
        env=clean,
        input=stdin,
        capture_output=True,
        timeout=120,
    )
    return subprocess.CompletedProcess(done.args, done.returncode, done.stdout.decode(), done.stderr.decode())


def assert_refused(done: subprocess.CompletedProcess[str], *expected: str) -> None:
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert "Chatting with" not in done.stdout
    lines = [line for line in done.stderr.splitlines() if line.startswith("config error:")]
    for text in expected:
        assert any(text in line for line in lines), done.stderr


def test_an_unknown_key_of_the_bot_table_names_the_closest_one(tmp_path: Path) -> None:
    # The plugin sections' cases are scenarios of features/configuration.feature.
    done = run_cli(tmp_path, "chat", toml="[bot]\nnmae = 'x'\n")
    assert_refused(done, "[bot]: nmae: Extra inputs are not permitted; did you mean 'name'?")


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"BOT_LOG_LEVEL": "NOPE"}, "BOT_LOG_LEVEL: log level 'NOPE' is not one of"),
        ({"BOT_DATA_DIR": ""}, "BOT_DATA_DIR: empty; unset it"),
    ],
)
def test_bad_environment_is_one_line_not_a_traceback(tmp_path: Path, env: dict[str, str], expected: str) -> None:
    done = run_cli(tmp_path, "chat", **env)
    assert_refused(done, expected)
    assert not list(tmp_path.glob("*.db"))


def test_a_data_dir_that_cannot_be_written_refuses_to_start(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    done = run_cli(tmp_path, "chat", BOT_DATA_DIR=str(tmp_path / "a-file" / "data"))
    assert_refused(done, "BOT_DATA_DIR", "cannot be written")


def test_a_bad_log_level_option_is_refused(tmp_path: Path) -> None:
    assert_refused(run_cli(tmp_path, "--log-level", "loud", "check"), "--log-level: log level 'loud'")


@pytest.mark.real
def test_with_redis_killed_mid_chat_commands_answer_without_a_traceback(tmp_path: Path) -> None:
    from harness.backends import RedisServer

    redis = RedisServer(tmp_path / "redis")
    redis.start()
    clean = {k: v for k, v in os.environ.items() if not k.startswith(_PREFIXES)}
    clean.update(BOT_DATA_DIR=str(tmp_path / "data"), REDIS_URL=f"redis://127.0.0.1:{redis.port}/0")
    chat = subprocess.Popen(
        [sys.executable, "-m", "core", "chat"], cwd=tmp_path, env=clean, text=True,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        assert chat.stdin is not None and chat.stdout is not None
        chat.stdin.write("hello\n")
        chat.stdin.flush()
        seen = [chat.stdout.readline() for _ in range(2)]  # the greeting, then the reply
        assert seen[1].startswith("bot> "), seen
        redis.kill()
        commands = ["/session", "/history", "/reset", "hello again", "/export", "/plugins", "/forget confirm"]
        out, err = chat.communicate("\n".join(commands) + "\n", timeout=120)
    finally:
        chat.kill()
        redis.stop()
    assert chat.returncode == 0, err
    assert "Traceback" not in out + err and "BackendDown" not in out + err
    assert "redis: DOWN" in out and "Done: I deleted everything" in out
    assert (out.count("\nbot> ") + 1) >= len(commands)
