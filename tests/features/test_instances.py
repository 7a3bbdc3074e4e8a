"""Scenarios of features/instances.feature: Several bot instances on the same backends."""

import asyncio
import contextlib
from typing import Any

from pytest_bdd import given, scenarios, then, when

from tests.harness.harness import Harness, HarnessError
from harness.instances import InProcessInstance
from tests.features.test_sessions_steps import redis_dump
from tests.harness.steps import LINGER, p

scenarios("instances.feature")


@when(p('instance "{name:Name}" loses its connections to Redis and the database'))
def when_instance_loses_connections(harness: Harness, name: str) -> None:
    """The instance's circuit breakers for both backends open, as when the
    backends closed its connections while the process was paused (SIGSTOP),
    or its calls timed out because the pause outlasted them. The backends
    themselves stay up, and the other instances reach them."""
    store = _store(harness, name)
    store.redis_breaker.trip("connection closed while the process was paused")
    store.db_breaker.trip("connection closed while the process was paused")


def _store(harness: Harness, name: str) -> Any:
    instance = harness.instance(name)
    if not isinstance(instance, InProcessInstance):
        raise HarnessError(f"instance {name} must run in this process")
    return instance.bot.plugin_state["memory"]


@when(p('instance "{name:Name}" receives "{text}" late'))
def when_received_late(harness: Harness, name: str, text: str) -> None:
    """The message (same id, same timestamp) reaches one instance only now:
    a paused process handles what its gateway connection buffered when it
    resumes. Its first delivery there, not a redelivery."""
    harness.deliver(harness.message_said(text), to=[name])


@when(p('instance "{a:Name}" generates its next reply while instance "{b:Name}" starts a new cache epoch and rebuilds {user:Name}\'s window in {place:Place}'))
def when_new_epoch_meanwhile(harness: Harness, a: str, b: str, user: str, place: str) -> None:
    """While ``a`` generates its next reply (its session's lease held, its
    cache epoch read with it), ``b`` does what an instance does when it
    recovers from an outage during which the cache missed writes: a new
    epoch for every instance, then the conversation's window rebuilt from
    the database under it (a read)."""
    writer, store = harness.instance(a), _store(harness, b)
    if not isinstance(writer, InProcessInstance):
        raise HarnessError(f"instance {a} must run in this process")
    probe = harness.probe(user, place)

    async def meanwhile() -> None:
        await store.cache.bump_epoch()
        _scope, sid, _lines = await harness.instance(b).context_view(probe, harness.window)
        assert sid is not None
        await store.refill(sid)
        assert await store.cache.has_window(sid), "no window rebuilt"

    writer.replier.meanwhile = meanwhile


@then(p("instance \"{name:Name}\"'s context for {user:Name} in {place:Place} holds {count:d} messages"))
def then_instance_context_count(harness: Harness, name: str, user: str, place: str, count: int) -> None:
    """What ``name`` reads for the conversation now holds ``count`` messages."""
    scope, sid, lines = harness.view(user, place, instance=name)
    got = [(harness.label(m), m.content) for m in lines]
    assert len(lines) == count, f"{len(lines)} messages in session {sid} of {scope} on {name}: {got}"


@given("every instance has seen the others announce themselves")
def given_rosters(harness: Harness) -> None:
    """Each instance announces itself every claim_ttl / 3 (rule A7); an
    instance started a moment ago may not have seen one started after it.
    Let every instance announce, then read again."""

    async def announce() -> None:
        for _ in range(2):
            for name in harness.instances:
                await _store(harness, name).arbiter.announce()

    harness.run(announce(), what="announcing")


@when(p('instance "{name:Name}" receives "{text}" late and keeps watch'))
def when_received_late_watching(harness: Harness, name: str, text: str) -> None:
    """As above; the step does not wait while the instance keeps watch."""
    harness.deliver(harness.message_said(text), to=[name], linger=LINGER)


@given(p("every instance takes {seconds:g} seconds to generate a reply"))
def given_slow_replies(harness: Harness, seconds: float) -> None:
    """The test reply plugin of every instance waits this long before it
    answers, as a slow model would."""
    for name in harness.instances:
        instance = harness.instance(name)
        if isinstance(instance, InProcessInstance):
            instance.replier.delay = seconds
        else:
            harness.run(instance.set_reply_delay(seconds), what=f"making instance {name} slow")  # type: ignore[attr-defined]


@when(p('{user:Name} says "{text}" in {place:Place}, and instance "{name:Name}" is killed while it holds the claim'))
def when_killed_holding_claim(harness: Harness, user: str, text: str, place: str, name: str) -> None:
    """Every instance receives the message; ``name`` (a separate process)
    receives it first, and is SIGKILLed once its claim is in Redis and
    before it replies (it waits for the session's lease). The others go on
    handling it in the background: 'instance … answers …' waits for them."""
    message = harness.new_message(user, place, text)
    delivery = harness.deliveries[message.id]
    delivery.times += 1
    delivery.instances.extend(harness.instances)
    doomed = harness.instance(name)
    loop = harness.loop.loop
    dying = asyncio.run_coroutine_threadsafe(doomed.deliver(message), loop)

    harness.wait_until(lambda: _holds_claim(harness, message.id, name), f"instance {name} claims {text!r}")
    others = [harness.instance(n) for n in harness.instances if n != name]
    harness._standbys = [(o, asyncio.run_coroutine_threadsafe(o.deliver(message), loop)) for o in others]  # type: ignore[attr-defined]
    if dying.done():
        raise HarnessError(f"instance {name} finished {text!r} before it could be killed")
    harness.kill_instance(name)
    with contextlib.suppress(Exception):  # the delivery dies with the process, as it should
        dying.result(15)


@when(p('{user:Name} says "{text}" in {place:Place}; instance "{a:Name}" pauses holding it, "{b:Name}" takes it over and is killed'))
def when_taker_killed(harness: Harness, user: str, text: str, place: str, a: str, b: str) -> None:
    """Both instances (separate processes) receive the message. ``a`` wins
    its claim and is paused (SIGSTOP) before it can send; ``b``, keeping
    watch, takes the claim over once it expires and is SIGKILLed before it
    sends in turn; then ``a`` resumes. 'instance … answers …' waits for
    ``a``'s delivery."""
    message = harness.new_message(user, place, text)
    delivery = harness.deliveries[message.id]
    delivery.times += 1
    delivery.instances.extend([a, b])
    first, second = harness.instance(a), harness.instance(b)
    loop = harness.loop.loop
    holding = asyncio.run_coroutine_threadsafe(first.deliver(message), loop)
    harness.wait_until(lambda: _holds_claim(harness, message.id, a), f"instance {a} claims {text!r}")
    first.pause()  # type: ignore[attr-defined]
    try:
        taking = asyncio.run_coroutine_threadsafe(second.deliver(message), loop)
        harness.wait_until(lambda: _holds_claim(harness, message.id, b), f"instance {b} takes {text!r} over", timeout=30)
        if taking.done():
            raise HarnessError(f"instance {b} finished {text!r} before it could be killed")
        harness.kill_instance(b)
        with contextlib.suppress(Exception):  # the delivery dies with the process, as it should
            taking.result(15)
    finally:
        first.resume()  # type: ignore[attr-defined]
    harness._standbys = [(first, holding)]  # type: ignore[attr-defined]


@when(p('instance "{name:Name}" is started again in a separate process'))
def when_started_again(harness: Harness, name: str) -> None:
    """A killed instance's next life: the same instance id and data dir."""
    harness.start_instance(name, process=True)


def _holds_claim(harness: Harness, message_id: str, name: str) -> None:
    dump = redis_dump(harness)
    value = next((v for k, v in dump.items() if k.endswith(f"claim:{message_id}")), None)
    assert value is not None and f"{name}/" in value, f"claim on {message_id}: {value!r}"


@then(p('instance "{name:Name}" answers "{text}"'))
def then_standby_answers(harness: Harness, name: str, text: str) -> None:
    """Wait (bounded) for the background deliveries of 'is killed while it
    holds the claim' to end; ``name`` sent a reply to ``text``."""
    message = harness.message_said(text)
    for instance, future in harness._standbys:  # type: ignore[attr-defined]
        sent = future.result(60)
        harness._collect_contexts(instance)
        harness.sent.extend(sent)
    assert any(s.instance == name for s in harness.replies_to(message)), f"instance {name} did not answer {text!r}"
