"""The webhooks benchmark (bench/webhooks.py) at a tiny size: it runs, every event of the hooked
window reaches the receiver, nothing is dropped or failed, and the JSON has its shape. Never
timings."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("numpy", reason="the bench extra is not installed: pip install -e '.[bench]'")

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(120)
def test_webhooks_bench_runs_and_every_event_arrives(tmp_path: Path) -> None:
    out = tmp_path / "webhooks.json"
    cmd = [sys.executable, "-m", "bench.webhooks", "--rates", "50", "--duration", "1", "--shoppers", "2", "--out", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=110)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    (rate,) = json.loads(out.read_text())["rates"]
    assert rate["plain"]["sent"] == rate["webhook"]["sent"] == 50
    assert rate["delivered"] == rate["received"] == 50 and rate["dropped"] == rate["failed"] == 0
    assert rate["delivery_ms"]["count"] == 50 and rate["cpu_us_per_message"]["webhook"] > 0
    assert "| 50 |" in proc.stdout
