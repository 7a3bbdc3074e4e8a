"""Steps of features/discord.feature: the bot through Discord, in its own
OS process(es).

``test_discord.py`` imports them with ``from tests.features.discord_steps
import *`` (pytest-bdd steps are fixtures, found among a test module's
names). No scenarios here.

Underneath:

- the fake Discord (``tests/fake_discord``) runs on 127.0.0.1 in a
  background thread (:class:`FakeDiscordThread`); the world is one guild
  ``guild`` with the channels ``#general`` and ``#random`` and the members
  alice, bob and carol;
- each bot process is a :class:`BotProcess`: ``python -m core run`` with a
  fake ``DISCORD_TOKEN`` built at run time, ``DATABASE_URL`` and
  ``REDIS_URL`` of the scenario's backends (``harness/backends.py``
  with ``processes=True``: a shared SQLite file and fakeredis over TCP for
  ``fast``; a private redis-server and a fresh PostgreSQL database, each
  behind a proxy, for ``real``);
- what is asserted is what the fake Discord received from the bot (its
  posts in the channel, each pointing at the message it answers) and the
  ``messages`` table read with plain SQL on our own connection.

Step texts differ from the shared ones in ``tests/harness/steps.py`` (those
drive the harness's test transport): every one says "on Discord", "bot
process" or "the bot's Redis".
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from pytest_bdd import given, then, when

from tests.fake_discord.runner import BotProcess, FakeDiscordThread
from harness.backends import Backends, make_backends
from tests.harness.steps import p

T = TypeVar("T")

# Hang guards, not speed claims.
CONNECT_TIMEOUT = 60.0
REPLY_TIMEOUT = 30.0
SETTLE_TIMEOUT = 15.0

CHANNELS = ("general", "random")
MEMBERS = ("alice", "bob", "carol")


class DiscordScenarioError(AssertionError):
    """Something the scenario asked for did not happen; the message says what."""


@dataclass
class Written:
    """A message a user wrote on Discord (``message`` is the fake's payload,
    its ``id`` the platform id the bot stores)."""

    text: str
    user: str
    place: str
    message: dict[str, Any]
    # What memory must hold for it now: the text of its latest edit, and
    # whether it was deleted (then neither it nor its reply).
    edited: str | None = None
    deleted: bool = False

    @property
    def id(self) -> str:
        return str(self.message["id"])


class DiscordScenario:
    """The world of one scenario: backends, the fake Discord, bot processes,
    and what users wrote."""

    def __init__(self, backends: Backends, tmp_path: Path) -> None:
        self.backends = backends
        self.tmp_path = tmp_path
        self.discord = FakeDiscordThread().start()
        self.fake = self.discord.fake
        self.bots: dict[str, BotProcess] = {}
        self.pids: dict[str, list[int]] = {}
        self.exit_codes: dict[str, list[int]] = {}
        self.written: list[Written] = []
        # More environment for the bot processes (set before they start).
        self.extra_env: dict[str, str] = {}
        # The bot's answers to slash commands, by what was run.
        self.answers: dict[str, str] = {}
        # The thread the bot opened for the conversation last started.
        self.thread = ""
        self.users: dict[str, dict[str, Any]] = {}
        self.channels: dict[str, dict[str, Any]] = {}

        def build() -> None:
            # Members exist before any bot connects, so GUILD_CREATE lists them.
            self.guild = self.fake.add_guild("guild")
            for name in CHANNELS:
                self.channels[name] = self.fake.add_channel(self.guild, name)
            for name in MEMBERS:
                self.users[name] = self.fake.make_user(name)
                self.fake.add_member(self.guild, self.users[name])

        self.discord.do(build)

    # --- bot processes ----------------------------------------------------------

    def env(self, name: str) -> dict[str, str]:
        return {
            "DATABASE_URL": self.backends.database_url,
            "REDIS_URL": self.backends.redis_url,
            "BOT_INSTANCE_ID": name,
            **self.extra_env,
        }

    def start(self, name: str) -> BotProcess:
        bot = self.bots.get(name)
        if bot is None:
            bot = BotProcess(self.discord, self.tmp_path / "bots" / name, env=self.env(name), name=name)
            self.bots[name] = bot
        if bot.running:
            raise DiscordScenarioError(f"bot process {name} is already running")
        bot.start(CONNECT_TIMEOUT)
        assert bot.process is not None
        self.pids.setdefault(name, []).append(bot.process.pid)
        return bot

    def stop(self, name: str) -> int:
        bot = self.bots[name]
        code = bot.stop()
        self.exit_codes.setdefault(name, []).append(code)
        if code != 0:
            raise DiscordScenarioError(f"bot process {name} exited with {code} on SIGTERM:\n{bot.log_tail()}")
        return code

    def logs(self) -> str:
        return "\n".join(f"--- bot process {n} ---\n{b.log_tail(25)}" for n, b in self.bots.items())

    # --- Discord ---------------------------------------------------------------------

    def user(self, name: str) -> dict[str, Any]:
        if name not in self.users:
            def add() -> dict[str, Any]:
                user = self.fake.make_user(name)
                self.fake.add_member(self.guild, user)
                return user

            self.users[name] = self.discord.do(add)
        return self.users[name]

    def channel_for(self, place: str, user: dict[str, Any]) -> tuple[str, bool]:
        """(channel id, whether to mention the bot) for a place of the
        scenario: ``#<channel>`` of the guild, or ``a DM``."""
        if place in ("a DM", "DM", "their DM"):
            return str(self.discord.dm_channel(user)["id"]), False
        name = place.lstrip("#")
        if not place.startswith("#") or name not in self.channels:
            raise DiscordScenarioError(f"unknown place {place!r}: use a DM or one of " + ", ".join(f"#{c}" for c in CHANNELS))
        return str(self.channels[name]["id"]), True

    def write(self, user_name: str, text: str, place: str, **options: Any) -> Written:
        """``user`` writes ``text`` (mentioning the bot in a guild channel,
        unless it replies to the bot: ``reply_to=<id>``; ``attachments=``
        as the fake takes them); returns once the bot's reply to it has
        reached Discord."""
        if not any(b.running for b in self.bots.values()):
            raise DiscordScenarioError("no bot process is running to answer")
        user = self.user(user_name)
        channel_id, mention = self.channel_for(place, user)
        message = self.discord.say(channel_id, user, text, mention=mention and "reply_to" not in options, **options)
        written = Written(text, user_name, place, message)
        self.written.append(written)
        try:
            self.wait(lambda: self.replies_to(written.id) or None, REPLY_TIMEOUT, f"the bot's reply to {text!r}")
        except TimeoutError:
            raise DiscordScenarioError(f"no reply to {text!r} within {REPLY_TIMEOUT:.0f} s\n{self.logs()}") from None
        return written

    def write_only(self, user_name: str, text: str, place: str, *, in_channel: str | None = None) -> Written:
        """``user`` writes ``text`` in ``place`` (mentioning the bot), or
        without a mention in channel or thread ``in_channel``; does not wait."""
        user = self.user(user_name)
        if in_channel is not None:
            message = self.discord.say(in_channel, user, text)
        else:
            channel_id, mention = self.channel_for(place, user)
            message = self.discord.say(channel_id, user, text, mention=mention)
        written = Written(text, user_name, place, message)
        self.written.append(written)
        return written

    def wait(self, predicate: Callable[[], T | None], timeout: float, what: str) -> T:
        """Wait on the fake's loop (its state is not thread-safe) until
        ``predicate`` returns something truthy."""
        return self.discord.call(self.fake.wait_until(predicate, timeout, what), timeout + 5)

    def replies_to(self, message_id: str) -> list[dict[str, Any]]:
        """The bot's posts that answer ``message_id`` (call on the fake's loop,
        or through :meth:`snapshot`)."""
        return [m for m in self.fake.bot_messages if (m.get("message_reference") or {}).get("message_id") == message_id]

    def snapshot(self, fn: Callable[[], T]) -> T:
        return self.discord.do(fn)

    def said(self, text: str) -> Written:
        for written in reversed(self.written):
            if written.text == text:
                return written
        raise DiscordScenarioError(f"nobody wrote {text!r} on Discord in this scenario")

    # --- teardown --------------------------------------------------------------------------

    def close(self) -> None:
        try:
            for bot in self.bots.values():
                if bot.running:
                    bot.kill()
        finally:
            try:
                self.discord.stop()
            finally:
                self.backends.close()


@pytest.fixture
def discord_world(backend: str, tmp_path: Path) -> Iterator[DiscordScenario]:
    """A fake Discord, the backends of the selected matrix (shared between
    processes), and no bot process yet. Torn down after the scenario: bot
    processes killed, the fake stopped, the Redis server killed and the
    PostgreSQL database dropped."""
    backends = make_backends(backend, tmp_path, processes=True)
    try:
        world = DiscordScenario(backends, tmp_path)
    except BaseException:
        backends.close()
        raise
    try:
        yield world
    finally:
        world.close()


# ============================================================================
# Given
# ============================================================================


@given("the bot is running in its own process, connected to Discord")
def given_discord_bot(discord_world: DiscordScenario) -> None:
    """Bot process ``A`` (``python -m core run``) is started and has
    identified to the fake Discord and synced its slash commands."""
    discord_world.start("A")


@given(p('two bot processes "{a:Name}" and "{b:Name}" are connected to Discord on the same backends'))
def given_two_discord_bots(discord_world: DiscordScenario, a: str, b: str) -> None:
    """Two bot processes on the same database and Redis, both connected on
    the same shard: Discord sends each of them every event, as during a
    rolling deploy."""
    discord_world.start(a)
    discord_world.start(b)
    sessions = discord_world.snapshot(lambda: [s.shard for s in discord_world.fake.connected_sessions()])
    if len(sessions) != 2 or len(set(sessions)) != 1:
        raise DiscordScenarioError(f"expected two gateway sessions on one shard, got shards {sessions}")


# ============================================================================
# When
# ============================================================================


@given(p('{user:Name} writes "{text}" to the bot in {place:Place} on Discord'))
@when(p('{user:Name} writes "{text}" to the bot in {place:Place} on Discord'))
def when_writes_on_discord(discord_world: DiscordScenario, user: str, text: str, place: str) -> None:
    """``user`` posts ``text`` (in a guild channel mentioning the bot, in a
    DM as is); the fake Discord sends MESSAGE_CREATE to every connected bot
    process. Waits (bounded) until the bot's reply has reached Discord."""
    discord_world.write(user, text, place)


@when("the bot's process is stopped and a new one is started")
def when_bot_process_restarts(discord_world: DiscordScenario) -> None:
    """SIGTERM to bot process ``A`` (graceful: it must exit 0), then a new
    ``python -m core run`` process on the same backends and data dir, waited
    for until it has identified to Discord. Nothing of the old process's
    memory survives."""
    discord_world.stop("A")
    discord_world.start("A")


@when("every bot process stops")
def when_bot_processes_stop(discord_world: DiscordScenario) -> None:
    """SIGTERM to every running bot process; each must exit 0. Anything a
    process still meant to send is sent (or never) by then, so counts taken
    afterwards include late duplicates."""
    for name, bot in discord_world.bots.items():
        if bot.running:
            discord_world.stop(name)


def _cached_windows(discord_world: DiscordScenario) -> set[str]:
    """The memory's cached context windows (``bot:w:<epoch>:<session>``).
    Only these prove a fault: the memory appends to a window only if it
    exists, so work still finishing on the last message (claims, counters)
    cannot bring one back; only a new load fills it again."""
    return {k for k in discord_world.backends.redis_keys() if k.startswith("bot:w:")}


def _settle_then_cached_windows(discord_world: DiscordScenario) -> set[str]:
    # The bot posts its reply before it finishes storing it: wait for the
    # conversation to be whole first, so the fault hits a settled bot.
    then_stored_once_on_discord_eventually(discord_world)
    before = _cached_windows(discord_world)
    if not before:
        raise DiscordScenarioError("the bot's Redis holds no cached context window: the fault would lose nothing")
    return before


@when("the bot's Redis is flushed")
def when_discord_redis_flushed(discord_world: DiscordScenario) -> None:
    """Once every message so far is stored, ``FLUSHALL`` on the scenario's
    Redis (fakeredis over TCP, or the private redis-server: never the
    machine's shared one), on a connection of our own. Proven: the memory's
    cached context windows were there before and are gone after."""
    before = _settle_then_cached_windows(discord_world)
    discord_world.backends.flush_redis()
    left = before & _cached_windows(discord_world)
    if left:
        raise DiscordScenarioError(f"cached windows survived FLUSHALL: {sorted(left)}")


@when("the bot's Redis is killed and started again empty")
def when_discord_redis_bounced(discord_world: DiscordScenario) -> None:
    """SIGKILL of the private redis-server (no save), then a new one on the
    same port with no data, once every message so far is stored. Proven:
    the process was gone, and the cached context windows are not in the new
    one. Real backends only (tag ``@real``)."""
    backends: Any = discord_world.backends
    server = getattr(backends, "redis", None)
    if server is None or not hasattr(server, "alive"):
        raise DiscordScenarioError("killing Redis needs the private redis-server: tag the scenario @real")
    before = _settle_then_cached_windows(discord_world)
    old_pid = server.process.pid
    backends.kill_redis(keep_data=False)
    if server.alive:
        raise DiscordScenarioError("redis-server is still running after SIGKILL")
    backends.start_redis()
    if server.process.pid == old_pid:
        raise DiscordScenarioError("Redis was not started as a new process")
    left = before & _cached_windows(discord_world)
    if left:
        raise DiscordScenarioError(f"the restarted Redis still holds {sorted(left)}")


# ============================================================================
# Then
# ============================================================================


@then(p('the bot\'s reply on Discord to "{text}" contains "{fragment}"'))
def then_discord_reply_contains(discord_world: DiscordScenario, text: str, fragment: str) -> None:
    """Exactly one post of the bot in the channel answers (Discord reply
    reference) the message ``text``, and it contains ``fragment``."""
    written = discord_world.said(text)
    replies = discord_world.snapshot(lambda: discord_world.replies_to(written.id))
    contents = [r["content"] for r in replies]
    assert len(replies) == 1, f"{len(replies)} posts answer {text!r}: {contents}"
    assert fragment in contents[0], f"the reply to {text!r} is {contents[0]!r}\n{discord_world.logs()}"


@then("the reply came from a new process that connected to Discord afresh")
def then_new_process(discord_world: DiscordScenario) -> None:
    """Bot process ``A`` ran as two OS processes: the first exited 0 on
    SIGTERM and is gone, the second one (another pid) identified to the
    gateway anew (a second IDENTIFY, no RESUME of the old session) and is
    the one running."""
    pids = discord_world.pids.get("A", [])
    assert len(pids) == 2 and pids[0] != pids[1], f"pids of bot process A: {pids}"
    assert discord_world.exit_codes.get("A") == [0], f"exit codes: {discord_world.exit_codes.get('A')}"
    bot = discord_world.bots["A"]
    assert bot.running and bot.process is not None and bot.process.pid == pids[1]
    identifies, resumes = discord_world.snapshot(lambda: (len(discord_world.fake.identifies),
                                                          len(discord_world.fake.resumes)))
    assert (identifies, resumes) == (2, 0), f"{identifies} IDENTIFY and {resumes} RESUME"


@then("both bot processes received every message written on Discord")
def then_both_received(discord_world: DiscordScenario) -> None:
    """The fake Discord's record of each gateway session: two sessions, and
    each was sent MESSAGE_CREATE for every message written (so each process
    could have answered every one)."""
    def events() -> list[set[str]]:
        return [{str(e["d"]["id"]) for e in s.events if e["t"] == "MESSAGE_CREATE"}
                for s in discord_world.fake.sessions.values()]

    per_session = discord_world.snapshot(events)
    assert len(per_session) == 2, f"{len(per_session)} gateway sessions"
    for index, received in enumerate(per_session):
        missing = [w.text for w in discord_world.written if w.id not in received]
        assert not missing, f"gateway session {index} was not sent {missing}"


@then("every message written on Discord got exactly one reply")
def then_one_reply_each_on_discord(discord_world: DiscordScenario) -> None:
    """Each message written has exactly one post of the bot answering it,
    and the bot POSTed exactly one message per message written (a second
    process did not even try: the fake's nonce check would hide a duplicate
    from the channel, not from this count)."""
    def tally() -> tuple[dict[str, list[str]], int]:
        replies = {w.text: [r["content"] for r in discord_world.replies_to(w.id)] for w in discord_world.written}
        posts = sum(1 for m, path, _status in discord_world.fake.requests
                    if m == "POST" and path.startswith("/channels/") and path.endswith("/messages"))
        return replies, posts

    replies, posts = discord_world.snapshot(tally)
    wrong = {text: got for text, got in replies.items() if len(got) != 1}
    assert not wrong, f"not one reply per message: {wrong}\n{discord_world.logs()}"
    assert posts == len(discord_world.written), f"{posts} message POSTs for {len(discord_world.written)} messages"


def _check_stored_once(discord_world: DiscordScenario) -> None:
    db = discord_world.backends.query
    problems = []
    kept = [w for w in discord_world.written if not w.deleted]
    for w in discord_world.written:
        rows = db("SELECT role, content FROM messages WHERE message_id = ?", (w.id,))
        wanted = [] if w.deleted else [("user", w.edited or w.text)]
        if rows != wanted:
            problems.append(f"{w.text!r} (id {w.id}) is stored as {rows}, not {wanted}")
        replies = db("SELECT count(*) FROM messages WHERE role = 'bot' AND reply_to_id = ?", (w.id,))[0][0]
        if replies != (0 if w.deleted else 1):
            problems.append(f"{replies} replies to {w.text!r} are stored")
    total = db("SELECT count(*) FROM messages")[0][0]
    if total != 2 * len(kept):
        problems.append(f"{total} rows in messages for {len(kept)} messages and their replies")
    assert not problems, "; ".join(problems)


@then("the database holds every message written on Discord and its reply, each once")
def then_stored_once_on_discord(discord_world: DiscordScenario) -> None:
    """Plain SQL on ``messages`` (our own connection): each message written
    is one ``user`` row under its Discord message id with its text (the bot
    mention stripped), one ``bot`` row answers it, and nothing else is
    there."""
    _check_stored_once(discord_world)


@then("eventually the database holds every message written on Discord and its reply, each once")
def then_stored_once_on_discord_eventually(discord_world: DiscordScenario) -> None:
    """As above, waiting (bounded) for the running bot's writes to land."""
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while True:
        try:
            _check_stored_once(discord_world)
            return
        except AssertionError:
            if time.monotonic() >= deadline:
                raise
        time.sleep(0.1)
