"""The Redis round trips on the connection the auto-pipeline keeps (one
server or a Sentinel's master): what a pipeline did, for less CPU. Real
Redis only (the shared server, through a proxy of this test's own: nothing
is flushed or killed); fakeredis keeps redis-py's pipeline."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from harness.proxy import TcpProxy
from plugins.memory.cache import AutoPipeline
from plugins.memory.redis_client import make_client
from tests.memory.conftest import run

pytestmark = pytest.mark.real


@asynccontextmanager
async def piped(timeout: float = 1.0) -> AsyncIterator[tuple[AutoPipeline, TcpProxy, str]]:
    proxy = TcpProxy("127.0.0.1", 6379, name="redis-conn-test")
    client = make_client(f"redis://127.0.0.1:{proxy.port}/0", timeout)
    pipeline = AutoPipeline(client)
    key = f"conn-test:{uuid.uuid4().hex}:"
    try:
        yield pipeline, proxy, key
    finally:
        proxy.set_mode("pass")
        await client.aclose()
        proxy.close()


async def until(condition: Callable[[], bool], within: float = 3.0) -> None:
    end = time.monotonic() + within
    while not condition():
        assert time.monotonic() < end, "condition not met in time"
        await asyncio.sleep(0.02)


def test_round_trips_share_one_kept_connection_and_an_error_reply_fails_only_its_operation() -> None:
    async def go() -> None:
        async with piped() as (pipeline, proxy, key):
            assert pipeline.own
            await pipeline.run(("SET", f"{key}s", "text"))
            bad, good = await asyncio.gather(
                pipeline.run(("GET", f"{key}s"), ("INCR", f"{key}s")), pipeline.run(("SET", f"{key}n", 5), ("GET", f"{key}n")), return_exceptions=True
            )
            assert isinstance(bad, ResponseError)  # WRONGTYPE: its operation only
            assert good == [True, b"5"]  # SET's reply went through redis-py's callback, as in a pipeline
            # The replies after an error were read: the stream stays in step.
            assert await pipeline.run(("GET", f"{key}n"), ("DEL", f"{key}n", f"{key}s")) == [b"5", 2]
            assert proxy.open_connections() == 1

    run(go())


def test_a_round_trip_that_gets_no_answer_times_out_and_the_next_takes_a_fresh_connection() -> None:
    async def go() -> None:
        async with piped(timeout=0.3) as (pipeline, proxy, key):
            await pipeline.run(("SET", f"{key}a", 1))
            proxy.set_mode("blackhole")
            started = time.monotonic()
            with pytest.raises(RedisTimeoutError):
                await pipeline.run(("GET", f"{key}a"))
            assert time.monotonic() - started < 1.0  # bounded by the client's timeout
            assert pipeline.conn is None
            proxy.set_mode("pass")  # the frozen stream is reset: only a new connection answers
            assert await pipeline.run(("GET", f"{key}a"), ("DEL", f"{key}a")) == [b"1", 1]

    run(go())


def test_a_connection_reset_fails_its_round_trip_only() -> None:
    async def go() -> None:
        async with piped() as (pipeline, proxy, key):
            await pipeline.run(("SET", f"{key}a", 1))
            proxy.reset_connections()
            with pytest.raises(RedisConnectionError):
                await pipeline.run(("GET", f"{key}a"))
            assert await pipeline.run(("GET", f"{key}a"), ("DEL", f"{key}a")) == [b"1", 1]

    run(go())


def test_a_connection_let_go_while_in_flight_goes_back_to_the_pool_when_its_round_trip_ends() -> None:
    async def go() -> None:
        async with piped() as (pipeline, proxy, key):
            # BLPOP with a timeout blocks this connection only, not the server.
            slow = asyncio.ensure_future(pipeline.run(("BLPOP", f"{key}none", 0.3)))
            await until(lambda: pipeline.flying is not None)
            await pipeline.let_go()
            assert await slow == [None]
            # Back in the pool, idle: dropped with the idle ones. Kept, it would stay open.
            await pipeline.r.connection_pool.disconnect(inuse_connections=False)
            await until(lambda: proxy.open_connections() == 0)
            await pipeline.run(("PING",))
            await pipeline.let_go()  # not in flight: back at once
            await pipeline.r.connection_pool.disconnect(inuse_connections=False)
            await until(lambda: proxy.open_connections() == 0)

    run(go())
