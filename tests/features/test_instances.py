"""Scenarios of features/instances.feature: Several bot instances on the same backends."""

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
    instance = harness.instance(name)
    if not isinstance(instance, InProcessInstance):
        raise HarnessError(f"instance {name} must run in this process")
    store = instance.bot.memory
    store.redis_breaker.trip("connection closed while the process was paused")
    store.db_breaker.trip("connection closed while the process was paused")
