"""Scenarios of features/admin_commands.feature, and the steps only they
use: running an admin command of the command line beside the harness."""

from __future__ import annotations

import shlex
from typing import Any

import pytest
from pytest_bdd import parsers, scenarios, then, when

from tests.harness.harness import Harness
from tests.harness.steps import p
from tests.ops.admin_cli import run_admin

scenarios("admin_commands.feature")


@pytest.fixture
def admin_result() -> dict[str, Any]:
    """The last command's exit code and JSON report."""
    return {}


@when(p('the operator runs "{command}"'))
def when_operator_runs(
    harness: Harness, monkeypatch: pytest.MonkeyPatch, admin_result: dict[str, Any], command: str
) -> None:
    """``python -m core COMMAND --json`` on the scenario's backends and
    instance A's data dir; a user name after ``--user`` becomes its id, a
    server's name (``main``, the default one; ``other``) after ``--guild``
    its id."""
    argv = shlex.split(command)
    for i, word in enumerate(argv[:-1]):
        if word == "--user":
            argv[i + 1] = harness.world.user(argv[i + 1]).id
        elif word == "--guild":
            argv[i + 1] = harness.world.guild(argv[i + 1])
    code, report, stderr = run_admin(harness, monkeypatch, *argv)
    admin_result.update(code=code, report=report, stderr=stderr)


@then(p("the command exits {code:d}"))
def then_exits(admin_result: dict[str, Any], code: int) -> None:
    assert admin_result["code"] == code, admin_result


@then(parsers.parse('its report says "{key}" is {value:d}'))
def then_report_is(admin_result: dict[str, Any], key: str, value: int) -> None:
    assert admin_result["report"].get(key) == value, admin_result["report"]


@then(parsers.parse('its report says "{a}" plus "{b}" is more than {value:d}'))
def then_report_sum(admin_result: dict[str, Any], a: str, b: str, value: int) -> None:
    report = admin_result["report"]
    assert (report.get(a) or 0) + (report.get(b) or 0) > value, report


@then(p("Redis holds {count:d} conversation windows"))
def then_windows(harness: Harness, count: int) -> None:
    """Looking inside Redis: hot windows (``bot:w:<epoch>:<session>``,
    plugins/memory/cache.py) of that many sessions."""
    windows = [k for k in harness.backends.redis_keys() if k.startswith("bot:w:")]
    assert len(windows) == count, windows


def _exported_contents(admin_result: dict[str, Any]) -> list[str]:
    return [m["content"] for m in admin_result["report"]["export"]["messages"]]


@then(p('its export holds the message "{text}" and the bot\'s reply to it'))
def then_export_holds(harness: Harness, admin_result: dict[str, Any], text: str) -> None:
    messages = admin_result["report"]["export"]["messages"]
    said = harness.message_said(text)
    ids = {m["id"] for m in messages}
    assert said.id in ids and f"reply:{said.id}" in ids, _exported_contents(admin_result)


@then(p('its export does not hold the message "{text}"'))
def then_export_lacks(admin_result: dict[str, Any], text: str) -> None:
    contents = _exported_contents(admin_result)
    assert not [c for c in contents if text in c], contents


@then(p('its export holds the server setting "{name}" as {value:d}'))
def then_export_setting(admin_result: dict[str, Any], name: str, value: int) -> None:
    settings = admin_result["report"]["export"]["guild_settings"]
    assert settings.get(name) == value, settings
