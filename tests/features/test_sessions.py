"""Scenarios of features/sessions.feature, and the steps only they use.

Shared steps (bot instances, saying things, the clock, faults, assertions on
contexts and the database) come from tests/harness/steps.py.
"""

from __future__ import annotations

import json

from pytest_bdd import given, scenarios, then

from tests.features.test_sessions_steps import *  # noqa: F403 - the shared sessions steps
from tests.harness.harness import Harness
from tests.harness.steps import p

scenarios("sessions.feature")

# --- Given -----------------------------------------------------------------------


def _override(harness: Harness, target: str, key: str, value: str) -> None:
    overrides = dict(harness.sections.get("sessions", {}).get("overrides", {}))
    entry = dict(overrides.get(target, {}))
    text = value.strip()
    entry[key] = text[1:-1] if text[:1] == text[-1:] == '"' else json.loads(text)
    overrides[target] = entry
    harness.configure("sessions", "overrides", overrides)


@given(p('the sessions override for guild "{guild:Name}" sets "{key}" to {value}'))
def given_guild_override(harness: Harness, guild: str, key: str, value: str) -> None:
    """``[sessions.overrides."guild:<id of guild>"] key = value``."""
    _override(harness, f"guild:{harness.world.guild(guild)}", key, value)


@given(p('the sessions override for {place:Place} sets "{key}" to {value}'))
def given_channel_override(harness: Harness, place: str, key: str, value: str) -> None:
    """``[sessions.overrides."channel:<id of the channel>"] key = value``."""
    where = harness.world.place(place, harness.world.user("operator"))
    _override(harness, f"channel:{where.channel_id}", key, value)


# --- Then -----------------------------------------------------------------------------


@then(p('the context of the reply to "{text}" used at most {limit:d} tokens of a budget of {budget:d}'))
def then_tokens(harness: Harness, text: str, limit: int, budget: int) -> None:
    """The context handed to the reply plugin reports its token use (system
    prompt included) and budget."""
    context = harness.context_of_reply(harness.message_said(text))
    assert context.token_budget == budget, f"budget {context.token_budget}"
    assert context.tokens_used is not None and 0 < context.tokens_used <= limit, f"used {context.tokens_used}"
