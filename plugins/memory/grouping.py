"""Calls that arrive while one of their kind is in flight go together.

The mechanism behind the database's group commit (:class:`~plugins.memory.
durable.Batcher`) and Redis auto-pipelining (:class:`~plugins.memory.cache.
AutoPipeline`). No timer: the first call goes from its caller's own task,
at once or, where ``gather`` is set (Redis), after one yield to the event
loop, so that calls other tasks make in the same turn go with it; grouping
adds no wait beyond that turn, only sharing.
"""

from __future__ import annotations

import asyncio
from typing import Any


class Grouped:
    """``await grouped(item)``: the item's result, or its exception.

    While a batch is in flight, calls queue; when it returns, what queued goes
    in the next batch (at most ``limit`` items, all if ``None``). Subclasses
    say how a batch is sent (:meth:`send`) and how one failure is handed to
    many callers (:meth:`copy_error`).
    """

    limit: int | None = None
    task_name = "memory-batch"
    # Whether the first call of an idle batcher lets the calls made in the
    # same turn of the event loop join it (one yield to the loop, no timer).
    gather = False

    def __init__(self) -> None:
        self.waiting: list[tuple[Any, asyncio.Future[Any]]] = []
        self.busy = False
        self.task: asyncio.Task[None] | None = None

    async def send(self, items: list[Any]) -> list[Any]:
        """Per item, its result or an exception instance (raised to that
        item's caller only). Raising fails every caller of the batch."""
        raise NotImplementedError

    def copy_error(self, exc: BaseException) -> BaseException:
        """What each caller of a failed batch gets for ``exc``."""
        return exc

    async def __call__(self, item: Any) -> Any:
        if self.busy:
            future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            self.waiting.append((item, future))
            return await future
        self.busy = True
        try:
            if self.gather:
                await asyncio.sleep(0)
            joined, self.waiting = self._cut()
            outcome = await self._send_with(item, joined)
        finally:
            self._next()
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def post(self, item: Any) -> asyncio.Future[Any]:
        """Queue ``item`` without waiting: it goes in the next batch, after
        every call made before and before every call made after; the
        future holds its outcome."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.waiting.append((item, future))
        if not self.busy:
            self.busy = True
            self.task = asyncio.create_task(self._drain(), name=self.task_name)
        return future

    def _cut(self) -> tuple[list[tuple[Any, asyncio.Future[Any]]], list[tuple[Any, asyncio.Future[Any]]]]:
        cut = self.limit or len(self.waiting)
        return self.waiting[:cut], self.waiting[cut:]

    async def _send_with(self, item: Any, joined: list[tuple[Any, asyncio.Future[Any]]]) -> Any:
        """Send ``item`` with the calls that joined it; ``item``'s outcome."""
        joined = [(i, f) for i, f in joined if not f.done()]
        try:
            outcomes = await self.send([item] + [i for i, _f in joined])
        except BaseException as exc:
            for _item, future in joined:
                if not future.done():
                    future.set_exception(self.copy_error(exc))
            raise
        for (_item, future), outcome in zip(joined, outcomes[1:]):
            if not future.done():
                if isinstance(outcome, BaseException):
                    future.set_exception(outcome)
                else:
                    future.set_result(outcome)
        return outcomes[0]

    def _next(self) -> None:
        if self.waiting:
            self.task = asyncio.create_task(self._drain(), name=self.task_name)
        else:
            self.busy = False

    async def _drain(self) -> None:
        if self.gather:
            await asyncio.sleep(0)
        batch, self.waiting = self._cut()
        try:
            batch = [(item, future) for item, future in batch if not future.done()]
            if not batch:
                return
            try:
                outcomes = await self.send([item for item, _f in batch])
            except BaseException as exc:
                for _item, future in batch:
                    if not future.done():
                        future.set_exception(self.copy_error(exc))
                if not isinstance(exc, Exception):
                    # Cancelled with the loop or the store: nobody may wait forever.
                    for _item, future in self.waiting:
                        if not future.done():
                            future.set_exception(self.copy_error(exc))
                    self.waiting = []
                    raise
                return
            for (_item, future), outcome in zip(batch, outcomes):
                if not future.done():
                    if isinstance(outcome, BaseException):
                        future.set_exception(outcome)
                    else:
                        future.set_result(outcome)
        finally:
            self.task = None
            self._next()
