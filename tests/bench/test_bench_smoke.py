"""The benchmark at tiny sizes: every workload against Kefu (memory store) and the baseline relay.

Asserts correctness counters and the JSON's shape, never timings (those are benchmark results, not
test outcomes). One ``python -m bench all`` run serves every test of this module.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

for name in ("uvloop", "picows", "websockets", "numpy"):
    pytest.importorskip(name, reason="the bench extra is not installed: pip install -e '.[bench]'")

from bench.measure import SeqTracker, failed  # noqa: E402
from gateway import _native  # noqa: E402

from ..support import once_per_run  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
TARGETS = ("memory", "memory-pure", "baseline")
WORKLOADS = ("pairs", "latency", "fanout", "idle", "storm", "chat")
TINY = [
    "--convs", "2", "--window", "2", "--duration", "0.6", "--warmup", "0.2", "--latency-duration", "0.5",
    "--members", "12", "--fanout-users", "3", "--fanout-window", "2",
    "--idle-conns", "24", "--idle-hold", "0.2",
    "--storm-conns", "24", "--storm-rate", "300", "--storm-before", "0.4", "--storm-after", "0.3",
    "--conns-per-proc", "12", "--concurrency", "16",
    "--chat-shoppers", "40", "--chat-per-agent", "20", "--chat-rate", "100", "--chat-duration", "0.6", "--chat-think-s", "0.05",
]
KEYS = {
    "pairs": ["accepted_per_s", "delivered_per_s", "cpu_us_per_delivery", "cpu_s_per_1k_messages", "ack_latency", "e2e_latency", "machine_steal_s"],
    "latency": ["ack_latency", "e2e_latency", "loopback_floor", "cpu_us_per_delivery"],
    "fanout": ["deliveries_per_s", "messages_per_s", "cpu_us_per_delivery", "delivery_latency"],
    "idle": ["rss_per_conn_bytes", "conns_per_s", "opened", "healthy", "all_healthy"],
    "storm": ["all_live_s", "live_again", "lost", "duplicated", "out_of_order", "caught_up_by_resume"],
    "chat": ["accepted_per_s", "delivered_per_s", "cpu_us_per_delivery", "ack_latency", "e2e_latency", "rss_end_bytes",
             "rss_per_conn_bytes", "questions", "setup_s"],
}
LATENCY_KEYS = ("count", "p50_ms", "p99_ms", "p999_ms")


def run_bench(out) -> dict:
    cmd = [sys.executable, "-m", "bench", "all", "--targets", ",".join(TARGETS), "--no-pin", "--quiet", "--no-plots", "--out", str(out), *TINY]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=140)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert "figure" in proc.stdout and "correctness" in proc.stdout  # the ratio table was printed
    return json.loads((out / "results.json").read_text())


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict:
    return once_per_run(tmp_path_factory, "bench-all", run_bench)


@pytest.mark.timeout(180)
def test_document_has_the_expected_keys(run):
    for key in ("command", "date", "machine", "pinning", "client", "options", "targets", "ratios", "results", "failed"):
        assert key in run, key
    assert run["failed"] is False
    assert set(run["results"]) == set(WORKLOADS)
    figures = {row["figure"] for row in run["ratios"]}
    assert "pairs: server CPU per message" in figures and "idle: server memory per connection" in figures
    pairs_cpu = next(row for row in run["ratios"] if row["figure"] == "pairs: server CPU per message")
    assert set(pairs_cpu["values"]) == set(TARGETS) and "memory" in pairs_cpu["ratios"]
    # memory-pure is the same gateway with KEFU_PUREPYTHON=1: it ran the pure twins, and the
    # native/pure ratio is the quotient of the two values
    pairs = run["results"]["pairs"]
    assert set(pairs["memory-pure"]["server_build"].replace(",", " ").split()) >= {"python"}
    assert "native" not in pairs["memory-pure"]["server_build"]
    if _native.load("frames", honour_env=False) is not None:  # built: "memory" runs it, whatever this run forces
        assert "python" not in pairs["memory"]["server_build"]
    expected = pairs["memory"]["cpu_us_per_delivery"] / pairs["memory-pure"]["cpu_us_per_delivery"]
    assert pairs_cpu["pure_ratios"]["memory"] == pytest.approx(expected, rel=0.01)


@pytest.mark.timeout(180)
@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("workload", WORKLOADS)
def test_workload_is_correct_and_complete(run, workload, target):
    r = run["results"][workload][target]
    checks = r["checks"]
    assert (checks["lost"], checks["duplicated"], checks["out_of_order"], checks["unexpected"]) == (0, 0, 0, 0), checks
    assert checks["errors"] == {} and checks["closed"] == 0 and checks["unanswered"] == 0, checks
    assert r["failed"] is False
    for key in KEYS[workload]:
        assert key in r, key
    for key in ("ack_latency", "e2e_latency", "delivery_latency", "loopback_floor"):
        if key in KEYS[workload]:
            assert all(k in r[key] for k in LATENCY_KEYS), r[key]
            assert r[key]["count"] > 0
    if workload == "idle":
        assert r["all_healthy"] is True and r["healthy"] == r["opened"] == 24
    if workload == "storm":
        assert r["live_again"] == 24
    if workload in ("pairs", "latency", "chat"):
        assert r["delivered_per_s"] > 0 and r["cpu_us_per_delivery"] is not None
    if workload == "latency":  # both sides send, one message in flight each
        assert r["params"]["senders"] == "both" and r["params"]["window"] == 1
    if workload == "chat":  # 40 shoppers, 2 agents of 20 conversations each, two generator processes
        assert r["params"]["conns"] == 42 and r["params"]["agents"] == 2 and r["params"]["procs"] == 2
        assert r["questions"] > 0 and r["rss_end_bytes"] > 0
    if workload == "fanout":
        assert r["deliveries_per_s"] > 0


def test_the_sequence_check_sees_every_kind_of_fault():
    clean = SeqTracker()
    for seq in (1, 2, 3, 4):
        clean.see(seq)
    assert clean.finish(4) == {"lost": 0, "duplicated": 0, "out_of_order": 0, "unexpected": 0}

    faulty = SeqTracker()
    for seq in (1, 3, 2, 3, 5):  # 2 late, 3 twice, 4 never, 6 never
        faulty.see(seq)
    assert faulty.finish(6) == {"lost": 2, "duplicated": 1, "out_of_order": 1, "unexpected": 0}
    assert failed({"lost": 2})
    assert failed({"errors": {"not_found": 1}})
    assert not failed({"lost": 0, "duplicated": 0, "errors": {}})

    resumed = SeqTracker(after=10)  # a cursor: nothing at or below it is expected
    resumed.see(11)
    assert resumed.finish(12)["lost"] == 1 and resumed.finish(10)["unexpected"] == 1


def test_flood_benchmark_runs_and_loses_nothing(tmp_path):
    out = tmp_path / "flood.json"
    result = subprocess.run(
        [sys.executable, "-m", "bench.flood", "--duration", "1.5", "--pairs", "4", "--garbage-conns", "2",
         "--unauth-conns", "3", "--fragment-conns", "5", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    doc = json.loads(out.read_text())
    assert doc["unanswered"] == 0 and doc["phases"]["quiet"]["acked"] > 0 and doc["phases"]["flood"]["acked"] > 0
    attack = doc["phases"]["flood"]["attack"]
    assert attack["connections"] > 10  # the gateway closed the attackers, which came back
    assert doc["peak_rss_bytes"] > 0 and doc["p99_ratio"] is not None
