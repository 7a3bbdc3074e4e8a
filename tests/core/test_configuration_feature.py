"""Steps for features/configuration.feature: the real command line
(``python -m core``) in a fresh process, on the config file and
environment the scenario writes."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from pytest_bdd import given, parsers, scenarios, then, when

from tests.core.test_cli import run_cli

scenarios("configuration.feature")


class World:
    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.sections: dict[str, dict[str, str]] = {}
        self.env: dict[str, str] = {}
        self.done: subprocess.CompletedProcess[str] | None = None

    def toml(self) -> str:
        return "".join(
            f"[{name}]\n" + "".join(f"{key} = {value!r}\n" for key, value in keys.items())
            for name, keys in self.sections.items()
        )

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        self.done = run_cli(self.tmp_path, *args, toml=self.toml(), stdin=b"hello\n/quit\n", **self.env)
        return self.done


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


# --- Given ---------------------------------------------------------------------


@given(parsers.parse('the config file sets "{key}" to "{value}" in section "{section}"'))
def config_sets(world: World, key: str, value: str, section: str) -> None:
    world.sections.setdefault(section, {})[key] = value


@given(parsers.parse('the environment sets "{name}" to "{value}"'))
def environment_sets(world: World, name: str, value: str) -> None:
    world.env[name] = value


# --- When ----------------------------------------------------------------------


@when("the operator starts the terminal chat")
def start_chat(world: World) -> None:
    world.run("chat")


@when("the operator runs the check")
def run_check(world: World) -> None:
    world.run("check")


# --- Then ----------------------------------------------------------------------


@then("the bot does not start")
def not_started(world: World) -> None:
    assert world.done is not None
    assert world.done.returncode == 2, world.done.stderr
    assert "Chatting with" not in world.done.stdout
    assert "Traceback" not in world.done.stderr


@then(parsers.parse('the error says "{text}"'))
def error_says(world: World, text: str) -> None:
    assert world.done is not None
    lines = [line for line in world.done.stderr.splitlines() if line.startswith("config error: ")]
    assert any(text in line for line in lines), world.done.stderr


@then("the check fails")
def check_fails(world: World) -> None:
    assert world.done is not None and world.done.returncode == 1, world.done.stdout


@then(parsers.parse('the check does not say "{text}"'))
def check_does_not_say(world: World, text: str) -> None:
    assert world.done is not None and text not in world.done.stdout


@then(parsers.parse('the check says "{text}"'))
def check_says(world: World, text: str) -> None:
    assert world.done is not None and text in world.done.stdout, world.done.stdout


@then("the bot answers in the terminal")
def answers(world: World) -> None:
    assert world.done is not None and world.done.returncode == 0, world.done.stderr
    assert "\nbot> " in world.done.stdout
