"""The scale-out run (bench/cluster.py) at a tiny size: two nodes over PostgreSQL and Redis, one
killed with SIGKILL mid-run; the report counts zero lost and zero duplicated acked messages and
every moved client live again. Never timings."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(120)
def test_cluster_bench_loses_and_repeats_nothing_when_a_node_is_killed(tmp_path: Path) -> None:
    out = tmp_path / "cluster.json"
    cmd = [sys.executable, "-m", "bench.cluster", "--nodes", "2", "--pairs", "2", "--duration", "1.5", "--kill-at", "0.7", "--settle", "20", "--out", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=110)
    report = json.loads(out.read_text())
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert report["acked"] > 0 and report["lost"] == 0 and report["duplicated"] == 0 and report["missing"] == {}
    assert report["moved_clients"] == 2 and report["moved_live_again"] == 2  # the two on the killed node
