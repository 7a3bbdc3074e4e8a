"""Property: whatever the interleaving of appends (in and out of order),
duplicate deliveries, flushes, Redis outages, database outages and outbox
replays, the context served is exactly the database's ordered history, the
database ends up holding every accepted message once, and nothing is lost.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.models import MessageRecord, Session
from plugins.memory.store import MemoryStore
from tests.memory.conftest import Backend, database_cut, run, started
from tests.memory.helpers import db_history, ids, rec

# A few timestamps only, so ties and late arrivals are common.
times = st.sampled_from([10.0, 11.0, 11.0, 12.5, 13.0, 20.0])
ops = st.lists(
    st.one_of(
        st.tuples(st.just("append"), times),
        st.tuples(st.just("dup"), st.integers(0, 50)),
        st.tuples(st.just("read"), st.integers(1, 12)),
        st.sampled_from([("flush",), ("redis_down",), ("redis_up",), ("db_down",), ("db_up",), ("probe",)]),
    ),
    min_size=1,
    max_size=30,
)


class World:
    """The faults currently applied, and what the store has accepted."""

    def __init__(self, backend: Backend, store: MemoryStore, session: Session) -> None:
        self.backend = backend
        self.store = store
        self.session = session
        self.accepted: dict[str, MessageRecord] = {}
        self.sent: list[MessageRecord] = []
        self.redis_down = False
        self.cut: database_cut | None = None
        self.n = 0
        # Message ids are unique database-wide: each example gets its own.
        self.tag = session.id[2:]

    def expected(self) -> list[str]:
        return [r.id for r in sorted(self.accepted.values(), key=lambda r: r.sort_key)]

    async def step(self, op: tuple[Any, ...]) -> None:
        kind = op[0]
        if kind == "append":
            self.n += 1
            record = rec(self.n, ts=op[1], session=self.session, id=f"{self.tag}{self.n:0{1 + self.n % 3}d}")
            await self.store.store_message(record)
            self.accepted.setdefault(record.id, record)
            self.sent.append(record)
        elif kind == "dup" and self.sent:
            original = self.sent[op[1] % len(self.sent)]
            await self.store.store_message(MessageRecord.from_dict(original.to_dict()))
        elif kind == "read":
            await self.check_read(op[1])
        elif kind == "flush" and not self.redis_down:
            self.backend.flush()
        elif kind == "redis_down" and not self.redis_down:
            self.backend.redis_down()
            self.redis_down = True
        elif kind == "redis_up" and self.redis_down:
            self.backend.redis_up()
            self.redis_down = False
            await self.store.probe()
        elif kind == "db_down" and self.cut is None:
            self.cut = database_cut(self.backend, self.store)
            self.cut.__enter__()
        elif kind == "db_up" and self.cut is not None:
            self.cut.__exit__(None, None, None)
            self.cut = None
            await self.store.probe()
        elif kind == "probe":
            await self.store.probe()

    async def check_read(self, limit: int) -> None:
        got = ids(await self.store.load_messages(self.session, limit))
        want = self.expected()
        assert len(got) == len(set(got)), f"duplicates in context: {got}"
        assert got == sorted(got, key=lambda i: self.accepted[i].sort_key), f"out of order: {got}"
        if self.store.db_ok:
            # Served from Redis or the database, it is the database's history.
            assert got == want[-limit:], f"context {got} != history {want[-limit:]}"
        else:
            # Degraded (database down): never invents or reorders, only may miss
            # what neither the window nor the outbox holds.
            assert set(got) <= set(want)

    async def heal(self) -> None:
        if self.cut is not None:
            self.cut.__exit__(None, None, None)
            self.cut = None
        if self.redis_down:
            self.backend.redis_up()
            self.redis_down = False
        for _ in range(3):
            await self.store.probe()
        assert self.store.db_ok and self.store.redis_ok


def _property(backend: Backend, script: list[tuple[Any, ...]]) -> None:
    session = Session(id=f"p-{uuid.uuid4().hex[:8]}", scope_key="prop", opened_at=0.0, last_active_at=0.0)

    async def go() -> None:
        async with started(backend.store(window_size=8, db_timeout=0.2)) as store:
            world = World(backend, store, session)
            try:
                for op in script:
                    await world.step(op)
            finally:
                await world.heal()
            want = world.expected()
            assert db_history(backend, session.id) == want  # nothing lost, nothing twice
            for limit in (3, 8, 50):
                assert ids(await store.load_messages(session, limit)) == want[-limit:]
                assert ids(await store.load_messages(session, limit)) == want[-limit:]

    run(go())


@pytest.mark.parametrize("backend", ["fast"], indirect=True)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(script=ops)
def test_window_is_always_the_databases_history_fast(backend: Backend, script: list[tuple[Any, ...]]) -> None:
    _property(backend, script)


@pytest.mark.parametrize("backend", ["real"], indirect=True)
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(script=ops)
def test_window_is_always_the_databases_history_real(backend: Backend, script: list[tuple[Any, ...]]) -> None:
    _property(backend, script)
