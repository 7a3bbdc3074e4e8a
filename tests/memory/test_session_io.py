"""Session reads and writes that cost fewer round trips, and stay right:
the cached session comes with the lease (used once, never after a save,
never across scopes); a save that only touches the session reaches the
database at most every ``session_touch_interval``."""

from __future__ import annotations

import dataclasses
from typing import Any

from core.models import Session
from tests.memory.conftest import Backend, run, started

SCOPE = "g:1:c:2:u:3"
S1 = Session(id="s1", scope_key=SCOPE, opened_at=1.0, last_active_at=1.0, user_id="u3")


def test_the_lease_brings_the_session_and_a_save_makes_it_stale(backend: Backend) -> None:
    async def go() -> None:
        async with started(backend.store("A")) as a, started(backend.store("B")) as b:
            async with a.leases.lease(SCOPE):
                assert await a.load_session(SCOPE) is None
                await a.save_session(S1)
            asked: list[str] = []
            get_session = b.cache.get_session

            async def counting(scope_key: str) -> Any:
                asked.append(scope_key)
                return await get_session(scope_key)

            b.cache.get_session = counting  # type: ignore[method-assign]
            async with b.leases.lease(SCOPE):
                first = await b.load_session(SCOPE)
                assert asked == []  # came with the lease
                assert first == S1  # ...and is what A saved before releasing it
                await b.save_session(dataclasses.replace(S1, last_active_at=5.0))
                again = await b.load_session(SCOPE)
                assert asked == [SCOPE]  # a save made the prefetched copy stale
                assert again is not None and again.last_active_at == 5.0
                await b.load_session("other scope")
                assert asked == [SCOPE, "other scope"]
            assert (await b.load_session(SCOPE)).last_active_at == 5.0  # type: ignore[union-attr]
            assert asked == [SCOPE, "other scope", SCOPE]  # outside the lease: asked again

    run(go())


def _row_activity(backend: Backend) -> tuple[float, float | None]:
    (row,) = backend.sql("SELECT last_active_at, closed_at FROM sessions WHERE session_id = ?", ("s1",))
    return row


def test_touches_reach_the_database_at_most_every_interval_other_changes_at_once(backend: Backend) -> None:
    async def go() -> None:
        clock = backend.clock
        async with started(backend.store("A", session_touch_interval=30)) as a:
            start = clock.now()
            await a.save_session(dataclasses.replace(S1, last_active_at=start))
            clock.advance(10)
            await a.save_session(dataclasses.replace(S1, last_active_at=start + 10))
            assert _row_activity(backend) == (start, None)  # a touch: Redis only
            assert (await a.load_session(SCOPE)).last_active_at == start + 10  # type: ignore[union-attr]
            clock.advance(25)
            await a.save_session(dataclasses.replace(S1, last_active_at=start + 35))
            assert _row_activity(backend) == (start + 35, None)  # the interval passed
            clock.advance(1)
            await a.save_session(dataclasses.replace(S1, last_active_at=start + 36, closed_at=start + 36))
            assert _row_activity(backend) == (start + 36, start + 36)  # not a touch: written at once

    run(go())
