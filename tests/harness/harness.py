"""The harness a scenario drives: backends, a Discord-like world, bot
instances, the messages delivered and the replies sent.

Steps are plain functions (pytest-bdd cannot await), so the harness owns an
asyncio loop running in a background thread, as a real bot's loop runs all
the time: background work (health probes, outbox replay) goes on between
steps. :meth:`Harness.run` submits a coroutine to it and waits, bounded.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import io
import logging
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from core.bot import MEMORY_DEGRADED
from core.clock import ManualClock
from core.models import IncomingMessage, ReplyId
from harness.assembly import DEFAULT_PLUGINS, ContextLine, RecordedContext, SentReply
from harness.backends import Backends
from harness.instances import InProcessInstance, Instance, WorkerInstance
from harness.world import Place, User, World

log = logging.getLogger("tests.harness")

T = TypeVar("T")

# Upper bounds so nothing hangs; they are hang guards, not speed claims.
STEP_TIMEOUT = 30.0
SETTLE_TIMEOUT = 15.0
# Platform time between two messages said in a row.
MESSAGE_GAP = 1.0
DEFAULT_WINDOW = 50


class HarnessError(AssertionError):
    """Something the scenario asked for did not happen; the message says what."""


class LoopThread:
    """An event loop running forever in a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="harness-loop", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = STEP_TIMEOUT, what: str = "step") -> T:
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            stacks = self.stacks()
            future.cancel()
            raise HarnessError(f"{what} did not finish within {timeout:.0f} s (hang guard); tasks:\n{stacks}") from None

    def stacks(self) -> str:
        """Where each task on the loop waits: what a hang report needs."""

        async def gather() -> str:
            out = io.StringIO()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.print_stack(limit=12, file=out)
            return out.getvalue()

        try:
            return asyncio.run_coroutine_threadsafe(gather(), self.loop).result(5)
        except concurrent.futures.TimeoutError:
            return "(the loop itself is blocked: no task stacks)"

    def close(self) -> None:
        async def cancel_rest() -> None:
            current = asyncio.current_task()
            tasks = [t for t in asyncio.all_tasks() if t is not current]
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.wait(tasks, timeout=5)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.loop.shutdown_asyncgens(), 2)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.loop.shutdown_default_executor(), 5)

        with contextlib.suppress(Exception):
            self.run(cancel_rest(), timeout=15, what="loop shutdown")
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)
        if not self._thread.is_alive():
            self.loop.close()


@dataclass
class Delivery:
    """One message Discord delivered (maybe more than once)."""

    message: IncomingMessage
    user: User
    place: Place
    times: int = 0
    instances: list[str] = field(default_factory=list)


class Harness:
    """Everything a scenario touches. Create it with :func:`make_harness`
    (the ``harness`` fixture); close it with :meth:`close`."""

    def __init__(self, backends: Backends, tmp_path: Path) -> None:
        self.backends = backends
        self.tmp_path = tmp_path
        self.loop = LoopThread()
        self.clock = ManualClock()
        self.world = World()
        self.sections: dict[str, dict[str, Any]] = {"memory": backends.memory_section(), "sessions": {}}
        self.plugins = list(DEFAULT_PLUGINS)
        # Factories of extra plugin objects registered on every in-process
        # instance (e.g. a deliberately broken plugin in a self-test).
        self.extra_plugins: list[Callable[[], Any]] = []
        self.instances: dict[str, Instance] = {}
        self.generation: dict[str, int] = {}
        self.deliveries: dict[str, Delivery] = {}
        self.order: list[str] = []
        self.sent: list[SentReply] = []
        # Deliveries a step did not wait for (see deliver's linger).
        self.pending: list[tuple[Instance, IncomingMessage, asyncio.Task[Any]]] = []
        self.contexts: list[RecordedContext] = []
        self.errors: list[str] = []
        self.last_message: IncomingMessage | None = None

    # --- running things ---------------------------------------------------

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = STEP_TIMEOUT, what: str = "step") -> T:
        return self.loop.run(coro, timeout, what)

    def wait_until(self, check: Callable[[], T], what: str, timeout: float = SETTLE_TIMEOUT) -> T:
        """Poll ``check`` (which raises AssertionError until satisfied) while
        the bot's loop keeps running; re-raise its last failure at the bound."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return check()
            except AssertionError as exc:
                if time.monotonic() >= deadline:
                    raise HarnessError(f"{what}: still not true after {timeout:.0f} s:\n{exc}") from None
            time.sleep(0.05)

    # --- configuration ------------------------------------------------------

    def configure(self, section: str, key: str, value: Any) -> None:
        if self.instances:
            raise HarnessError("settings must be given before the bot starts")
        self.sections.setdefault(section, {})[key] = value

    @property
    def window(self) -> int:
        return int(self.sections.get("sessions", {}).get("window_messages", DEFAULT_WINDOW))

    # --- instances -----------------------------------------------------------

    def start_instance(self, name: str = "A", process: bool = False) -> Instance:
        if name in self.instances:
            raise HarnessError(f"instance {name} is already running")
        data_dir = self.tmp_path / "instances" / name
        instance: Instance
        if process:
            if self.extra_plugins:
                raise HarnessError("extra plugins can only be added to instances in this process")
            instance = WorkerInstance(name, data_dir, self.sections, self.clock, self.plugins)
        else:
            instance = InProcessInstance(name, data_dir, self.sections, self.clock, self.plugins, self.extra_plugins)
        self.run(instance.start(), timeout=60, what=f"starting instance {name}")
        self.instances[name] = instance
        self.generation[name] = self.generation.get(name, 0) + 1
        return instance

    def instance(self, name: str | None = None) -> Instance:
        if not self.instances:
            raise HarnessError("no bot instance is running")
        if name is None:
            return next(iter(self.instances.values()))
        if name not in self.instances:
            raise HarnessError(f"no instance {name!r} is running (running: {', '.join(self.instances)})")
        return self.instances[name]

    def stop_instance(self, name: str) -> None:
        instance = self.instance(name)
        self._collect_contexts(instance)
        self.run(instance.stop(), timeout=30, what=f"stopping instance {name}")
        del self.instances[name]

    def kill_instance(self, name: str) -> int | None:
        instance = self.instance(name)
        if not isinstance(instance, WorkerInstance):
            raise HarnessError(
                f"instance {name} runs in this process and cannot be killed; start it 'in a separate process'"
            )
        self._collect_contexts(instance)
        instance.kill()
        code = self.run(instance.wait_dead(), what=f"waiting for instance {name} to die")
        del self.instances[name]
        return code

    def restart_instance(self, name: str = "A") -> Instance:
        """Stop the instance (shutdown hooks run) and build a new one on the
        same backends and data dir: nothing of the old one survives in
        memory."""
        old = self.instance(name)
        process = not old.in_process
        self.stop_instance(name)
        return self.start_instance(name, process=process)

    def _collect_contexts(self, instance: Instance) -> None:
        # The cursor lives on the instance: an id() could be reused by the
        # next instance after a restart.
        start = getattr(instance, "harness_cursor", 0)
        new = instance.contexts[start:]
        self.contexts.extend(new)
        instance.harness_cursor = start + len(new)  # type: ignore[attr-defined]

    # --- the clock ----------------------------------------------------------------

    def advance_clock(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self._sync_clocks()

    def _sync_clocks(self) -> None:
        workers = [i for i in self.instances.values() if not i.in_process]
        if workers:
            async def sync() -> None:
                await asyncio.gather(*(w.set_clock(self.clock.now()) for w in workers))

            self.run(sync(), what="setting the clock of worker processes")

    # --- Discord ------------------------------------------------------------------

    def new_message(self, user_name: str, place_text: str, content: str) -> IncomingMessage:
        user = self.world.user(user_name)
        place = self.world.place(place_text, user)
        self.clock.advance(MESSAGE_GAP)
        message = self.world.message(user, place, content, self.clock.now())
        self.deliveries[message.id] = Delivery(message, user, place)
        self.order.append(message.id)
        return message

    def say(self, user_name: str, place_text: str, content: str, to: list[str] | None = None, linger: float | None = None) -> IncomingMessage:
        """``user`` says ``content`` in ``place``; every running instance
        receives it (as in a rolling deploy), or only those named in ``to``."""
        message = self.new_message(user_name, place_text, content)
        if linger is None:
            self.deliver(message, to)  # (tests wrap deliver with this signature)
        else:
            self.deliver(message, to, linger)
        return message

    def deliver(self, message: IncomingMessage, to: list[str] | None = None, linger: float | None = None) -> list[SentReply]:
        """(Re)deliver ``message`` to the instances, concurrently, and wait
        until each has handled it; with ``linger``, wait that long at most
        and leave the others pending (an instance keeping watch while
        nothing can arbitrate): :meth:`settle` collects them."""
        targets = [self.instance(n) for n in to] if to else list(self.instances.values())
        if not targets:
            raise HarnessError("no bot instance is running to receive the message")
        delivery = self.deliveries[message.id]
        delivery.times += 1
        delivery.instances.extend(t.name for t in targets)
        self.last_message = message

        async def fan_out() -> list[asyncio.Task[Any]]:
            tasks = [asyncio.ensure_future(t.deliver(message)) for t in targets]
            await asyncio.wait(tasks, timeout=linger)
            return tasks

        tasks = self.run(fan_out(), what=f"handling {message.content!r}")
        self.pending.extend((target, message, task) for target, task in zip(targets, tasks, strict=True) if not task.done())
        return self._collect([(t, message, task) for t, task in zip(targets, tasks, strict=True) if task.done()])

    def _collect(self, handled: list[tuple[Instance, IncomingMessage, asyncio.Task[Any]]]) -> list[SentReply]:
        sent: list[SentReply] = []
        problems = []
        for target, message, task in handled:
            self._collect_contexts(target)
            if task.exception() is not None:
                exc = task.exception()
                problems.append(f"instance {target.name} raised {type(exc).__name__}: {exc} (handling {message.content!r})")
            else:
                sent.extend(task.result())
        self.sent.extend(sent)
        if problems:
            self.errors.extend(problems)
            raise HarnessError("delivering: " + "; ".join(problems))
        return sent

    def settle(self, timeout: float = 30.0) -> None:
        """Wait (bounded) for the deliveries left pending, and collect what they sent."""
        pending, self.pending = self.pending, []
        if not pending:
            return

        async def wait() -> None:
            await asyncio.wait([task for _t, _m, task in pending], timeout=timeout)

        self.run(wait(), timeout=timeout + 5, what="waiting for the instances keeping watch")
        unfinished = [(t, m, task) for t, m, task in pending if not task.done()]
        if unfinished:
            raise HarnessError("still keeping watch after %.0f s: %s" % (timeout, ", ".join(f"{t.name} on {m.content!r}" for t, m, _ in unfinished)))
        self._collect(pending)

    def message_said(self, text: str) -> IncomingMessage:
        """The (last) message whose text is ``text``."""
        for mid in reversed(self.order):
            if self.deliveries[mid].message.content == text:
                return self.deliveries[mid].message
        raise HarnessError(f"no message {text!r} was said in this scenario")

    # --- what the bot did ----------------------------------------------------------

    def replies_to(self, message: IncomingMessage) -> list[SentReply]:
        return [s for s in self.sent if s.message_id == message.id]

    def context_of_reply(self, message: IncomingMessage) -> RecordedContext:
        for instance in self.instances.values():
            self._collect_contexts(instance)
        found = [c for c in self.contexts if c.message_id == message.id]
        if not found:
            raise HarnessError(f"no reply to {message.content!r} was generated (so no context was recorded)")
        if len(found) > 1:
            where = ", ".join(c.instance for c in found)
            raise HarnessError(f"{len(found)} replies to {message.content!r} were generated (by {where})")
        return found[0]

    def label(self, line: ContextLine) -> str:
        """How a scenario names an author: the user's name, or ``bot``."""
        if line.role == "bot":
            return "bot"
        if line.role == "system":
            return "system"
        return self.world.name_of(line.author_id) or line.author_name or line.author_id

    def probe(self, user_name: str, place_text: str) -> IncomingMessage:
        """A message that is never sent: it only asks the bot which
        conversation ``user`` has in ``place``."""
        user = self.world.user(user_name)
        place = self.world.place(place_text, user)
        return self.world.message(user, place, "(probe)", self.clock.now())

    def scope(self, user_name: str, place_text: str, instance: str | None = None) -> str:
        probe = self.probe(user_name, place_text)
        return self.run(self.instance(instance).scope_of(probe), what="asking the session scope")

    def view(
        self, user_name: str, place_text: str, instance: str | None = None, limit: int | None = None
    ) -> tuple[str, str | None, list[ContextLine]]:
        probe = self.probe(user_name, place_text)
        return self.run(
            self.instance(instance).context_view(probe, limit or self.window), what="reading the bot's context"
        )

    def health(self, instance: str | None = None) -> dict[str, dict[str, Any]]:
        """The instance's health reports by component name."""
        reports = self.run(self.instance(instance).health(), what="asking the bot's health")
        return {r["component"]: r for r in reports}

    @staticmethod
    def degraded(reply: SentReply) -> bool:
        return MEMORY_DEGRADED in reply.notes

    # --- the database, read directly ------------------------------------------

    def db(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        return self.backends.query(sql, params)

    def stored_ids(self) -> list[str]:
        return [row[0] for row in self.db("SELECT message_id FROM messages")]

    def expected_ids(self) -> dict[str, str]:
        """Every message delivered and every reply sent, by id → what it is."""
        expected = {mid: f"message {d.message.content!r}" for mid, d in self.deliveries.items()}
        for mid, d in self.deliveries.items():
            if any(s.message_id == mid for s in self.sent):
                expected[ReplyId(mid)] = f"reply to {d.message.content!r}"
        return expected

    # --- teardown -----------------------------------------------------------------

    def close(self) -> None:
        for _target, _message, task in self.pending:
            self.loop.loop.call_soon_threadsafe(task.cancel)
        for name in list(self.instances):
            instance = self.instances[name]
            try:
                self.backends.restore_all()
                self.run(instance.stop(), timeout=20, what=f"stopping instance {name}")
            except Exception as exc:  # noqa: BLE001 - teardown goes on
                log.warning("stopping instance %s: %s", name, exc)
                if isinstance(instance, WorkerInstance):
                    instance.kill()
        self.instances.clear()
        with contextlib.suppress(Exception):
            self.backends.restore_all()
        self.loop.close()
        self.backends.close()
