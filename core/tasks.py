"""Stopping background tasks without hanging a shutdown.

A plain ``task.cancel(); await task`` waits forever if the cancellation is
lost: a library can swallow it (a ``CancelledError`` caught around a
connection's cleanup, or ``asyncio.wait_for`` on Python 3.11 when the inner
call finishes as the cancel arrives) and the task goes on looping. A stop
that hangs keeps a restarting instance off the gateway and a test's clean
restart from ending, so every plugin's background loop stops through
:func:`stop_task`: it cancels again until the task ends, and gives up
(with a log line naming the task) after ``timeout`` seconds.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

log = logging.getLogger(__name__)

# How often a task that has not ended yet is cancelled again.
RECANCEL_EVERY = 0.25


async def stop_task(task: asyncio.Task[Any] | None, timeout: float = 5.0) -> None:
    """Cancel ``task`` and wait until it ends, at most ``timeout`` seconds.
    Whatever it raised is consumed (it was being stopped)."""
    if task is None:
        return
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not task.done():
        left = deadline - loop.time()
        if left <= 0:
            log.error("task %s did not stop within %g s of being cancelled; left running", task.get_name(), timeout)
            return
        task.cancel()
        await asyncio.wait({task}, timeout=min(RECANCEL_EVERY, left))
    if not task.cancelled():
        task.exception()  # retrieved: no "exception was never retrieved" noise


async def stop_tasks(tasks: list[asyncio.Task[Any] | None], timeout: float = 5.0) -> None:
    """:func:`stop_task` for each of ``tasks`` (``None`` ones skipped), at once."""
    if tasks:
        await asyncio.gather(*(stop_task(t, timeout) for t in tasks))
