"""Scenarios of features/instances.feature: Several bot instances on the same backends."""

import asyncio
import contextlib
from typing import Any

from pytest_bdd import scenarios, when

from tests.harness.harness import Harness, HarnessError
from tests.harness.instances import InProcessInstance
from tests.harness.steps import p

scenarios("instances.feature")


@when(p('instance "{name:Name}" loses its connections to Redis and the database'))
def when_instance_loses_connections(harness: Harness, name: str) -> None:
    """The instance's circuit breakers for both backends open, as when the
    backends closed its connections while the process was paused (SIGSTOP),
    or its calls timed out because the pause outlasted them. The backends
    themselves stay up, and the other instances reach them."""
    store = _store(harness, name)
    store.redis_breaker.trip("connection closed while the process was paused")
    store.db_breaker.trip("connection closed while the process was paused")


def _store(harness: Harness, name: str) -> Any:
    instance = harness.instance(name)
    if not isinstance(instance, InProcessInstance):
        raise HarnessError(f"instance {name} must run in this process")
    return instance.bot.memory


@when(p('instance "{name:Name}" freezes'))
def when_instance_freezes(harness: Harness, name: str) -> None:
    """As if its process were paused (SIGSTOP): its background work stops,
    so it neither probes the backends (nor replays its outbox) nor reports
    to the other instances. Send it nothing until it thaws."""
    store = _store(harness, name)

    async def freeze() -> None:
        for task in (store._probe_task, store._report_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    harness.run(freeze(), what=f"freezing instance {name}")


@when("every instance has reported")
def when_every_instance_reported(harness: Harness) -> None:
    """Each instance writes its report and reads the others' (what each
    does every ``report_interval``), twice, so each has seen the rest."""
    stores = [_store(harness, name) for name in harness.instances]

    async def report() -> None:
        for _ in range(2):
            for store in stores:
                await store.reports.publish()

    harness.run(report(), what="instance reports")


@when(p('instance "{name:Name}" thaws'))
def when_instance_thaws(harness: Harness, name: str) -> None:
    """Its probe and its reports run again."""
    store = _store(harness, name)

    async def thaw() -> None:
        store._probe_task = asyncio.create_task(store._probe_loop())
        store._report_task = asyncio.create_task(store._report_loop())

    harness.run(thaw(), what=f"thawing instance {name}")


@when(p('the database is reachable again for instance "{name:Name}"'))
def when_db_back_for(harness: Harness, name: str) -> None:
    """Undo the database cut and wait (bounded) until instance ``name``
    has seen it back (a frozen instance cannot)."""
    harness.backends.restore_database()

    def healthy() -> None:
        report = harness.health(name).get("database")
        assert report is not None and report["ok"], f"instance {name} still reports the database down"

    harness.wait_until(healthy, f"instance {name} reports the database healthy")
