"""The recall plugin: what a user said in earlier conversations, brought
back when it is relevant, and the facts they told the bot. See README.md in
this folder and docs/RECALL.md for the rules.

Hooks only; the logic is in :mod:`.service`, :mod:`.queries`,
:mod:`.facts` and :mod:`.commands`. It needs the memory plugin (its
database) and reads the sessions plugin's token counter.
"""

from __future__ import annotations

from typing import Any

from core.models import Context, IncomingMessage, MessageRecord, Session
from core.plugins import hookimpl
from core.tasks import stop_tasks
from plugins.recall import commands, service
from plugins.recall.settings import load


@hookimpl
def startup(bot: Any) -> None:
    bot.plugin_state["recall"] = service.RecallState(load(bot.settings))


@hookimpl
async def shutdown(bot: Any) -> None:
    state = bot.plugin_state.pop("recall", None)
    if isinstance(state, service.RecallState):
        await stop_tasks(list(state.tasks))


@hookimpl
async def extend_context(context: Context, message: IncomingMessage, bot: Any) -> None:
    await service.extend(bot, context, message)


@hookimpl
async def reply_sent(record: MessageRecord, session: Session, message: IncomingMessage, bot: Any) -> None:
    await service.learn(bot, message)


@hookimpl
def register_commands(register: Any) -> None:
    for command in commands.all_commands():
        register(command)


@hookimpl
async def export_user(user_id: str, bot: Any) -> dict[str, Any]:
    return await service.run_slow(bot, "cannot export now", "export_user", user_id)


@hookimpl
async def export_guild(guild_id: str, bot: Any) -> dict[str, Any]:
    return await service.run_slow(bot, "cannot export now", "export_guild", guild_id)


@hookimpl(trylast=True)
async def forget_user(user_id: str, bot: Any) -> dict[str, int]:
    # trylast: after the memory plugin deleted the messages, so the search
    # index is compacted without them (SQLite).
    result: dict[str, int] = await service.run_slow(bot, "nothing was deleted", "forget_user", user_id)
    state = service.state_of(bot)
    if state is not None:
        state.last_shown.pop(user_id, None)
    return result
