"""The author's kit, used the way a third party would: the scaffold writes a
package, pip installs it, its own tests pass with the chat_bot fixture, and
the bot answers through it in the terminal chat. The examples/ package is
installed and tested the same way."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from core.scaffold import write_plugin

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def _run(*args: str, cwd: Path, env: dict[str, str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, env=env, input=stdin, capture_output=True, text=True, timeout=240)


def _install(package: Path, tmp_path: Path) -> dict[str, str]:
    """pip-install ``package`` into a folder of its own (as into a venv:
    its entry point is then found by the bot); the environment to use it."""
    site = tmp_path / "site"
    pip = (sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
           "--disable-pip-version-check")
    result = _run(*pip, "--target", str(site), str(package), cwd=tmp_path, env=dict(os.environ))
    assert result.returncode == 0, result.stderr
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BOT_", "DISCORD_", "LLM_", "REDIS_", "DATABASE_"))}
    env["PYTHONPATH"] = str(site)
    env["BOT_DATA_DIR"] = str(tmp_path / "data")
    return env


def _check_installed_plugin(package: Path, name: str, tmp_path: Path) -> None:
    env = _install(package, tmp_path)
    tests = _run(sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(package / "tests"),
                 cwd=package, env=env)
    assert tests.returncode == 0, tests.stdout + tests.stderr
    assert "3 passed" in tests.stdout
    listing = _run(sys.executable, "-m", "core", "plugins", cwd=tmp_path, env=env)
    assert any(line.split()[:2] == [name, "enabled"] for line in listing.stdout.splitlines()), listing.stdout
    chat = _run(sys.executable, "-m", "core", "chat", cwd=tmp_path, env=env, stdin="ping\n")
    assert "pong" in chat.stdout, chat.stdout + chat.stderr


def test_a_scaffolded_plugin_installs_answers_and_its_own_tests_pass(tmp_path: Path) -> None:
    package = write_plugin("hello", tmp_path)
    _check_installed_plugin(package, "hello", tmp_path)


def test_the_example_plugin_installs_answers_and_its_tests_pass(tmp_path: Path) -> None:
    # A copy: building the package writes build/ and egg-info next to it.
    example = ROOT / "examples" / "ping"
    package = shutil.copytree(example, tmp_path / "ping", ignore=shutil.ignore_patterns("__pycache__"))
    _check_installed_plugin(package, "ping", tmp_path)


def test_the_example_is_what_the_scaffold_writes(tmp_path: Path) -> None:
    written = write_plugin("ping", tmp_path)
    example = ROOT / "examples" / "ping"
    files = sorted(p.relative_to(written) for p in written.rglob("*") if p.is_file())
    shipped = (p for p in example.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    assert files == sorted(p.relative_to(example) for p in shipped)
    for relative in files:
        assert (example / relative).read_text() == (written / relative).read_text(), relative


def test_the_scaffold_refuses_a_bad_name_and_an_existing_folder(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="lower-case letters"):
        write_plugin("Bad-Name", tmp_path)
    write_plugin("twice", tmp_path)
    with pytest.raises(ValueError, match="already exists; nothing was written"):
        write_plugin("twice", tmp_path)


def test_the_fixture_fails_loudly_on_a_plugin_with_a_typo(tmp_path: Path) -> None:
    (tmp_path / "test_typo.py").write_text(
        "import types\n"
        "from core.models import Reply\n"
        "from core.plugins import hookimpl\n\n"
        "def test_typo(chat_bot):\n"
        "    module = types.ModuleType('typo')\n"
        "    module.generate_replies = hookimpl(lambda context: Reply('never'))\n"
        "    chat_bot(modules={'typo': module})\n"
    )
    result = _run(sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_typo.py",
                  cwd=tmp_path, env=dict(os.environ))
    assert result.returncode == 1, result.stdout
    assert "plugin 'typo' failed: generate_replies is not a hook (did you mean generate_reply?)" in result.stdout


@pytest.mark.discord
@pytest.mark.multiprocess
def test_the_example_plugin_answers_through_discord(tmp_path: Path) -> None:
    """Installed with pip beside the bot, the example answers on Discord (the
    real discord.py client against the fake gateway), not only in the terminal."""
    from tests.fake_discord.runner import BotProcess, FakeDiscordThread

    # A copy: pip would leave build files in the source folder.
    package = shutil.copytree(ROOT / "examples" / "ping", tmp_path / "ping", ignore=shutil.ignore_patterns("__pycache__"))
    env = _install(package, tmp_path)
    with FakeDiscordThread() as discord:
        _guild, _channel, alice = discord.world()
        with BotProcess(discord, tmp_path / "discord-data", env={"PYTHONPATH": env["PYTHONPATH"]}) as bot:
            bot.start()
            answer = discord.chat(discord.dm_channel(alice)["id"], alice, "ping")
            assert answer is not None and "pong" in answer, f"{answer!r}\n{bot.log_tail()}"
