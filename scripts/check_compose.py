"""Check compose.yaml says what docs/OPERATIONS.md promises (run by
scripts/lint_deploy.sh with the lint venv's PyYAML; no container engine):
two bot instances with distinct, stable instance ids and data volumes,
Redis with AOF on, PostgreSQL with a volume, a health check on every
service, and no secret written in the file."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def problems(compose: dict) -> list[str]:
    found = []
    services = compose.get("services", {})
    bots = {name: s for name, s in services.items() if name.startswith("bot-")}
    ids = [s.get("environment", {}).get("BOT_INSTANCE_ID") for s in bots.values()]
    if len(bots) < 2 or None in ids or len(set(ids)) != len(ids):
        found.append(f"want two bot services with distinct BOT_INSTANCE_ID, got {ids}")
    data = [tuple(v for v in s.get("volumes", []) if v.endswith(":/data")) for s in bots.values()]
    if len(set(data)) != len(data) or () in data:
        found.append("each bot instance needs a /data volume of its own (its outbox spool)")
    redis = services.get("redis", {})
    if "--appendonly" not in redis.get("command", []) or "yes" not in redis.get("command", []):
        found.append("redis must run with --appendonly yes")
    if not any(v.endswith(":/var/lib/postgresql/data") for v in services.get("postgres", {}).get("volumes", [])):
        found.append("postgres needs a volume for its data")
    for name, service in services.items():
        if "healthcheck" not in service:
            found.append(f"service {name} has no healthcheck")
    return found


def main() -> int:
    text = (ROOT / "compose.yaml").read_text()
    found = problems(yaml.safe_load(text))
    # ${VAR} references only: a literal password in the file is a leak.
    for match in re.finditer(r"://[^/@\s:]*:([^/@\s]+)@", text):
        if not match.group(1).startswith("${"):
            found.append("compose.yaml holds a literal password in a URL")
    for problem in found:
        print(f"compose.yaml: {problem}", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
