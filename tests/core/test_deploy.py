"""The deployment files say what docs/OPERATIONS.md promises. The linters
(hadolint, yamllint, systemd-analyze) run in CI through
scripts/lint_deploy.sh; these checks need nothing but the files."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_image_installs_from_the_lock_with_hashes_and_runs_as_non_root() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert "--require-hashes" in text and "discord_bot.lock" in text
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert re.search(r"^HEALTHCHECK .*\n.*?/readyz", text, re.M)


def test_the_systemd_unit_runs_one_named_instance_as_its_own_user() -> None:
    text = (ROOT / "deploy" / "discord-bot@.service").read_text()
    assert "BOT_INSTANCE_ID=%H-%i" in text and "BOT_DATA_DIR=/var/lib/discord-bot/%i" in text
    assert re.search(r"^User=(?!root)\S+", text, re.M)
    assert "KillSignal=SIGTERM" in text


def test_compose_runs_two_instances_redis_with_aof_and_postgres_with_a_volume() -> None:
    text = (ROOT / "compose.yaml").read_text()
    assert len(set(re.findall(r"BOT_INSTANCE_ID: (\S+)", text))) == 2
    assert '"--appendonly", "yes"' in text
    assert "postgres-data:/var/lib/postgresql/data" in text
    assert text.count("healthcheck:") >= 3  # the bots' (shared), Redis', PostgreSQL's
