"""Shared steps for every feature, grouped Given / When / Then.

Words scenarios use:

- a *user* is a name (``alice``); users, guilds, channels and threads exist
  as soon as a step names them.
- a *place* is ``#general``, ``#general of other`` (guild ``other``),
  ``thread plans in #general`` or ``a DM``.
- an *instance* is a bot instance by name; ``the bot`` is instance ``A``.
- the test reply plugin answers every message with ``ok <its text>``; a
  context table names the bot's replies' author ``bot``.

Most Given steps are also When steps (and the reverse), so a scenario reads
naturally either way.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from pytest_bdd import given, parsers, then, when

from harness.assembly import ContextLine
from tests.harness.harness import Harness, HarnessError
from core.models import ReplyId

# Custom parse types keep patterns from overlapping: a place never swallows
# the words after it.
NAME = r"[A-Za-z][\w-]*"
PLACE = r"#[\w-]+(?: of [\w-]+)?|thread [\w-]+ in #[\w-]+(?: of [\w-]+)?|(?:a |their )?DM"
UNITS = {"second": 1, "seconds": 1, "minute": 60, "minutes": 60, "hour": 3600, "hours": 3600, "day": 86400, "days": 86400}


def _type(pattern: str) -> Any:
    def convert(text: str) -> str:
        return text

    convert.pattern = pattern  # type: ignore[attr-defined]
    return convert


TYPES = {"Name": _type(NAME), "Place": _type(PLACE)}


def p(pattern: str) -> Any:
    """``parsers.parse`` with the harness's types ``Name`` and ``Place``."""
    return parsers.parse(pattern, extra_types=TYPES)


def _value(text: str) -> Any:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        return text[1:-1]
    try:
        return json.loads(text)
    except ValueError:
        return text


def _rows(datatable: list[list[str]]) -> list[dict[str, str]]:
    header = [h.strip().lower() for h in datatable[0]]
    return [dict(zip(header, (c.strip() for c in row), strict=True)) for row in datatable[1:]]


# ============================================================================
# Given
# ============================================================================


@given(p('the {section:Name} setting "{key}" is {value}'))
def given_setting(harness: Harness, section: str, key: str, value: str) -> None:
    """Set one plugin setting (``[section] key = value``) for every instance
    started afterwards. The value is read as JSON (numbers, true/false,
    lists) or else as text."""
    harness.configure(section, key, _value(value))


@given("these settings:")
def given_settings(harness: Harness, datatable: list[list[str]]) -> None:
    """Set plugin settings from a table with columns section | key | value."""
    for row in _rows(datatable):
        harness.configure(row["section"], row["key"], _value(row["value"]))


@given(p('the plugins "{names}" are enabled'))
def given_plugins(harness: Harness, names: str) -> None:
    """Enable exactly these plugins (comma-separated) instead of the default
    ``memory, sessions``; the core and the test reply plugin are always on."""
    if harness.instances:
        raise HarnessError("plugins must be chosen before the bot starts")
    harness.plugins = [n.strip() for n in names.split(",") if n.strip()]


@given(p("{user:Name} can manage messages"))
def given_moderator(harness: Harness, user: str) -> None:
    """``user``'s messages carry the ``manage_messages`` permission."""
    harness.world.user(user).permissions.add("manage_messages")


@given(p("{user:Name} is a server administrator"))
def given_admin(harness: Harness, user: str) -> None:
    """``user``'s messages carry the ``administrator`` permission."""
    harness.world.user(user).permissions.add("administrator")


@given("the bot is running")
@when("the bot starts")
def given_bot_running(harness: Harness) -> None:
    """Start instance ``A`` in this process on the scenario's backends."""
    harness.start_instance("A")


@given("the bot is running in a separate process")
def given_bot_running_process(harness: Harness) -> None:
    """Start instance ``A`` as its own OS process (tag the scenario
    ``@multiprocess``)."""
    harness.start_instance("A", process=True)


@given(p('two bot instances "{a:Name}" and "{b:Name}" are running on the same backends'))
def given_two_instances(harness: Harness, a: str, b: str) -> None:
    """Two instances in this process on the same Redis and database; every
    message is delivered to both (as in a rolling deploy)."""
    harness.start_instance(a)
    harness.start_instance(b)


@given(p('two bot instances "{a:Name}" and "{b:Name}" are running on the same backends, "{c:Name}" in a separate process'))
def given_two_instances_process(harness: Harness, a: str, b: str, c: str) -> None:
    """As above, with instance ``c`` (one of the two) in its own OS process
    (tag the scenario ``@multiprocess``)."""
    if c not in (a, b):
        raise HarnessError(f"instance {c!r} is not one of {a!r} and {b!r}")
    harness.start_instance(a, process=(c == a))
    harness.start_instance(b, process=(c == b))


@given(p('a second instance "{name:Name}" is running on the same backends'))
@when(p('a second instance "{name:Name}" starts on the same backends'))
def given_second_instance(harness: Harness, name: str) -> None:
    """Start another instance in this process on the same backends."""
    harness.start_instance(name)


@given(p('a second instance "{name:Name}" is running on the same backends in a separate process'))
@when(p('a second instance "{name:Name}" starts on the same backends in a separate process'))
def given_second_instance_process(harness: Harness, name: str) -> None:
    """Start another instance as its own OS process (tag ``@multiprocess``)."""
    harness.start_instance(name, process=True)


# ============================================================================
# When: conversation
# ============================================================================


@given(p('{user:Name} says "{text}" in {place:Place}'))
@when(p('{user:Name} says "{text}" in {place:Place}'))
def when_says(harness: Harness, user: str, text: str, place: str) -> None:
    """Discord delivers a new message (a fresh snowflake id, platform time one
    second after the last) to every running instance, concurrently, and
    waits until each has handled it."""
    harness.say(user, place, text)


@when(p('{user:Name} says "{text}" in {place:Place} to instance "{name:Name}" only'))
def when_says_to(harness: Harness, user: str, text: str, place: str, name: str) -> None:
    """Deliver a new message to one instance only."""
    harness.say(user, place, text, to=[name])


# How long a step waits for an instance that keeps watch (rule A7: with
# both backends down, the instances not ranked first for a message wait
# until a backend answers).
LINGER = 5.0


@when(p('{user:Name} says "{text}" in {place:Place} while the others keep watch'))
def when_says_others_watch(harness: Harness, user: str, text: str, place: str) -> None:
    """Deliver a new message to every instance; wait for those that answer
    it, not for those left keeping watch (collected by the reply checks)."""
    harness.say(user, place, text, linger=LINGER)


@given(p("{user:Name} says these messages in {place:Place}:"))
@when(p("{user:Name} says these messages in {place:Place}:"))
def when_says_lines(harness: Harness, user: str, place: str, docstring: str) -> None:
    """Each non-empty line of the docstring is one message, in order."""
    for line in docstring.splitlines():
        if line.strip():
            harness.say(user, place, line.strip())


@given(p("{user:Name} says {count:d} numbered messages in {place:Place}"))
@when(p("{user:Name} says {count:d} numbered messages in {place:Place}"))
def when_says_numbered(harness: Harness, user: str, count: int, place: str) -> None:
    """Messages ``message 1`` … ``message N`` (numbering goes on across
    calls in the same scenario)."""
    numbers = getattr(harness, "_numbered", {})
    harness._numbered = numbers  # type: ignore[attr-defined]
    start = numbers.get(user, 0)
    for i in range(start + 1, start + count + 1):
        harness.say(user, place, f"message {i}")
    numbers[user] = start + count


@when(p('{user:Name} says "{first}" and "{second}" in {place:Place}, delivered in reverse order'))
def when_says_reversed(harness: Harness, user: str, first: str, second: str, place: str) -> None:
    """Two messages with increasing platform time (``first`` before
    ``second``) reach the bot the other way round: ``second`` is handled to
    the end before ``first`` arrives."""
    one = harness.new_message(user, place, first)
    two = harness.new_message(user, place, second)
    harness.deliver(two)
    harness.deliver(one)


@when(p('Discord delivers "{text}" again'))
def when_redelivered(harness: Harness, text: str) -> None:
    """The same message (same id, same timestamp) arrives once more at every
    running instance, as after a gateway resume."""
    harness.deliver(harness.message_said(text))


@when(p('Discord delivers "{text}" again to instance "{name:Name}"'))
def when_redelivered_to(harness: Harness, text: str, name: str) -> None:
    """The same message arrives once more, at one instance."""
    harness.deliver(harness.message_said(text), to=[name])


@given(p("the clock advances by {amount:g} {unit}"))
@when(p("the clock advances by {amount:g} {unit}"))
def when_clock(harness: Harness, amount: float, unit: str) -> None:
    """Move the bot's clock (``core.clock.ManualClock``, shared by every
    instance, sent to worker processes) without sleeping."""
    if unit not in UNITS:
        raise HarnessError(f"unknown time unit {unit!r} (use {', '.join(UNITS)})")
    harness.advance_clock(amount * UNITS[unit])


# ============================================================================
# When: faults
# ============================================================================


@given("Redis is flushed")
@when("Redis is flushed")
def when_redis_flushed(harness: Harness) -> None:
    """``FLUSHALL`` on the scenario's Redis (never the shared one)."""
    harness.backends.flush_redis()


@when("Redis is killed")
def when_redis_killed(harness: Harness) -> None:
    """real: SIGKILL the private redis-server (no save). fast: the fakeredis
    server loses its data and refuses every command."""
    harness.backends.kill_redis(keep_data=False)


@when("Redis is started again")
def when_redis_started(harness: Harness) -> None:
    """Start Redis again on the same port: empty, unless it was killed
    'with its data'."""
    harness.backends.start_redis()


@when("Redis is killed and started again empty")
def when_redis_bounced_empty(harness: Harness) -> None:
    """Kill Redis (data lost) and start it again on the same port."""
    harness.backends.kill_redis(keep_data=False)
    harness.backends.start_redis()


@when("Redis is killed and started again with its data")
def when_redis_bounced_keep(harness: Harness) -> None:
    """``SAVE``, kill Redis, start it again loading the snapshot."""
    harness.backends.kill_redis(keep_data=True)
    harness.backends.start_redis()


@given("Redis saves a snapshot")
@when("Redis saves a snapshot")
def when_redis_snapshot(harness: Harness) -> None:
    """real: ``SAVE`` to dump.rdb. fast: DUMP of every key, kept aside."""
    harness.backends.snapshot_redis()


@when("Redis is killed and started again from its last snapshot")
def when_redis_from_snapshot(harness: Harness) -> None:
    """Kill Redis; start it again holding only the last snapshot: keys
    written since are lost, older values come back (periodic RDB saves)."""
    harness.backends.restart_redis_from_snapshot()


@when("Redis evicts some of its keys")
def when_redis_evicts(harness: Harness) -> None:
    """Delete every second key (sorted by name, the first kept), as
    ``maxmemory`` eviction takes some keys of a conversation and not others."""
    evicted = harness.backends.evict_redis_keys()
    if not evicted:
        raise HarnessError("Redis held too few keys to evict any")


@when("Redis becomes unreachable")
def when_redis_unreachable(harness: Harness) -> None:
    """Redis keeps running but every connection to it is reset and new ones
    are reset at once (proxy ``drop``; fast: fakeredis disconnected)."""
    harness.backends.redis_unreachable("drop")


@when("Redis stops answering")
def when_redis_blackholed(harness: Harness) -> None:
    """Connections to Redis are accepted and never answered (proxy
    ``blackhole``): only timeouts tell. Needs a TCP Redis: tag ``@real``."""
    harness.backends.redis_unreachable("blackhole")


@when("Redis is reachable again")
def when_redis_back(harness: Harness) -> None:
    """Undo 'unreachable' / 'stops answering' (the data is still there)."""
    harness.backends.redis_reachable()


@when("Redis drops every connection")
def when_redis_drops(harness: Harness) -> None:
    """Reset every open connection to Redis once; new ones work (``@real``)."""
    harness.backends.redis_drop_connections()


@when("the database becomes unreachable")
def when_db_unreachable(harness: Harness) -> None:
    """real: every PostgreSQL connection is reset and new ones too (proxy
    ``drop``). fast: the SQLite write lock is held by another connection."""
    harness.backends.cut_database("drop")


@when("the database stops answering")
def when_db_blackholed(harness: Harness) -> None:
    """real: PostgreSQL connections are accepted and never answered (proxy
    ``blackhole``). fast: as 'becomes unreachable'."""
    harness.backends.cut_database("blackhole")


@when("the database is reachable again")
def when_db_back(harness: Harness) -> None:
    """Undo the database cut, and wait (bounded) until every running
    instance's probe has seen it back: what follows is about the recovered
    system, not about which instance probed first."""
    harness.backends.restore_database()
    _until_all_healthy(harness, "database")


def _until_all_healthy(harness: Harness, component: str) -> None:
    def every_instance() -> None:
        for name in list(harness.instances):
            reports = harness.health(name)
            report = reports.get(component)
            if report is not None and not report["ok"]:
                raise AssertionError(f"instance {name} still reports {component} down: {report['detail']}")
            # Back, and done with what coming back means (outbox replay,
            # joins of sessions opened blind): the breaker closes first.
            if reports.get("database", {}).get("metrics", {}).get("recovering"):
                raise AssertionError(f"instance {name} is still recovering")

    harness.wait_until(every_instance, f"every instance reports {component} healthy")


@when("the database takes no writes of messages and sessions")
def when_db_blocks_writes(harness: Harness) -> None:
    """Reads go on; writes of messages and sessions wait until the bot's
    timeout gives up on them (PostgreSQL: a transaction holds both tables
    in EXCLUSIVE mode). Claims are still written. ``@real`` only."""
    harness.backends.block_writes()


@when("the database takes writes again")
def when_db_unblocks_writes(harness: Harness) -> None:
    """The writes that waited are ended (their clients gave up long ago),
    the lock released; then as 'the database is reachable again'."""
    harness.backends.unblock_writes()
    _until_all_healthy(harness, "database")


@when("the database drops every connection")
def when_db_drops(harness: Harness) -> None:
    """Reset every open PostgreSQL connection once; new ones work (``@real``)."""
    harness.backends.database_drop_connections()


@when("the bot restarts")
def when_bot_restarts(harness: Harness) -> None:
    """Stop instance ``A`` (shutdown hooks run) and start a new one on the
    same backends and data dir; nothing in the old one's memory survives."""
    harness.restart_instance("A")


@when(p('instance "{name:Name}" restarts'))
def when_instance_restarts(harness: Harness, name: str) -> None:
    """As 'the bot restarts', for the named instance."""
    harness.restart_instance(name)


@when(p('instance "{name:Name}" starts again'))
def when_instance_starts(harness: Harness, name: str) -> None:
    """Start a stopped or killed instance again in this process (same data
    dir, so a local spool left behind is found)."""
    harness.start_instance(name)


@when(p('instance "{name:Name}" starts again in a separate process'))
def when_instance_starts_process(harness: Harness, name: str) -> None:
    """Start a stopped or killed instance again as its own OS process."""
    harness.start_instance(name, process=True)


@when(p('instance "{name:Name}" stops'))
def when_instance_stops(harness: Harness, name: str) -> None:
    """Stop an instance cleanly; it receives no more messages."""
    harness.stop_instance(name)


@when(p('instance "{name:Name}" is killed'))
def when_instance_killed(harness: Harness, name: str) -> None:
    """SIGKILL a worker-process instance: no shutdown hook, nothing flushed."""
    harness.kill_instance(name)


# ============================================================================
# Then
# ============================================================================


def _expect_lines(harness: Harness, lines: list[ContextLine], datatable: list[list[str]], what: str) -> None:
    rows = _rows(datatable)
    if not rows:
        raise HarnessError("the table has no rows")
    author_key = "author" if "author" in rows[0] else "role" if "role" in rows[0] else None
    if author_key is None or "content" not in rows[0]:
        raise HarnessError("the table needs the columns | author | content |")
    want = [(r[author_key], r["content"]) for r in rows]
    got = [(harness.label(line), line.content) for line in lines]
    if got != want:
        width = max([len(a) for a, _ in want + got] + [6])
        show = lambda pairs: "\n".join(f"  | {a:<{width}} | {c} |" for a, c in pairs) or "  (nothing)"  # noqa: E731
        raise AssertionError(f"{what} differs.\nexpected:\n{show(want)}\nactual:\n{show(got)}")


# --- When: an instance busy ------------------------------------------------------------


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
            lease = await instance.bot.storage.session_lease(probe)
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


def _sessions_of(harness: Harness, user: str, place: str) -> tuple[list[str], list[str]]:
    scope = harness.scope(user, place)
    rows = harness.db("SELECT session_id FROM messages WHERE scope_key = ? ORDER BY ts", (scope,))
    used = list(dict.fromkeys(str(r[0]) for r in rows))
    stored = [str(r[0]) for r in harness.db("SELECT session_id FROM sessions WHERE scope_key = ?", (scope,))]
    return used, stored


@then(p("the conversation of {user:Name} in {place:Place} is stored in one session"))
def then_one_session(harness: Harness, user: str, place: str) -> None:
    """Plain SQL: every stored message of ``user``'s conversation in
    ``place`` (theirs and the bot's) carries the same session id, the scope
    has that one session row, and it is the session the bot reads now."""
    used, stored = _sessions_of(harness, user, place)
    assert len(used) == 1, f"the messages are spread over {len(used)} sessions: {used}"
    assert stored == used, f"session rows {stored}, messages in {used}"
    _scope, current, _lines = harness.view(user, place)
    assert current == used[0], f"the bot reads session {current}, the messages are in {used[0]}"


@then(p("eventually the conversation of {user:Name} in {place:Place} is stored in one session"))
def then_one_session_eventually(harness: Harness, user: str, place: str) -> None:
    """As above, waiting (bounded) for the instances to join what they can."""
    harness.wait_until(lambda: then_one_session(harness, user, place), f"{user}'s conversation in one session")


@then("every message got exactly one reply")
def then_one_reply_each(harness: Harness) -> None:
    """Across every instance and every delivery, each message said got one
    reply: none missing, none doubled (once the instances left keeping
    watch are done)."""
    harness.settle()
    then_one_reply_each_so_far(harness)


@then("every message got exactly one reply so far")
def then_one_reply_each_so_far(harness: Harness) -> None:
    """As above, without waiting for the instances keeping watch."""
    problems = []
    for mid in harness.order:
        delivery = harness.deliveries[mid]
        count = len(harness.replies_to(delivery.message))
        if count != 1:
            by = ", ".join(s.instance for s in harness.replies_to(delivery.message))
            problems.append(f"{delivery.message.content!r} got {count} replies{f' (from {by})' if by else ''}")
    if problems:
        raise AssertionError("not one reply per message: " + "; ".join(problems))


@then(p('the bot replied "{reply}" to "{text}"'))
def then_replied(harness: Harness, reply: str, text: str) -> None:
    """Exactly one reply to ``text`` was sent, and its content is ``reply``."""
    replies = harness.replies_to(harness.message_said(text))
    contents = [r.content for r in replies]
    assert contents == [reply], f"replies to {text!r}: {contents}"


@then(p('the reply to "{text}" contains "{fragment}"'))
def then_reply_contains(harness: Harness, text: str, fragment: str) -> None:
    """The (last) reply to ``text`` contains ``fragment``."""
    replies = harness.replies_to(harness.message_said(text))
    assert replies, f"{text!r} got no reply"
    assert fragment in replies[-1].content, f"reply to {text!r} is {replies[-1].content!r}"


@then(p('the reply to "{text}" says memory is degraded'))
def then_degraded(harness: Harness, text: str) -> None:
    """The reply to ``text`` carries the core's 'memory is degraded' note."""
    replies = harness.replies_to(harness.message_said(text))
    assert replies and all(harness.degraded(r) for r in replies), f"replies to {text!r}: {replies}"


@then(p('the reply to "{text}" does not say memory is degraded'))
def then_not_degraded(harness: Harness, text: str) -> None:
    """The reply to ``text`` has no 'memory is degraded' note."""
    replies = harness.replies_to(harness.message_said(text))
    assert replies and not any(harness.degraded(r) for r in replies), f"replies to {text!r}: {replies}"


@then(p("the bot's context for {user:Name} in {place:Place} holds these messages in this order:"))
def then_context_table(harness: Harness, user: str, place: str, datatable: list[list[str]]) -> None:
    """What the bot reads for ``user`` in ``place`` now (``session_scope`` →
    ``load_session`` → ``load_messages`` with the window size, on the first
    running instance) equals the table: columns | author | content |."""
    scope, sid, lines = harness.view(user, place)
    _expect_lines(harness, lines, datatable, f"the bot's context for {user} in {place} (session {sid} of {scope})")


@then(p("the bot's context for {user:Name} in {place:Place} holds {author:Name}'s messages in this order:"))
def then_context_authored(harness: Harness, user: str, place: str, author: str, datatable: list[list[str]]) -> None:
    """The messages written by ``author`` in the bot's context for ``user``
    in ``place``, in the order the context holds them, equal the table's
    single column | content |."""
    _scope, _sid, lines = harness.view(user, place)
    want = [r["content"] for r in _rows(datatable)]
    got = [line.content for line in lines if harness.label(line) == author]
    assert got == want, f"{author}'s messages in order: {got}, expected {want}"


@then(p("the bot's context for {user:Name} in {place:Place} holds {count:d} messages"))
@then(p("the bot's context for {user:Name} in {place:Place} holds {count:d} message"))
def then_context_count(harness: Harness, user: str, place: str, count: int) -> None:
    """The bot's context for ``user`` in ``place`` holds ``count`` messages."""
    scope, sid, lines = harness.view(user, place)
    got = [(harness.label(m), m.content) for m in lines]
    assert len(lines) == count, f"{len(lines)} messages in session {sid} of {scope}: {got}"


@then(p("the bot's context for {user:Name} in {place:Place} is empty"))
def then_context_empty(harness: Harness, user: str, place: str) -> None:
    """The bot has no conversation for ``user`` in ``place``."""
    _scope, _sid, lines = harness.view(user, place)
    assert not lines, f"holds {[(harness.label(m), m.content) for m in lines]}"


@then(p('the reply to "{text}" was generated from these messages in this order:'))
def then_reply_context_table(harness: Harness, text: str, datatable: list[list[str]]) -> None:
    """The context the reply plugin received for ``text`` equals the table
    (it ends with ``text`` itself)."""
    context = harness.context_of_reply(harness.message_said(text))
    _expect_lines(harness, context.messages, datatable, f"the context of the reply to {text!r}")


@then(p('the reply to "{text}" was generated from {count:d} messages'))
@then(p('the reply to "{text}" was generated from {count:d} message'))
def then_reply_context_count(harness: Harness, text: str, count: int) -> None:
    """The context the reply to ``text`` saw held ``count`` messages."""
    context = harness.context_of_reply(harness.message_said(text))
    got = [(harness.label(m), m.content) for m in context.messages]
    assert len(got) == count, f"{len(got)} messages: {got}"


@then(p('the reply to "{text}" was generated once'))
def then_generated_once(harness: Harness, text: str) -> None:
    """One model call made the reply to ``text``, across every instance
    (a message taken over from a live holder is generated twice)."""
    harness.context_of_reply(harness.message_said(text))


@then(p('the reply to "{text}" came from a new session'))
def then_new_session(harness: Harness, text: str) -> None:
    """The reply to ``text`` was generated in a different session than the
    reply before it in the same scope."""
    message = harness.message_said(text)
    context = harness.context_of_reply(message)
    earlier = [c for c in harness.contexts if c.scope_key == context.scope_key and c.message_id != message.id
               and harness.deliveries[c.message_id].message.timestamp < message.timestamp]
    assert earlier, f"no earlier reply in scope {context.scope_key} to compare with"
    assert earlier[-1].session_id != context.session_id, f"still session {context.session_id}"


@then(p('the reply to "{text}" came from the same session as the reply to "{other}"'))
def then_same_session(harness: Harness, text: str, other: str) -> None:
    """Both replies were generated in the same session."""
    a = harness.context_of_reply(harness.message_said(text))
    b = harness.context_of_reply(harness.message_said(other))
    assert a.session_id == b.session_id, f"{a.session_id} != {b.session_id}"


def _component(harness: Harness, component: str) -> dict[str, Any]:
    reports = harness.health()
    if component not in reports:
        raise AssertionError(f"the bot reports no {component!r} health (it reports: {', '.join(reports)})")
    return reports[component]


@then(p('the bot reports "{component}" down'))
def then_health_down(harness: Harness, component: str) -> None:
    """The first running instance's ``health`` hook reports ``component``
    (e.g. ``redis``, ``database``) as not ok: the bot noticed the fault."""
    report = _component(harness, component)
    assert not report["ok"], f"{component} reported ok: {report['detail']}"


@then(p('the bot reports "{component}" healthy'))
def then_health_ok(harness: Harness, component: str) -> None:
    """The first running instance reports ``component`` ok."""
    report = _component(harness, component)
    assert report["ok"], f"{component} reported down: {report['detail']}"


@then(p('eventually the bot reports "{component}" healthy'))
def then_health_ok_eventually(harness: Harness, component: str) -> None:
    """As above, waiting (bounded) for the bot's own probe to notice."""
    harness.wait_until(lambda: then_health_ok(harness, component), f"{component} healthy")


@then("writes are waiting in the outbox")
def then_outbox_waiting(harness: Harness) -> None:
    """The ``outbox`` health report shows a depth above zero: writes were
    buffered for the database."""
    report = _component(harness, "outbox")
    depth = report["metrics"].get("depth", 0)
    assert depth and depth > 0, f"outbox: {report['detail']}"


def _count_for(harness: Harness, user: str, place: str) -> int:
    scope = harness.scope(user, place)
    return int(harness.db("SELECT count(*) FROM messages WHERE scope_key = ?", (scope,))[0][0])


@then(p("the database holds exactly {count:d} messages for {user:Name} in {place:Place}"))
def then_db_count(harness: Harness, count: int, user: str, place: str) -> None:
    """Plain SQL on ``messages`` (own connection, not the bot's): rows of
    ``user``'s conversation scope in ``place``, user messages and replies."""
    got = _count_for(harness, user, place)
    assert got == count, f"the database holds {got} messages for {user} in {place}, not {count}"


@then(p("eventually the database holds exactly {count:d} messages for {user:Name} in {place:Place}"))
def then_db_count_eventually(harness: Harness, count: int, user: str, place: str) -> None:
    """As above, waiting (bounded) for buffered writes to drain."""

    def check() -> None:
        got = _count_for(harness, user, place)
        assert got == count, f"the database holds {got} messages for {user} in {place}, not {count}"

    harness.wait_until(check, "database count")


@then(p("the database holds {count:d} sessions for {user:Name} in {place:Place}"))
def then_db_sessions(harness: Harness, count: int, user: str, place: str) -> None:
    """Plain SQL on ``sessions``: rows for the scope of ``user`` in ``place``."""
    scope = harness.scope(user, place)
    got = int(harness.db("SELECT count(*) FROM sessions WHERE scope_key = ?", (scope,))[0][0])
    assert got == count, f"the database holds {got} sessions for {user} in {place}, not {count}"


@then("no message is stored twice")
def then_no_duplicates(harness: Harness) -> None:
    """Plain SQL: no message id twice, no reply twice to one message, and no
    two rows with the same scope, role, author, content and timestamp (a
    copy under another id)."""
    problems = []
    for row in harness.db("SELECT message_id, count(*) FROM messages GROUP BY message_id HAVING count(*) > 1"):
        problems.append(f"id {row[0]} stored {row[1]} times")
    for row in harness.db(
        "SELECT reply_to_id, count(*) FROM messages WHERE role = 'bot' GROUP BY reply_to_id HAVING count(*) > 1"
    ):
        problems.append(f"{row[1]} replies stored to message {row[0]}")
    for row in harness.db(
        "SELECT scope_key, role, author_id, content, ts, count(*) FROM messages "
        "GROUP BY scope_key, role, author_id, content, ts HAVING count(*) > 1"
    ):
        problems.append(f"{row[5]} copies of {row[1]} message {row[3]!r} in {row[0]}")
    assert not problems, "; ".join(problems)


def _check_each_once(harness: Harness) -> None:
    stored: dict[str, int] = {}
    for mid in harness.stored_ids():
        stored[mid] = stored.get(mid, 0) + 1
    prefix = "/"
    expected = {}
    for mid in harness.order:
        content = harness.deliveries[mid].message.content
        if content.startswith(prefix):
            continue  # commands are answered, not stored
        expected[mid] = f"message {content!r}"
        expected[ReplyId(mid)] = f"reply to {content!r}"
    problems = [f"{what}: stored {stored.get(mid, 0)} times" for mid, what in expected.items() if stored.get(mid, 0) != 1]
    assert not problems, "not every message stored exactly once: " + "; ".join(problems)


@then("every message is stored exactly once")
def then_each_once(harness: Harness) -> None:
    """Plain SQL: every message said (commands aside) and the reply to it are
    in ``messages`` exactly once, by id."""
    _check_each_once(harness)


@then("eventually every message is stored exactly once")
def then_each_once_eventually(harness: Harness) -> None:
    """As above, waiting (bounded) for buffered writes to drain."""
    harness.wait_until(lambda: _check_each_once(harness), "every message stored exactly once")

