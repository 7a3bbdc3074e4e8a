"""Scenarios of features/restart.feature: Context survives a bot restart."""

import asyncio
import contextlib
from typing import Any

from pytest_bdd import scenarios, when

from core.models import ReplyId
from tests.harness.harness import Harness, HarnessError
from tests.harness.steps import p

scenarios("restart.feature")

WAITING_INSERT = "%INSERT%messages%"


@when(p('{user:Name} says "{text}" in {place:Place}, and instance "{name:Name}" is killed after sending the reply, its insert {fate}'))
def when_killed_between_send_and_store(harness: Harness, user: str, text: str, place: str, name: str, fate: str) -> None:
    """The reply's row is held by an uncommitted insert of the same id in
    another transaction, so the instance's insert of its reply waits on it
    (PostgreSQL makes a conflicting insert wait for the first to end). Once
    it waits, the reply was sent and the instance is SIGKILLed. Its waiting
    insert is then either ended with its connection ("rolled back", as when
    the server notices the closed socket) or left to commit ("committed
    after it died", as when it is already past the wait); the held insert is
    rolled back, as if it never happened."""
    if fate not in ("rolled back", "committed after it died"):
        raise HarnessError(f"unknown fate {fate!r}")
    message = harness.new_message(user, place, text)
    delivery = harness.deliveries[message.id]
    delivery.times += 1
    delivery.instances.append(name)
    holder = _hold_row(harness, str(ReplyId(message.id)))
    try:
        doomed = harness.instance(name)
        dying = asyncio.run_coroutine_threadsafe(doomed.deliver(message), harness.loop.loop)

        def waits() -> None:
            if dying.done():
                raise HarnessError(f"instance {name} finished {text!r}: its reply was not held back")
            found = harness.backends.query(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND wait_event_type = 'Lock' AND query LIKE ?",
                (WAITING_INSERT,),
            )
            assert found[0][0] >= 1, "the reply's insert does not wait yet"

        harness.wait_until(waits, f"instance {name} storing its reply to {text!r}")
        harness.kill_instance(name)
        with contextlib.suppress(Exception):  # the delivery dies with the process, as it should
            dying.result(15)
        if fate == "rolled back":
            ended = harness.backends.query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database()"
                " AND wait_event_type = 'Lock' AND query LIKE ?",
                (WAITING_INSERT,),
            )
            assert ended and all(row[0] for row in ended), f"the dead instance's insert was not ended: {ended}"
    finally:
        holder.rollback()
        holder.close()


def _hold_row(harness: Harness, message_id: str) -> Any:
    database = getattr(harness.backends, "database", None)
    if database is None:
        raise HarnessError("holding one row needs PostgreSQL: tag the scenario @real")
    conn = database.connect()
    with conn.cursor() as cur:
        cur.execute(
            "INSERT INTO messages (message_id, session_id, scope_key, role, author_id, content, ts, attachments,"
            " created_at) VALUES (%s, 'held', 'held', 'assistant', 'held', '', 0, '[]', 0)",
            (message_id,),
        )
    return conn  # the transaction stays open until rollback()
