"""The soak's bot process: ``python -m bench.chaos.worker``.

It is the harness's worker (:mod:`harness.worker`, same line-delimited
JSON protocol) with one difference: the reply comes from the real ``llm``
plugin (its offline stand-in), not from the harness's test replier. A
recorder hook runs first, notes the context window the reply is generated
from, and returns ``None`` so the llm plugin answers.

``deliver`` answers with ``contexts``: compact summaries ``{session_id,
ids, ts, notes}`` of each window built for the message, so the driver can
check their order without keeping whole windows. Each reply is also written
the moment it is sent, as an event line ``{"event": "sent", message_id,
content, notes, at}`` (no ``id``): a user sees a reply when it is sent, and
a process killed before its delivery returns must not hide one.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
from typing import Any

from core.clock import ManualClock
from core.ids import snowflake
from core.models import Context, IncomingMessage, Reply, Sent
from core.plugins import hookimpl
from harness import assembly
from harness import worker as base


class ContextRecorder:
    """Notes each context window, answers nothing (the llm plugin does)."""

    def __init__(self, instance: str) -> None:
        self.instance = instance
        self.by_message: dict[str, list[dict[str, Any]]] = {}
        # The harness worker reads ``contexts``; the chaos worker never does.
        self.contexts: list[Any] = []

    @hookimpl(tryfirst=True)
    def generate_reply(self, context: Context, message: IncomingMessage) -> None:
        self.by_message.setdefault(message.id, []).append(
            {
                "session_id": context.session.id,
                "ids": [m.id for m in context.messages],
                "ts": [m.timestamp for m in context.messages],
                "notes": list(context.notes),
                "at": time.time(),  # wall clock, shared with the driver on this machine
            }
        )
        return None


class RunningClock(ManualClock):
    """The driver's :class:`~bench.chaos.soak.SoakClock` (real time sped up),
    computed here from the same origin; never behind what a request set."""

    def __init__(self, base: float, t0: float, speed: float) -> None:
        super().__init__(base)
        self.base, self.t0, self.speed = base, t0, speed

    def now(self) -> float:
        return max(self._now, self.base + (time.monotonic() - self.t0) * self.speed)


class ChaosWorker(base.Worker):
    replier_class = ContextRecorder

    def __init__(self, out: Any) -> None:
        super().__init__(out)
        spec = os.environ.get("CHAOS_CLOCK")
        if spec:
            base_s, t0, speed = (float(x) for x in spec.split(","))
            self.clock = RunningClock(base_s, t0, speed)

    async def deliver(self, message: IncomingMessage) -> list[assembly.SentReply]:
        """:func:`harness.assembly.deliver`, announcing each send."""
        sent: list[assembly.SentReply] = []

        async def send(reply: Reply) -> Sent:
            now = self.bot.clock.now()
            sent_id = snowflake(now, worker=2)
            sent.append(assembly.SentReply(self.instance, message.id, message.channel_id, reply.content,
                                           list(reply.notes), sent_id, now))
            self.answer({"event": "sent", "message_id": message.id, "content": reply.content,
                         "notes": list(reply.notes), "at": time.time()})
            return Sent(id=sent_id, timestamp=now)

        await self.bot.handle(dataclasses.replace(message), send)
        return sent

    async def run(self, request: dict[str, Any]) -> dict[str, Any]:
        if request.get("cmd") == "deliver" and self.bot is not None:
            from harness.world import message_from_dict

            self._now(request)
            message = message_from_dict(request["message"])
            sent = await self.deliver(message)
            contexts = self.replier.by_message.pop(message.id, [])
            return {"sent": [s.to_dict() for s in sent], "contexts": contexts}
        return await super().run(request)


def main() -> None:
    # The harness worker looks its Worker class up when it runs.
    base.Worker = ChaosWorker  # type: ignore[misc]
    asyncio.run(base.main())


if __name__ == "__main__":
    main()
