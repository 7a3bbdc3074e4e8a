"""Stopping background tasks: a lost cancellation must not hang a stop."""

from __future__ import annotations

import asyncio
import logging

import pytest

from core.tasks import stop_task, stop_tasks


def test_a_task_that_swallows_a_cancel_is_cancelled_again() -> None:
    async def main() -> list[str]:
        ended: list[str] = []
        swallower = _Stubborn(swallow=2)
        task = asyncio.create_task(swallower.run(ended))
        await asyncio.sleep(0)
        try:
            await asyncio.wait_for(stop_task(task, timeout=5), 3)
        finally:
            await swallower.end(task)  # whatever happened: the test's loop must end
        return ended

    assert asyncio.run(main()) == ["cancelled"]


def test_a_task_that_never_ends_is_left_after_the_timeout(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> bool:
        ended: list[str] = []
        stubborn = _Stubborn()
        task = asyncio.create_task(stubborn.run(ended), name="stubborn")
        await asyncio.sleep(0)
        await asyncio.wait_for(stop_task(task, timeout=0.6), 3)
        left_running = not task.done()
        await stubborn.end(task)
        return left_running and ended == ["cancelled"]

    with caplog.at_level(logging.ERROR, logger="core.tasks"):
        assert asyncio.run(main()) is True
    assert "stubborn did not stop within 0.6 s" in caplog.text


class _Stubborn:
    """A loop that, like a library cleaning up a connection, eats the first
    ``swallow`` cancellations and goes on (all of them by default)."""

    def __init__(self, swallow: int = 10**9) -> None:
        self.swallow = swallow

    async def run(self, ended: list[str]) -> None:
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                if self.swallow <= 0:
                    ended.append("cancelled")
                    raise
                self.swallow -= 1

    async def end(self, task: asyncio.Task[None]) -> None:
        if not task.done():
            self.swallow = 0
            task.cancel()
            await asyncio.wait({task}, timeout=2)


def test_what_a_stopped_task_raised_is_consumed() -> None:
    async def fails() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            raise RuntimeError("broke while stopping") from None

    async def main() -> None:
        loop = asyncio.get_running_loop()
        unretrieved: list[object] = []
        loop.set_exception_handler(lambda _loop, context: unretrieved.append(context))
        tasks = [asyncio.create_task(fails()), asyncio.create_task(asyncio.sleep(3600))]
        await asyncio.sleep(0)
        await stop_tasks(tasks, timeout=2)
        assert all(t.done() for t in tasks)
        del tasks
        assert unretrieved == []

    asyncio.run(main())
