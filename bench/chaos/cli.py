"""``python -m bench.chaos``: run the soak, print the table, write JSON,
exit 1 when any violation count (loss, duplicate, order, unanswered,
doubled reply without overlapping faults, split, context) is not 0 (2 when
the soak itself could not run)."""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

from bench.chaos.faults import KINDS
from bench.chaos.ledger import COUNTED, VIOLATIONS
from bench.chaos.soak import DELIVERY_MODELS, SoakConfig, SoakResult, run_soak

RESULTS = Path(__file__).resolve().parents[1] / "results"

QUICK = {"messages": 1200, "rate": 25.0, "faults_per_kind": 4, "duration": 55.0, "sample_conversations": 30,
         "drain_timeout": 60.0}


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__)
    p.add_argument("--messages", type=int, help="messages to send (default 20000; --quick: 1200)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--instances", type=int, choices=(2, 3), default=3)
    p.add_argument("--quick", action="store_true", help="the test suite's ~1 minute version")
    p.add_argument("--delivery", choices=DELIVERY_MODELS, default="gateway",
                   help="gateway (default): every running instance receives each message once, nothing is "
                        "redelivered; redeliver: one instance, again elsewhere when unanswered (earlier soaks)")
    p.add_argument("--sample-conversations", type=int,
                   help="read back the context of this many conversations (default: all)")
    p.add_argument("--duration", type=float, help="stop sending after this many seconds")
    p.add_argument("--rate", type=float, help="messages per second (default 40; --quick: 25)")
    p.add_argument("--faults-per-kind", type=int, help="faults of each kind aimed for (default 60; --quick: 4)")
    p.add_argument("--kinds", help="comma-separated fault kinds to inject (default: all six)")
    p.add_argument("--no-faults", action="store_true", help="traffic only (a baseline)")
    p.add_argument("--speed", type=float, default=10.0, help="bot-clock seconds per real second")
    p.add_argument("--out", type=Path, help="JSON file (default bench/results/chaos-<time>.json)")
    p.add_argument("--keep", action="store_true", help="keep the work directory (worker logs)")
    p.add_argument("-v", "--verbose", action="store_true")
    return p.parse_args(argv)


def config_from(args: argparse.Namespace) -> SoakConfig:
    cfg = SoakConfig(seed=args.seed, instances=args.instances, speed=args.speed, faults=not args.no_faults,
                     delivery=args.delivery)
    if args.kinds:
        cfg.kinds = tuple(k.strip() for k in args.kinds.split(",") if k.strip())
        unknown = set(cfg.kinds) - set(KINDS)
        if unknown:
            raise SystemExit(f"unknown fault kinds: {', '.join(sorted(unknown))} (known: {', '.join(KINDS)})")
    if args.quick:
        for key, value in QUICK.items():
            setattr(cfg, key, value)
        cfg.label = "quick"
    for key in ("messages", "rate", "duration", "faults_per_kind", "sample_conversations"):
        value = getattr(args, key)
        if value is not None:
            setattr(cfg, key, value)
    return cfg


TRAFFIC = ("sent", "accepted", "deliveries", "deliveries_gateway", "deliveries_first", "deliveries_redelivery",
           "deliveries_rolling", "deliveries_retry", "delivered_twice_to_one_instance", "degraded_replies",
           "replies_sent_unreported", "stored_without_reply", "unknown_rows", "restarts", "conversations",
           "sessions_used", "windows_seen", "windows_without_own_message", "windows_answering_older_message",
           "views_checked_cached", "views_checked_rebuilt", "fault_seconds", "fault_overlap_seconds",
           "both_down_seconds", "send_rate", "drained")


def _counts(result: SoakResult) -> list[str]:
    lines = [f"delivery model: {result.config.get('delivery', '?')}", "violations (all must be 0)"]
    for key in VIOLATIONS:
        value = result.counts.get(key, 0)
        lines.append(f"  {key:<32}{value:>10}{'' if value == 0 else '   <-- FAIL'}")
    lines.append("counted (not violations)")
    for key in COUNTED:
        lines.append(f"  {key:<32}{result.counts.get(key, 0):>10}")
    if result.stats.get("doubled_by_faults"):
        lines.append("doubled replies by the faults their message lived through")
        for key, value in result.stats["doubled_by_faults"].items():
            lines.append(f"  {key:<56}{value:>8}")
    latency = result.stats.get("first_reply_s") or {}
    if latency:
        lines.append("first reply after sending (s): " + ", ".join(f"{k} {v}" for k, v in latency.items()))
    resumed = result.stats.get("first_reply_after_resume_s") or {}
    if resumed:
        lines.append("  from the answerer's last resume (s): " + ", ".join(f"{k} {v}" for k, v in resumed.items()))
    return lines


def table(result: SoakResult) -> str:
    lines = _counts(result)
    lines.append("faults injected")
    for key, value in result.faults.items():
        skipped = result.faults_skipped.get(key, 0)
        lines.append(f"  {key:<32}{value:>10}{f'   ({skipped} skipped)' if skipped else ''}")
    lines.append("traffic")
    for key in TRAFFIC:
        if key in result.stats:
            lines.append(f"  {key:<32}{result.stats[key]!s:>10}")
    lines.append("timings (s): " + ", ".join(f"{k} {v}" for k, v in result.timings.items()))
    for note in result.notes:
        lines.append(f"note: {note}")
    return "\n".join(lines)


def _git_rev() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                              cwd=RESULTS.parent.parent).stdout.strip()
    except Exception:  # noqa: BLE001
        return "?"


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    cfg = config_from(args)
    rev = _git_rev()  # the code the bots start with (a restarted bot loads the tree as it is then)
    try:
        result = run_soak(cfg, keep=args.keep)
    except Exception as exc:  # noqa: BLE001 - the soak could not run: say why
        import traceback

        traceback.print_exc()
        print(f"chaos soak could not run: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    print(table(result))
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out = args.out or RESULTS / f"chaos-{stamp}{'-quick' if args.quick else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = asdict(result)
    payload["git"] = rev
    payload["passed"] = all(result.counts.get(k, 0) == 0 for k in VIOLATIONS)
    out.write_text(json.dumps(payload, indent=2, default=str))
    print(f"written: {out}")
    return 0 if payload["passed"] else 1
