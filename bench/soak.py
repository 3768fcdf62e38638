"""``python -m bench.soak``: a long half-load run that shows the gateway's memory and file
descriptors stay flat (not part of CI: it takes half an hour by default).

Rounds of the well-behaved workload of ``bench.flood`` (shopper/agent pairs sending steadily,
every round on new connections, so connections churn as in production), with a light flood of
misbehaving peers in every other round. Every ``--sample-s`` the gateway's RSS and open file
descriptors are read from /proc. At the end the table shows the samples, and the run fails when the
last third's mean RSS is more than ``--tolerance`` above the middle third's, or descriptors leak.

    python -m bench.soak                       # 30 minutes
    python -m bench.soak --minutes 2           # a quick look
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import multiprocessing
import os
import threading
import time
from pathlib import Path
from typing import Any

from .client import link_class
from .flood import attack_main, behave
from .servers import Server, machine

ROOT = Path(__file__).resolve().parent.parent


def sample(pid: int) -> tuple[int, int]:
    rss = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) * 1024
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=30.0)
    p.add_argument("--store", default="sqlite", choices=("memory", "sqlite"))
    p.add_argument("--pairs", type=int, default=500, help="shopper/agent pairs per round")
    p.add_argument("--rate", type=float, default=2.0, help="messages per second per shopper (500 x 2 = about half of what chat-like load saturates)")
    p.add_argument("--round-s", type=float, default=30.0, help="seconds per round; each round connects anew")
    p.add_argument("--sample-s", type=float, default=10.0)
    p.add_argument("--tolerance", type=float, default=0.10)
    p.add_argument("--client", default="picows")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "soak-latest.json"))
    args = p.parse_args(argv)
    cores = sorted(os.sched_getaffinity(0))
    server = Server("memory" if args.store == "memory" else "sqlite", cpus={cores[0]} if len(cores) > 1 else None,
                    extra_args=["--rate-per-second", "50", "--max-connections-per-user", "20"])
    server.start()
    if len(cores) > 1:
        os.sched_setaffinity(0, set(cores[1:]))
    samples: list[dict[str, Any]] = []
    done = [False]
    t0 = time.monotonic()

    def sampler() -> None:
        while not done[0]:
            rss, fds = sample(server.pid)
            samples.append({"t_s": round(time.monotonic() - t0, 1), "rss_mb": round(rss / 2**20, 1), "fds": fds})
            time.sleep(args.sample_s)

    thread = threading.Thread(target=sampler, daemon=True)
    thread.start()
    rounds: list[dict[str, Any]] = []
    Link = link_class(args.client)
    try:
        end = t0 + args.minutes * 60
        n = 0
        while time.monotonic() + 1 < end:
            seconds = min(args.round_s, end - time.monotonic() - 1)
            attack = None
            if n % 2:
                queue = multiprocessing.get_context("spawn").Queue()
                attack = multiprocessing.get_context("spawn").Process(
                    target=attack_main, args=(server.url, {"garbage": 5, "unauth": 10, "fragments": 20}, seconds, queue))
                attack.start()
            r = asyncio.run(behave(server.url, args.pairs, args.rate, seconds, Link))
            if attack is not None:
                attack.join(60)
            rounds.append({"round": n, "flood": bool(n % 2), "acked": r["acked"], "unanswered": r["unanswered"], "p99_ms": r["ack_latency"]["p99_ms"]})
            print(f"round {n}: acked {r['acked']}, unanswered {r['unanswered']}, ack p99 {r['ack_latency']['p99_ms']} ms, "
                  f"RSS {samples[-1]['rss_mb'] if samples else '?'} MB, fds {samples[-1]['fds'] if samples else '?'}", flush=True)
            n += 1
    finally:
        done[0] = True
        thread.join()
        server.stop()
        server.cleanup()
    third = max(1, len(samples) // 3)
    middle = samples[third : 2 * third] or samples
    last = samples[-third:]
    mean = lambda rows, k: sum(r[k] for r in rows) / len(rows)  # noqa: E731
    rss_growth = mean(last, "rss_mb") / mean(middle, "rss_mb") - 1
    fd_growth = mean(last, "fds") - mean(middle, "fds")
    unanswered = sum(r["unanswered"] for r in rounds)
    flat = rss_growth <= args.tolerance and fd_growth <= 5 and unanswered == 0
    print(f"\nkefu soak · {dt.datetime.now():%Y-%m-%d %H:%M} · {args.minutes:g} min · store {args.store} · {args.pairs} pairs x {args.rate:g} msg/s")
    print(f"{'t (s)':>8} {'RSS MB':>8} {'fds':>6}")
    for s in samples[:: max(1, len(samples) // 20)]:
        print(f"{s['t_s']:>8} {s['rss_mb']:>8} {s['fds']:>6}")
    print(f"RSS last third vs middle third: {rss_growth:+.1%}; fds: {fd_growth:+.1f}; unanswered sends: {unanswered} — {'flat' if flat else 'NOT FLAT'}")
    doc = {"date": dt.datetime.now().isoformat(timespec="seconds"), "machine": machine(), "args": vars(args),
           "samples": samples, "rounds": rounds, "rss_growth": rss_growth, "fd_growth": fd_growth, "flat": flat}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(doc, indent=1))
    print(f"written: {args.out}")
    return 0 if flat else 1


if __name__ == "__main__":
    raise SystemExit(main())
