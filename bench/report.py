"""The table, the JSON file, and what machine and versions produced them."""

from __future__ import annotations

import importlib.metadata
import json
import math
import os
import platform
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.stats import Result

LIBRARIES = (
    "redis", "hiredis", "lupa", "psycopg2-binary", "peewee", "orjson", "pydantic", "pluggy",
    "langchain-community", "langchain-core", "SQLAlchemy", "greenlet",
)


@dataclass(slots=True)
class Row:
    """One line of the table. ``floor_ratio`` is ours ÷ floor (1.0 = no
    overhead); ``peer_ratio`` is peer ÷ ours (2.0 = twice as fast as the
    peer). Ratios of throughput figures are inverted accordingly."""

    key: str
    figure: str
    ours: Result | None = None
    floor: Result | None = None
    peer: Result | None = None
    peer_name: str = ""
    goal: str = ""
    met: bool | None = None
    floor_ratio: float | None = None
    peer_ratio: float | None = None
    status: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "key": self.key, "figure": self.figure, "goal": self.goal, "met": self.met,
            "floor_ratio": _round(self.floor_ratio), "peer_ratio": _round(self.peer_ratio),
            "peer_name": self.peer_name, "status": self.status, "extra": self.extra,
        }
        for name in ("ours", "floor", "peer"):
            value = getattr(self, name)
            out[name] = value.to_dict() if value else None
        return out


def _round(value: float | None, digits: int = 3) -> float | None:
    if value is None or math.isnan(value):
        return None
    return round(value, digits)


def ratio(a: Result | None, b: Result | None) -> float | None:
    if a is None or b is None or not b.p50:
        return None
    return a.p50 / b.p50


def fmt(result: Result | None, both: bool = True) -> str:
    if result is None:
        return "-"
    if result.unit == "ms":
        return f"{result.p50:.3f}/{result.p99:.3f}" if both else f"{result.p50:.3f}"
    if result.unit == "ms-once":
        return f"{result.p50:.1f}"
    if result.unit in ("msg/s",):
        return f"{result.p50:,.0f}"
    if result.unit == "bytes":
        return f"{result.p50:,.0f} B"
    if result.unit == "x":
        return f"{result.p50:.2f}x"
    return f"{result.p50:.3f} {result.unit}"


def table(rows: list[Row]) -> str:
    header = ["figure", "ours p50/p99", "floor p50", "ours/floor", "peer p50", "peer/ours", "goal", "met?"]
    lines = [header]
    for row in rows:
        met = "-" if row.met is None else ("yes" if row.met else "NO")
        ours = fmt(row.ours) if row.ours else (row.status or "-")
        lines.append([
            row.figure, ours, fmt(row.floor, both=False),
            f"{row.floor_ratio:.2f}" if row.floor_ratio is not None else "-",
            fmt(row.peer, both=False) if row.peer else (row.peer_name and row.extra.get("peer_status", "-")) or "-",
            f"{row.peer_ratio:.2f}" if row.peer_ratio is not None else "-",
            row.goal or "-", met,
        ])
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(header))]
    out = []
    for n, line in enumerate(lines):
        out.append("  ".join(str(cell).ljust(widths[i]) for i, cell in enumerate(line)).rstrip())
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def machine() -> dict[str, Any]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        cpu = platform.processor()
    ram = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram = int(line.split()[1]) * 1024
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(), "cpu": cpu, "ram_gib": round(ram / 2**30, 1),
        "kernel": platform.release(), "platform": platform.platform(),
    }


def versions(redis_version: str = "", postgres_version: str = "") -> dict[str, str]:
    out = {"python": platform.python_version(), "redis-server": redis_version, "postgresql": postgres_version}
    for lib in LIBRARIES:
        try:
            out[lib] = importlib.metadata.version(lib)
        except importlib.metadata.PackageNotFoundError:
            out[lib] = "not installed"
    out["sqlite"] = __import__("sqlite3").sqlite_version
    try:
        out["git"] = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5, check=False,
            cwd=Path(__file__).resolve().parent,
        ).stdout.strip()
        # Measurements run the working tree: name what differs from the commit.
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", "core", "plugins"],
            capture_output=True, text=True, timeout=5, check=False, cwd=Path(__file__).resolve().parent,
        ).stdout.split()
        changed = [p for p in dirty if "/" in p]
        if changed:
            out["git"] += " + uncommitted " + " ".join(changed)
    except (OSError, subprocess.SubprocessError):
        out["git"] = "unknown"
    return out


def write_json(path: Path, rows: list[Row], meta: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {**meta, "written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "figures": [r.to_dict() for r in rows]}
    path.write_text(json.dumps(doc, indent=2, default=str) + "\n", encoding="utf-8")
    return path


def markdown(rows: list[Row], meta: dict[str, Any]) -> str:
    """The table as Markdown, for docs/PERFORMANCE.md."""
    out = [
        "| figure | ours p50 / p99 | floor p50 | ours ÷ floor | peer p50 | peer ÷ ours | goal | met? |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        met = "—" if row.met is None else ("yes" if row.met else "**no**")
        ours = fmt(row.ours) if row.ours else (row.status or "—")
        peer = fmt(row.peer, both=False) if row.peer else (row.extra.get("peer_status") or "—")
        out.append(
            f"| {row.figure.strip()} | {ours} | {fmt(row.floor, both=False)} | "
            f"{f'{row.floor_ratio:.2f}' if row.floor_ratio is not None else '—'} | {peer} | "
            f"{f'{row.peer_ratio:.2f}' if row.peer_ratio is not None else '—'} | {row.goal or '—'} | {met} |"
        )
    m, v = meta.get("machine", {}), meta.get("versions", {})
    out.append("")
    out.append(f"Machine: {m.get('nproc')} CPUs ({m.get('cpu')}), {m.get('ram_gib')} GiB RAM, "
               f"Linux {m.get('kernel')}. Run took {meta.get('elapsed_s')} s "
               f"({'--quick' if meta.get('quick') else 'full'}).")
    out.append("")
    out.append("Versions: " + ", ".join(f"{k} {val}" for k, val in v.items()) + ".")
    return "\n".join(out) + "\n"
