"""Scenarios of features/sessions.feature, and the steps only they use.

Shared steps (bot instances, saying things, the clock, faults, assertions on
contexts and the database) come from tests/harness/steps.py.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from pytest_bdd import given, scenarios, then, when

from tests.features.test_sessions_steps import *  # noqa: F403 - the shared sessions steps
from tests.features.test_sessions_steps import redis_dump
from tests.harness.harness import Harness, HarnessError
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


# --- When: an instance busy, an instance dying ------------------------------------------


@when(p("instance \"{name:Name}\" is busy with {user:Name}'s conversation in {place:Place}"))
def when_busy(harness: Harness, name: str, user: str, place: str) -> None:
    """The instance holds the session lease of ``user``'s conversation in
    ``place`` (as while handling a slow message) until 'is no longer busy'."""
    instance: Any = harness.instance(name)
    if not instance.in_process:
        raise HarnessError(f"instance {name} must run in this process to be made busy")
    probe = harness.probe(user, place)

    async def start() -> tuple[asyncio.Event, asyncio.Event, asyncio.Task[None]]:
        held, release = asyncio.Event(), asyncio.Event()

        async def hold() -> None:
            lease = await instance.bot.hooks.first("session_lease", message=probe)
            if lease is None:
                raise HarnessError("no plugin gives session leases")
            async with lease:
                held.set()
                await release.wait()

        task = asyncio.get_running_loop().create_task(hold())
        await asyncio.wait_for(held.wait(), 10)
        return held, release, task

    harness._sessions_busy = harness.run(start(), what="taking the session lease")  # type: ignore[attr-defined]


@when(p('instance "{name:Name}" is no longer busy'))
def when_not_busy(harness: Harness, name: str) -> None:
    """Release the lease taken by 'is busy with'."""
    _held, release, task = harness._sessions_busy  # type: ignore[attr-defined]

    async def stop() -> None:
        release.set()
        await asyncio.wait_for(task, 10)

    harness.run(stop(), what="releasing the session lease")


@when(p('{user:Name} says "{text}" in {place:Place} to instance "{name:Name}", which is killed while it holds the claim'))
def when_killed_holding_claim(harness: Harness, user: str, text: str, place: str, name: str) -> None:
    """Deliver a new message to one worker-process instance only, wait until
    that instance has claimed it (its claim is in Redis), then SIGKILL it
    before it replies (it is waiting for the session's lease)."""
    message = harness.new_message(user, place, text)
    delivery = harness.deliveries[message.id]
    delivery.times += 1
    delivery.instances.append(name)
    instance = harness.instance(name)
    future = asyncio.run_coroutine_threadsafe(instance.deliver(message), harness.loop.loop)

    def claimed() -> None:
        dump = redis_dump(harness)
        keys = [k for k in dump if k.endswith(f"claim:{message.id}")]
        assert keys, f"no claim on {message.id} in Redis yet (keys: {sorted(dump)[:20]})"
        assert f'"o":"{name}"' in dump[keys[0]], f"claim held by someone else: {dump[keys[0]]}"

    harness.wait_until(claimed, f"instance {name} claims {text!r}")
    if future.done():
        raise HarnessError(f"instance {name} finished {text!r} before it could be killed")
    harness.kill_instance(name)
    try:
        future.result(15)
    except Exception:  # noqa: BLE001 - the delivery dies with the process, as it should
        pass
    else:
        raise HarnessError(f"instance {name} answered {text!r} although it was killed")


# --- Then -----------------------------------------------------------------------------


@then(p('the context of the reply to "{text}" used at most {limit:d} tokens of a budget of {budget:d}'))
def then_tokens(harness: Harness, text: str, limit: int, budget: int) -> None:
    """The context handed to the reply plugin reports its token use (system
    prompt included) and budget."""
    context = harness.context_of_reply(harness.message_said(text))
    assert context.token_budget == budget, f"budget {context.token_budget}"
    assert context.tokens_used is not None and 0 < context.tokens_used <= limit, f"used {context.tokens_used}"
