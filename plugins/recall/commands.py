"""``/memory``: what the bot keeps about you across conversations.

- ``/memory`` lists your facts (with where and when you told them; in a
  guild channel only those told in that guild, in a DM all of them) and
  what the last reply recalled for you;
- ``/memory forget <fact>`` deletes one fact everywhere, and keeps the
  messages that told it out of recall (``/forget`` deletes everything);
- ``/memory pin <fact>`` keeps a fact through the guild's retention
  (``unpin`` undoes it).

A user only ever sees and deletes their own facts; replies are ephemeral.
"""

from __future__ import annotations

from typing import Any

from core.models import Command, Invocation, Reply

from plugins.recall import service
from plugins.recall.facts import day
from plugins.recall.queries import FactRow

USAGE = (
    "Usage: /memory (list what I keep), /memory forget <fact> (e.g. /memory forget favourite colour), "
    "/memory pin <fact> or /memory unpin <fact>."
)


def visible_here(facts: list[FactRow], message: Any) -> list[FactRow]:
    """A DM lists every fact; a guild channel only those told in that guild
    (a text command's answer there may be read by others)."""
    if message.is_dm or not message.guild_id:
        return facts
    return [f for f in facts if f.place == f"g:{message.guild_id}"]


def describe(facts: list[FactRow], shown: list[Any], guild_id: str | None) -> str:
    lines = []
    if facts:
        lines.append("What I keep about you (delete one with /memory forget <fact>):")
        for f in facts:
            where = "in DMs" if f.place == "dm" else "in this server" if f.place == f"g:{guild_id}" else "in another server"
            pin = ", pinned" if f.pinned else ""
            lines.append(f"- {f.text()} (told {day(f.timestamp)}, {where}{pin})")
    else:
        lines.append("I keep no facts about you." if guild_id is None else "I keep no facts about you from this server (/memory in a DM lists them all).")
    if shown:
        lines.append("My last reply to you recalled:")
        lines.extend(f"- [{day(r.timestamp)}] {r.kind}: {r.content[:120]}" for r in shown)
    return "\n".join(lines)


async def memory(inv: Invocation) -> Reply:
    from plugins.memory import BackendDown

    bot, message = inv.bot, inv.message
    words = inv.args.split()
    try:
        if not words:
            facts = await service.run_slow(bot, "nothing to list", "list_facts", message.author_id)
            state = service.state_of(bot)
            shown = state.last_shown.get(message.author_id, []) if state else []
            return Reply(describe(visible_here(facts, message), shown, message.guild_id), ephemeral=True)
        if words[0].lower() in ("forget", "delete") and len(words) > 1:
            key = " ".join(w.lower() for w in words[1:])
            deleted, hidden = await service.run_slow(
                bot, "nothing was deleted, try again later", "delete_fact", message.author_id, key, bot.clock.now()
            )
            if not deleted:
                return Reply(f"I keep no fact “{key}” about you. /memory lists them.", ephemeral=True)
            state = service.state_of(bot)
            if state is not None:
                state.last_shown.pop(message.author_id, None)
            also = f"; {hidden} message{'s' if hidden != 1 else ''} that told it will not be recalled" if hidden else ""
            return Reply(f"Deleted the fact “{key}”{also}.", ephemeral=True)
        if words[0].lower() in ("pin", "unpin") and len(words) > 1:
            return await _pin(inv, " ".join(w.lower() for w in words[1:]), words[0].lower() == "pin")
    except BackendDown:
        return Reply("The database is unreachable right now, so I cannot read or change your facts; nothing was changed. Please try again later.", ephemeral=True)
    return Reply(f"I did not understand “{inv.args}”. {USAGE}", ephemeral=True)


async def _pin(inv: Invocation, key: str, pinned: bool) -> Reply:
    changed = await service.run_slow(inv.bot, "nothing was changed, try again later", "pin_fact", inv.message.author_id, key, pinned)
    if not changed:
        return Reply(f"I keep no fact “{key}” about you. /memory lists them.", ephemeral=True)
    if pinned:
        return Reply(f"Pinned the fact “{key}”: it is kept however long the server keeps messages.", ephemeral=True)
    return Reply(f"Unpinned the fact “{key}”.", ephemeral=True)


def all_commands() -> list[Command]:
    return [
        Command(
            "memory",
            "what I keep about you across conversations; /memory forget <fact> deletes one",
            memory,
            options={"action": "nothing to list, or: forget <fact>, pin <fact>, unpin <fact>"},
        )
    ]
