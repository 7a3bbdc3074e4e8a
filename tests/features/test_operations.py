"""Scenarios of features/operations.feature, and the steps only they use:
reading the ops plugin's HTTP endpoints of the running instance."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import parse
from prometheus_client.parser import text_string_to_metric_families
from pytest_bdd import parsers, scenarios, then

from tests.harness.harness import Harness
from tests.harness.steps import p

scenarios("operations.feature")


@parse.with_pattern(r"[a-z_]+")
def _metric_name(text: str) -> str:
    return text


def m(pattern: str) -> object:
    """``parsers.parse`` where ``{name:Metric}`` is one metric name (no spaces)."""
    return parsers.parse(pattern, extra_types={"Metric": _metric_name})


def _get(harness: Harness, path: str) -> tuple[int, str]:
    """GET ``path`` from instance A's listener (it serves on the harness's
    loop thread; this step waits on the socket)."""
    ops = harness.instance("A").bot.ops  # type: ignore[attr-defined]
    url = f"http://127.0.0.1:{ops.server.port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _sample(harness: Harness, name: str, labels: dict[str, str]) -> float:
    _status, text = _get(harness, "/metrics")
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    raise AssertionError(f"no sample {name}{labels} in /metrics")


def _eventually(harness: Harness, what: str, check: Any) -> None:
    # The probe notices an outage or a recovery within its interval: wait
    # (bounded) for the endpoint to say so.
    harness.wait_until(check, what)


@then(p("/healthz answers {code:d}"))
def then_healthz(harness: Harness, code: int) -> None:
    status, body = _get(harness, "/healthz")
    assert status == code, body
    assert json.loads(body)["status"] == "alive"


@then(p('/readyz answers {code:d} with status "{status}"'))
def then_readyz(harness: Harness, code: int, status: str) -> None:
    def check() -> None:
        got, body = _get(harness, "/readyz")
        assert (got, json.loads(body)["status"]) == (code, status), body

    _eventually(harness, f"/readyz answers {code} {status}", check)


@then(p('/readyz reports "{component}" {status}'))
def then_readyz_component(harness: Harness, component: str, status: str) -> None:
    def check() -> None:
        _got, body = _get(harness, "/readyz")
        report = json.loads(body)["components"].get(component)
        assert report is not None and report["status"] == status, body
        assert status == "ok" or report["detail"], f"no reason given for {component}: {body}"

    _eventually(harness, f"/readyz reports {component} {status}", check)


@then(m('the metric {name:Metric} for {label:Metric} "{value}" is {number:g}'))
def then_metric_labelled(harness: Harness, name: str, label: str, value: str, number: float) -> None:
    def check() -> None:
        got = _sample(harness, name, {label: value})
        assert got == number, f"{name}{{{label}={value!r}}} is {got}, not {number:g}"

    _eventually(harness, f"{name} is {number:g}", check)


@then(m('the metric {name:Metric} for {label:Metric} "{value}" is more than {number:g}'))
def then_metric_labelled_above(harness: Harness, name: str, label: str, value: str, number: float) -> None:
    def check() -> None:
        got = _sample(harness, name, {label: value})
        assert got > number, f"{name}{{{label}={value!r}}} is {got}, not more than {number:g}"

    _eventually(harness, f"{name} above {number:g}", check)


@then(m("the metric {name:Metric} is {number:g}"))
def then_metric(harness: Harness, name: str, number: float) -> None:
    def check() -> None:
        got = _sample(harness, name, {})
        assert got == number, f"{name} is {got}, not {number:g}"

    _eventually(harness, f"{name} is {number:g}", check)


@then(m("the metric {name:Metric} is more than {number:g}"))
def then_metric_above(harness: Harness, name: str, number: float) -> None:
    def check() -> None:
        got = _sample(harness, name, {})
        assert got > number, f"{name} is {got}, not more than {number:g}"

    _eventually(harness, f"{name} above {number:g}", check)
