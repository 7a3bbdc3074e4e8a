"""Rules R1-R4 of docs/MEMORY.md that need no replicated servers: the
Redis URLs of Sentinel and Cluster, PostgreSQL's multi-host URL, a new
epoch never numbered twice, and every command of every operation in one
Cluster slot. The failovers themselves: features/failover.feature."""

from __future__ import annotations

import secrets
from typing import Any
from urllib.parse import quote

import pytest
from redis.crc import key_slot

from core.models import Session
from plugins.memory import cache as cache_module
from plugins.memory.durable import describe_url, open_database
from plugins.memory.keys import KeyNames
from plugins.memory.redis_client import RedisURLError, describe_redis_url, make_client
from plugins.memory.settings import MemorySettings
from tests.memory.conftest import Backend, run, started
from tests.memory.helpers import SESSION, ids, rec, warm

# --- URLs ---------------------------------------------------------------------------


def test_sentinel_url_names_the_sentinels_the_service_and_the_database() -> None:
    client = make_client("redis+sentinel://:s3cret@10.0.0.1:26379,10.0.0.2/mymaster/2?sentinel_password=x", 0.25)  # scan-secrets: allow (a test URL)
    pool = client.connection_pool
    assert pool.service_name == "mymaster"
    assert [c.connection_pool.connection_kwargs["port"] for c in pool.sentinel_manager.sentinels] == [26379, 26379]
    assert pool.connection_kwargs["password"] == "s3cret" and pool.connection_kwargs["db"] == 2
    assert pool.sentinel_manager.sentinels[0].connection_pool.connection_kwargs["password"] == "x"


def test_cluster_url_names_the_startup_nodes() -> None:
    client = make_client("redis+cluster://user:pw@10.0.0.1:7000,[::1]:7001,10.0.0.3", 0.25)
    assert [(n.host, n.port) for n in client.nodes_manager.startup_nodes.values()] == [
        ("10.0.0.1", 7000), ("::1", 7001), ("10.0.0.3", 6379),
    ]  # fmt: skip


@pytest.mark.parametrize(
    "url",
    ["redis+sentinel://h:26379", "redis+sentinel://h:x/m", "redis+cluster://h:7000/3", "redis+sentinel:///m"],
)
def test_bad_replicated_redis_urls_get_a_clear_error_without_the_password(url: str) -> None:
    with pytest.raises(RedisURLError) as err:
        make_client(url.replace("://", "://:hunter2@"), 0.25)
    assert "hunter2" not in str(err.value)


def test_replicated_urls_are_described_without_their_password() -> None:
    assert describe_redis_url("redis+sentinel://:pw@a:1,b:2/m") == "redis+sentinel://a:1,b:2/m"
    assert describe_url("postgresql://u:pw@a:5432,b:5433/db?target_session_attrs=read-write") == "postgresql://a:5432,b:5433/db"


def test_a_postgresql_url_with_several_hosts_goes_to_libpq_as_lists() -> None:
    password = "p@" + secrets.token_hex(4)  # made up per run, percent-encoded in the URL
    db = open_database(f"postgresql://bot:{quote(password, safe='')}@a:5432,b:5433/memory", 0.5)
    params = db.connect_params
    assert db.database == "memory"
    assert (params["host"], params["port"]) == ("a,b", "5432,5433")
    assert params["user"] == "bot" and params["password"] == password
    assert params["target_session_attrs"] == "read-write"  # the default with several hosts
    db = open_database("postgresql://a,b:5433/memory?target_session_attrs=any", 0.5)
    assert (db.connect_params["host"], db.connect_params["port"], db.connect_params["target_session_attrs"]) == ("a,b", "5432,5433", "any")


def test_a_key_prefix_with_braces_is_refused() -> None:
    with pytest.raises(ValueError):
        MemorySettings(key_prefix="bot{x}:")
    with pytest.raises(ValueError):
        KeyNames("bot{")


# --- R2: a new epoch is never one used before -----------------------------------------


def test_r2_an_epoch_made_again_after_the_key_was_lost_is_a_new_one(backend: Backend) -> None:
    async def go() -> None:
        async with started(backend.store()) as store:
            assert store.cache is not None
            first = store.cache.epoch
            await store.cache.bump_epoch()
            second = store.cache.epoch
            # The epoch key alone is lost (its Cluster node failed over to a
            # replica without it); the windows of `first` may still exist.
            await store.cache.r.delete(store.cache.epoch_key)
            await store.probe()
            assert store.cache.epoch not in (first, second)
            assert int(store.cache.epoch) > int(second) > int(first)

    run(go())


# --- R3: one slot per operation ----------------------------------------------------------


def _slots(command: tuple[Any, ...]) -> set[int]:
    name = str(command[0]).upper()
    if name in ("EVAL", "EVALSHA"):
        keys = command[3 : 3 + int(command[2])]
    elif name in ("GET", "SET", "INCR", "EXISTS", "DEL", "EXPIRE", "LRANGE", "RPUSH", "LLEN", "XADD", "XLEN"):
        keys = command[1:2]
    else:
        raise AssertionError(f"unexpected command {name}: add it here with its keys")
    return {key_slot(k.encode() if isinstance(k, str) else k) for k in keys}


def test_r3_every_command_of_the_hot_path_touches_one_slot(backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    """A conversation with the lease, claims, appends, window reads and a
    rebuild: each command sent (each script with all its keys) stays in one
    hash slot, as a Redis Cluster requires."""
    sent: list[tuple[Any, ...]] = []
    original = cache_module.AutoPipeline.send

    async def recording(self: Any, groups: list[tuple[tuple[Any, ...], ...]]) -> list[Any]:
        for commands in groups:
            sent.extend(commands)
        return await original(self, groups)

    monkeypatch.setattr(cache_module.AutoPipeline, "send", recording)

    async def go() -> None:
        async with started(backend.store()) as store:
            other = Session(id="s-other", scope_key="g:c:u2", user_id="u2", guild_id="g", channel_id="c", opened_at=0.0, last_active_at=0.0)
            for n in range(1, 4):
                async with store.leases.lease(SESSION.scope_key):
                    assert await store.arbiter.claim(str(n), sent_at=0.0) in (True, False)
                    await store.save_session(SESSION)
                    await store.store_message(rec(n))
                    await warm(store)
            await store.store_message(rec(9, session=other))
            await store.load_messages(other, 10)
            assert ids(await store.load_messages(SESSION, 10)) == ["1001", "1002", "1003"]

    run(go())
    assert sent, "no command went through the pipeline"
    for command in sent:
        assert len(_slots(command)) <= 1, f"{command[0]} touches keys of several slots: {command}"
    # and the keys of one session do share a tag
    keys = KeyNames("bot:")
    assert key_slot(keys.window(SESSION.id, "7").encode()) == key_slot(keys.counter(SESSION.id).encode())
    assert key_slot(keys.lease("a:b:c").encode()) == key_slot(keys.session("a:b:c", "7").encode()) == key_slot(keys.fence("a:b:c").encode())
