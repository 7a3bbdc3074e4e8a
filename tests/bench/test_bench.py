"""The benchmark command keeps working: its smallest configuration prints
the table and writes the JSON. No timing is asserted here (speed belongs to
the benchmark's own goals)."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.report import Row, table
from bench.servers import Blackhole, RedisServer
from bench.stats import Result, percentile, summarise

ROOT = Path(__file__).resolve().parents[2]

needs_redis_server = pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server not installed")


def test_percentiles_are_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile([7.0], 99) == 7.0


def test_summary_takes_the_median_of_round_percentiles() -> None:
    # One wild round must not move the figure.
    result = summarise([[1.0] * 10, [1.1] * 10, [50.0] * 10])
    assert result.p50 == 1.1
    assert result.rounds == 3 and result.n == 30


def test_table_shows_missing_parts_plainly() -> None:
    row = Row("hot_read", "hot read", floor=Result.single(0.2, "ms"), status="memory plugin unavailable",
              peer_name="peer", extra={"peer_status": "not installed"}, goal="<=1.3x floor")
    text = table([row])
    assert "memory plugin unavailable" in text
    assert "not installed" in text
    assert text.splitlines()[0].split()[:2] == ["figure", "ours"]


def _ping(port: int, timeout: float) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(b"PING\r\n")
        return sock.recv(16)


@needs_redis_server
def test_blackhole_proxy_relays_then_swallows_then_relays_again() -> None:
    server = RedisServer()
    server.start()
    proxy = Blackhole(server.port)
    try:
        proxy.start()
        assert _ping(proxy.port, 5).startswith(b"+PONG")
        proxy.blackhole()
        # Accepted but never answered: exactly what a client must not wait on.
        with pytest.raises(socket.timeout):
            _ping(proxy.port, 0.3)
        proxy.restore()
        assert _ping(proxy.port, 5).startswith(b"+PONG")
    finally:
        proxy.stop()
        server.stop()


@pytest.mark.real
@needs_redis_server
def test_quick_smallest_configuration_prints_table_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--rounds", "1", "--iterations", "3",
         "--small-rows", "500", "--large-rows", "2000", "--sessions", "10", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=240, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert lines[0].split()[:4] == ["figure", "ours", "p50/p99", "floor"]
    assert any(line.startswith("hot context read") for line in lines)
    assert "machine:" in proc.stdout and f"wrote {out}" in proc.stdout

    doc = json.loads(out.read_text())
    keys = {f["key"] for f in doc["figures"]}
    assert {"hot_read", "durable_write", "cold_read", "cold_read_large"} <= keys
    assert not [f for f in doc["figures"] if f["status"].startswith("FAILED")], doc["figures"]
    floors = {f["key"]: f["floor"] for f in doc["figures"] if f["floor"]}
    assert floors["hot_read"]["p50"] > 0 and floors["floor_pg_insert"]["p50"] > 0
    assert doc["machine"]["nproc"] >= 1 and doc["versions"]["redis-server"]
    assert doc["peers"] == "installed" or doc["peers"].startswith("not installed")
    assert time.monotonic() - started < 240
