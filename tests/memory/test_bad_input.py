"""Bad input: oversized or unstorable messages, malformed or unreachable URLs."""

from __future__ import annotations

import logging

import pytest

from core.errors import Refused
from core.models import Role
from tests.fake_urls import password_url
from tests.memory.conftest import Backend, free_port, run, started
from tests.memory.helpers import SESSION, db_history, ids, rec, warm


def test_oversized_message_is_refused_and_nothing_is_half_stored(backend: Backend) -> None:
    async def go() -> None:
        async with started(backend.store(max_content_bytes=100)) as store:
            await store.store_message(rec(1))
            await warm(store)
            with pytest.raises(Refused, match="101 bytes"):
                await store.store_message(rec(2, content="x" * 101))
            assert ids(await store.load_messages(SESSION, 10)) == ["1001"]
        assert db_history(backend) == ["1001"]

    run(go())


@pytest.mark.parametrize("content", ["nul \x00 inside", "half a surrogate \udc80"])
def test_unstorable_text_is_refused_on_every_backend(backend: Backend, content: str) -> None:
    async def go() -> None:
        async with started(backend.store()) as store:
            with pytest.raises(Refused):
                await store.store_message(rec(1, content=content))
            assert await store.load_messages(SESSION, 10) == []
            assert store.db_ok and store.redis_ok  # refusing is not an outage

    run(go())


def test_control_characters_and_odd_unicode_are_stored_faithfully(backend: Backend) -> None:
    text = "bell\x07 esc\x1b[31m rtl\u202e zwj\u200d emoji\U0001f9d1\u200d\U0001f4bb \x7f"

    async def go() -> None:
        async with started(backend.store()) as store:
            await store.store_message(rec(1, content=text, author_name="n\x00me\ud800"))
            assert [r.content for r in await store.load_messages(SESSION, 10)] == [text]
            backend.flush()
            assert [r.content for r in await store.load_messages(SESSION, 10)] == [text]

    run(go())


def test_a_bot_reply_with_nul_is_stored_repaired(backend: Backend) -> None:
    async def go() -> None:
        async with started(backend.store()) as store:
            assert await store.store_message(rec(1, role=Role.BOT, author="bot", content="a\x00b"))
            assert [r.content for r in await store.load_messages(SESSION, 10)] == ["a\ufffdb"]

    run(go())


def test_malformed_database_url_starts_degraded_naming_the_variable(backend: Backend, caplog: pytest.LogCaptureFixture) -> None:
    secret = "pw" + "x" * 6

    async def go() -> None:
        store = backend.store(database_url=password_url("nosuchdb", "user", secret, "host/db"))
        async with started(store):
            assert not store.db_ok and store.redis_ok
            assert await store.store_message(rec(1)) is True  # kept in the outbox stream
            assert ids(await store.load_messages(SESSION, 10)) == ["1001"]
            health = {r.component: r for r in await store.health()}
            assert "DATABASE_URL is malformed" in health["database"].detail

    with caplog.at_level(logging.ERROR):
        run(go())
    lines = [r.getMessage() for r in caplog.records if "DATABASE_URL" in r.getMessage()]
    assert lines and all(secret not in line and "\n" not in line for line in lines)
    assert secret not in caplog.text


def test_unreachable_redis_url_starts_degraded_and_recovers(backend: Backend, caplog: pytest.LogCaptureFixture) -> None:
    secret = "pw" + "y" * 6
    port = free_port()

    async def go() -> None:
        store = backend.store(redis_url=password_url("redis", "", secret, f"127.0.0.1:{port}/0"))
        async with started(store):
            assert store.db_ok and not store.redis_ok
            assert await store.store_message(rec(1)) is True
            assert ids(await store.load_messages(SESSION, 10)) == ["1001"]

    with caplog.at_level(logging.ERROR):
        run(go())
    assert any("REDIS_URL" in r.getMessage() and "unreachable" in r.getMessage() for r in caplog.records)
    assert secret not in caplog.text


def test_both_urls_malformed_fails_startup_clearly(backend: Backend) -> None:
    async def go() -> None:
        store = backend.store(database_url="::::", redis_url="http://nope")
        with pytest.raises(RuntimeError, match="DATABASE_URL.*REDIS_URL"):
            await store.start()
        await store.stop()

    run(go())


@pytest.mark.parametrize("backend", ["real"], indirect=True)  # needs a network database
def test_unreachable_database_at_startup_recovers_and_migrates(backend: Backend) -> None:

    async def go() -> None:
        store = backend.store()
        real_port = None
        # start against a closed port, then point at the real server: the probe migrates and replays
        from plugins.memory import durable

        original = durable.open_database

        def closed_port(url: str, timeout: float):  # type: ignore[no-untyped-def]
            db = original(url, timeout)
            nonlocal real_port
            real_port = db.connect_params.get("port", 5432)
            db.connect_params["port"] = free_port()
            return db

        durable.open_database = closed_port
        try:
            await store.start()
        finally:
            durable.open_database = original
        try:
            assert not store.db_ok
            assert await store.store_message(rec(1)) is True
            assert store.db is not None
            store.db.db.connect_params["port"] = real_port
            await store.probe()
            assert store.db_ok and store.migrated
            assert db_history(backend) == ["1001"]
        finally:
            await store.stop()

    run(go())


