"""The bus publisher benchmark (bench/bus_publish.py) at a tiny size: every publisher runs against
the real Redis and reports its shape. Never timings."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(60)
def test_bus_publish_bench_runs_every_publisher(tmp_path: Path) -> None:
    out = tmp_path / "bus.json"
    cmd = [sys.executable, "-m", "bench.bus_publish", "--events", "300", "--awaited-events", "30", "--batch", "50", "--out", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=50)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    results = json.loads(out.read_text())["results"]
    assert [r["publisher"] for r in results] == ["coredis_awaited", "coredis_pipelined", "kefu_redis_bus"]
    assert [r["events"] for r in results] == [30, 300, 300]
    assert all(r["events_per_s"] > 0 and r["cpu_ms_per_1000"] >= 0 for r in results)
