"""Calls that arrive while one of their kind is in flight go together.

The mechanism behind the database's group commit (:class:`~plugins.memory.
durable.Batcher`) and Redis auto-pipelining (:class:`~plugins.memory.cache.
AutoPipeline`). No timer: the first call goes at once from its caller's
own task or, where ``gather`` is set (Redis), from a batch task after one
yield to the event loop, so that calls other tasks make in the same turn go
with it; grouping adds no wait beyond that turn, only sharing. A caller
cancelled while its call is in flight never fails another caller's call.
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
        if self.busy or self.gather:
            # Sent by the batch's own task: a caller cancelled while it is in
            # flight cancels only its own wait, never the others' calls.
            return await self.post(item)
        self.busy = True
        try:
            (outcome,) = await self.send([item])
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

    def _next(self) -> None:
        if self.waiting:
            self.task = asyncio.create_task(self._drain(), name=self.task_name)
        else:
            self.busy = False

    async def _drain(self) -> None:
        batch: list[tuple[Any, asyncio.Future[Any]]] = []
        try:
            if self.gather:
                await asyncio.sleep(0)
            cut = self.limit or len(self.waiting)
            batch, self.waiting = self.waiting[:cut], self.waiting[cut:]
            batch = [(item, future) for item, future in batch if not future.done()]
            if batch:
                await self._send_batch(batch)
        except BaseException as exc:
            # Cancelled with the loop or the store: nobody may wait forever.
            for _item, future in batch + self.waiting:
                if not future.done():
                    future.set_exception(self.copy_error(exc))
            self.waiting = []
            raise
        finally:
            self.task = None
            self._next()

    async def _send_batch(self, batch: list[tuple[Any, asyncio.Future[Any]]]) -> None:
        try:
            outcomes = await self.send([item for item, _f in batch])
        except Exception as exc:  # noqa: BLE001 - handed to every caller of the batch
            for _item, future in batch:
                if not future.done():
                    future.set_exception(self.copy_error(exc))
            return
        for (_item, future), outcome in zip(batch, outcomes):
            if not future.done():
                if isinstance(outcome, BaseException):
                    future.set_exception(outcome)
                else:
                    future.set_result(outcome)
