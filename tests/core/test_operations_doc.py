"""docs/OPERATIONS.md and the Grafana dashboard name only what exists: the
``python -m core`` commands (as ``./bot.sh``) and the metrics."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

from prometheus_client import generate_latest

from core.bot import Bot
from core.cli import CORE_COMMANDS, admin_commands
from core.settings import EnvSettings, PluginsSection, Settings

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "OPERATIONS.md").read_text()
DASHBOARD = (ROOT / "deploy" / "grafana-dashboard.json").read_text()


def _settings(tmp_path: Path) -> Settings:
    return Settings(
        env=EnvSettings(data_dir=tmp_path, instance_id="doc"),
        plugins=PluginsSection(enabled=["memory", "sessions", "ops"]),
    )


def test_every_command_on_the_page_exists(tmp_path: Path) -> None:
    _bot, registry = admin_commands(_settings(tmp_path))
    known = set(CORE_COMMANDS) | set(registry.commands)
    named = set(re.findall(r"\./bot\.sh ([a-z]+)", DOC))
    assert named, "the page names no command"
    assert named <= known, f"named but not registered: {sorted(named - known)}"


def _exported(tmp_path: Path) -> set[str]:
    """The sample names the plugin can export (from its TYPE lines, so a
    labelled metric that saw nothing yet counts too)."""

    async def scrape() -> str:
        bot = Bot(_settings(tmp_path))
        await bot.start()
        try:
            ops: Any = bot.ops  # type: ignore[attr-defined]
            ops.state.update(await bot.health(), True, None)
            return generate_latest(ops.registry).decode()
        finally:
            await bot.stop()

    names: set[str] = set()
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)", asyncio.run(scrape()), re.M):
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_count", "_sum"]}.get(kind, [""])
        names |= {name.removesuffix("_total") + s for s in suffixes}
    return names


def test_every_metric_in_the_doc_and_the_dashboard_is_exported(tmp_path: Path) -> None:
    exported = _exported(tmp_path)
    dashboard = json.loads(DASHBOARD)
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    named = set(re.findall(r"\bbot_[a-z_]+", DOC + " " + exprs))
    # The table names a histogram by its family name.
    missing = {n for n in named if n not in exported and f"{n}_count" not in exported}
    assert not missing, f"named but not exported: {sorted(missing)}"
