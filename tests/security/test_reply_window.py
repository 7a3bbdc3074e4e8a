"""The window between showing a reply and storing it (docs/SECURITY.md,
"A reply shown but not stored").

The pipeline sends a reply, then stores it. A process killed between the
two has shown a reply that its memory lacks. With several instances a
standby takes the claim over and re-sends with the same nonce, so the reply
is stored (docs/MEMORY.md A3, A5; tested in features/instances.feature and
tests/discord). With one instance nobody takes over: this test pins what
then remains, so a change of order (store first, mark sent after) has to
change the documentation with it.
"""

from __future__ import annotations

from pathlib import Path

from core.models import Reply, Sent
from tests.security.test_isolation import World, _started, export_text, msg, run, say


class Killed(BaseException):
    """Stands in for SIGKILL: nothing after it runs in this process."""


def test_one_instance_killed_after_showing_a_reply_keeps_the_question_not_the_answer(tmp_path: Path) -> None:
    world = World(tmp_path)
    shown: list[Reply] = []

    async def dies_after_showing(reply: Reply) -> Sent:
        shown.append(reply)
        raise Killed

    async def first_life() -> None:
        bot = await _started(world, "A")
        try:
            await bot.handle(msg("alice-question", "alice"), dies_after_showing)
        except Killed:
            pass
        finally:
            await bot.stop()

    async def next_life() -> str:
        bot = await _started(world, "A2")
        try:
            return export_text(await say(bot, msg("/export", "alice")))
        finally:
            await bot.stop()

    run(first_life())
    assert len(shown) == 1 and "alice-question" in shown[0].content
    exported = run(next_life())
    assert "alice-question" in exported  # stored before the reply was generated
    assert "CTX:" not in exported  # the reply shown was never stored
