"""Admin commands built on the core's hooks only: ``sessions``, ``export``,
``forget`` and ``doctor``. They work with whichever plugins store the
memory, on a bot started by the command line (no transport, no listener).
Exit codes are those of :mod:`core.admin`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from core.admin import EXIT_ATTENTION, EXIT_OK, EXIT_USAGE, AdminCommand, AdminError, Output
from core.errors import ExportIncomplete
from core.models import HealthReport, Session

# --- sessions --------------------------------------------------------------------


def _session_json(session: Session) -> dict[str, Any]:
    return {
        "id": session.id,
        "scope_key": session.scope_key,
        "user_id": session.user_id,
        "guild_id": session.guild_id,
        "channel_id": session.channel_id,
        "opened_at": session.opened_at,
        "last_active_at": session.last_active_at,
        "closed_at": session.closed_at,
    }


async def sessions(bot: Any, args: argparse.Namespace, out: Output) -> int:
    if args.action == "list":
        if not bot.storage.present:
            raise AdminError("no plugin stores sessions (is the memory plugin enabled?)")
        found = await bot.storage.list_sessions(args.user, args.limit)
        out.data(sessions=[_session_json(s) for s in found])
        for s in found:
            state = "closed" if s.closed_at is not None else "open"
            out.line(f"{s.id}  {state:<6}  scope {s.scope_key}  last active {_when(s.last_active_at)}")
        if not found:
            out.line(f"no sessions for user {args.user}")
        return EXIT_OK
    session = await bot.storage.load_session(args.scope)
    if session is None:
        raise AdminError(f"no session stored for scope {args.scope!r} (sessions list --user ID shows the scopes)", EXIT_ATTENTION)
    messages = await bot.storage.load_messages(session, args.limit)
    out.data(session=_session_json(session), messages=[{"id": m.id, "role": m.role.value, "author": m.author_name, "content": m.content, "timestamp": m.timestamp} for m in messages])
    out.line(f"session {session.id} (scope {session.scope_key}), opened {_when(session.opened_at)}, last active {_when(session.last_active_at)}")
    for m in messages:
        out.line(f"  {_when(m.timestamp)}  {m.author_name or m.author_id}: {m.content}")
    return EXIT_OK


def _when(timestamp: float | None) -> str:
    import datetime

    if timestamp is None:
        return "-"
    return datetime.datetime.fromtimestamp(timestamp, datetime.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _sessions_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="a user's sessions, newest first")
    listing.add_argument("--user", required=True, help="the user's platform id")
    listing.add_argument("--limit", type=int, default=20)
    show = actions.add_parser("show", help="one conversation's latest session and its messages")
    show.add_argument("scope", help="the scope key, as sessions list shows it")
    show.add_argument("--limit", type=int, default=50, help="the last messages to show (50)")


# --- export / forget -------------------------------------------------------------


async def export(bot: Any, args: argparse.Namespace, out: Output) -> int:
    if args.guild is not None:
        data = await _guild_export(bot, args.guild)
    else:
        data = {"user_id": args.user}
        parts = await bot.hooks.collect("export_user", user_id=args.user)
        for part in parts:
            if isinstance(part, dict):
                data.update(part)
        failed = sorted({f.plugin for f in bot.hooks.failures if f.hook == "export_user"})
        if failed:
            raise AdminError(f"export incomplete: plugin {', '.join(failed)} failed (see the log); nothing was written")
    text = json.dumps(data, indent=2, sort_keys=True, default=str)
    if args.out:
        Path(args.out).write_text(text + "\n", encoding="utf-8")
        out.line(f"wrote {args.out}: {', '.join(f'{len(v)} {k}' for k, v in data.items() if isinstance(v, list))}")
        out.data(path=args.out)
    elif out.as_json:
        out.data(export=data)
    else:
        out.line(text)
    return EXIT_OK


async def _guild_export(bot: Any, guild_id: str) -> dict[str, Any]:
    """A guild's data (the ``export_guild`` hook), or the refusal: a
    partial export is never written."""
    if not guild_id.isdigit():
        raise AdminError(f"--guild takes a server's numeric id, not {guild_id!r}", EXIT_USAGE)
    try:
        return {"guild_id": guild_id, **await bot.export_guild(guild_id)}
    except ExportIncomplete as exc:
        raise AdminError(f"{exc} (see the log); nothing was written") from None


async def forget(bot: Any, args: argparse.Namespace, out: Output) -> int:
    if not args.yes:
        raise AdminError(f"forget deletes everything stored about user {args.user} everywhere; add --yes to do it", EXIT_USAGE)
    counts: dict[str, int] = {}
    for part in await bot.hooks.collect("forget_user", user_id=args.user):
        if isinstance(part, dict):
            for key, value in part.items():
                counts[key] = counts.get(key, 0) + int(value or 0)
    failed = sorted({f.plugin for f in bot.hooks.failures if f.hook == "forget_user"})
    out.data(deleted=counts)
    out.line(f"deleted for user {args.user}: " + (", ".join(f"{v} {k}" for k, v in sorted(counts.items())) or "nothing was stored"))
    if failed:
        raise AdminError(f"plugin {', '.join(failed)} failed to forget (see the log): run forget again")
    return EXIT_OK


def _user_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--user", required=True, help="the user's platform id")


def _export_arguments(parser: argparse.ArgumentParser) -> None:
    whose = parser.add_mutually_exclusive_group(required=True)
    whose.add_argument("--user", help="the user's platform id")
    whose.add_argument("--guild", help="a server's id: its settings, conversations and facts")
    parser.add_argument("--out", help="write the export to this file instead of stdout")


def _forget_arguments(parser: argparse.ArgumentParser) -> None:
    _user_arguments(parser)
    parser.add_argument("--yes", action="store_true", help="really delete")


# --- doctor ----------------------------------------------------------------------

# What to do about a component that reports a problem. The detail of the
# report says what is wrong; this says what fixes it.
FIXES = {
    "redis": "start Redis or fix REDIS_URL; meanwhile the bot reads and writes the database and loses nothing",
    "database": (
        "start the database or fix DATABASE_URL; meanwhile writes wait in the outbox and drain by themselves "
        "once it answers (`python -m core outbox status`)"
    ),
    "outbox": "the writes drain once the database answers; `python -m core outbox replay` drains them now",
}


def _finding(report: HealthReport) -> dict[str, Any]:
    fix = FIXES.get(report.component, f"see the [{report.component}] settings and the log")
    return {"component": report.component, "ok": report.ok, "detail": report.detail, "fix": None if report.ok else fix}


async def doctor(bot: Any, args: argparse.Namespace, out: Output) -> int:
    findings = [_finding(r) for r in await bot.health()]
    for info in bot.plugins.listing():
        if info.state in ("failed", "unknown"):
            findings.append(
                {
                    "component": f"plugin {info.name}",
                    "ok": False,
                    "detail": info.reason,
                    "fix": f"fix its settings ([{info.name}] or its environment variables) or add it to [plugins] disabled",
                }
            )
    for problem in bot.plugins.problems + bot.commands.problems:
        findings.append({"component": "config", "ok": False, "detail": problem, "fix": "edit the config file named above"})
    out.data(findings=findings, healthy=all(f["ok"] for f in findings))
    for f in findings:
        out.line(f"{f['component']}: {'OK' if f['ok'] else 'PROBLEM'} {f['detail']}".rstrip())
        if not f["ok"]:
            out.line(f"  fix: {f['fix']}")
    bad = [f for f in findings if not f["ok"]]
    out.line("verdict: " + ("healthy" if not bad else f"{len(bad)} problem{'s' if len(bad) != 1 else ''}"))
    return EXIT_ATTENTION if bad else EXIT_OK


COMMANDS = [
    AdminCommand("sessions", "list a user's sessions, or show one conversation", sessions, _sessions_arguments),
    AdminCommand("export", "export everything stored about a user, or a server's data (data requests)", export, _export_arguments),
    AdminCommand("forget", "delete everything stored about a user, everywhere", forget, _forget_arguments),
    AdminCommand("doctor", "what is degraded and why, with the fix", doctor),
]
