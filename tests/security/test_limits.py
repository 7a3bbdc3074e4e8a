"""Abuse limits: rates per user and channel on messages, images and commands,
attachment limits, counters shared through Redis, and Redis outages."""

from __future__ import annotations

import asyncio
import itertools
import shutil
import socket
import subprocess
import time
import types
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import plugins.limits as limits_plugin
import plugins.sessions as sessions_plugin
from core.bot import Bot
from core.clock import ManualClock
from core.errors import ConfigError
from core.models import Attachment, Command, IncomingMessage, Reply, Sent
from core.plugins import hookimpl
from core.storage import StorageBase
from core.settings import EnvSettings, Settings
from harness.backends import free_port
from plugins.limits.config import LimitsSettings, Rate, parse_rate
from plugins.limits.limiter import LIMITS_UNAVAILABLE, Limiter
from tests.core.helpers import FakeEntryPoint

_ids = itertools.count(1)
SHARED_REDIS = "redis://127.0.0.1:6379/0"


def msg(text: str = "hello", author: str = "alice", channel: str = "general", **extra: Any) -> IncomingMessage:
    return IncomingMessage(
        id=extra.pop("id", None) or f"m{next(_ids)}",
        author_id=author,
        author_name=author,
        channel_id=channel,
        guild_id=extra.pop("guild_id", "g1"),
        content=text,
        timestamp=1_700_000_000.0,
        **extra,
    )


def png(name: str = "a.png", size: int = 1000) -> Attachment:
    return Attachment(filename=name, content_type="image/png", size=size)


@pytest.fixture
def run() -> Iterator[Callable[[Any], Any]]:
    """Drive one event loop for the whole test (redis clients belong to one loop)."""
    loop = asyncio.new_event_loop()

    def go(coro: Any) -> Any:
        return loop.run_until_complete(asyncio.wait_for(coro, 10))

    yield go
    loop.run_until_complete(loop.shutdown_asyncgens())
    loop.close()


def _shared_redis_up() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=0.5):
            return True
    except OSError:
        return False


def limiter(clock: ManualClock, redis_url: str | None = None, **section: Any) -> Limiter:
    settings = LimitsSettings(redis_url=redis_url, **section)
    return limits_plugin.build_limiter(settings, clock)


# --- config ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "rate"),
    [("20/1m", Rate(20, 60)), ("5/30s", Rate(5, 30)), ("100/h", Rate(100, 3600)), ("3/10", Rate(3, 10)),
     ("2/minute", Rate(2, 60)), ("1/2days", Rate(1, 172800)), ("off", None), ("", None)],
)
def test_rates_parse(text: str, rate: Rate | None) -> None:
    assert parse_rate(text) == rate


@pytest.mark.parametrize("bad", ["fast", "20 per minute", "0/1m", "5/0s", "5/1y"])
def test_a_bad_rate_is_a_clear_config_error(bad: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LIMITS_USER_MESSAGES", raising=False)
    settings = Settings(env=EnvSettings(data_dir=tmp_path), sections={"limits": {"user_messages": bad}})
    with pytest.raises(ConfigError) as caught:
        settings.for_plugin("limits", LimitsSettings)
    text = str(caught.value)
    assert "user_messages" in text and any(hint in text for hint in ("'20/1m'", "unknown unit", "positive"))


def test_environment_overrides_the_section(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIMITS_USER_MESSAGES", "3/10s")
    monkeypatch.setenv("LIMITS_IMAGE_COMMANDS", "imagine, draw")
    monkeypatch.setenv("REDIS_URL", "fakeredis://env")
    settings = Settings(env=EnvSettings(data_dir=tmp_path), sections={"limits": {"user_messages": "50/1m", "when_redis_down": "closed"}})
    loaded = settings.for_plugin("limits", LimitsSettings)
    assert loaded.user_messages == Rate(3, 10)
    assert loaded.image_commands == ["imagine", "draw"]
    assert loaded.when_redis_down == "closed"
    assert loaded.redis_url is not None and loaded.redis_url.get_secret_value() == "fakeredis://env"


def test_unknown_keys_and_modes_are_refused(tmp_path: Path) -> None:
    for section in ({"user_mesages": "1/1m"}, {"when_redis_down": "maybe"}):
        settings = Settings(env=EnvSettings(data_dir=tmp_path), sections={"limits": section})
        with pytest.raises(ConfigError):
            settings.for_plugin("limits", LimitsSettings)


# --- the limiter on its own ---------------------------------------------------------


def test_user_rate_refuses_with_a_clear_reply_and_recovers(run: Any) -> None:
    clock = ManualClock()
    lim = limiter(clock, user_messages="3/10s", channel_messages="off")
    assert [run(lim.check_message(msg())) for _ in range(3)] == [None, None, None]
    clock.advance(4)
    refusal = run(lim.check_message(msg()))
    assert refusal is not None
    assert "too fast" in refusal and "3 per 10 seconds" in refusal and "6 s" in refusal and "not stored" in refusal
    # Other users and the same user elsewhere (other transport key) are not affected.
    assert run(lim.check_message(msg(author="bob"))) is None
    clock.advance(6.01)
    assert run(lim.check_message(msg())) is None


def test_the_same_message_delivered_twice_counts_once(run: Any) -> None:
    lim = limiter(ManualClock(), user_messages="2/1m", channel_messages="off")
    first = msg()
    assert run(lim.check_message(first)) is None
    assert run(lim.check_message(first)) is None  # redelivery
    assert run(lim.check_message(msg())) is None
    assert run(lim.check_message(msg())) is not None


def test_channel_rate_is_shared_by_users_and_refusal_gives_slots_back(run: Any) -> None:
    lim = limiter(ManualClock(), user_messages="2/1m", channel_messages="2/1m")
    assert run(lim.check_message(msg(author="a"))) is None
    assert run(lim.check_message(msg(author="b"))) is None
    refusal = run(lim.check_message(msg(author="c")))
    assert refusal is not None and "channel is busy" in refusal
    # c's refused message did not use up c's own allowance: in another channel c still has 2.
    assert run(lim.check_message(msg(author="c", channel="other"))) is None
    assert run(lim.check_message(msg(author="c", channel="other"))) is None
    assert run(lim.check_message(msg(author="c", channel="other"))) is not None


def test_images_have_their_own_limit(run: Any) -> None:
    lim = limiter(ManualClock(), user_messages="10/1m", user_images="1/10m", channel_images="off")
    assert run(lim.check_message(msg(attachments=[png()]))) is None
    refusal = run(lim.check_message(msg(attachments=[png()])))
    assert refusal is not None and "image limit" in refusal and "1 per 10 minutes" in refusal
    assert run(lim.check_message(msg("text only"))) is None


def test_attachment_count_and_size_limits(run: Any) -> None:
    lim = limiter(ManualClock(), max_attachments=2, max_attachment_bytes=1024 * 1024)
    too_many = run(lim.check_message(msg(attachments=[png("1.png"), png("2.png"), png("3.png")])))
    assert too_many is not None and "3 attachments" in too_many and "limit is 2" in too_many
    too_big = run(lim.check_message(msg(attachments=[png("big.png", size=3 * 1024 * 1024)])))
    assert too_big is not None and "'big.png' is 3.0 MB" in too_big and "1.0 MB" in too_big
    # The bytes count even when a transport under-reports the size.
    lying = Attachment(filename="x.png", content_type="image/png", size=10, data=b"\0" * (2 * 1024 * 1024))
    assert run(lim.check_message(msg(attachments=[lying]))) is not None


def test_owners_are_exempt_from_rates_but_not_attachment_limits(run: Any) -> None:
    lim = limiter(ManualClock(), user_messages="1/1m", max_attachments=0)
    for _ in range(3):
        assert run(lim.check_message(msg(author="root"), ["root"])) is None
    assert run(lim.check_message(msg(author="root", attachments=[png()]), ["root"])) is not None


# --- Redis: shared across instances, and outages ---------------------------------------


@pytest.mark.real
def test_counters_in_real_redis_hold_across_instances(run: Any) -> None:
    if not _shared_redis_up():
        # The real matrix fails, never skips (--backend fast leaves it out).
        pytest.fail("needs Redis on 127.0.0.1:6379 (scripts/services.sh starts it)", pytrace=False)
    prefix = f"test-limits-{uuid.uuid4().hex}:"
    clock = ManualClock()
    a = limiter(clock, SHARED_REDIS, key_prefix=prefix, user_messages="3/1m", channel_messages="off")
    b = limiter(clock, SHARED_REDIS, key_prefix=prefix, user_messages="3/1m", channel_messages="off")
    try:
        assert run(a.check_message(msg())) is None
        assert run(b.check_message(msg())) is None
        assert run(a.check_message(msg())) is None
        assert run(b.check_message(msg())) is not None
        assert run(a.check_message(msg())) is not None
        clock.advance(61)
        assert run(b.check_message(msg())) is None
        assert a.redis_failures == 0 and b.redis_failures == 0
    finally:
        import redis

        client = redis.Redis.from_url(SHARED_REDIS)
        keys = list(client.scan_iter(match=prefix + "*"))
        if keys:
            client.delete(*keys)
        client.close()
        run(a.close())
        run(b.close())


@pytest.mark.parametrize(
    ("mode", "expected"),
    [("local", [None, None, "too fast"]), ("open", [None, None, None]), ("closed", [LIMITS_UNAVAILABLE] * 3)],
)
def test_redis_down_degrades_as_configured(mode: str, expected: list[str | None], run: Any) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    lim = limiter(ManualClock(), dead, user_messages="2/1m", channel_messages="off", when_redis_down=mode)
    results = [run(lim.check_message(msg())) for _ in range(3)]
    for got, want in zip(results, expected):
        assert (got is None) if want is None else (got is not None and want in got)
    # Noticed once, then routed around without waiting on Redis for every message.
    assert lim.redis_failures == 1
    run(lim.close())


@pytest.mark.fault
@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server not installed")
def test_limits_go_back_to_redis_when_it_returns(run: Any, tmp_path: Path) -> None:
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    clock = ManualClock()
    lim = limiter(clock, url, user_messages="2/1m", channel_messages="off", redis_retry_after=5)
    assert run(lim.check_message(msg())) is None  # Redis not there yet: local counting
    assert lim.redis_failures == 1 and not lim.redis_believed_up()

    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        import redis

        client = redis.Redis(port=port, socket_timeout=1)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        clock.advance(5.1)
        assert run(lim.check_message(msg())) is None
        assert run(lim.check_message(msg())) is None
        assert run(lim.check_message(msg())) is not None  # Redis counted 2: the local count was not carried over
        assert client.zcard("limits:test:u:alice:msg") == 2
        client.close()
    finally:
        run(lim.close())
        server.terminate()
        server.wait(timeout=10)


# --- through the assembled bot -----------------------------------------------------------


class Recorder:
    """A plugin that stores what reaches the store and offers /imagine."""

    def __init__(self) -> None:
        self.stored: list[str] = []
        self.imagined = 0

    def module(self) -> types.ModuleType:
        module = types.ModuleType("recorder")

        def store_message(record: Any) -> bool:
            self.stored.append(record.content)
            return True

        def imagine(inv: Any) -> Reply:
            self.imagined += 1
            return Reply("here is your picture")

        def register_commands(register: Any) -> None:
            register(Command("imagine", "draw", imagine))
            register(Command("purge", "admins only", lambda inv: Reply("purged"), permission="admin"))

        storage = StorageBase()
        storage.store_message = store_message  # type: ignore[method-assign]
        module.register_storage = hookimpl(lambda register: register(storage))  # type: ignore[attr-defined]
        module.register_commands = hookimpl(register_commands)  # type: ignore[attr-defined]
        return module


def make_bot(tmp_path: Path, recorder: Recorder, owner_ids: list[str] | None = None,
             plugins: dict[str, Any] | None = None, **section: Any) -> Bot:
    from core.settings import BotSection

    settings = Settings(
        env=EnvSettings(data_dir=tmp_path, instance_id="A"),
        bot=BotSection(owner_ids=owner_ids or []),
        sections={"limits": {"redis_url": "fakeredis://" + uuid.uuid4().hex, **section}},
    )
    eps = [FakeEntryPoint("limits", limits_plugin), FakeEntryPoint("recorder", recorder.module())]
    eps += [FakeEntryPoint(name, module) for name, module in (plugins or {}).items()]
    return Bot(settings, clock=ManualClock(), entry_points=eps)


def say(run: Any, bot: Bot, message: IncomingMessage) -> list[str]:
    sent: list[str] = []

    async def send(reply: Reply) -> Sent:
        sent.append(reply.content)
        return Sent()

    async def go() -> None:
        if not bot.started:
            await bot.start()
        await bot.handle(message, send)

    run(go())
    return sent


def test_a_message_over_the_limit_gets_a_reply_and_is_not_stored(run: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    recorder = Recorder()
    bot = make_bot(tmp_path, recorder, user_messages="2/1m")
    assert "limits" in bot.plugins.enabled()
    replies = [say(run, bot, msg(f"n{i}")) for i in range(3)]
    assert all(len(r) == 1 for r in replies)
    assert "too fast" in replies[2][0]
    assert recorder.stored.count("n0") == 1 and "n2" not in recorder.stored
    run(bot.stop())


def test_too_many_attachments_are_refused_before_anything_is_stored(run: Any, tmp_path: Path) -> None:
    recorder = Recorder()
    bot = make_bot(tmp_path, recorder, max_attachments=1)
    [reply] = say(run, bot, msg("look", attachments=[png("1.png"), png("2.png")]))
    assert "2 attachments" in reply
    assert recorder.stored == []
    run(bot.stop())


def test_commands_are_rate_limited_and_imagine_counts_as_an_image(run: Any, tmp_path: Path) -> None:
    recorder = Recorder()
    bot = make_bot(tmp_path, recorder, user_commands="3/1m", user_images="1/1h")
    assert say(run, bot, msg("/imagine a cat")) == ["here is your picture"]
    [second] = say(run, bot, msg("/imagine a dog"))
    assert "image limit" in second and recorder.imagined == 1
    # The refused /imagine gave its command slot back: two more commands fit.
    assert say(run, bot, msg("/help"))[0].startswith("Commands:")
    assert say(run, bot, msg("/help"))[0].startswith("Commands:")
    [fifth] = say(run, bot, msg("/help"))
    assert "commands too fast" in fifth
    # A refused command does not run and does not reach the conversation record.
    assert recorder.stored == []
    run(bot.stop())


def test_owners_are_not_rate_limited_through_the_bot(run: Any, tmp_path: Path) -> None:
    recorder = Recorder()
    bot = make_bot(tmp_path, recorder, owner_ids=["root"], user_commands="1/1m")
    for _ in range(3):
        assert say(run, bot, msg("/help", author="root"))[0].startswith("Commands:")
    run(bot.stop())


def test_health_reports_the_counters_backend(run: Any, tmp_path: Path) -> None:
    bot = make_bot(tmp_path, Recorder(), redis_url=f"redis://127.0.0.1:{free_port()}/0")
    run(bot.start())
    reports = {r.component: r for r in run(bot.health())}
    assert reports["limits"].ok is False and "when_redis_down=local" in reports["limits"].detail
    run(bot.stop())


def test_two_instances_on_one_redis_share_the_limit_and_count_a_redelivery_once(run: Any, tmp_path: Path) -> None:
    shared = "fakeredis://" + uuid.uuid4().hex
    a = make_bot(tmp_path / "a", Recorder(), user_messages="3/1m", redis_url=shared)
    b = make_bot(tmp_path / "b", Recorder(), user_messages="3/1m", redis_url=shared)
    first = msg("one")
    assert "too fast" not in say(run, a, first)[0]
    assert "too fast" not in say(run, b, first)[0]  # the same message delivered to the other instance
    assert "too fast" not in say(run, b, msg("two"))[0]
    assert "too fast" not in say(run, a, msg("three"))[0]
    assert "too fast" in say(run, b, msg("four"))[0]
    assert "too fast" in say(run, a, msg("five"))[0]
    run(a.stop())
    run(b.stop())


def test_a_flood_gets_one_reply_per_window_not_one_per_message(run: Any, tmp_path: Path) -> None:
    recorder = Recorder()
    bot = make_bot(tmp_path, recorder, user_messages="2/1m", channel_messages="off")
    replies = [say(run, bot, msg(f"flood {i}")) for i in range(10)]
    assert [len(r) for r in replies] == [1, 1, 1, 0, 0, 0, 0, 0, 0, 0]
    assert "too fast" in replies[2][0]
    # Others in the channel are not silenced, and commands still answer.
    assert len(say(run, bot, msg("hi", author="bob"))) == 1
    assert say(run, bot, msg("/help"))[0].startswith("Commands:")
    # Once the window frees up the user is heard again.
    bot.clock.advance(61)  # type: ignore[attr-defined]
    assert say(run, bot, msg("back"))[0] != ""
    assert recorder.stored.count("back") == 1 and "flood 5" not in recorder.stored
    run(bot.stop())


def test_a_command_flood_gets_one_reply_too(run: Any, tmp_path: Path) -> None:
    bot = make_bot(tmp_path, Recorder(), user_commands="2/1m")
    replies = [say(run, bot, msg("/help")) for _ in range(6)]
    assert [len(r) for r in replies] == [1, 1, 1, 0, 0, 0]
    assert "commands too fast" in replies[2][0]
    assert len(say(run, bot, msg("plain text still works"))) == 1
    run(bot.stop())


@pytest.mark.parametrize(
    ("text", "who"),
    [("/nosuchcommand", {}), ("/purge", {}), ("x" * 5000, {}), ("   ", {})],
    ids=["unknown-command", "permission-refused", "too-long", "empty"],
)
def test_answers_that_do_nothing_are_limited_too(run: Any, tmp_path: Path, text: str, who: dict[str, Any]) -> None:
    bot = make_bot(tmp_path, Recorder(), user_noise="3/1m")
    replies = [say(run, bot, msg(text, **who)) for _ in range(7)]
    # The core answers before the limit is known, so the 4th still gets its
    # answer; the 5th gets the one notice naming the limit; then quiet.
    assert [len(r) for r in replies] == [1, 1, 1, 1, 1, 0, 0]
    assert replies[4][0].startswith("Too many requests I cannot act on (the limit is 3 per minute). Try again in")
    assert replies[4][0].endswith("Until then I will not answer you.")
    assert len(say(run, bot, msg(text, author="bob"))) == 1  # others are not affected
    bot.clock.advance(61)  # type: ignore[attr-defined]
    assert len(say(run, bot, msg(text))) == 1
    run(bot.stop())


@pytest.mark.parametrize("quieted_by", ["noise", "commands", "messages"])
def test_data_rights_commands_are_never_dropped(run: Any, tmp_path: Path, quieted_by: str) -> None:
    bot = make_bot(tmp_path, Recorder(), user_noise="2/1m", user_commands="3/1m", user_messages="2/1m",
                   plugins={"sessions": sessions_plugin})
    flood = {"noise": "/nosuchcommand", "commands": "/help", "messages": "hello"}[quieted_by]
    replies = [say(run, bot, msg(flood)) for _ in range(6)]
    assert [len(r) for r in replies][-1] == 0, "the flood should be quiet by now"
    forget = say(run, bot, msg("/forget"))
    assert len(forget) == 1, "a deletion request must never be dropped silently"
    if quieted_by == "commands":
        # The command rate still applies to it, with a reply naming the limit.
        assert forget[0].startswith("You are using commands too fast (the limit is 3 per minute)")
    else:
        assert "confirm" in forget[0].lower(), forget
    run(bot.stop())


def test_useful_commands_do_not_count_as_noise(run: Any, tmp_path: Path) -> None:
    bot = make_bot(tmp_path, Recorder(), user_noise="1/1m", user_commands="20/1m")
    assert [len(say(run, bot, msg("/help"))) for _ in range(5)] == [1] * 5
    run(bot.stop())


def test_quiet_after_notice_can_be_switched_off(run: Any, tmp_path: Path) -> None:
    bot = make_bot(tmp_path, Recorder(), user_messages="1/1m", quiet_after_notice=False)
    replies = [say(run, bot, msg(f"n{i}")) for i in range(4)]
    assert [len(r) for r in replies] == [1, 1, 1, 1]
    run(bot.stop())
