"""The media benchmark (bench/media.py) at tiny sizes: it runs, every message is acked and
delivered in both phases, uploads are stored, and the JSON has its shape. Never timings."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("numpy", reason="the bench extra is not installed: pip install -e '.[bench]'")

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(90)
def test_media_bench_runs_and_counts(tmp_path: Path) -> None:
    out = tmp_path / "media.json"
    cmd = [sys.executable, "-m", "bench.media", "--target", "memory", "--duration", "0.5", "--uploaders", "1",
           "--width", "160", "--height", "120", "--rate", "10", "--rounds", "2", "--out", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=80)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    result = json.loads(out.read_text())
    for phase in (result["idle"], result["mixed"]["latency"]):  # two windows of 5 messages each, pooled
        assert phase["errors"] == 0 and phase["acked"] == phase["sent"] == phase["delivered"] == 10
        assert phase["ack_latency"]["count"] == phase["e2e_latency"]["count"] == 10
        assert [w["acked"] for w in phase["windows"]] == [5, 5]
        assert "samples" not in phase and not any("samples" in w for w in phase["windows"])
    assert len(result["mixed"]["windows"]) == 2 and sum(w["stored"] for w in result["mixed"]["windows"]) == result["mixed"]["stored"]
    assert len(result["ack_latency_ratio_by_round"]) == 2 and result["idle_p99_spread"] >= 1
    for phase in (result["uploads"], result["mixed"], *result["mixed"]["windows"]):
        assert phase["stored"] > 0 and phase["bytes"] == phase["stored"] * result["options"]["image_bytes"]
        assert not any(key.startswith("refused") for key in phase)
        assert phase["server_cpu_s_per_mb"] is None or phase["server_cpu_s_per_mb"] >= 0
        assert phase["workers_cpu_s_per_mb"] is None or phase["workers_cpu_s_per_mb"] >= 0
    assert set(result["ack_latency_ratio"]) == {"p50_ms", "p99_ms"} and isinstance(result["within_2x"], bool)
