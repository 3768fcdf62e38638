"""How long a gateway takes to start: from ``kefu serve`` until ``/readyz`` answers 200, with the
sample bot fitted at start (routing on, the default), with its fitted model kept from an earlier
start (``--bot-fits-dir``, the default), and kept nowhere (``--bot-fits-dir off``).

    python -m bench.startup [--rounds 5] [--out FILE]

Each round starts the gateway on a fresh data directory twice, in turn: once with fits kept nowhere
(it fits), once with a folder an earlier start filled (it loads). The processes run one at a time
on one core. The ratio of the medians, within the run, is the figure to read (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from .media import free_port
from .servers import machine, machine_steal_s

SECRET = "bench-secret-that-is-long-enough-for-hs256"


def start_once(data_dir: Path, fits: str, cpu: int | None) -> dict[str, float]:
    """Seconds from spawning ``kefu serve`` until /readyz is 200, and the CPU it used until then."""
    http_port, ws_port = free_port(), free_port()
    args = [sys.executable, "-m", "gateway", "serve", "--data-dir", str(data_dir), "--port", str(ws_port), "--metrics-port", str(http_port),
            "--jwt-secret", SECRET, "--bot-fits-dir", fits]
    started = time.perf_counter()
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=(lambda: os.sched_setaffinity(0, {cpu})) if cpu is not None else None)
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"kefu serve exited {proc.returncode}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/readyz", timeout=1) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            time.sleep(0.01)
        ready = time.perf_counter() - started
        with open(f"/proc/{proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        cpu_s = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime
        return {"ready_s": ready, "cpu_s": cpu_s}
    finally:
        proc.terminate()
        proc.wait(30)


def run(rounds: int) -> dict[str, Any]:
    cores = sorted(os.sched_getaffinity(0))
    cpu = cores[0] if len(cores) >= 2 else None
    if cpu is not None:
        os.sched_setaffinity(0, set(cores[1:]))
    results: dict[str, list[dict[str, float]]] = {"fitted": [], "loaded": []}
    steal0 = machine_steal_s()
    with tempfile.TemporaryDirectory(prefix="kefu-bench-startup-") as root:
        kept = Path(root) / "fits"
        start_once(Path(root) / "warm", str(kept), cpu)  # fills the folder once
        for n in range(rounds):
            results["fitted"].append(start_once(Path(root) / f"fit-{n}", "off", cpu))
            results["loaded"].append(start_once(Path(root) / f"load-{n}", str(kept), cpu))
    medians = {how: {key: statistics.median(r[key] for r in runs) for key in ("ready_s", "cpu_s")} for how, runs in results.items()}
    return {
        "rounds": results, "medians": medians, "steal_s": round(machine_steal_s() - steal0, 2),
        "ratios": {key: medians["loaded"][key] / medians["fitted"][key] for key in ("ready_s", "cpu_s")},
    }


def table(results: dict[str, Any]) -> str:
    lines = ["| start | ready after (median) | CPU until ready (median) |", "|---|---|---|"]
    for how, label in (("fitted", "fits the sample bot (--bot-fits-dir off)"), ("loaded", "loads its kept model")):
        m = results["medians"][how]
        lines.append(f"| {label} | {m['ready_s']:.2f} s | {m['cpu_s']:.2f} s |")
    r = results["ratios"]
    lines.append(f"| loaded / fitted | {r['ready_s']:.2f}x | {r['cpu_s']:.2f}x |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.startup", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", help="write the results here (JSON)")
    args = parser.parse_args(argv)
    results = run(args.rounds)
    results.update(command=" ".join(["python -m bench.startup", *(argv if argv is not None else sys.argv[1:])]), machine=machine())
    print(table(results))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
