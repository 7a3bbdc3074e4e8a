"""The store on MariaDB/MySQL (127.0.0.1:3306, root, no password) when it runs here."""

from __future__ import annotations

import asyncio

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.models import Role, Session
from tests.memory.conftest import Backend, run, started
from tests.memory.helpers import SESSION, ids, rec


@pytest.fixture
def mysql_backend(tmp_path: Path) -> Iterator[Backend]:
    pymysql = pytest.importorskip("pymysql")
    try:
        admin = pymysql.connect(host="127.0.0.1", port=3306, user="root", password="", connect_timeout=2, autocommit=True)
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"MariaDB not reachable: {exc}")
    name = f"mem_{uuid.uuid4().hex[:10]}"
    with admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE {name} CHARACTER SET utf8mb4")
    fake = f"t-{uuid.uuid4().hex[:10]}"
    try:
        yield Backend("mysql", f"mysql://root@127.0.0.1:3306/{name}", f"fakeredis://{fake}", tmp_path, fake_name=fake)
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE {name}")
        admin.close()


def test_store_read_sessions_claims_and_fences_on_mysql(mysql_backend: Backend) -> None:
    b = mysql_backend

    async def go() -> None:
        async with started(b.store("A")) as a, started(b.store("B")) as other:
            await a.store_message(rec(2))
            await a.store_message(rec(1, content="ünïcode ✓ \U0001f600"))
            await other.store_message(rec(1))
            assert ids(await a.load_messages(SESSION, 10)) == ["1001", "1002"]
            b.flush()
            got = await a.load_messages(SESSION, 10)
            assert ids(got) == ["1001", "1002"] and got[0].content == "ünïcode ✓ \U0001f600"
            s = Session("s1", "scope", 1.0, 2.0, user_id="u3", state={"k": 1})
            async with a.leases.lease("scope"):
                assert await a.save_session(s)
            assert await other.load_session("scope") == s
            await a.store_message(rec(3, role=Role.BOT, author="bot", id="reply:1001", reply_to_id="1001"))
            b.redis_down()
            assert not await other.arbiter.claim("1001", None)
            assert await other.arbiter.claim("1005", None)
            standby = asyncio.create_task(a.arbiter.claim("1005", None))
            await asyncio.sleep(0.2)
            assert not standby.done()  # keeps watch while the other holds it
            standby.cancel()
            b.redis_up()
            exported = await a.export_user("u3")
            assert {m["id"] for m in exported["messages"]} == {"1001", "1002", "reply:1001"}
            assert (await a.forget_user("u3"))["messages"] == 3

    run(go())


