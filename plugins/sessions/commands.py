"""The session commands: ``reset``, ``session``, ``history``, ``export``,
``forget``.

Permissions beyond the core's per-command level are checked here, because
they depend on the arguments and the scope:

- ``reset`` of a shared session (``channel`` or ``thread`` scope) needs
  ``manage_messages`` (or administrator, or a bot owner); a per-user session
  is anyone's own to reset.
- ``export``, ``forget`` and ``history`` act on the caller; only bot owners
  may name another user (``<@id>`` or the plain id).
- ``forget`` deletes nothing without ``confirm``: ``/forget`` explains what
  will go, ``/forget confirm`` does it.
- ``server-export`` is an ``admin`` command (the core checks it: a
  server's administrators and the owners); an administrator exports their
  own server only, owners any (by id, also from a DM).

Replies about one's own data are ephemeral (only the caller sees them in
Discord).
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

from core.errors import ExportIncomplete
from core.models import Attachment, Command, IncomingMessage, Invocation, Reply

from plugins.sessions import lifecycle, service
from plugins.sessions.scope import is_shared

TOTAL_CAP = 1000
_MENTION = re.compile(r"^<@!?([^>\s]+)>$")


def is_owner(bot: Any, message: IncomingMessage) -> bool:
    return message.is_owner or message.author_id in bot.settings.bot.owner_ids


def can_moderate(bot: Any, message: IncomingMessage) -> bool:
    return is_owner(bot, message) or bool({"manage_messages", "administrator"} & message.permissions)


def duration(seconds: float) -> str:
    """``3725`` → ``"1h 2m"``; ``42`` → ``"42s"``."""
    seconds = max(0, int(seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{days}d"] if days else []
    if hours:
        parts.append(f"{hours}h")
    if minutes and not days:
        parts.append(f"{minutes}m")
    if not (days or hours) and (secs or not parts):
        parts.append(f"{secs}s")
    return " ".join(parts)


def stamp(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(epoch))


def parse_args(args: str, counts: bool = False) -> tuple[str | None, bool, int | None, list[str]]:
    """``(user, confirm, count, not understood)`` from free-form arguments in
    any order (Discord sends slash options joined by spaces): ``confirm``; a
    user as ``<@id>``, a numeric id or a transport id with a colon
    (``local:bob``); with ``counts``, a number up to 100 is a count."""
    user: str | None = None
    confirm = False
    count: int | None = None
    unknown: list[str] = []
    for token in args.split():
        mention = _MENTION.match(token)
        if token.lower() == "confirm":
            confirm = True
        elif counts and token.isdigit() and int(token) <= 100:
            count = int(token)
        elif mention:
            user = mention.group(1)
        elif token.isdigit() or ":" in token:
            user = token
        else:
            unknown.append(token)
    return user, confirm, count, unknown


def not_understood(inv: Invocation, unknown: list[str], usage: str) -> Reply:
    prefix = inv.bot.settings.bot.command_prefix
    words = ", ".join(repr(w) for w in unknown)
    return Reply(f"I did not understand {words}. Usage: {prefix}{inv.name} {usage}", ephemeral=True)


def target_user(inv: Invocation, named: str | None, verb: str) -> str | Reply:
    """Whose data a command acts on, or the refusal."""
    caller = inv.message.author_id
    if named is None or named == caller:
        return caller
    if not is_owner(inv.bot, inv.message):
        return Reply(f"You can only {verb} your own data; only the bot's owners can name another user.", ephemeral=True)
    return named


# --- reset -------------------------------------------------------------------


async def reset(inv: Invocation) -> Reply:
    bot, message = inv.bot, inv.message
    if not service.has_storage(bot):
        return Reply("No memory plugin is enabled, so there is no session to reset.", ephemeral=True)
    key = await service.current_scope(bot, message)
    shared = is_shared(key)
    if shared and not can_moderate(bot, message):
        return Reply(
            "This channel shares one conversation; resetting it needs the Manage Messages permission.",
            ephemeral=True,
        )
    # "keep": the conversation's rolling summary (llm plugin) carries over.
    keep = "keep" in inv.args.lower().split()
    # The core runs reset holding the session's lease (holds_session).
    closed, opened = await lifecycle.reset(
        message,
        key,
        bot.clock.now(),
        lambda k: service.load_session(bot, k),
        lambda s: service.save_session(bot, s),
        reason=lifecycle.RESET_KEEP if keep else "reset",
    )
    service.remember(bot, opened)
    whose = "this channel's" if shared else "your"
    kept = " The earlier messages are kept for history and export." if closed else ""
    if keep and closed:
        kept += " The summary of the earlier conversation is kept in context."
    return Reply(f"Started a new session: I no longer have {whose} earlier messages in context.{kept}", ephemeral=not shared)


# --- session -----------------------------------------------------------------


async def session_info(inv: Invocation) -> Reply:
    bot, message = inv.bot, inv.message
    cfg = service.settings_for(bot, message)
    key = await service.current_scope(bot, message)
    now = bot.clock.now()
    lines: list[str] = []
    session = await service.load_session(bot, key) if service.has_storage(bot) else None
    if session is None or not lifecycle.usable(session, now, cfg.idle_timeout, cfg.max_age):
        if session is None:
            lines.append("No session here yet; your next message opens one.")
        else:
            ended = session.closed_at
            if ended is None:
                ends = lifecycle.expiry(session, cfg.idle_timeout, cfg.max_age)
                ended = ends[0] if ends else now
            lines.append(
                f"The last session here ({session.id}) ended {duration(now - ended)} ago; "
                "your next message opens a new one."
            )
    else:
        win = await service.window(bot, session, None, cfg)
        total = len(await service.session_messages(bot, session, TOTAL_CAP))
        total_text = f"{total}+" if total >= TOTAL_CAP else str(total)
        lines.append(f"Session {session.id}")
        label = "direct messages, per user" if key.startswith("dm:") else cfg.scope
        lines.append(f"Scope: {label} ({key})")
        lines.append(f"Age: {duration(now - session.opened_at)} (opened {stamp(session.opened_at)})")
        idle = now - session.last_active_at
        if cfg.idle_timeout > 0:
            lines.append(f"Idle: {duration(idle)}; closes after {duration(cfg.idle_timeout - idle)} more without a message")
        else:
            lines.append(f"Idle: {duration(idle)}; no idle timeout")
        if cfg.max_age:
            lines.append(f"Max age: ends in {duration(session.opened_at + cfg.max_age - now)} at the latest")
        lines.append(f"Context window: {len(win.messages)} of {total_text} messages (limit {cfg.window_messages})")
        lines.append(f"Tokens: {win.tokens_used} / {cfg.token_budget} (system prompt included)")
    lines.append("Backends:")
    reports = await bot.health()
    for report in reports:
        metrics = ", ".join(f"{k} {v}" for k, v in report.metrics.items())
        detail = "; ".join(x for x in (report.detail, metrics) if x)
        lines.append(f"- {report.component}: {'OK' if report.ok else 'DOWN'}{f' ({detail})' if detail else ''}")
    if not reports:
        lines.append("- none reported")
    return Reply("\n".join(lines), ephemeral=True)


# --- history -------------------------------------------------------------------


async def history(inv: Invocation) -> Reply:
    bot, message = inv.bot, inv.message
    named, _confirm, count, unknown = parse_args(inv.args, counts=True)
    if unknown:
        return not_understood(inv, unknown, "[count] (owners: [<@user>])")
    target = target_user(inv, named, "see the history of")
    if isinstance(target, Reply):
        return target
    limit = count or service.settings_of(bot).history_limit
    sessions = await bot.storage.list_sessions(target, limit)
    here_key = await service.current_scope(bot, message)
    if target == message.author_id:
        # A shared session belongs to no single user, so list_sessions does
        # not return it; show the one of this channel anyway.
        here = await service.load_session(bot, here_key)
        if here is not None and is_shared(here.scope_key) and all(s.id != here.id for s in sessions):
            sessions.insert(0, here)
    if not sessions:
        return Reply("No sessions stored" + (" for you." if target == message.author_id else f" for {target}."), ephemeral=True)
    cfg = service.settings_for(bot, message)
    now = bot.clock.now()
    lines = [f"Recent sessions{'' if target == message.author_id else f' of {target}'} (newest first):"]
    for s in sessions[: limit + 1]:
        if s.closed_at is not None:
            state = f"closed {stamp(s.closed_at)} ({s.state.get('closed_reason', 'closed')})"
        elif s.scope_key != here_key:
            state = f"last active {stamp(s.last_active_at)}"
        elif lifecycle.usable(s, now, cfg.idle_timeout, cfg.max_age):
            state = "open: the current session here"
        else:
            state = f"timed out after {stamp(s.last_active_at)}"
        lines.append(f"- {s.id}: opened {stamp(s.opened_at)}, {state}")
    return Reply("\n".join(lines), ephemeral=True)


# --- export --------------------------------------------------------------------


def merge(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Merge the plugins' exports: lists under one key are concatenated,
    dicts merged, anything else gathered into a list."""
    merged: dict[str, Any] = {}
    for part in parts:
        for key, value in part.items():
            if key not in merged:
                merged[key] = value
            elif isinstance(merged[key], list) and isinstance(value, list):
                merged[key] = merged[key] + value
            elif isinstance(merged[key], dict) and isinstance(value, dict):
                merged[key] = {**merged[key], **value}
            else:
                merged[key] = [merged[key], value]
    return merged


def _failed_plugins(bot: Any, hook: str, results: list[tuple[str, Any]]) -> list[str]:
    answered = {plugin for plugin, _ in results}
    return sorted({i.plugin_name for i in bot.hooks.implementations(hook)} - answered)


async def export(inv: Invocation) -> Reply:
    bot = inv.bot
    named, _confirm, _count, unknown = parse_args(inv.args)
    if unknown:
        return not_understood(inv, unknown, "(owners: [<@user>])")
    target = target_user(inv, named, "export")
    if isinstance(target, Reply):
        return target
    results = await bot.hooks.collect_by_plugin("export_user", user_id=target)
    failed = _failed_plugins(bot, "export_user", results)
    if failed:
        return Reply(
            f"Export failed in plugin {', '.join(failed)}; nothing was sent so you do not get a partial copy. "
            "Please try again later.",
            ephemeral=True,
        )
    data = merge([r for _p, r in results if isinstance(r, dict)])
    document = {
        "user_id": target,
        "exported_at": stamp(bot.clock.now()),
        "exported_at_epoch": bot.clock.now(),
        "data": data,
    }
    body = json.dumps(document, indent=2, ensure_ascii=False, default=str).encode("utf-8")
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", target)
    attachment = Attachment(f"export-{safe}.json", "application/json", size=len(body), data=body)
    counts = ", ".join(f"{len(v)} {k}" for k, v in data.items() if isinstance(v, list)) or "no records"
    return Reply(f"Here is everything I hold about {'you' if target == inv.message.author_id else target}: {counts}.",
                 attachments=[attachment], ephemeral=True)


async def server_export(inv: Invocation) -> Reply:
    """``/server-export [server id]``: this server's data as a JSON file.
    The core lets only administrators and owners run it (``admin``); an
    administrator's authority ends at their server, so only owners name
    another one (or any, from a DM)."""
    bot, message = inv.bot, inv.message
    prefix = bot.settings.bot.command_prefix
    words = inv.args.split()
    if len(words) > 1 or (words and not words[0].isdigit()):
        return Reply(f"Usage: {prefix}server-export (owners: [server id])", ephemeral=True)
    guild = words[0] if words else message.guild_id
    if guild is None:
        return Reply(f"There is no server here: run {prefix}server-export in the server (owners: name its id).",
                     ephemeral=True)
    if guild != message.guild_id and not is_owner(bot, message):
        return Reply("You can only export this server's data; only the bot's owners can name another server.",
                     ephemeral=True)
    try:
        data = await bot.export_guild(guild)
    except ExportIncomplete as exc:
        return Reply(f"Export failed in plugin {', '.join(exc.plugins)}; nothing was sent so you do not get a partial "
                     "copy. Please try again later.", ephemeral=True)
    now = bot.clock.now()
    document = {"guild_id": guild, "exported_at": stamp(now), "exported_at_epoch": now, "data": data}
    body = json.dumps(document, indent=2, ensure_ascii=False, default=str).encode("utf-8")
    attachment = Attachment(f"server-export-{guild}.json", "application/json", size=len(body), data=body)
    counts = ", ".join(f"{len(v)} {k}" for k, v in data.items() if isinstance(v, list)) or "no records"
    where = "this server" if guild == message.guild_id else f"server {guild}"
    return Reply(f"Here is everything I hold for {where}: {counts}.", attachments=[attachment], ephemeral=True)


# --- forget --------------------------------------------------------------------


async def forget(inv: Invocation) -> Reply:
    bot, message = inv.bot, inv.message
    prefix = bot.settings.bot.command_prefix
    named, confirm, _count, unknown = parse_args(inv.args)
    if unknown:
        return not_understood(inv, unknown, "[confirm] (owners: [<@user>] confirm)")
    target = target_user(inv, named, "forget")
    if isinstance(target, Reply):
        return target
    who = "you" if target == message.author_id else target
    if not confirm:
        again = f"{prefix}forget {'' if target == message.author_id else target + ' '}confirm"
        return Reply(
            f"This deletes everything I hold about {who}: messages, sessions and images, in the cache, the database, "
            f"pending queues and the media store, on every bot instance. It cannot be undone. "
            f"Consider {prefix}export first. To go ahead, send: {again}",
            ephemeral=True,
        )
    service.forget_cached(bot, target)
    results = await bot.hooks.collect_by_plugin("forget_user", user_id=target)
    failed = _failed_plugins(bot, "forget_user", results)
    totals: dict[str, int] = {}
    for _plugin, counts in results:
        if isinstance(counts, dict):
            for key, value in counts.items():
                if isinstance(value, int):
                    totals[key] = totals.get(key, 0) + value
    summary = ", ".join(f"{v} {k}" for k, v in sorted(totals.items())) or "nothing was stored"
    if failed:
        return Reply(
            f"Deleting failed in plugin {', '.join(failed)}: some of {'your' if who == 'you' else who + chr(39) + 's'} "
            f"data may remain. Deleted so far: {summary}. Please run {prefix}forget confirm again.",
            ephemeral=True,
        )
    if not bot.hooks.implementations("forget_user"):
        return Reply("No memory plugin is enabled: I hold nothing about you to delete.", ephemeral=True)
    return Reply(f"Done: I deleted everything I held about {who} ({summary}).", ephemeral=True)


def all_commands() -> list[Command]:
    user_option = {"user": "bot owners: another user's id"}
    return [
        Command("reset", "start a new session now (shared channel sessions: Manage Messages)", reset,
                options={"keep": "'keep' carries the summary of the conversation over"}, holds_session=True),
        Command("session", "this session: age, idle time left, context window, backend health", session_info),
        Command("history", "your recent sessions", history, options={"count": "how many (up to 100)", **user_option}),
        Command("export", "your stored data as a JSON file", export, options=user_option),
        Command("forget", "delete all your data everywhere (asks for confirmation)", forget,
                options={"confirm": "type confirm to delete", **user_option}),
        Command("server-export", "admins: this server's settings, conversations and facts as a JSON file",
                server_export, permission="admin", options={"server": "bot owners: another server's id"}),
    ]
